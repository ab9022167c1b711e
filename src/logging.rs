//! Process-wide logging through `tracing-subscriber`.
//!
//! The level comes from `log.level`; `RUST_LOG`, when set, overrides it. A host application that
//! already installed its own subscriber keeps it: installing ours is attempted once and skipped
//! quietly if a global subscriber exists, because an embedded library must never fight its host.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber unless one is already set. Returns whether ours was installed.
pub fn init(cfg: &LogConfig) -> bool {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&cfg.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder.json().try_init().is_ok(),
    }
}
