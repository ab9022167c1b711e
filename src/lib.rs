//! Hermes: an embeddable runtime for direct, wallet-authenticated links between subnet nodes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hermes::Error> {
//! let config = hermes::Config::load("hermes.json".as_ref())?;
//! let node = hermes::Runtime::builder(config).start().await?;
//! let me = node.identity().await?;
//! println!("{} is {}", me.ss58, me.peer_id);
//! node.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - this crate (`src/`): the public facade — [`Runtime`], [`RuntimeHandle`], [`Config`] — and
//!   the `hermes` CLI binary.
//! - `hermes-actors` (`actors/`): one module per actor; each owns one concern of the node.
//! - `hermes-proto` (`proto/`): wire types, codecs and records; pure, no I/O.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod config;
pub mod control;
pub mod logging;
pub mod messages;
pub mod runtime;
pub mod sync;

pub use config::{Config, ConfigError};
pub use hermes_actors::consensus::{
    ConsensusHook, ConsensusStatus, EpochOutcome, EqualScores, Equivocation,
};
pub use hermes_actors::firewall::FirewallStats;
pub use hermes_actors::identity::keys::{HotkeyPair, KeyError, HOTKEY_URI_ENV};
pub use hermes_actors::IdentityInfo;
pub use hermes_proto as proto;
pub use messages::{
    DeliveryEvent, HandOver, Inbound, Inbox, IncomingStream, IncomingStreams, MessageId,
    MessageStats, OutboxEntry, SendOptions, StreamError, StreamOptions, StreamReader, StreamReport,
    StreamWriter,
};
pub use runtime::{Runtime, RuntimeBuilder, RuntimeHandle};

use hermes_actors::{IdentityError, StoreError};

/// Errors from the public API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid; nothing was started.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another runtime holds the data dir.
    #[error("data dir in use: {0} is locked by another Hermes runtime")]
    DataDirInUse(std::path::PathBuf),
    /// The database could not be opened or written.
    #[error(transparent)]
    Storage(StoreError),
    /// Keys could not be loaded, or a record failed verification.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Key files could not be read or written.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The runtime could not start or its thread failed.
    #[error("runtime failure: {0}")]
    Startup(String),
    /// A network operation failed.
    #[error("network: {0}")]
    Network(String),
    /// A lookup found nothing valid.
    #[error("not found: {0}")]
    NotFound(String),
    /// An argument was invalid.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A message or stream operation failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A Sync Engine operation failed (the text says why).
    #[error("{0}")]
    Sync(String),
    /// The runtime has been shut down.
    #[error("the runtime has been shut down")]
    Stopped,
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InUse(p) => Error::DataDirInUse(p),
            other => Error::Storage(other),
        }
    }
}

/// Loads the transport key at `path`, generating an ed25519 key there if the file is missing.
///
/// # Errors
/// [`KeyError`] when the file exists but is not a supported key, or cannot be written.
pub fn transport_key(path: &std::path::Path) -> Result<libp2p::identity::Keypair, KeyError> {
    hermes_actors::identity::keys::load_or_create_transport_key(path, true)
}
