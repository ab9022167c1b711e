//! Process-wide logging through `tracing-subscriber`.
//!
//! The level comes from `log.level`; `RUST_LOG`, when set, overrides it. A host application that
//! already installed its own subscriber keeps it: installing ours is attempted once and skipped
//! quietly if a global subscriber exists, because an embedded library must never fight its host.
//!
//! Colours are used only when stderr is a terminal and `NO_COLOR` is unset: escape codes in a
//! log file or a pipe are noise for `grep` and log collectors.

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
        .with_ansi(colour())
        .with_writer(std::io::stderr);
    match cfg.format {
        LogFormat::Text => builder.try_init().is_ok(),
        LogFormat::Json => builder.json().try_init().is_ok(),
    }
}

/// Whether log lines may carry ANSI colours: stderr is a terminal and `NO_COLOR` is not set
/// (<https://no-color.org>).
fn colour() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
