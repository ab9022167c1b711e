//! The node's one JSON configuration file, one module per section.
//!
//! Loading is strict: unknown fields are errors, every value is validated, and every error names
//! the field path (`subnets.netuids[2]`), the bad value and what was expected. JSON syntax errors
//! give line and column. Sizes and durations accept human forms (`"8MiB"`, `"90s"`, `"1h 30m"`).
//! Relative paths are resolved against the directory of the config file, and `~/` against `$HOME`,
//! so a config works the same whatever directory the node is started from.
//!
//! Every section is a struct with a single `Default` impl, whose comments say why each default
//! was chosen; `#[serde(default)]` on the struct fills in whatever a file leaves out from it, so a
//! missing field and the documented default can never disagree. Each section also carries its
//! own checks (`validate`), run in file order so the first problem reported is the first one in
//! the file's layout.
//!
//! See `docs/CONFIG.md` for every field and its default.

mod acl;
mod chain;
mod consensus;
mod encryption;
mod firewall;
mod identity;
mod log;
mod messages;
mod network;
mod storage;
mod streams;
mod subnets;
mod sync;
mod values;

pub use acl::{AclConfig, AclEntry};
pub use chain::{ChainConfig, ChainKind};
pub use consensus::{ConsensusConfig, MAX_CONSENSUS_EVENTS};
pub use encryption::EncryptionConfig;
pub use firewall::FirewallConfig;
pub use identity::IdentityConfig;
pub use log::{LogConfig, LogFormat};
pub use messages::MessagesConfig;
pub use network::Addr;
pub use storage::StorageConfig;
pub use streams::StreamsConfig;
pub use subnets::{SubnetMode, SubnetsConfig};
pub use sync::{S3Config, SyncBackend, SyncConfig};
pub use values::{ByteSize, HumanDuration};

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

/// Most subnets one node may serve (the binding record's limit).
pub const MAX_NETUIDS: usize = hermes_proto::binding::MAX_NETUIDS;

/// A configuration problem: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {file}: {reason}")]
    Unreadable {
        /// The config file.
        file: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The file is not valid JSON.
    #[error("{file}:{line}:{column}: invalid JSON: {reason}")]
    Syntax {
        /// The config file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser expected.
        reason: String,
    },
    /// A field has a bad value (or is unknown, or missing).
    #[error("{file}: `{field}`: {reason}")]
    Field {
        /// The config file, or `<config>` for programmatic configs.
        file: PathBuf,
        /// Field path, e.g. `subnets.netuids[2]`.
        field: String,
        /// The bad value and what is expected.
        reason: String,
    },
}

impl ConfigError {
    /// The field path, for `Field` errors.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "the Hermes config: a JSON object with the fields data_dir, identity, listen, \
                 bootstrap, subnets, chain, consensus, acl, firewall, storage, encryption, \
                 messages, streams, sync, log (all optional except identity.hotkey_file)"
)]
pub struct Config {
    /// Directory for the database, the transport key and other node state.
    pub data_dir: PathBuf,
    /// Keys and the binding record.
    #[serde(deserialize_with = "values::object_only")]
    pub identity: IdentityConfig,
    /// Addresses to listen on.
    pub listen: Vec<Addr>,
    /// Peers to dial at start.
    pub bootstrap: Vec<Addr>,
    /// Subnets served and how they scope admission.
    #[serde(deserialize_with = "values::object_only")]
    pub subnets: SubnetsConfig,
    /// Where the registry of subnet nodes comes from.
    #[serde(deserialize_with = "values::object_only")]
    pub chain: ChainConfig,
    /// Taking part in the subnets' epochs.
    #[serde(deserialize_with = "values::object_only")]
    pub consensus: ConsensusConfig,
    /// Global allow and deny lists.
    #[serde(deserialize_with = "values::object_only")]
    pub acl: AclConfig,
    /// Admission rules and connection limits.
    #[serde(deserialize_with = "values::object_only")]
    pub firewall: FirewallConfig,
    /// The embedded database.
    #[serde(deserialize_with = "values::object_only")]
    pub storage: StorageConfig,
    /// End-to-end encryption: prekeys and sessions.
    #[serde(deserialize_with = "values::object_only")]
    pub encryption: EncryptionConfig,
    /// Messages: size limit, TTL, outbox and retries.
    #[serde(deserialize_with = "values::object_only")]
    pub messages: MessagesConfig,
    /// Streams.
    #[serde(deserialize_with = "values::object_only")]
    pub streams: StreamsConfig,
    /// The Sync Engine: large transfers.
    #[serde(deserialize_with = "values::object_only")]
    pub sync: SyncConfig,
    /// Logging.
    #[serde(deserialize_with = "values::object_only")]
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        let any = Multiaddr::empty().with(Protocol::Ip4(Ipv4Addr::UNSPECIFIED));
        Config {
            // `./hermes-data`: next to the config (relative paths resolve against its
            // directory), where an operator looks first.
            data_dir: PathBuf::from("./hermes-data"),
            identity: IdentityConfig::default(),
            // QUIC and TCP on port 4001, all interfaces: both transports so that peers on
            // UDP-hostile networks still get in over TCP, and a fixed port so the address can be
            // handed to others as a bootstrap.
            listen: vec![
                Addr(any.clone().with(Protocol::Udp(4001)).with(Protocol::QuicV1)),
                Addr(any.with(Protocol::Tcp(4001))),
            ],
            // None: the first node of a network has nobody to dial; later ones are told.
            bootstrap: Vec::new(),
            subnets: SubnetsConfig::default(),
            chain: ChainConfig::default(),
            consensus: ConsensusConfig::default(),
            acl: AclConfig::default(),
            firewall: FirewallConfig::default(),
            storage: StorageConfig::default(),
            encryption: EncryptionConfig::default(),
            messages: MessagesConfig::default(),
            streams: StreamsConfig::default(),
            sync: SyncConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// Makes [`ConfigError::Field`] errors for one config source, so each section's checks name only
/// the field and the problem, and range errors all read the same way.
pub(crate) struct Check<'a> {
    origin: &'a Path,
}

impl Check<'_> {
    /// A field error.
    pub(crate) fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Field {
            file: self.origin.to_path_buf(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// `v` must lie in `lo..=hi`, which `text` spells out for the user.
    pub(crate) fn duration(
        &self,
        field: &str,
        v: HumanDuration,
        lo: Duration,
        hi: Duration,
        text: &str,
    ) -> Result<(), ConfigError> {
        if (lo..=hi).contains(&v.0) {
            return Ok(());
        }
        Err(self.err(
            field,
            format!(
                "{} is out of range; expected {text}",
                humantime::format_duration(v.0)
            ),
        ))
    }

    /// `v` must lie in `lo..=hi`, which `text` spells out for the user.
    pub(crate) fn size(
        &self,
        field: &str,
        v: ByteSize,
        lo: ByteSize,
        hi: ByteSize,
        text: &str,
    ) -> Result<(), ConfigError> {
        if (lo..=hi).contains(&v) {
            return Ok(());
        }
        Err(self.err(
            field,
            format!("{} bytes is out of range; expected {text}", v.0),
        ))
    }

    /// `v` must lie in `lo..=hi`, which `text` spells out for the user.
    pub(crate) fn count<T: PartialOrd + fmt::Display>(
        &self,
        field: &str,
        v: T,
        lo: T,
        hi: T,
        text: &str,
    ) -> Result<(), ConfigError> {
        if lo <= v && v <= hi {
            return Ok(());
        }
        Err(self.err(field, format!("{v} is out of range; expected {text}")))
    }
}

impl Config {
    /// Reads, parses, resolves and validates a config file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and, where it applies, the line/column or field path.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            file: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut cfg = Self::parse(&text, path)?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        cfg.resolve_paths(&base);
        cfg.validate_in(path)?;
        Ok(cfg)
    }

    /// Parses JSON text, without resolving paths or touching the file system.
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] or [`ConfigError::Field`]; `origin` names the source in messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        use serde_json::error::Category;
        let syntax = |inner: serde_json::Error| ConfigError::Syntax {
            file: origin.to_path_buf(),
            line: inner.line(),
            column: inner.column(),
            reason: strip_position(&inner.to_string()),
        };
        let mut de = serde_json::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, Config>(values::ObjectOnly(&mut de)) {
            // Whatever follows the object (a second object, a stray brace) is an error too, not
            // silently ignored.
            Ok(c) => de.end().map(|()| c).map_err(syntax),
            Err(e) => {
                let field = e.path().to_string();
                let inner = e.into_inner();
                match inner.classify() {
                    Category::Syntax | Category::Eof | Category::Io => Err(syntax(inner)),
                    Category::Data => Err(ConfigError::Field {
                        file: origin.to_path_buf(),
                        field: if field == "." {
                            "(top level)".into()
                        } else {
                            field
                        },
                        reason: inner.to_string(),
                    }),
                }
            }
        }
    }

    /// Makes relative paths relative to `base` and expands `~/`.
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| *p = resolve(base, p);
        fix(&mut self.data_dir);
        fix(&mut self.chain.path);
        if let Some(p) = self.identity.hotkey_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.identity.transport_key_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self
            .sync
            .s3
            .as_mut()
            .and_then(|s| s.credentials_file.as_mut())
        {
            fix(p);
        }
    }

    /// Validates every cross-field rule and the files the config points at.
    ///
    /// # Errors
    /// [`ConfigError::Field`] for the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in(Path::new("<config>"))
    }

    fn validate_in(&self, origin: &Path) -> Result<(), ConfigError> {
        let check = Check { origin };
        if self.data_dir.as_os_str().is_empty() {
            return Err(check.err("data_dir", "must not be empty"));
        }
        if self.data_dir.exists() && !self.data_dir.is_dir() {
            return Err(check.err(
                "data_dir",
                format!("{} exists and is not a directory", self.data_dir.display()),
            ));
        }
        self.identity.validate(&check)?;
        self.subnets.validate(&check)?;
        self.chain.validate(&check)?;
        self.consensus.validate(&check, &self.subnets)?;
        self.firewall.validate(&check)?;
        self.storage.validate(&check)?;
        self.encryption.validate(&check)?;
        self.messages.validate(&check)?;
        self.streams.validate(&check)?;
        self.sync.validate(&check)?;
        self.log.validate(&check)
    }

    /// The effective config as pretty JSON (what `hermes config check` prints).
    pub fn to_pretty_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("<unprintable config: {e}>"))
    }

    /// Sets the data directory.
    pub fn with_data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// Sets the hotkey file.
    pub fn with_hotkey_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.identity.hotkey_file = Some(file.into());
        self
    }

    /// Sets the subnets and mode.
    pub fn with_subnets(mut self, mode: SubnetMode, netuids: Vec<u16>) -> Self {
        self.subnets = SubnetsConfig { mode, netuids };
        self
    }

    /// Sets the chain backend.
    pub fn with_chain(mut self, kind: ChainKind, path: impl Into<PathBuf>) -> Self {
        self.chain.kind = kind;
        self.chain.path = path.into();
        self
    }

    /// Sets the bootstrap addresses.
    pub fn with_bootstrap(mut self, addrs: Vec<Multiaddr>) -> Self {
        self.bootstrap = addrs.into_iter().map(Addr).collect();
        self
    }

    /// Sets the log filter (`RUST_LOG` still overrides it).
    pub fn with_log_level(mut self, level: impl Into<String>) -> Self {
        self.log.level = level.into();
        self
    }

    /// Sets the listen addresses.
    pub fn with_listen(mut self, addrs: Vec<Multiaddr>) -> Self {
        self.listen = addrs.into_iter().map(Addr).collect();
        self
    }
}

fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    if p.is_absolute() {
        return p.to_path_buf();
    }
    // Drop `.` components so `./hermes-data` under `node/` prints as `node/hermes-data`.
    let rel: PathBuf = p
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    if base.as_os_str().is_empty() {
        rel
    } else {
        base.join(rel)
    }
}

pub(crate) fn check_readable_file(p: &Path) -> Result<(), String> {
    match std::fs::File::open(p) {
        Ok(f) => match f.metadata() {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(format!("{} is not a regular file", p.display())),
            Err(e) => Err(format!("cannot stat {}: {e}", p.display())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{} does not exist", p.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_shape() {
        let c = Config::parse("{}", Path::new("x.json")).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.listen[0].0.to_string(), "/ip4/0.0.0.0/udp/4001/quic-v1");
        assert_eq!(c.listen[1].0.to_string(), "/ip4/0.0.0.0/tcp/4001");
    }
}
