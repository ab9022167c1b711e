//! SyncActor: offers, downloads, their records, and the embedded store's offer table.
//!
//! SyncActor accepts:
//! - [`Offer`] → seals and hashes a source file, registers the offer, returns the signed ticket
//! - [`Fetch`] → verifies a ticket, unwraps its key and starts the download; returns a
//!   [`TransferHandle`] (progress, cancel, outcome)
//! - [`List`] → every transfer, offers and downloads
//! - [`Revoke`] → stops serving an offer (or cancels a download)
//! - [`Watch`] → the handle of a running download
//!
//! Every offer and download is a record in sled ([`super::records`]): on start the actor serves
//! the offers again (reopening each source, which must be unchanged) and resumes the downloads
//! that were running (their journals say which chunks are in place). Downloads run as tasks on
//! the actor's thread; the per-chunk work of the embedded store runs on the blocking pool. The
//! sender's side is in `offers.rs`, the receiver's in `downloads.rs`.

use super::fetch::{FetchOptions, Progress};
use super::peer::PeerNet;
use super::records::{hotkey_from_hex, Backend, Records, State};
use super::s3::S3Store;
use super::serve::OfferTable;
use super::source::SourceError;
use crate::identity::IdentityActor;
use crate::storage::{Store, StoreError};
use crate::supervise::{contain, Crashed};
use actix::prelude::*;
use hermes_proto::sync::manifest::{HASH_LEN, MANIFEST_HEADER_LEN};
use hermes_proto::sync::{ContentKey, Ticket, TicketError};
use hermes_proto::{Hotkey, Id128};
use libp2p::PeerId;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::sync::watch;

/// How often expired offers are swept out of the offer table.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Errors of the Sync Engine's API.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A request is not valid (the text says why).
    #[error("{0}")]
    Invalid(String),
    /// The source file cannot be offered.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The ticket was refused (the text names the ticket and why).
    #[error("{0}")]
    Ticket(#[from] TicketError),
    /// The receiver could not be found to seal the key to.
    #[error("cannot reach the receiver to learn its current key: {0}")]
    Unreachable(String),
    /// No transfer with this id.
    #[error("no transfer {0}")]
    NotFound(Id128),
    /// The destination exists already.
    #[error("{0} exists already; choose another destination or remove it")]
    Exists(PathBuf),
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// The runtime is stopping.
    #[error("the runtime is stopping")]
    Stopped,
    /// The S3 store failed or is unusable (the text says why).
    #[error("{0}")]
    Store(String),
    /// The actor crashed handling the request (it is restarted).
    #[error(transparent)]
    Crashed(#[from] Crashed),
}

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// This node offers it.
    Offer,
    /// This node downloads it.
    Download,
}

/// A transfer as listed.
#[derive(Debug, Clone, PartialEq)]
pub struct TransferInfo {
    /// Transfer id.
    pub id: Id128,
    /// Offer or download.
    pub direction: Direction,
    /// The other side: the receiver of an offer, the sender of a download.
    pub peer: Hotkey,
    /// Source file (offer) or destination (download).
    pub path: PathBuf,
    /// Payload size.
    pub size: u64,
    /// Download: bytes in place; offer: sealed bytes served so far (repeats included).
    pub done_bytes: u64,
    /// Where it stands.
    pub state: State,
    /// Offer: where its chunks are stored.
    pub backend: Option<Backend>,
    /// Ticket expiry (unix seconds).
    pub expires_at: u64,
    /// Download: bytes per second over this run; offer: 0.
    pub rate: f64,
}

/// A running (or finished) download.
#[derive(Debug, Clone)]
pub struct TransferHandle {
    /// Transfer id.
    pub id: Id128,
    /// Destination.
    pub dest: PathBuf,
    /// Latest progress.
    pub progress: watch::Receiver<Progress>,
    /// `None` while running; then `Ok` or the error's text.
    pub outcome: watch::Receiver<Option<Result<(), String>>>,
    pub(super) cancel: Arc<watch::Sender<bool>>,
}

impl TransferHandle {
    /// Asks the download to stop (it journals what it wrote; fetching again resumes it).
    pub fn cancel(&self) {
        let _ = self.cancel.send(true);
    }

    /// Waits for the download to end.
    ///
    /// # Errors
    /// The download's error text (the partial file is kept for a resume).
    pub async fn wait(&self) -> Result<(), String> {
        let mut rx = self.outcome.clone();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return Err("the runtime stopped before the download ended".into());
            }
        }
    }
}

/// Settings of the Sync Engine.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// This node's hotkey.
    pub me: Hotkey,
    /// This node's peer id.
    pub peer_id: PeerId,
    /// SS58 prefix for texts.
    pub ss58_prefix: u16,
    /// Default chunk size of offers.
    pub chunk_size: u32,
    /// Default ticket lifetime.
    pub ticket_ttl: Duration,
    /// Download options (their parallelism is also the S3 upload's).
    pub fetch: FetchOptions,
    /// The S3 store when `sync.s3` is set: the store, or why it cannot be used (e.g. missing
    /// credentials), reported to each offer that asks for it.
    pub s3: Option<Result<S3Store, String>>,
}

/// An offer to make.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The file.
    pub path: PathBuf,
    /// The receiver.
    pub to: Hotkey,
    /// Subnet.
    pub netuid: u16,
    /// Ticket lifetime (default: the config's).
    pub ttl: Option<Duration>,
    /// Chunk size (default: the config's).
    pub chunk_size: Option<u32>,
    /// The name given to the receiver (default: the file's own name).
    pub file_name: Option<String>,
    /// Where the chunks go.
    pub backend: Backend,
}

impl Message for Offer {
    type Result = Result<Ticket, SyncError>;
}

/// A download to start.
#[derive(Debug, Message)]
#[rtype(result = "Result<TransferHandle, SyncError>")]
pub struct Fetch {
    /// The ticket.
    pub ticket: Box<Ticket>,
    /// The destination file.
    pub dest: PathBuf,
}

/// List every transfer.
#[derive(Debug, Message)]
#[rtype(result = "Vec<TransferInfo>")]
pub struct List;

/// Revoke an offer, or cancel a download.
#[derive(Debug, Message)]
#[rtype(result = "Result<TransferInfo, SyncError>")]
pub struct Revoke(pub Id128);

/// The handle of a running download.
#[derive(Debug, Message)]
#[rtype(result = "Option<TransferHandle>")]
pub struct Watch(pub Id128);

/// What the actor works with; cheap to clone into tasks.
#[derive(Debug, Clone)]
pub(super) struct Engine {
    pub(super) cfg: Arc<SyncConfig>,
    pub(super) records: Records,
    pub(super) identity: Addr<IdentityActor>,
    pub(super) net: PeerNet,
    pub(super) offers: Arc<OfferTable>,
    pub(super) live: Arc<Mutex<HashMap<Id128, TransferHandle>>>,
}

/// The actor.
#[derive(Debug)]
pub struct SyncActor {
    engine: Engine,
    restored: bool,
    restarts: u64,
}

impl SyncActor {
    /// Opens the records; `offers` is the table the embedded store's server reads.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be opened.
    pub fn new(
        cfg: SyncConfig,
        store: &Store,
        identity: Addr<IdentityActor>,
        net: PeerNet,
        offers: Arc<OfferTable>,
    ) -> Result<Self, StoreError> {
        Ok(SyncActor {
            engine: Engine {
                cfg: Arc::new(cfg),
                records: Records::open(store)?,
                identity,
                net,
                offers,
                live: Arc::default(),
            },
            restored: false,
            restarts: 0,
        })
    }
}

impl Actor for SyncActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.restored {
            // Before the first message is handled: a `Fetch` of a download that is being resumed
            // then finds it running instead of starting a second one.
            self.restored = true;
            self.engine.restore();
        }
        ctx.run_interval(SWEEP_INTERVAL, |act, _| act.engine.sweep());
    }
}

impl Supervised for SyncActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        // Offers, downloads and records live in shared state and tasks: nothing to reload.
        self.restarts += 1;
        tracing::warn!(restarts = self.restarts, "SyncActor restarted");
    }
}

impl Handler<Offer> for SyncActor {
    type Result = ResponseFuture<Result<Ticket, SyncError>>;
    fn handle(&mut self, msg: Offer, _: &mut Self::Context) -> Self::Result {
        let e = self.engine.clone();
        Box::pin(async move { e.offer(msg).await })
    }
}

impl Handler<Fetch> for SyncActor {
    type Result = ResponseFuture<Result<TransferHandle, SyncError>>;
    fn handle(&mut self, msg: Fetch, _: &mut Self::Context) -> Self::Result {
        let e = self.engine.clone();
        Box::pin(async move { e.fetch(*msg.ticket, msg.dest).await })
    }
}

impl Handler<List> for SyncActor {
    type Result = Vec<TransferInfo>;
    fn handle(&mut self, _: List, ctx: &mut Self::Context) -> Self::Result {
        contain::<Self, _>("SyncActor", ctx, || self.engine.list()).unwrap_or_default()
    }
}

impl Handler<Revoke> for SyncActor {
    type Result = ResponseFuture<Result<TransferInfo, SyncError>>;
    fn handle(&mut self, msg: Revoke, _: &mut Self::Context) -> Self::Result {
        let e = self.engine.clone();
        Box::pin(async move { e.revoke(msg.0).await })
    }
}

impl Handler<Watch> for SyncActor {
    type Result = Option<TransferHandle>;
    fn handle(&mut self, msg: Watch, _: &mut Self::Context) -> Self::Result {
        self.engine.lock_live().get(&msg.0).cloned()
    }
}

pub(super) fn mtime_ns(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

pub(super) fn from_mtime_ns(ns: u128) -> SystemTime {
    let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
    let nanos = u32::try_from(ns % 1_000_000_000).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

pub(super) fn random_key() -> (Id128, ContentKey) {
    let mut rng = hpke::rand_core::UnwrapErr(getrandom::SysRng);
    (Id128::random(&mut rng), ContentKey::random(&mut rng))
}

pub(super) fn key_from_hex(s: &str) -> Option<ContentKey> {
    let b = hex::decode(s).ok()?;
    Some(ContentKey::from_bytes(
        <[u8; 32]>::try_from(b.as_slice()).ok()?,
    ))
}

/// Expected manifest length of a layout.
pub(super) fn manifest_len(t: &Ticket) -> usize {
    let count = usize::try_from(t.body.layout.chunk_count()).unwrap_or(usize::MAX);
    MANIFEST_HEADER_LEN.saturating_add(HASH_LEN.saturating_mul(count))
}

impl Engine {
    pub(super) fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<Id128, TransferHandle>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves the stored offers again and resumes the downloads that were running.
    fn restore(&self) {
        self.restore_offers();
        self.restore_downloads();
    }

    fn list(&self) -> Vec<TransferInfo> {
        let mut out = Vec::new();
        for (id, r) in self.records.offers() {
            let served = self.offers.get(&id);
            out.push(TransferInfo {
                id,
                direction: Direction::Offer,
                peer: hotkey_from_hex(&r.receiver).unwrap_or(Hotkey([0; 32])),
                path: r.path,
                size: r.size,
                done_bytes: served.map_or(0, |o| o.bytes_served.load(Ordering::Relaxed)),
                state: r.state,
                backend: Some(r.backend),
                expires_at: r.expires_at,
                rate: 0.0,
            });
        }
        let live = self.lock_live().clone();
        for (id, r) in self.records.downloads() {
            // A record's ticket was parsed before it was stored; should it not parse now, the
            // download is still listed, with a blank sender and no expiry.
            let (sender, expires_at) = Ticket::parse(&r.ticket)
                .map_or((Hotkey([0; 32]), 0), |t| (t.body.sender, t.body.expires_at));
            let (done, rate) = match live.get(&id) {
                Some(h) => {
                    let p = *h.progress.borrow();
                    (p.done_bytes, p.rate)
                }
                None => (r.done_bytes, 0.0),
            };
            out.push(TransferInfo {
                id,
                direction: Direction::Download,
                peer: sender,
                path: r.dest,
                size: r.size,
                done_bytes: done,
                state: r.state,
                backend: None,
                expires_at,
                rate,
            });
        }
        out
    }

    async fn revoke(&self, id: Id128) -> Result<TransferInfo, SyncError> {
        if let Some(mut r) = self.records.offer(&id) {
            // Kept in the table (flagged) until it expires, so that a receiver halfway through
            // is told it was revoked rather than that the transfer does not exist.
            if let Some(o) = self.offers.get(&id) {
                o.revoked.store(true, Ordering::Relaxed);
            }
            if !r.state.is_final() || r.state == State::Expired {
                r.state = State::Revoked;
            }
            self.records.save_offer(&id, &r, None).await?;
            tracing::info!(transfer = %id, "offer revoked");
            // Its objects leave the bucket: the presigned URLs answer 404 from now on.
            if r.backend == Backend::S3 {
                if let Some(Ok(store)) = &self.cfg.s3 {
                    store
                        .delete(id)
                        .await
                        .map_err(|e| SyncError::Store(format!("revoked, but {e}")))?;
                }
            }
        } else if self.records.download(&id).is_some() {
            let running = self.lock_live().get(&id).cloned();
            if let Some(h) = running {
                h.cancel();
                let _ = h.wait().await;
            }
        } else {
            return Err(SyncError::NotFound(id));
        }
        self.list()
            .into_iter()
            .find(|t| t.id == id)
            .ok_or(SyncError::NotFound(id))
    }
}
