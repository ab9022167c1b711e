//! Sync Engine formats: verified, resumable, credential-free transfers of large payloads.
//!
//! A transfer, end to end (the actor, stores and fetchers live in `actors/`; this module is the
//! pure part they share):
//!
//! 1. The sender picks a [`Layout`] (payload size, chunk size), a random transfer id and a random
//!    [`ContentKey`], seals every chunk ([`ChunkCipher`]) and hashes each sealed chunk into the
//!    [`Manifest`], whose root commits to all of it.
//! 2. The sealed chunks go where the receiver can pull them: the sender's own node, or one S3
//!    object uploaded by a [`PartPlan`].
//! 3. The sender issues a signed [`Ticket`] naming the receiver, the root, the locations and the
//!    content key sealed to the receiver's prekey; it travels as an end-to-end message or as a
//!    one-line string.
//! 4. The receiver verifies the ticket, unwraps the key, fetches the manifest and checks it
//!    against the root, then fetches chunks in parallel: each is checked against its manifest
//!    hash before it is opened, written at its offset, and recorded in the [`Journal`].
//!
//! Modules: [`layout`] (offsets), [`manifest`] (hashes and root), [`seal`] (chunk AEAD),
//! [`ticket`] (the signed access ticket and its string form), [`plan`] (S3 multipart parts),
//! [`journal`] (the receiver's resume state).

pub mod journal;
pub mod layout;
pub mod manifest;
pub mod plan;
pub mod seal;
pub mod ticket;

pub use journal::Journal;
pub use layout::{Layout, DEFAULT_CHUNK_SIZE};
pub use manifest::{Cipher, Manifest, ManifestError};
pub use plan::{Part, PartPlan, PlanError};
pub use seal::{ChunkCipher, ContentKey, SealError};
pub use ticket::{Location, Ticket, TicketBody, TicketError, TicketParseError, TicketRequest};
