//! The node's one JSON configuration file.
//!
//! Loading is strict: unknown fields are errors, every value is validated, and every error names
//! the field path (`subnets.netuids[2]`), the bad value and what was expected. JSON syntax errors
//! give line and column. Sizes and durations accept human forms (`"8MiB"`, `"90s"`, `"1h 30m"`).
//! Relative paths are resolved against the directory of the config file, and `~/` against `$HOME`,
//! so a config works the same whatever directory the node is started from.
//!
//! See `docs/CONFIG.md` for every field and its default.

use libp2p::Multiaddr;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
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

/// How peers' subnets restrict who may connect (enforced by the firewall).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubnetMode {
    /// Exactly one subnet; peers must be registered in it.
    Single,
    /// Peers must be registered in at least one of the listed subnets.
    Whitelist,
    /// Relay for any registered peer, whatever its subnet.
    Open,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory for the database, the transport key and other node state. Default
    /// `./hermes-data`: next to the config, where an operator looks first.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Keys and the binding record.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Addresses to listen on. Default: QUIC and TCP on port 4001, all interfaces.
    #[serde(default = "default_listen")]
    pub listen: Vec<Addr>,
    /// Peers to dial at start. Default: none (a first node bootstraps others).
    #[serde(default)]
    pub bootstrap: Vec<Addr>,
    /// Subnets served and how they scope admission.
    #[serde(default)]
    pub subnets: SubnetsConfig,
    /// Where the registry of subnet nodes comes from.
    #[serde(default)]
    pub chain: ChainConfig,
    /// Global allow and deny lists.
    #[serde(default)]
    pub acl: AclConfig,
    /// Admission rules and connection limits.
    #[serde(default)]
    pub firewall: FirewallConfig,
    /// The embedded database.
    #[serde(default)]
    pub storage: StorageConfig,
    /// End-to-end encryption: prekeys and sessions.
    #[serde(default)]
    pub encryption: EncryptionConfig,
    /// Messages: size limit, TTL, outbox and retries.
    #[serde(default)]
    pub messages: MessagesConfig,
    /// Streams.
    #[serde(default)]
    pub streams: StreamsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
}

/// `encryption` section: how often keys change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// How often the X25519 prekey (named in the binding record) is replaced. Default 1h: a
    /// stolen prekey opens at most the sessions sealed to it in that hour. Range 1s..=30d.
    #[serde(default = "default_prekey_rotation")]
    pub prekey_rotation: HumanDuration,
    /// How long a replaced prekey still opens sessions before it is erased, covering peers that
    /// have not yet seen the new binding. Default 15m. Range 0s..=7d.
    #[serde(default = "default_prekey_grace")]
    pub prekey_grace: HumanDuration,
    /// Messages sealed in one session before a new one starts (one public-key operation per
    /// session, not per message). Default 65536. Range 1..=2^40.
    #[serde(default = "default_session_max_messages")]
    pub session_max_messages: u64,
    /// Age at which a session is replaced, healing after any compromise of its keys. Default 10m.
    /// Range 1s..=1d.
    #[serde(default = "default_session_max_age")]
    pub session_max_age: HumanDuration,
    /// Oldest session header accepted (its creation time against this node's clock); older ones
    /// are refused as replays. Default 10m. Range 10s..=1d.
    #[serde(default = "default_replay_window")]
    pub replay_window: HumanDuration,
}

fn default_prekey_rotation() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
fn default_prekey_grace() -> HumanDuration {
    HumanDuration(Duration::from_secs(15 * 60))
}
fn default_session_max_messages() -> u64 {
    1 << 16
}
fn default_session_max_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_replay_window() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
impl Default for EncryptionConfig {
    fn default() -> Self {
        EncryptionConfig {
            prekey_rotation: default_prekey_rotation(),
            prekey_grace: default_prekey_grace(),
            session_max_messages: default_session_max_messages(),
            session_max_age: default_session_max_age(),
            replay_window: default_replay_window(),
        }
    }
}

/// `messages` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesConfig {
    /// Largest message payload, sent or received; larger ones are refused before sending (use a
    /// stream). Default 16MiB. Range 1B..=64MiB.
    #[serde(default = "default_max_size")]
    pub max_size: ByteSize,
    /// How long an undelivered message is kept and retried. Default 24h. Range 1s..=30d.
    #[serde(default = "default_ttl")]
    pub ttl: HumanDuration,
    /// Most payload bytes the outbox holds; `send` fails beyond it. Default 1GiB. At least
    /// `max_size`.
    #[serde(default = "default_outbox_max")]
    pub outbox_max_bytes: ByteSize,
    /// First retry delay after a failed delivery; doubles per failure (with jitter). Default
    /// 500ms. Range 10ms..=1h.
    #[serde(default = "default_retry_min")]
    pub retry_min: HumanDuration,
    /// Longest retry delay. Default 60s. Range retry_min..=1d.
    #[serde(default = "default_retry_max")]
    pub retry_max: HumanDuration,
    /// Messages buffered for the application before senders are slowed down. Default 1024.
    /// Range 1..=1000000.
    #[serde(default = "default_inbox_capacity")]
    pub inbox_capacity: usize,
    /// How long to wait for a connection to a recipient (messages and streams). Default 10s.
    /// Range 100ms..=10m.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
}

fn default_max_size() -> ByteSize {
    ByteSize(16 << 20)
}
fn default_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}
fn default_outbox_max() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_retry_min() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_retry_max() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_inbox_capacity() -> usize {
    1024
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
impl Default for MessagesConfig {
    fn default() -> Self {
        MessagesConfig {
            max_size: default_max_size(),
            ttl: default_ttl(),
            outbox_max_bytes: default_outbox_max(),
            retry_min: default_retry_min(),
            retry_max: default_retry_max(),
            inbox_capacity: default_inbox_capacity(),
            connect_timeout: default_connect_timeout(),
        }
    }
}

/// `streams` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    /// Plaintext bytes per encrypted chunk of the streams this node opens. Larger chunks cost
    /// fewer frames; each side buffers one. Default 256KiB. Range 1KiB..=1MiB.
    #[serde(default = "default_chunk_size")]
    pub chunk_size: ByteSize,
    /// Incoming streams waiting for the application to take them; more are refused as busy.
    /// Default 64. Range 1..=4096.
    #[serde(default = "default_max_incoming")]
    pub max_incoming: usize,
    /// Accept streams that peers open without end-to-end encryption (transport encryption only).
    /// Default false.
    #[serde(default)]
    pub allow_plaintext: bool,
}

fn default_chunk_size() -> ByteSize {
    ByteSize(256 << 10)
}
fn default_max_incoming() -> usize {
    64
}
impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            chunk_size: default_chunk_size(),
            max_incoming: default_max_incoming(),
            allow_plaintext: false,
        }
    }
}

/// Chain backend kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    /// The embedded development chain in `chain.path` (a directory).
    Dev,
    /// A read-only JSON snapshot in `chain.path` (a file).
    Static,
}

/// `chain` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// `dev` or `static`. Default `dev`.
    #[serde(default = "default_chain_kind")]
    pub kind: ChainKind,
    /// Dev chain directory or snapshot file. Default `./devchain`.
    #[serde(default = "default_chain_path")]
    pub path: PathBuf,
    /// How often the registry is re-read. Default 2s: registrations show up quickly on a dev
    /// chain; a real chain's block time is longer anyway. Range 50ms..=10m.
    #[serde(default = "default_chain_poll")]
    pub poll_interval: HumanDuration,
}

fn default_chain_kind() -> ChainKind {
    ChainKind::Dev
}
fn default_chain_path() -> PathBuf {
    PathBuf::from("./devchain")
}
fn default_chain_poll() -> HumanDuration {
    HumanDuration(Duration::from_secs(2))
}
impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            kind: default_chain_kind(),
            path: default_chain_path(),
            poll_interval: default_chain_poll(),
        }
    }
}

/// `acl` section: entries are SS58 addresses or peer ids.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    /// Always admitted (peer ids even when unregistered). When non-empty, only these are admitted.
    #[serde(default)]
    pub allow: Vec<AclEntry>,
    /// Always refused; wins over `allow`.
    #[serde(default)]
    pub deny: Vec<AclEntry>,
}

/// An SS58 address or a peer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclEntry {
    /// A wallet hotkey.
    Ss58(hermes_proto::Hotkey, String),
    /// A libp2p peer id.
    Peer(libp2p::PeerId),
}

impl AclEntry {
    /// Parses an SS58 address or a peer id.
    ///
    /// # Errors
    /// A message saying what was expected.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Ok(p) = s.parse::<libp2p::PeerId>() {
            return Ok(AclEntry::Peer(p));
        }
        match hermes_proto::Hotkey::from_ss58(s) {
            Ok((k, _)) => Ok(AclEntry::Ss58(k, s.to_string())),
            Err(_) => Err(format!("`{s}` is neither an SS58 address nor a peer id")),
        }
    }
}

impl<'de> Deserialize<'de> for AclEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AclEntry::parse(&s).map_err(de::Error::custom)
    }
}
impl Serialize for AclEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AclEntry::Ss58(_, text) => s.serialize_str(text),
            AclEntry::Peer(p) => s.collect_str(p),
        }
    }
}

impl AclConfig {
    /// The ACL the firewall enforces.
    pub fn to_acl(&self) -> hermes_proto::firewall::Acl {
        let mut acl = hermes_proto::firewall::Acl::default();
        for e in &self.allow {
            match e {
                AclEntry::Ss58(k, _) => acl.allow_ss58.insert(*k),
                AclEntry::Peer(p) => acl.allow_peers.insert(p.to_base58()),
            };
        }
        for e in &self.deny {
            match e {
                AclEntry::Ss58(k, _) => acl.deny_ss58.insert(*k),
                AclEntry::Peer(p) => acl.deny_peers.insert(p.to_base58()),
            };
        }
        acl
    }
}

/// `firewall` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// Enforce the ACL, registration, scope and stake rules. Default true. Address limits apply
    /// even when false.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Require `min_stake` from peers. Default true: membership is proof-of-stake gated.
    #[serde(default = "default_true")]
    pub require_stake: bool,
    /// Minimum stake in the chain's smallest unit. Default 1 (any stake at all).
    #[serde(default = "default_min_stake")]
    pub min_stake: u128,
    /// Cap on simultaneous connections. Default 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Cap on simultaneous connections from one IP. Default 8.
    #[serde(default = "default_max_per_ip")]
    pub max_conns_per_ip: u32,
    /// New connections per second allowed from one IP. Default 20.
    #[serde(default = "default_rate")]
    pub conn_rate_per_ip: u32,
    /// Burst of new connections allowed from one IP. Default 40.
    #[serde(default = "default_burst")]
    pub conn_burst_per_ip: u32,
    /// Failed identity exchanges from one IP before it is banned. Default 3.
    #[serde(default = "default_ban_after")]
    pub ban_after_failures: u32,
    /// Ban length. Default 10m.
    #[serde(default = "default_ban_duration")]
    pub ban_duration: HumanDuration,
    /// Time a new peer has to present a valid binding. Default 10s.
    #[serde(default = "default_binding_timeout")]
    pub binding_timeout: HumanDuration,
}

fn default_true() -> bool {
    true
}
fn default_min_stake() -> u128 {
    1
}
fn default_max_connections() -> u32 {
    1024
}
fn default_max_per_ip() -> u32 {
    8
}
fn default_rate() -> u32 {
    20
}
fn default_burst() -> u32 {
    40
}
fn default_ban_after() -> u32 {
    3
}
fn default_ban_duration() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}
fn default_binding_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            enabled: true,
            require_stake: true,
            min_stake: default_min_stake(),
            max_connections: default_max_connections(),
            max_conns_per_ip: default_max_per_ip(),
            conn_rate_per_ip: default_rate(),
            conn_burst_per_ip: default_burst(),
            ban_after_failures: default_ban_after(),
            ban_duration: default_ban_duration(),
            binding_timeout: default_binding_timeout(),
        }
    }
}

/// `storage` section: tuning of the node's sled database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Page cache size. Default 64MiB: sled's own default (1GB) is far too much for a process that
    /// also hosts a subnet's model. Range 1MiB..=64GiB.
    #[serde(default = "default_cache_size")]
    pub cache_size: ByteSize,
    /// Interval of background flushes to disk; bounds what a power cut can lose (acknowledged
    /// writes that must be durable are flushed explicitly). Default 500ms. Range 10ms..=1m.
    #[serde(default = "default_flush_every")]
    pub flush_every: HumanDuration,
}

fn default_cache_size() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_flush_every() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            cache_size: default_cache_size(),
            flush_every: default_flush_every(),
        }
    }
}

/// `identity` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Bittensor hotkey file (e.g. `~/.bittensor/wallets/default/hotkeys/default`). Not needed
    /// when `HERMES_HOTKEY_URI` is set, which takes precedence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotkey_file: Option<PathBuf>,
    /// Existing transport key (protobuf ed25519, or RSA PKCS#8 DER/PEM). Default: none, and an
    /// ed25519 key is generated in `data_dir/transport.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_key_file: Option<PathBuf>,
    /// SS58 prefix for printing addresses. Default 42 (generic substrate, used by bittensor).
    #[serde(default = "default_ss58_prefix")]
    pub ss58_prefix: u16,
    /// Lifetime of each signed binding record. Default 24h: long enough that re-signing is rare,
    /// short enough that a stolen record soon stops working. Range 1m..=30d.
    #[serde(default = "default_binding_ttl")]
    pub binding_ttl: HumanDuration,
}

/// `subnets` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetsConfig {
    /// Admission scope. Default `open`, so a fresh node talks to any registered peer.
    #[serde(default = "default_mode")]
    pub mode: SubnetMode,
    /// Subnets this node serves (netuids, 0..=65535, no duplicates).
    #[serde(default)]
    pub netuids: Vec<u16>,
}

/// `log` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter (`info`, `debug`, `hermes=debug,libp2p=warn`). `RUST_LOG` overrides it.
    /// Default `info`.
    #[serde(default = "default_level")]
    pub level: String,
    /// `text` or `json`. Default `text`.
    #[serde(default = "default_format")]
    pub format: LogFormat,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./hermes-data")
}
fn default_listen() -> Vec<Addr> {
    ["/ip4/0.0.0.0/udp/4001/quic-v1", "/ip4/0.0.0.0/tcp/4001"]
        .iter()
        .filter_map(|s| s.parse().ok().map(Addr))
        .collect()
}
fn default_ss58_prefix() -> u16 {
    hermes_proto::hotkey::DEFAULT_SS58_PREFIX
}
fn default_binding_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}
fn default_mode() -> SubnetMode {
    SubnetMode::Open
}
fn default_level() -> String {
    "info".into()
}
fn default_format() -> LogFormat {
    LogFormat::Text
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            hotkey_file: None,
            transport_key_file: None,
            ss58_prefix: default_ss58_prefix(),
            binding_ttl: default_binding_ttl(),
        }
    }
}
impl Default for SubnetsConfig {
    fn default() -> Self {
        SubnetsConfig {
            mode: default_mode(),
            netuids: Vec::new(),
        }
    }
}
impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: default_level(),
            format: default_format(),
        }
    }
}
impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: default_data_dir(),
            identity: IdentityConfig::default(),
            listen: default_listen(),
            bootstrap: Vec::new(),
            subnets: SubnetsConfig::default(),
            chain: ChainConfig::default(),
            acl: AclConfig::default(),
            firewall: FirewallConfig::default(),
            storage: StorageConfig::default(),
            encryption: EncryptionConfig::default(),
            messages: MessagesConfig::default(),
            streams: StreamsConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// A validated multiaddr, written as text in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr(pub Multiaddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<Multiaddr>().map(Addr).map_err(|e| {
            de::Error::custom(format!(
                "invalid multiaddr `{s}` ({e}); expected e.g. `/ip4/0.0.0.0/tcp/4001` or `/ip4/127.0.0.1/udp/4001/quic-v1`"
            ))
        })
    }
}
impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// A duration written as `"90s"`, `"15m"`, `"1h 30m"` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"90s\", \"15m\", \"1h\" or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(HumanDuration(Duration::from_secs(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                humantime::parse_duration(v.trim())
                    .map(HumanDuration)
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid duration `{v}` ({e}); expected e.g. \"90s\", \"15m\", \"1h 30m\""
                        ))
                    })
            }
        }
        d.deserialize_any(V)
    }
}
impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

/// A byte size written as `"8MiB"`, `"1.5GB"`, `"512 KiB"` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses the human form. Binary units (`KiB`, `MiB`, `GiB`, `TiB`) are powers of 1024,
    /// decimal ones (`kB`, `MB`, `GB`, `TB`) powers of 1000; `B` or no unit means bytes.
    ///
    /// # Errors
    /// A message saying what was wrong and what is expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim();
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "tib" | "t" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(format!("unknown unit `{unit}` in `{text}`; expected B, KiB, MiB, GiB, TiB, kB, MB, GB or TB")),
        };
        let bad = || format!("invalid size `{text}`; expected e.g. \"8MiB\", \"1.5GB\" or 4096");
        if num.is_empty() {
            return Err(bad());
        }
        let bytes = if let Some((int, frac)) = num.split_once('.') {
            let int: u64 = if int.is_empty() {
                0
            } else {
                int.parse().map_err(|_| bad())?
            };
            if frac.is_empty() || frac.len() > 9 {
                return Err(bad());
            }
            let frac_val: u64 = frac.parse().map_err(|_| bad())?;
            let scale = 10u64.pow(u32::try_from(frac.len()).map_err(|_| bad())?);
            let whole = int.checked_mul(mult);
            let part = u128::from(frac_val) * u128::from(mult) / u128::from(scale);
            whole
                .and_then(|w| w.checked_add(u64::try_from(part).ok()?))
                .ok_or_else(|| format!("size `{text}` is too large"))?
        } else {
            num.parse::<u64>()
                .map_err(|_| bad())?
                .checked_mul(mult)
                .ok_or_else(|| format!("size `{text}` is too large"))?
        };
        Ok(ByteSize(bytes))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"8MiB\", \"1.5GB\" or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}
impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return s.collect_str(&format_args!("{}{name}", self.0 / size));
            }
        }
        s.serialize_u64(self.0)
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

    /// Parses JSON text without resolving paths or touching the file system beyond nothing at all.
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] or [`ConfigError::Field`]; `origin` names the source in messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, Config>(de) {
            Ok(c) => Ok(c),
            Err(e) => {
                let field = e.path().to_string();
                let inner = e.into_inner();
                use serde_json::error::Category;
                match inner.classify() {
                    Category::Syntax | Category::Eof | Category::Io => Err(ConfigError::Syntax {
                        file: origin.to_path_buf(),
                        line: inner.line(),
                        column: inner.column(),
                        reason: strip_position(&inner.to_string()),
                    }),
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
    }

    /// Validates every cross-field rule and the files the config points at.
    ///
    /// # Errors
    /// [`ConfigError::Field`] for the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_in(Path::new("<config>"))
    }

    fn validate_in(&self, origin: &Path) -> Result<(), ConfigError> {
        let err = |field: String, reason: String| ConfigError::Field {
            file: origin.to_path_buf(),
            field,
            reason,
        };
        if self.data_dir.as_os_str().is_empty() {
            return Err(err("data_dir".into(), "must not be empty".into()));
        }
        if self.data_dir.exists() && !self.data_dir.is_dir() {
            return Err(err(
                "data_dir".into(),
                format!("{} exists and is not a directory", self.data_dir.display()),
            ));
        }
        let id = &self.identity;
        let env_uri = std::env::var_os(hermes_actors::identity::keys::HOTKEY_URI_ENV).is_some();
        match (&id.hotkey_file, env_uri) {
            (None, false) => {
                return Err(err(
                    "identity.hotkey_file".into(),
                    format!(
                        "required: the path of a Bittensor hotkey file (or set {})",
                        hermes_actors::identity::keys::HOTKEY_URI_ENV
                    ),
                ))
            }
            (Some(p), false) => {
                check_readable_file(p).map_err(|r| err("identity.hotkey_file".into(), r))?
            }
            (_, true) => {}
        }
        if let Some(p) = &id.transport_key_file {
            check_readable_file(p).map_err(|r| err("identity.transport_key_file".into(), r))?;
        }
        if id.ss58_prefix > 16383 {
            return Err(err(
                "identity.ss58_prefix".into(),
                format!(
                    "{} is out of range; SS58 prefixes are 0..=16383",
                    id.ss58_prefix
                ),
            ));
        }
        let ttl = id.binding_ttl.0;
        if ttl < Duration::from_secs(60) || ttl.as_secs() > hermes_proto::binding::MAX_LIFETIME_SECS
        {
            return Err(err(
                "identity.binding_ttl".into(),
                format!(
                    "{} is out of range; expected between 1m and 30days",
                    humantime::format_duration(ttl)
                ),
            ));
        }
        let s = &self.subnets;
        if s.netuids.len() > MAX_NETUIDS {
            return Err(err(
                "subnets.netuids".into(),
                format!("{} entries; at most {MAX_NETUIDS}", s.netuids.len()),
            ));
        }
        for (i, n) in s.netuids.iter().enumerate() {
            if s.netuids[..i].contains(n) {
                return Err(err(
                    format!("subnets.netuids[{i}]"),
                    format!("netuid {n} is listed twice"),
                ));
            }
        }
        match (s.mode, s.netuids.len()) {
            (SubnetMode::Single, 1) | (SubnetMode::Open, _) => {}
            (SubnetMode::Whitelist, n) if n > 0 => {}
            (SubnetMode::Single, n) => {
                return Err(err(
                    "subnets.netuids".into(),
                    format!("mode `single` needs exactly one netuid, got {n}"),
                ))
            }
            (SubnetMode::Whitelist, _) => {
                return Err(err(
                    "subnets.netuids".into(),
                    "mode `whitelist` needs at least one netuid".into(),
                ))
            }
        }
        let poll = self.chain.poll_interval.0;
        if poll < Duration::from_millis(50) || poll > Duration::from_secs(600) {
            return Err(err(
                "chain.poll_interval".into(),
                format!(
                    "{} is out of range; expected 50ms..=10m",
                    humantime::format_duration(poll)
                ),
            ));
        }
        if self.chain.kind == ChainKind::Static {
            check_readable_file(&self.chain.path).map_err(|r| err("chain.path".into(), r))?;
        } else if self.chain.path.exists() && !self.chain.path.is_dir() {
            return Err(err(
                "chain.path".into(),
                format!(
                    "{} is not a directory (a dev chain is a directory)",
                    self.chain.path.display()
                ),
            ));
        }
        let fw = &self.firewall;
        for (name, v) in [
            ("firewall.max_connections", fw.max_connections),
            ("firewall.max_conns_per_ip", fw.max_conns_per_ip),
            ("firewall.conn_rate_per_ip", fw.conn_rate_per_ip),
            ("firewall.conn_burst_per_ip", fw.conn_burst_per_ip),
            ("firewall.ban_after_failures", fw.ban_after_failures),
        ] {
            if v == 0 {
                return Err(err(name.into(), "must be at least 1".into()));
            }
        }
        if fw.binding_timeout.0 < Duration::from_millis(100) {
            return Err(err(
                "firewall.binding_timeout".into(),
                "must be at least 100ms".into(),
            ));
        }
        let st = &self.storage;
        if !(ByteSize(1 << 20)..=ByteSize(64 << 30)).contains(&st.cache_size) {
            return Err(err(
                "storage.cache_size".into(),
                format!(
                    "{} bytes is out of range; expected 1MiB..=64GiB",
                    st.cache_size.0
                ),
            ));
        }
        let fe = st.flush_every.0;
        if fe < Duration::from_millis(10) || fe > Duration::from_secs(60) {
            return Err(err(
                "storage.flush_every".into(),
                format!(
                    "{} is out of range; expected 10ms..=1m",
                    humantime::format_duration(fe)
                ),
            ));
        }
        self.validate_data_plane(&err)?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(err(
                "log.level".into(),
                format!(
                    "invalid filter `{}` ({e}); expected e.g. \"info\", \"debug\" or \"hermes=debug,warn\"",
                    self.log.level
                ),
            ));
        }
        Ok(())
    }

    fn validate_data_plane(
        &self,
        err: &dyn Fn(String, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let range = |field: &str, v: Duration, lo: Duration, hi: Duration, text: &str| {
            if v < lo || v > hi {
                Err(err(
                    field.into(),
                    format!(
                        "{} is out of range; expected {text}",
                        humantime::format_duration(v)
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let secs = Duration::from_secs;
        let e = &self.encryption;
        range(
            "encryption.prekey_rotation",
            e.prekey_rotation.0,
            secs(1),
            secs(30 * 86400),
            "1s..=30days",
        )?;
        range(
            "encryption.prekey_grace",
            e.prekey_grace.0,
            secs(0),
            secs(7 * 86400),
            "0s..=7days",
        )?;
        range(
            "encryption.session_max_age",
            e.session_max_age.0,
            secs(1),
            secs(86400),
            "1s..=1day",
        )?;
        range(
            "encryption.replay_window",
            e.replay_window.0,
            secs(10),
            secs(86400),
            "10s..=1day",
        )?;
        if !(1..=1u64 << 40).contains(&e.session_max_messages) {
            return Err(err(
                "encryption.session_max_messages".into(),
                format!(
                    "{} is out of range; expected 1..=2^40",
                    e.session_max_messages
                ),
            ));
        }
        let m = &self.messages;
        if m.max_size.0 == 0 || m.max_size.0 > 64 << 20 {
            return Err(err(
                "messages.max_size".into(),
                format!(
                    "{} bytes is out of range; expected 1B..=64MiB",
                    m.max_size.0
                ),
            ));
        }
        if m.outbox_max_bytes < m.max_size {
            return Err(err(
                "messages.outbox_max_bytes".into(),
                format!(
                    "{} bytes is smaller than messages.max_size ({} bytes): no message of the maximum size would fit",
                    m.outbox_max_bytes.0, m.max_size.0
                ),
            ));
        }
        range(
            "messages.ttl",
            m.ttl.0,
            secs(1),
            secs(30 * 86400),
            "1s..=30days",
        )?;
        range(
            "messages.retry_min",
            m.retry_min.0,
            Duration::from_millis(10),
            secs(3600),
            "10ms..=1h",
        )?;
        range(
            "messages.retry_max",
            m.retry_max.0,
            m.retry_min.0,
            secs(86400),
            "retry_min..=1day",
        )?;
        range(
            "messages.connect_timeout",
            m.connect_timeout.0,
            Duration::from_millis(100),
            secs(600),
            "100ms..=10m",
        )?;
        if !(1..=1_000_000).contains(&m.inbox_capacity) {
            return Err(err(
                "messages.inbox_capacity".into(),
                format!("{} is out of range; expected 1..=1000000", m.inbox_capacity),
            ));
        }
        let st = &self.streams;
        if !(ByteSize(1 << 10)..=ByteSize(1 << 20)).contains(&st.chunk_size) {
            return Err(err(
                "streams.chunk_size".into(),
                format!(
                    "{} bytes is out of range; expected 1KiB..=1MiB",
                    st.chunk_size.0
                ),
            ));
        }
        if !(1..=4096).contains(&st.max_incoming) {
            return Err(err(
                "streams.max_incoming".into(),
                format!("{} is out of range; expected 1..=4096", st.max_incoming),
            ));
        }
        Ok(())
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

fn check_readable_file(p: &Path) -> Result<(), String> {
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
    fn sizes() {
        assert_eq!(ByteSize::parse("8MiB"), Ok(ByteSize(8 << 20)));
        assert_eq!(ByteSize::parse("1.5GB"), Ok(ByteSize(1_500_000_000)));
        assert_eq!(ByteSize::parse("512 KiB"), Ok(ByteSize(512 << 10)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert_eq!(ByteSize::parse("0.5KiB"), Ok(ByteSize(512)));
        for bad in [
            "",
            "MiB",
            "8XB",
            "1.2.3MiB",
            "-1",
            "99999999999999TiB",
            "1.MiB",
        ] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
        let json = serde_json::to_string(&ByteSize(8 << 20)).unwrap();
        assert_eq!(json, "\"8MiB\"");
    }

    #[test]
    fn defaults_are_valid_shape() {
        let c = Config::parse("{}", Path::new("x.json")).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.listen.len(), 2);
    }
}
