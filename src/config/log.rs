//! `log` section: the tracing filter and output format.

use super::values::one_of;
use super::{Check, ConfigError};
use serde::{Deserialize, Deserializer, Serialize};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_of(d, &[("text", LogFormat::Text), ("json", LogFormat::Json)])
    }
}

/// `log` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a JSON object with the fields level, format"
)]
pub struct LogConfig {
    /// A tracing filter (`info`, `debug`, `hermes=debug,libp2p=warn`). `RUST_LOG` overrides it.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            // info: start-up, peers admitted and refused, and problems; per-message detail is
            // debug.
            level: "info".into(),
            // Text: read by a person at a terminal first; log shippers opt into json.
            format: LogFormat::Text,
        }
    }
}

impl LogConfig {
    pub(super) fn validate(&self, check: &Check<'_>) -> Result<(), ConfigError> {
        match tracing_subscriber::EnvFilter::try_new(&self.level) {
            Ok(_) => Ok(()),
            Err(e) => Err(check.err(
                "log.level",
                format!(
                    "invalid filter `{}` ({e}); expected e.g. \"info\", \"debug\" or \"hermes=debug,warn\"",
                    self.level
                ),
            )),
        }
    }
}
