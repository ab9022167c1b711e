//! Hermes actors: each owns one concern of a node and talks to the others through typed messages
//! over bounded actix mailboxes.
//!
//! # Layout
//! - [`storage`]: the node's single sled database, its directory lock and named trees.
//! - [`identity`]: the IdentityActor (hotkey, transport key, prekey, binding record) and the key
//!   file formats it reads and writes.
//! - [`chain`]: the ChainActor and the `Chain` backends (dev chain, static snapshot, and the
//!   Subtensor and Hypertensor JSON-RPC backends in `chain::rpc`).
//! - [`consensus`]: the ConsensusActor (follows epochs, proposes when elected, attests what the
//!   application's hook agrees with; duties persisted so nothing is signed twice).
//! - [`firewall`]: the FirewallActor, which publishes the admission policy snapshot.
//! - [`network`]: the network task owning the libp2p Swarm: transport filter, admission gate,
//!   binding exchange, sled-backed Kademlia store, gossipsub.
//! - [`stream`]: the StreamActor: end-to-end encrypted messages (durable outbox, exactly-once
//!   delivery) and streams.
//! - [`sync`]: the Sync Engine's I/O: sealing chunks from a source file, and the parallel,
//!   verified, resumable download engine.
//! - [`supervise`]: panic containment so a supervised actor restarts instead of taking its arbiter
//!   down with it.
//!
//! Protocol logic lives in `hermes-proto`; handlers here translate messages into calls there.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod chain;
pub mod consensus;
pub mod firewall;
mod https;
pub mod identity;
pub mod network;
pub mod storage;
pub mod stream;
pub mod supervise;
pub mod sync;

pub use identity::{IdentityActor, IdentityError, IdentityInfo};
pub use storage::{Store, StoreError, StoreOptions};

/// Current unix time in whole seconds; 0 if the clock reads before 1970, which then makes every
/// time-bounded record look not-yet-valid rather than panicking.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
