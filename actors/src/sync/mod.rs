//! The Sync Engine's I/O: sealing chunks straight from a source file on the sender, and the
//! parallel, verified, resumable download engine on the receiver.
//!
//! The formats (layout, manifest, chunk sealing, journal, ticket) are pure code in
//! `hermes_proto::sync`; this module does the file, network and concurrency work around them.
//! The download engine knows nothing of the network: the receiver pulls chunks through the
//! [`ChunkSource`] trait, which the `/hermes/sync/1` protocol ([`peer`]) and presigned-URL range
//! GETs implement.
//!
//! - [`source`]: [`SealedSource`], the sender's view of a source file: the manifest built in
//!   one streaming pass at offer time, then chunk reads that seal in place and refuse any chunk
//!   whose sealed bytes no longer match the manifest (a changed source).
//! - [`fetch`]: [`Downloader`], N parallel fetches into a preallocated `.partial` file, each
//!   chunk verified before it is opened, progress journaled durably, an atomic rename at the end.
//! - [`serve`]: the embedded store, serving offers over `/hermes/sync/1` to their receivers.
//! - [`peer`]: [`PeerSource`], the receiver's side of `/hermes/sync/1`.
//! - [`actor`]: [`SyncActor`], offers and downloads with their records ([`records`]) in sled.
//! - [`s3`]: the S3-compatible store: [`S3Store`] uploads a transfer as one multipart object
//!   (resumable from the server's listing), presigns and deletes it; [`PresignedSource`] is the
//!   receiver's [`ChunkSource`] over the presigned URLs.

pub mod actor;
mod downloads;
pub mod fetch;
mod offers;
pub mod peer;
pub mod records;
pub mod s3;
pub mod serve;
pub mod source;

pub use actor::{
    Direction, Fetch, List, Offer, Revoke, SyncActor, SyncConfig, SyncError, TransferHandle,
    TransferInfo, Watch,
};
pub use fetch::{
    ChunkSource, ChunkSourceError, DownloadSummary, Downloader, FetchError, FetchOptions, Progress,
};
pub use peer::{PeerNet, PeerSource};
pub use records::{Backend, State};
pub use s3::{PresignedSource, S3Credentials, S3Error, S3Settings, S3Store, UploadSummary};
pub use serve::{OfferTable, Server};
pub use source::{LocalChunkSource, SealedSource, SourceError, SourceStamp};
