//! Hermes wire types, codecs and identity records.
//!
//! # Layout
//! - [`codec`]: bounded little readers/writers shared by every decoder; `Incomplete` is kept
//!   distinct from `Invalid` so stream framers can wait for more bytes.
//! - [`peer_id`]: the chain's `validate_peer_id` rule, byte for byte.
//! - [`hotkey`]: SS58 addresses and sr25519 signatures in the standard substrate signing context.
//! - [`binding`]: the signed record that binds a libp2p peer id to a wallet hotkey.
//! - [`chain`]: registry snapshots (subnet, hotkey, peer id, stake, class) as the firewall reads them.
//! - [`consensus`]: epochs, election, signed proposals and attestations, finalization, node
//!   classes with penalties or reputation: one state machine for the dev chain and the nodes.
//! - [`firewall`]: the admission policy and the address limiters, as pure decisions.
//! - [`envelope`]: end-to-end sessions: signed HPKE session headers and the message ratchet.
//! - [`chunk`]: stream chunks sealed with the STREAM construction.
//! - [`filename`]: names carried with streams, sanitized for the receiver's file system.
//! - [`frame`]: wire frames of `/hermes/msg/1` and of the stream protocol's control exchange.
//! - [`prekey`]: the rotating prekey ring and its fixed-slot file format.
//! - [`outbox`]: the durable outbox (queues, retries with backoff, expiry) over a store trait.
//! - [`inbox`]: the receiver's persisted seen-set that makes delivery exactly-once.
//! - [`msglink`]: both ends of a message substream as state machines.
//! - [`reason`]: why a receiver refused something, one counter per reason.
//! - [`sync`]: Sync Engine formats: layout, manifest, chunk sealing, tickets, S3 part plan,
//!   resume journal.
//!
//! This crate is sans-IO: no sockets, files, clocks or global RNGs. Callers pass `now` in and get
//! values or typed errors out, which is what makes every decoder fuzzable and every state machine
//! testable on virtual time.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod binding;
pub mod chain;
pub mod chunk;
pub mod codec;
pub mod consensus;
pub mod envelope;
pub mod filename;
pub mod firewall;
pub mod frame;
pub mod hotkey;
pub mod inbox;
pub mod msglink;
pub mod outbox;
pub mod peer_id;
pub mod prekey;
pub mod reason;
pub mod sync;

pub use binding::{BindingError, BindingRecord, SignedBinding};
pub use codec::DecodeError;
pub use envelope::Id128;
pub use hotkey::{Hotkey, HotkeyError};
pub use peer_id::{check_peer_id, validate_peer_id, PeerIdRuleError};
pub use reason::RejectReason;
