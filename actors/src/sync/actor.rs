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
//! the actor's thread; the per-chunk work of the embedded store runs on the blocking pool.

use super::fetch::{ChunkSource, Downloader, FetchError, FetchOptions, Progress};
use super::peer::{PeerNet, PeerSource};
use super::records::{
    hotkey_from_hex, hotkey_hex, Backend, DownloadRecord, OfferRecord, Records, State,
};
use super::serve::{OfferTable, ServedOffer};
use super::source::{SealedSource, SourceError, SourceStamp};
use crate::identity::{IdentityActor, IssueTicket, OpenTicket};
use crate::network::reach::reach;
use crate::network::Command;
use crate::storage::{Store, StoreError};
use crate::supervise::{contain, Crashed};
use actix::prelude::*;
use hermes_proto::sync::manifest::{HASH_LEN, MANIFEST_HEADER_LEN};
use hermes_proto::sync::ticket::MAX_ADDRS;
use hermes_proto::sync::{
    Cipher, ContentKey, Location, Manifest, Ticket, TicketError, TicketRequest,
};
use hermes_proto::{Hotkey, Id128};
use libp2p::{Multiaddr, PeerId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::sync::{oneshot, watch};

/// How often expired offers are swept out of the offer table.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// How long an offer waits to learn the receiver's current prekey.
const FIND_RECEIVER_TIMEOUT: Duration = Duration::from_secs(20);

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
    cancel: Arc<watch::Sender<bool>>,
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
    /// Download options.
    pub fetch: FetchOptions,
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
struct Engine {
    cfg: Arc<SyncConfig>,
    records: Records,
    identity: Addr<IdentityActor>,
    net: PeerNet,
    offers: Arc<OfferTable>,
    live: Arc<Mutex<HashMap<Id128, TransferHandle>>>,
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

fn mtime_ns(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn from_mtime_ns(ns: u128) -> SystemTime {
    let secs = u64::try_from(ns / 1_000_000_000).unwrap_or(u64::MAX);
    let nanos = u32::try_from(ns % 1_000_000_000).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

fn random_key() -> (Id128, ContentKey) {
    let mut rng = hpke::rand_core::UnwrapErr(getrandom::SysRng);
    (Id128::random(&mut rng), ContentKey::random(&mut rng))
}

fn key_from_hex(s: &str) -> Option<ContentKey> {
    let b = hex::decode(s).ok()?;
    Some(ContentKey::from_bytes(
        <[u8; 32]>::try_from(b.as_slice()).ok()?,
    ))
}

/// Expected manifest length of a layout.
fn manifest_len(t: &Ticket) -> usize {
    let count = usize::try_from(t.body.layout.chunk_count()).unwrap_or(usize::MAX);
    MANIFEST_HEADER_LEN.saturating_add(HASH_LEN.saturating_mul(count))
}

impl Engine {
    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<Id128, TransferHandle>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn offer(&self, o: Offer) -> Result<Ticket, SyncError> {
        let cfg = &self.cfg;
        if o.to == cfg.me {
            return Err(SyncError::Invalid(
                "the receiver is this node's own hotkey".into(),
            ));
        }
        if o.backend == Backend::S3 {
            return Err(SyncError::Invalid(
                "the S3 backend is not configured on this node (sync.s3)".into(),
            ));
        }
        let ttl = o.ttl.unwrap_or(cfg.ticket_ttl);
        let ttl_secs = ttl.as_secs();
        if ttl_secs == 0 || ttl_secs > hermes_proto::sync::ticket::MAX_TICKET_LIFETIME_SECS {
            return Err(SyncError::Invalid(format!(
                "a ticket lives 1 s to 30 days; {} s was asked",
                ttl.as_secs_f64()
            )));
        }
        let path = std::fs::canonicalize(&o.path).map_err(|source| SourceError::Io {
            path: o.path.clone(),
            source,
        })?;
        if !path.is_file() {
            return Err(SyncError::Invalid(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let file_name = match &o.file_name {
            Some(n) => Some(n.clone()),
            None => path
                .file_name()
                .and_then(|n| n.to_str())
                .map(|n| n.chars().take(255).collect()),
        };
        // The receiver's current prekey, from its verified binding: a connected peer's, else
        // the one it published in the DHT, else by connecting to it.
        let n = &self.net;
        let prekey = match self.published_prekey(&o.to).await {
            Some(p) => p,
            None => {
                reach(
                    &n.commands,
                    &n.directory,
                    &o.to,
                    n.ss58_prefix,
                    FIND_RECEIVER_TIMEOUT,
                )
                .await
                .map_err(|e| SyncError::Unreachable(e.to_string()))?
                .binding
                .record
                .prekey
            }
        };
        let (transfer_id, key) = random_key();
        let chunk_size = o.chunk_size.unwrap_or(cfg.chunk_size);
        let sealing_key = ContentKey::from_bytes(*key.expose());
        let p = path.clone();
        let source = tokio::task::spawn_blocking(move || {
            SealedSource::offer(&p, transfer_id, sealing_key, chunk_size, |_, _| {})
        })
        .await
        .map_err(|_| SyncError::Stopped)??;
        let manifest = source.manifest().clone();
        let layout = *manifest.layout();
        let addrs = self.listen_addrs().await;
        let request = TicketRequest {
            transfer_id,
            receiver: o.to,
            receiver_prekey: prekey,
            netuid: o.netuid,
            expires_at: crate::unix_now().saturating_add(ttl_secs),
            layout,
            cipher: Cipher::Aes256Gcm,
            root: manifest.root(),
            file_name,
            locations: vec![Location::Peer {
                peer_id: cfg.peer_id.to_bytes(),
                addrs,
            }],
        };
        let ticket = self
            .identity
            .send(IssueTicket {
                request,
                key: ContentKey::from_bytes(*key.expose()),
            })
            .await
            .map_err(|_| SyncError::Stopped)??;
        let stamp = source.stamp();
        let record = OfferRecord {
            transfer_id: transfer_id.to_hex(),
            path,
            receiver: hotkey_hex(&o.to),
            netuid: o.netuid,
            created_at: crate::unix_now(),
            expires_at: ticket.body.expires_at,
            size: layout.size(),
            chunk_size: layout.chunk_size(),
            key: hex::encode(key.expose()),
            stamp_size: stamp.size,
            stamp_mtime_ns: mtime_ns(stamp.modified),
            backend: o.backend,
            state: State::Serving,
            ticket: ticket.to_string(),
        };
        self.records
            .save_offer(&transfer_id, &record, Some(&manifest))
            .await?;
        self.offers.insert(Arc::new(ServedOffer::new(
            Arc::new(source),
            o.to,
            ticket.body.expires_at,
        )));
        tracing::info!(transfer = %transfer_id, size = layout.size(), to = %o.to.to_ss58(cfg.ss58_prefix), "offer ready");
        Ok(ticket)
    }

    /// The prekey of `to`'s current binding when it is connected, or published in the DHT
    /// (verified there by the network before it is returned).
    async fn published_prekey(&self, to: &Hotkey) -> Option<[u8; 32]> {
        if let Some(p) = self.net.directory.by_hotkey(to) {
            return Some(p.binding.record.prekey);
        }
        let (tx, rx) = oneshot::channel();
        self.net.commands.send(Command::Find(*to, tx)).await.ok()?;
        let b = tokio::time::timeout(FIND_RECEIVER_TIMEOUT, rx)
            .await
            .ok()?
            .ok()?
            .ok()?;
        (b.record.expires_at > crate::unix_now()).then_some(b.record.prekey)
    }

    /// This node's listen addresses, binary, for the ticket (at most [`MAX_ADDRS`]).
    async fn listen_addrs(&self) -> Vec<Vec<u8>> {
        let (tx, rx) = oneshot::channel();
        if self
            .net
            .commands
            .send(Command::ListenAddrs(tx))
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await
            .unwrap_or_default()
            .into_iter()
            .take(MAX_ADDRS)
            .map(|a| a.to_vec())
            .collect()
    }

    async fn fetch(&self, ticket: Ticket, dest: PathBuf) -> Result<TransferHandle, SyncError> {
        let id = ticket.body.transfer_id;
        let running = self.lock_live().get(&id).cloned();
        if let Some(h) = running.filter(|h| h.outcome.borrow().is_none()) {
            if h.dest == dest {
                return Ok(h);
            }
            return Err(SyncError::Invalid(format!(
                "this transfer is being downloaded into {} right now; wait for it or cancel it \
                 (`transfers revoke {id}`)",
                h.dest.display()
            )));
        }
        ticket.verify(crate::unix_now(), &self.cfg.me)?;
        if dest.as_os_str().is_empty() {
            return Err(SyncError::Invalid("the destination path is empty".into()));
        }
        if dest.exists() {
            return Err(SyncError::Exists(dest));
        }
        // A download of this transfer started earlier keeps its key (the prekey may be gone).
        let earlier = self.records.download(&id);
        let key = match earlier.as_ref().and_then(|r| key_from_hex(&r.key)) {
            Some(k) => k,
            None => self
                .identity
                .send(OpenTicket(Box::new(ticket.clone())))
                .await
                .map_err(|_| SyncError::Stopped)??,
        };
        let record = DownloadRecord {
            transfer_id: id.to_hex(),
            ticket: ticket.to_string(),
            dest: dest.clone(),
            key: hex::encode(key.expose()),
            created_at: earlier
                .as_ref()
                .map_or_else(crate::unix_now, |r| r.created_at),
            size: ticket.body.layout.size(),
            done_bytes: earlier.as_ref().map_or(0, |r| r.done_bytes),
            state: State::Fetching,
        };
        self.records.save_download(&id, &record, None).await?;
        Ok(self.start_download(ticket, key, record))
    }

    fn start_download(
        &self,
        ticket: Ticket,
        key: ContentKey,
        record: DownloadRecord,
    ) -> TransferHandle {
        let id = ticket.body.transfer_id;
        let (progress_tx, progress) = watch::channel(Progress {
            done_bytes: record.done_bytes,
            total_bytes: record.size,
            ..Progress::default()
        });
        let (outcome_tx, outcome) = watch::channel(None);
        let (cancel, cancel_rx) = watch::channel(false);
        let handle = TransferHandle {
            id,
            dest: record.dest.clone(),
            progress,
            outcome,
            cancel: Arc::new(cancel),
        };
        self.lock_live().insert(id, handle.clone());
        let e = self.clone();
        actix::spawn(async move {
            let result = e
                .download(&ticket, key, &record.dest, progress_tx.clone(), cancel_rx)
                .await;
            let done = progress_tx.borrow().done_bytes;
            let state = match &result {
                Ok(()) => State::Done,
                Err(FetchError::Cancelled) => State::Cancelled,
                Err(err) => State::Failed(err.to_string()),
            };
            match &state {
                State::Failed(why) => {
                    tracing::warn!(transfer = %id, error = %why, "download stopped; the partial file is kept for a resume")
                }
                s => tracing::info!(transfer = %id, state = %s, "download ended"),
            }
            let rec = DownloadRecord {
                done_bytes: done,
                state,
                ..record
            };
            if let Err(err) = e.records.save_download(&id, &rec, None).await {
                tracing::error!(transfer = %id, error = %err, "cannot record the download's end");
            }
            let _ = outcome_tx.send(Some(result.map(|_| ()).map_err(|e| e.to_string())));
        });
        handle
    }

    /// Tries the ticket's locations in order; a location that fails for good hands over to
    /// the next, which resumes from the same journal.
    async fn download(
        &self,
        ticket: &Ticket,
        key: ContentKey,
        dest: &Path,
        progress: watch::Sender<Progress>,
        cancel: watch::Receiver<bool>,
    ) -> Result<(), FetchError> {
        let b = &ticket.body;
        let mut last = None;
        for loc in &b.locations {
            let r = match loc {
                Location::Peer { addrs, .. } => {
                    let addrs = addrs
                        .iter()
                        .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
                        .collect();
                    let source =
                        PeerSource::new(self.net.clone(), b.sender, addrs, b.transfer_id, b.layout);
                    let manifest = self.manifest_via(ticket, &source).await;
                    match manifest {
                        Ok(m) => {
                            self.run_with(ticket, m, &key, dest, &source, &progress, &cancel)
                                .await
                        }
                        Err(e) => Err(e),
                    }
                }
                Location::Presigned { .. } => Err(FetchError::BadOptions(
                    "presigned locations are not supported by this build".into(),
                )),
            };
            match r {
                Ok(()) => return Ok(()),
                Err(
                    e @ (FetchError::Cancelled
                    | FetchError::DiskFull { .. }
                    | FetchError::Busy { .. }),
                ) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(FetchError::BadOptions(
            "the ticket names no location".into(),
        )))
    }

    /// The manifest: the stored one, or fetched through `source` and checked against the root.
    async fn manifest_via(
        &self,
        ticket: &Ticket,
        source: &PeerSource,
    ) -> Result<Manifest, FetchError> {
        let b = &ticket.body;
        if let Some(m) = self.records.manifest(b'd', &b.transfer_id) {
            if m.root() == b.root {
                return Ok(m);
            }
        }
        let bytes = source
            .fetch_manifest(manifest_len(ticket))
            .await
            .map_err(FetchError::Manifest)?;
        let m = Manifest::decode_verified(&bytes, &b.root, &b.layout, b.cipher)
            .map_err(|_| FetchError::RootMismatch)?;
        if let Some(rec) = self.records.download(&b.transfer_id) {
            let _ = self
                .records
                .save_download(&b.transfer_id, &rec, Some(&m))
                .await;
        }
        Ok(m)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_with<S: ChunkSource>(
        &self,
        ticket: &Ticket,
        manifest: Manifest,
        key: &ContentKey,
        dest: &Path,
        source: &S,
        progress: &watch::Sender<Progress>,
        cancel: &watch::Receiver<bool>,
    ) -> Result<(), FetchError> {
        let b = &ticket.body;
        let d = Downloader::new(
            b.transfer_id,
            b.root,
            manifest,
            ContentKey::from_bytes(*key.expose()),
            dest.to_path_buf(),
        )?
        .with_options(self.cfg.fetch)
        .with_progress(progress.clone())
        .with_cancel(cancel.clone());
        d.run(source).await.map(|_| ())
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
            let sender = Ticket::parse(&r.ticket)
                .map(|t| t.body.sender)
                .unwrap_or(Hotkey([0; 32]));
            let expires_at = Ticket::parse(&r.ticket).map_or(0, |t| t.body.expires_at);
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

    /// Serves the stored offers again and resumes the downloads that were running.
    fn restore(&self) {
        let now = crate::unix_now();
        for (id, mut r) in self.records.offers() {
            if r.state != State::Serving {
                continue;
            }
            if now >= r.expires_at {
                r.state = State::Expired;
                self.save_later(id, r);
                continue;
            }
            let (Some(key), Some(manifest), Some(receiver)) = (
                key_from_hex(&r.key),
                self.records.manifest(b'o', &id),
                hotkey_from_hex(&r.receiver),
            ) else {
                r.state = State::Failed("the stored offer is damaged".into());
                self.save_later(id, r);
                continue;
            };
            let stamp = SourceStamp {
                size: r.stamp_size,
                modified: from_mtime_ns(r.stamp_mtime_ns),
            };
            match SealedSource::reopen(&r.path, id, key, manifest, stamp) {
                Ok(s) => {
                    self.offers.insert(Arc::new(ServedOffer::new(
                        Arc::new(s),
                        receiver,
                        r.expires_at,
                    )));
                    tracing::info!(transfer = %id, "offer served again");
                }
                Err(e) => {
                    tracing::warn!(transfer = %id, error = %e, "offer can no longer be served");
                    r.state = State::Failed(e.to_string());
                    self.save_later(id, r);
                }
            }
        }
        for (id, r) in self.records.downloads() {
            if r.state != State::Fetching {
                continue;
            }
            let (Ok(ticket), Some(key)) = (Ticket::parse(&r.ticket), key_from_hex(&r.key)) else {
                continue;
            };
            tracing::info!(transfer = %id, dest = %r.dest.display(), "resuming download");
            self.start_download(ticket, key, r);
        }
    }

    /// Writes an offer record from a synchronous context.
    fn save_later(&self, id: Id128, r: OfferRecord) {
        let records = self.records.clone();
        actix::spawn(async move {
            if let Err(e) = records.save_offer(&id, &r, None).await {
                tracing::error!(transfer = %id, error = %e, "cannot update the offer's record");
            }
        });
    }

    /// Drops expired offers (revoked ones included) from the table; a serving one is marked
    /// expired in its record.
    fn sweep(&self) {
        let now = crate::unix_now();
        for id in self.offers.expired(now) {
            let Some(mut r) = self.records.offer(&id) else {
                continue;
            };
            if r.state == State::Serving {
                r.state = State::Expired;
                self.save_later(id, r);
            }
        }
    }
}
