//! StreamActor: end-to-end encrypted messages with a durable outbox, and encrypted streams.
//!
//! Owns the outbox (messages not yet acknowledged), the seen-set (message and session ids already
//! received) and the links: one writer task per destination with queued messages, one reader task
//! per inbound message substream. All of them run on the actor's own thread, so a handoff between
//! a link task and the actor never crosses threads. Protocol logic lives in `hermes-proto`
//! ([`hermes_proto::msglink`], [`hermes_proto::outbox`], [`hermes_proto::inbox`]); this module
//! moves bytes and keeps the books.
//!
//! Accepts:
//! - [`SendMessage`] → the message id, once the message is in the outbox
//! - [`GetStats`] → [`MessageStats`]; [`GetOutbox`] → the messages waiting, each with the last
//!   reason its recipient could not be reached; [`CancelMessage`] → drops one queued message
//! - from its link tasks: `Pull`, `WriterEvent`, `WriterClosed`, `NoteSession`, `MakeCurrent`,
//!   `CloseSession`, `Accept`, `ReleaseIds`
//!
//! Runs under `actix::Supervisor`: handlers and the link tasks spawned into its context contain
//! panics ([`crate::supervise`]), and a restart reloads the outbox and the seen-set from sled.
//!
//! Emits [`Inbound`] messages into the inbox channel (read through the runtime's subscription),
//! [`DeliveryEvent`]s on a broadcast channel, and [`Command::Connect`] to the network task when a
//! destination is not connected.
//!
//! A message's path: `SendMessage` → outbox (sled) → a writer for its destination connects if
//! needed, opens `/hermes/msg/1`, starts a session (sealed by the IdentityActor) and pulls batches
//! → the remote reader opens each message, offers its id to the seen-set and hands it to the
//! application; once the application drops it (acknowledges it, `Settle`), the id is committed
//! and flushed with whatever else was acknowledged meanwhile (group commit), and only then is it
//! acknowledged to the sender → the writer reports the acknowledgement, the outbox deletes the
//! message, and a `Release` lets the receiver forget the id. Any failure on the way leaves the
//! message in the outbox, retried with exponential backoff and jitter until its TTL ends.

pub mod budget;
pub mod bulk;
mod link;
mod pump;
pub mod store;
mod wire;

use crate::identity::{IdentityActor, SharedBinding};
use crate::network::directory::PeerDirectory;
use crate::network::gate::SharedPolicy;
use crate::network::substream::{InboundSubstream, Substreams, MSG_PROTOCOL, STREAM_PROTOCOL};
use crate::network::{Command, PeerInfo};
use crate::storage::{Store, StoreError};
use crate::supervise::{contain, contain_with, task_ended, Crashed};
use actix::prelude::*;
use futures::FutureExt as _;
use hermes_proto::envelope::MessageBody;
use hermes_proto::inbox::Dedup;
use hermes_proto::msglink::{accept_message, Accepted, Refusal, SenderEvent, SessionLimits};
use hermes_proto::outbox::{Cancelled, Meta, Outbox, OutboxError, OutboxLimits, Outgoing};
use hermes_proto::reason::RejectReason;
use hermes_proto::{Hotkey, Id128};
use libp2p::PeerId;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::{SledOutbox, SledSeen};
use thiserror::Error;
use tokio::sync::{broadcast, mpsc, oneshot};

/// Mailbox capacity. Link tasks wait (`send().await`) when it is full, which is how a busy actor
/// slows its peers down instead of queueing without bound.
pub const MAILBOX: usize = 1024;
/// Most messages handed to a writer per pull.
const PULL_MAX_MSGS: usize = 256;
/// Most payload bytes handed to a writer per pull (one large message may exceed it).
const PULL_MAX_BYTES: usize = 4 << 20;
/// Messages held for a connected destination before `send` waits for acknowledgements: the
/// backpressure that keeps a fast sender from building a backlog a live link cannot drain (and
/// that would otherwise end up on disk).
pub const SEND_WINDOW: usize = 2048;
/// How often timers (retries, expiry) are checked.
const TICK: Duration = Duration::from_millis(100);
/// How often expired seen ids are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Capacity of the delivery-event broadcast; slow listeners lose the oldest events.
pub const EVENT_QUEUE: usize = 4096;
/// Capacity of the queue of inbound substreams waiting for the stream layer.
pub const INBOUND_SUBSTREAM_QUEUE: usize = 256;

/// A message delivered to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Sender's SS58 address.
    pub from: String,
    /// Sender's hotkey.
    pub hotkey: Hotkey,
    /// Sender's peer id.
    pub peer_id: PeerId,
    /// Subnet the message belongs to.
    pub netuid: u16,
    /// Message id (the one `send` returned at the sender).
    pub id: Id128,
    /// When the delivered copy was sealed (sender's clock, unix seconds).
    pub sent_at: u64,
    /// The payload.
    pub bytes: Vec<u8>,
    /// Acknowledges the message when the last copy of this `Inbound` is dropped.
    receipt: Receipt,
}

impl Inbound {
    /// Acknowledges the message: the application has done with it what it needed to (stored
    /// it, acted on it). Dropping the `Inbound` (its last clone) does the same; this only says
    /// so. Until then the sender keeps the message, and a crash of this node delivers it again
    /// after the restart (with the same [`Inbound::id`]). After it, a crash of this node may
    /// still deliver it once more if the acknowledgement was not yet on disk (a few
    /// milliseconds: see `docs/SECURITY.md`), again with the same id.
    pub fn ack(self) {}

    /// Gives the message back unacknowledged (the application could not process it): its
    /// sender keeps it and delivers it again later, with the same id.
    pub fn give_back(self) {
        self.receipt.0.armed.store(false, Ordering::Release);
    }

    /// Marks the message as handed to the application: from now on dropping it acknowledges
    /// it. Returns `false`, leaving it unarmed, once the node's stream layer has stopped: an
    /// acknowledgement could no longer be recorded, so the message must not be handed out (it
    /// comes again after the restart). A message dropped before this (still queued at shutdown)
    /// is not acknowledged either. The inbox calls this as it hands a message out.
    #[doc(hidden)]
    pub fn handed_over(&self) -> bool {
        if !self.receipt.0.actor.connected() {
            return false;
        }
        self.receipt.0.armed.store(true, Ordering::Release);
        true
    }
}

/// The acknowledgement owed for one [`Inbound`]: sent to the StreamActor when the last clone
/// drops. Equal to every other receipt, so that messages compare by their content.
#[derive(Clone)]
struct Receipt(Arc<ReceiptInner>);

struct ReceiptInner {
    actor: Addr<StreamActor>,
    from: Hotkey,
    id: Id128,
    armed: std::sync::atomic::AtomicBool,
    /// Fired once the acknowledgement is durable; the reader then acknowledges to the sender.
    durable: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl Drop for ReceiptInner {
    fn drop(&mut self) {
        let durable = self.durable.lock().ok().and_then(|mut d| d.take());
        self.actor.do_send(Settle {
            from: self.from,
            id: self.id,
            acked: self.armed.load(Ordering::Acquire),
            durable,
        });
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receipt")
    }
}

impl PartialEq for Receipt {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Receipt {}

/// What became of a sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryEvent {
    /// The recipient acknowledged it (it reached its application, now or earlier).
    Delivered {
        /// Message id.
        id: Id128,
        /// Recipient.
        to: Hotkey,
    },
    /// Its TTL ended before it could be delivered.
    Expired {
        /// Message id.
        id: Id128,
        /// Recipient.
        to: Hotkey,
    },
    /// The recipient refused it for good (too large for it, outside its subnets, or expired
    /// on arrival).
    Failed {
        /// Message id.
        id: Id128,
        /// Recipient.
        to: Hotkey,
        /// The recipient's reason.
        reason: String,
    },
}

/// Errors from the stream layer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The message is larger than `messages.max_size`.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes (messages.max_size); send it as a stream instead")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The outbox is full.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// The database failed.
    #[error("storage: {0}")]
    Storage(String),
    /// The destination could not be reached.
    #[error("cannot reach {0}")]
    Unreachable(String),
    /// The destination refused.
    #[error("refused by the recipient: {0}")]
    Refused(String),
    /// An argument was invalid.
    #[error("invalid: {0}")]
    Invalid(String),
    /// No message with this id waits in the outbox (never sent from here, or already
    /// delivered, refused, expired or cancelled).
    #[error("no message {0} in the outbox (already delivered, refused, expired or cancelled?)")]
    NotInOutbox(Id128),
    /// A transport or framing failure.
    #[error("stream I/O: {0}")]
    Io(String),
    /// The runtime is shutting down.
    #[error("the stream layer has stopped")]
    Stopped,
    /// The StreamActor panicked while handling the request; it is restarting.
    #[error(transparent)]
    Crashed(#[from] Crashed),
}

impl From<StoreError> for StreamError {
    fn from(e: StoreError) -> Self {
        StreamError::Storage(e.to_string())
    }
}

/// Counters shared by the actor, its link tasks and open streams.
#[derive(Debug, Default)]
pub struct StreamCounters {
    rejected: [AtomicU64; RejectReason::ALL.len()],
    /// Messages accepted by `send`.
    pub sent: AtomicU64,
    /// Messages acknowledged by their recipient.
    pub delivered: AtomicU64,
    /// Messages handed to this node's application.
    pub received: AtomicU64,
    /// Retried copies recognised and not delivered again.
    pub duplicates: AtomicU64,
    /// Message sessions opened by peers.
    pub sessions_in: AtomicU64,
    /// Message sessions this node started.
    pub sessions_out: AtomicU64,
    /// Streams this node opened.
    pub streams_out: AtomicU64,
    /// Streams accepted from peers.
    pub streams_in: AtomicU64,
    /// Stream bytes sent (plaintext).
    pub stream_bytes_out: AtomicU64,
    /// Stream bytes received and verified (plaintext).
    pub stream_bytes_in: AtomicU64,
}

impl StreamCounters {
    /// Counts one refusal.
    pub fn reject(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals for one reason.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// A snapshot of the message and stream counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageStats {
    /// Messages accepted by `send`.
    pub sent: u64,
    /// Messages acknowledged by their recipient.
    pub delivered: u64,
    /// Messages delivered to this node's application.
    pub received: u64,
    /// Retried copies recognised and not delivered again.
    pub duplicates: u64,
    /// Messages waiting in the outbox.
    pub outbox: usize,
    /// Their payload bytes.
    pub outbox_bytes: u64,
    /// Sessions opened by peers / started by this node.
    pub sessions: (u64, u64),
    /// Streams accepted / opened.
    pub streams: (u64, u64),
    /// Stream bytes received (verified) / sent.
    pub stream_bytes: (u64, u64),
    /// Refusals per reason.
    pub rejected: Vec<(RejectReason, u64)>,
}

impl MessageStats {
    /// Refusals for one reason.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| *n)
    }
}

/// Settings of the stream layer.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// This node's hotkey.
    pub me: Hotkey,
    /// SS58 prefix for printing.
    pub ss58_prefix: u16,
    /// Largest message payload accepted, either way.
    pub max_message: usize,
    /// TTL of a message sent without one.
    pub default_ttl: Duration,
    /// Outbox size and retry schedule.
    pub outbox: OutboxLimits,
    /// When sessions are replaced.
    pub session: SessionLimits,
    /// Oldest session header accepted.
    pub replay_window: Duration,
    /// Messages buffered for the application before peers are slowed down.
    pub inbox_capacity: usize,
    /// Payload bytes of one peer's messages in the inbox before its links stop reading.
    pub inbox_max_bytes_per_peer: u64,
    /// Plaintext bytes per stream chunk.
    pub chunk_size: usize,
    /// Incoming streams waiting to be accepted by the application.
    pub max_incoming_streams: usize,
    /// Of those, from one peer.
    pub max_incoming_per_peer: usize,
    /// Whether peers may open streams without end-to-end encryption.
    pub allow_plaintext_streams: bool,
    /// How long to wait for a connection to a destination.
    pub connect_timeout: Duration,
    /// How long a new peer may take to finish its binding exchange before its substreams are
    /// dropped.
    pub binding_timeout: Duration,
}

/// What the stream layer talks to.
#[derive(Debug, Clone)]
pub struct StreamDeps {
    /// The node's database.
    pub store: Store,
    /// Seals and opens sessions.
    pub identity: Addr<IdentityActor>,
    /// Verified peers.
    pub directory: Arc<PeerDirectory>,
    /// Opens substreams.
    pub substreams: Substreams,
    /// The network task.
    pub net: mpsc::Sender<Command>,
    /// The admission policy (for subnet scope).
    pub policy: SharedPolicy,
    /// This node's current binding (sent to peers that used a stale prekey).
    pub binding: SharedBinding,
}

/// The application-facing ends created with the actor.
#[derive(Debug)]
pub struct StreamEnds {
    /// Messages for the application.
    pub inbox: mpsc::Receiver<Inbound>,
    /// Streams for the application.
    pub incoming: mpsc::Receiver<bulk::IncomingStream>,
    /// Delivery events.
    pub events: broadcast::Sender<DeliveryEvent>,
    /// Counters.
    pub counters: Arc<StreamCounters>,
    /// Inbox bytes per peer: release a message's payload length when the application takes it.
    pub inbox_bytes: Arc<budget::PeerBudget>,
    /// Waiting incoming streams per peer: release 1 when the application takes one.
    pub incoming_per_peer: Arc<budget::PeerBudget>,
}

/// Shared by the actor and its tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cfg: StreamConfig,
    pub(crate) deps: StreamDeps,
    pub(crate) counters: Arc<StreamCounters>,
    pub(crate) inbox: mpsc::Sender<Inbound>,
    pub(crate) incoming: mpsc::Sender<bulk::IncomingStream>,
    pub(crate) inbox_bytes: Arc<budget::PeerBudget>,
    pub(crate) incoming_per_peer: Arc<budget::PeerBudget>,
    /// Refused session headers per peer, lately.
    pub(crate) refused_sessions: budget::RefusalRate,
    /// Test hook: a copy of every message frame written.
    #[cfg(feature = "fault-injection")]
    pub(crate) wiretap: broadcast::Sender<Vec<u8>>,
}

impl Shared {
    /// Copies an outgoing message frame to the wiretap (feature `fault-injection` only).
    #[inline]
    pub(crate) fn tap(&self, _frame: &[u8]) {
        #[cfg(feature = "fault-injection")]
        let _ = self.wiretap.send(_frame.to_vec());
    }
}

/// The StreamActor.
pub struct StreamActor {
    shared: Arc<Shared>,
    outbox: Outbox<SledOutbox>,
    dedup: Dedup<SledSeen>,
    /// Active writer per destination: its generation and where to send ids it may release.
    writers: HashMap<Hotkey, (u64, mpsc::UnboundedSender<Vec<Id128>>)>,
    next_gen: u64,
    /// Persist cycles started, and the last one known durable (flushed).
    cycle: u64,
    durable: u64,
    flushing: bool,
    /// Acknowledged ids whose deletion becomes durable with cycle `.0`.
    release_wait: Vec<(u64, Hotkey, Id128)>,
    /// Readers waiting for an application's acknowledgement to be durable (group commit: they
    /// are answered together by the next flush of the seen-set).
    commit_wait: Vec<oneshot::Sender<()>>,
    /// Whether a group commit's flush is under way.
    committing: bool,
    /// Destinations whose writer has its substream open.
    connected: std::collections::HashSet<Hotkey>,
    /// `send` calls waiting for room in a connected destination's window.
    blocked: HashMap<Hotkey, std::collections::VecDeque<oneshot::Sender<()>>>,
    parked: HashMap<Hotkey, (u64, oneshot::Sender<Vec<Outgoing>>)>,
    events: broadcast::Sender<DeliveryEvent>,
    /// Where the network hands inbound substreams. Shared with the acceptor task, which holds
    /// the lock while it runs: a restarted actor's new acceptor takes over the same queue.
    inbound: Arc<tokio::sync::Mutex<mpsc::Receiver<InboundSubstream>>>,
    last_sweep: Instant,
    /// Why the last writer to each destination with waiting messages ended, until one gets its
    /// substream open. One entry per destination in the outbox at most (removed with it).
    last_error: HashMap<Hotkey, String>,
    /// Times the actor was restarted after a panic.
    restarts: u64,
}

impl std::fmt::Debug for StreamActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamActor")
            .field("outbox", &self.outbox.len())
            .field("writers", &self.writers.len())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn rng() -> hpke::rand_core::UnwrapErr<getrandom::SysRng> {
    hpke::rand_core::UnwrapErr(getrandom::SysRng)
}

impl StreamActor {
    /// Opens the outbox and seen-set and builds the actor; `inbound` is where the network hands
    /// negotiated data-plane substreams.
    ///
    /// # Errors
    /// [`StreamError::Storage`] when the database cannot be read.
    pub fn new(
        cfg: StreamConfig,
        deps: StreamDeps,
        inbound: mpsc::Receiver<InboundSubstream>,
    ) -> Result<(Self, StreamEnds), StreamError> {
        let (outbox, bad) = Outbox::load(SledOutbox::open(&deps.store)?, cfg.outbox)?;
        if bad > 0 {
            tracing::warn!(entries = bad, "dropped undecodable outbox entries");
        }
        if !outbox.is_empty() {
            tracing::info!(
                messages = outbox.len(),
                bytes = outbox.bytes(),
                "outbox restored"
            );
        }
        // Ids are kept at most this node's own message TTL, whatever expiry a sender claims.
        let dedup = Dedup::with_retention(
            SledSeen::open(&deps.store)?,
            cfg.default_ttl.as_secs().max(1),
        );
        let (inbox_tx, inbox_rx) = mpsc::channel(cfg.inbox_capacity.max(1));
        let (inc_tx, inc_rx) = mpsc::channel(cfg.max_incoming_streams.max(1));
        let (events, _) = broadcast::channel(EVENT_QUEUE);
        let counters = Arc::new(StreamCounters::default());
        let inbox_bytes = Arc::new(budget::PeerBudget::new(cfg.inbox_max_bytes_per_peer));
        let incoming_per_peer = Arc::new(budget::PeerBudget::new(
            u64::try_from(cfg.max_incoming_per_peer.min(cfg.max_incoming_streams)).unwrap_or(1),
        ));
        let shared = Arc::new(Shared {
            cfg,
            deps,
            counters: counters.clone(),
            inbox: inbox_tx,
            incoming: inc_tx,
            inbox_bytes: inbox_bytes.clone(),
            incoming_per_peer: incoming_per_peer.clone(),
            refused_sessions: budget::RefusalRate::default(),
            #[cfg(feature = "fault-injection")]
            wiretap: broadcast::channel(4096).0,
        });
        Ok((
            StreamActor {
                shared,
                outbox,
                dedup,
                writers: HashMap::new(),
                next_gen: 0,
                cycle: 0,
                durable: 0,
                flushing: false,
                release_wait: Vec::new(),
                commit_wait: Vec::new(),
                committing: false,
                connected: Default::default(),
                blocked: HashMap::new(),
                parked: HashMap::new(),
                events: events.clone(),
                inbound: Arc::new(tokio::sync::Mutex::new(inbound)),
                last_sweep: Instant::now(),
                last_error: HashMap::new(),
                restarts: 0,
            },
            StreamEnds {
                inbox: inbox_rx,
                incoming: inc_rx,
                events,
                counters,
                inbox_bytes,
                incoming_per_peer,
            },
        ))
    }

    fn counters(&self) -> &StreamCounters {
        &self.shared.counters
    }

    fn emit(&self, ev: DeliveryEvent) {
        // Nobody listening is fine.
        let _ = self.events.send(ev);
    }

    /// Gives `to`'s queued messages to its writer: answers a parked pull, or starts a writer.
    fn kick(&mut self, to: Hotkey, ctx: &mut Context<Self>) {
        if let Some((gen, tx)) = self.parked.remove(&to) {
            self.answer_pull(to, gen, tx);
        } else if !self.writers.contains_key(&to) {
            if self.shared.deps.directory.by_hotkey(&to).is_some() {
                self.outbox.retry_now(&to);
            }
            self.start_due_writers(ctx);
        }
    }

    fn answer_pull(&mut self, to: Hotkey, gen: u64, tx: oneshot::Sender<Vec<Outgoing>>) {
        let batch = match self
            .outbox
            .take(&to, PULL_MAX_MSGS, PULL_MAX_BYTES, crate::unix_now())
        {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "reading the outbox failed");
                Vec::new()
            }
        };
        if batch.is_empty() {
            self.parked.insert(to, (gen, tx));
            return;
        }
        if let Err(batch) = tx.send(batch) {
            // The writer is gone: its messages go back to the queue.
            for m in batch {
                let _ = self.outbox.rejected(&m.meta.id, false);
            }
        }
    }

    fn start_due_writers(&mut self, ctx: &mut Context<Self>) {
        for to in self.outbox.due(now_ms()) {
            if self.writers.contains_key(&to) {
                continue;
            }
            let gen = self.next_gen;
            self.next_gen += 1;
            // Unbounded on purpose: it carries only ids this writer sent and had acknowledged.
            let (tx, rx) = mpsc::unbounded_channel();
            self.writers.insert(to, (gen, tx));
            self.outbox.link_up(&to);
            let shared = self.shared.clone();
            let me = ctx.address();
            ctx.spawn(
                AssertUnwindSafe(link::run_writer(to, gen, shared, me, rx))
                    .catch_unwind()
                    .into_actor(self)
                    .map(|r, _, ctx| task_ended::<Self, _>(ACTOR, ctx, r)),
            );
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        match self.outbox.expire(crate::unix_now()) {
            Ok(gone) => {
                for m in gone {
                    tracing::debug!(id = %m.id, "message expired undelivered");
                    self.emit(DeliveryEvent::Expired { id: m.id, to: m.to });
                    self.unblock(&m.to);
                }
            }
            Err(e) => tracing::error!(error = %e, "outbox expiry failed"),
        }
        // A destination that became reachable (it connected to us, or another path found it)
        // is tried at once instead of at the end of its backoff.
        for to in self.outbox.waiting() {
            if self.shared.deps.directory.by_hotkey(&to).is_some() {
                self.outbox.retry_now(&to);
            }
        }
        self.start_due_writers(ctx);
        self.persist(ctx);
        if self.last_sweep.elapsed() >= SWEEP_EVERY {
            self.last_sweep = Instant::now();
            match self.dedup.sweep(crate::unix_now()) {
                Ok(n) if n >= store::SWEEP_BATCH => {
                    // More are due: sweep again at the next tick rather than in a minute.
                    self.last_sweep = Instant::now()
                        .checked_sub(SWEEP_EVERY)
                        .unwrap_or(self.last_sweep);
                    tracing::debug!(removed = n, "expired seen ids swept; more are due");
                }
                Ok(n) if n > 0 => tracing::debug!(removed = n, "expired seen ids swept"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "seen-set sweep failed"),
            }
        }
    }

    /// Writes what the write-behind stores hold in memory and, when outbox deletions are among
    /// it, flushes in the background; once durable, the ids they cover are released.
    fn persist(&mut self, ctx: &mut Context<Self>) {
        if let Err(e) = self.dedup.store_mut().persist(store::WRITE_BEHIND) {
            tracing::error!(error = %e, "writing the seen-set failed; retrying at the next tick");
        }
        if self.flushing {
            return;
        }
        let written = match self.outbox.store_mut().persist(store::WRITE_BEHIND) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "writing the outbox failed; retrying at the next tick");
                return;
            }
        };
        if written == 0 && self.release_wait.is_empty() {
            return;
        }
        self.cycle += 1;
        let cycle = self.cycle;
        self.flushing = true;
        let flush = self.shared.deps.store.flush_async();
        ctx.spawn(flush.into_actor(self).map(move |r, act, _| {
            act.flushing = false;
            match r {
                Ok(()) => {
                    act.durable = cycle;
                    act.release_durable();
                }
                Err(e) => tracing::error!(error = %e, "flushing the outbox failed; retrying"),
            }
        }));
    }

    /// Lets waiting `send` calls for `to` return while its window has room (all of them once the
    /// link is down: an unreachable destination is what the outbox is for).
    fn unblock(&mut self, to: &Hotkey) {
        let room = !self.connected.contains(to) || self.outbox.held_for(to) < SEND_WINDOW;
        if !room {
            return;
        }
        if let Some(q) = self.blocked.get_mut(to) {
            let free = SEND_WINDOW.saturating_sub(self.outbox.held_for(to)).max(1);
            let n = if self.connected.contains(to) {
                free.min(q.len())
            } else {
                q.len()
            };
            for tx in q.drain(..n) {
                let _ = tx.send(());
            }
            if q.is_empty() {
                self.blocked.remove(to);
            }
        }
    }

    /// Hands every id whose deletion is now durable to its writer, to release at the receiver.
    fn release_durable(&mut self) {
        let durable = self.durable;
        let mut ready: HashMap<Hotkey, Vec<Id128>> = HashMap::new();
        self.release_wait.retain(|(c, to, id)| {
            if *c <= durable {
                ready.entry(*to).or_default().push(*id);
                false
            } else {
                true
            }
        });
        for (to, ids) in ready {
            self.release(to, ids);
        }
    }

    fn release(&self, to: Hotkey, ids: Vec<Id128>) {
        if let Some((_, tx)) = self.writers.get(&to) {
            // No writer: the receiver forgets the ids when they expire.
            let _ = tx.send(ids);
        }
    }

    fn on_writer_event(&mut self, to: Hotkey, ev: SenderEvent, ctx: &mut Context<Self>) {
        self.on_writer_event_inner(to, ev, ctx);
        self.unblock(&to);
    }

    fn on_writer_event_inner(&mut self, to: Hotkey, ev: SenderEvent, ctx: &mut Context<Self>) {
        match ev {
            SenderEvent::Acked(ids) => match self.outbox.acked(&ids) {
                Ok(done) => {
                    StreamCounters::add(&self.counters().delivered, done.len() as u64);
                    let unflushed: std::collections::HashSet<Id128> =
                        self.outbox.take_unflushed().into_iter().collect();
                    let mut now = Vec::with_capacity(done.len());
                    for m in done {
                        if unflushed.contains(&m.id) {
                            // On disk: release once its deletion is durable too.
                            self.release_wait.push((self.cycle + 1, to, m.id));
                        } else {
                            now.push(m.id);
                        }
                        self.emit(DeliveryEvent::Delivered { id: m.id, to: m.to });
                    }
                    if !now.is_empty() {
                        self.release(to, now);
                    }
                }
                Err(e) => tracing::error!(error = %e, "outbox update failed"),
            },
            SenderEvent::Rejected { id, code } => {
                match self.outbox.rejected(&id, code.is_terminal()) {
                    Ok(Some(m)) => {
                        tracing::info!(id = %m.id, reason = code.as_str(), "message refused by its recipient");
                        self.emit(DeliveryEvent::Failed {
                            id: m.id,
                            to: m.to,
                            reason: code.as_str().to_string(),
                        });
                    }
                    Ok(None) => self.kick(to, ctx),
                    Err(e) => tracing::error!(error = %e, "outbox update failed"),
                }
            }
            SenderEvent::SessionRefused { requeue, .. } => {
                for id in requeue {
                    let _ = self.outbox.rejected(&id, false);
                }
                self.kick(to, ctx);
            }
            SenderEvent::Ignored => {}
        }
    }

    /// Makes the seen ids the applications acknowledged durable, then answers the readers
    /// waiting for them. One flush covers everything acknowledged meanwhile (group commit), so
    /// a busy link pays one flush per batch, not per message.
    fn group_commit(&mut self, ctx: &mut Context<Self>) {
        if self.committing || self.commit_wait.is_empty() {
            return;
        }
        if let Err(e) = self.dedup.store_mut().persist(Duration::ZERO) {
            // Dropping the waiters closes their links; the senders retry and the retried
            // copies are acknowledged (not delivered) once the ids are written.
            tracing::error!(error = %e, "writing acknowledged ids failed");
            self.commit_wait.clear();
            return;
        }
        let batch = std::mem::take(&mut self.commit_wait);
        self.committing = true;
        let flush = self.shared.deps.store.flush_async();
        ctx.spawn(flush.into_actor(self).map(move |r, act, ctx| {
            act.committing = false;
            match r {
                Ok(()) => {
                    for tx in batch {
                        let _ = tx.send(());
                    }
                }
                Err(e) => tracing::error!(error = %e, "flushing acknowledged ids failed"),
            }
            act.group_commit(ctx);
        }));
    }

    fn accept(&mut self, a: Accept, me: Addr<Self>) -> AcceptOutcome {
        let c = self.shared.counters.clone();
        match accept_message(
            &mut self.dedup,
            &a.from.hotkey,
            a.session_id,
            a.counter,
            a.body,
            a.in_scope,
            crate::unix_now(),
        ) {
            Ok(Accepted::Deliver(body)) => {
                let id = body.id;
                self.shared
                    .inbox_bytes
                    .charge(a.from.hotkey, body.payload.len() as u64);
                let (tx, durable) = oneshot::channel();
                let receipt = Receipt(Arc::new(ReceiptInner {
                    actor: me,
                    from: a.from.hotkey,
                    id,
                    armed: std::sync::atomic::AtomicBool::new(false),
                    durable: std::sync::Mutex::new(Some(tx)),
                }));
                a.permit.send(Inbound {
                    from: a.from.ss58.clone(),
                    hotkey: a.from.hotkey,
                    peer_id: a.from.peer_id,
                    netuid: body.netuid,
                    id,
                    sent_at: body.sent_at,
                    bytes: body.payload,
                    receipt,
                });
                StreamCounters::add(&c.received, 1);
                AcceptOutcome::Deliver(id, durable)
            }
            Ok(Accepted::Duplicate(id)) => {
                StreamCounters::add(&c.duplicates, 1);
                AcceptOutcome::Ack(id)
            }
            // Counted by the reader, which counts every refusal on its substream.
            Ok(Accepted::Refused(r)) => AcceptOutcome::Refused(Box::new(r)),
            Err(e) => {
                // Neither delivered nor acknowledged: the sender retries later.
                tracing::error!(error = %e, "seen-set write failed; message not accepted");
                AcceptOutcome::Refused(Box::new(Refusal {
                    reason: RejectReason::Malformed,
                    answer: None,
                    close: true,
                }))
            }
        }
    }
}

impl Drop for StreamActor {
    fn drop(&mut self) {
        // Shutdown: everything accepted or claimed and still alive reaches sled before the store
        // is flushed and closed.
        if let Err(e) = self.outbox.store_mut().persist(Duration::ZERO) {
            tracing::error!(error = %e, "writing the outbox at shutdown failed");
        }
        if let Err(e) = self.dedup.store_mut().persist(Duration::ZERO) {
            tracing::error!(error = %e, "writing the seen-set at shutdown failed");
        }
    }
}

impl StreamActor {
    /// After a panic: forgets the link tasks (they died with the old context) and reloads the
    /// outbox and the seen-set from sled, after writing what only memory held, since the panic
    /// may have left their in-memory indexes half-updated. Messages in flight are sent again;
    /// the receivers' seen-sets make that harmless. Readers of the old context see their
    /// sessions stop being current, close, and their senders open new ones.
    fn reload(&mut self) -> Result<(), StreamError> {
        self.writers.clear();
        self.parked.clear();
        self.connected.clear();
        for (_, q) in self.blocked.drain() {
            for tx in q {
                let _ = tx.send(());
            }
        }
        self.flushing = false;
        // Their deletions are written below; the receivers sweep these ids at expiry instead.
        self.release_wait.clear();
        // Their readers see the commit abandoned and close; the senders retry.
        self.commit_wait.clear();
        self.committing = false;
        self.outbox.store_mut().persist(Duration::ZERO)?;
        self.dedup.store_mut().persist(Duration::ZERO)?;
        let store = &self.shared.deps.store;
        let (outbox, _) = Outbox::load(SledOutbox::open(store)?, self.shared.cfg.outbox)?;
        self.outbox = outbox;
        self.dedup = Dedup::with_retention(
            SledSeen::open(store)?,
            self.shared.cfg.default_ttl.as_secs().max(1),
        );
        Ok(())
    }
}

/// Name in logs and [`Crashed`] errors.
const ACTOR: &str = "StreamActor";

impl Actor for StreamActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
        ctx.run_interval(TICK, |act, ctx| {
            let _ = contain_with(ACTOR, act, ctx, |act, ctx| act.tick(ctx));
        });
        let acceptor = link::run_acceptor(self.inbound.clone(), self.shared.clone(), ctx.address());
        ctx.spawn(
            AssertUnwindSafe(acceptor)
                .catch_unwind()
                .into_actor(self)
                .map(|r, _, ctx| task_ended::<Self, _>(ACTOR, ctx, r)),
        );
        self.start_due_writers(ctx);
    }
}

impl Supervised for StreamActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        self.restarts += 1;
        tracing::warn!(
            restarts = self.restarts,
            "StreamActor restarted; reloading the outbox and the seen-set"
        );
        if let Err(e) = self.reload() {
            tracing::error!(error = %e, "reloading after a restart failed; keeping the state in memory");
        }
    }
}

/// Queue a message.
#[derive(Debug, Message)]
#[rtype(result = "Result<Id128, StreamError>")]
pub struct SendMessage {
    /// Recipient.
    pub to: Hotkey,
    /// Subnet.
    pub netuid: u16,
    /// Payload.
    pub payload: Vec<u8>,
    /// Time to live (default: `messages.ttl`).
    pub ttl: Option<Duration>,
}

impl Handler<SendMessage> for StreamActor {
    type Result = ResponseFuture<Result<Id128, StreamError>>;
    fn handle(&mut self, m: SendMessage, ctx: &mut Self::Context) -> Self::Result {
        contain_with(ACTOR, self, ctx, |act, ctx| act.send_message(m, ctx))
            .unwrap_or_else(|e| Box::pin(async move { Err(e.into()) }))
    }
}

impl StreamActor {
    fn send_message(
        &mut self,
        m: SendMessage,
        ctx: &mut Context<Self>,
    ) -> ResponseFuture<Result<Id128, StreamError>> {
        let max = self.shared.cfg.max_message;
        if m.payload.len() > max {
            let e = StreamError::TooLarge {
                size: m.payload.len(),
                max,
            };
            return Box::pin(async move { Err(e) });
        }
        if m.to == self.shared.cfg.me {
            return Box::pin(async {
                Err(StreamError::Invalid(
                    "the recipient is this node's own hotkey".into(),
                ))
            });
        }
        let ttl = m
            .ttl
            .unwrap_or(self.shared.cfg.default_ttl)
            .as_secs()
            .max(1);
        let meta = match self.outbox.enqueue(
            m.to,
            m.netuid,
            &m.payload,
            crate::unix_now(),
            ttl,
            &mut rng(),
        ) {
            Ok(m) => m,
            Err(e) => return Box::pin(async move { Err(e.into()) }),
        };
        StreamCounters::add(&self.counters().sent, 1);
        self.kick(m.to, ctx);
        let id = meta.id;
        if self.connected.contains(&m.to) && self.outbox.held_for(&m.to) > SEND_WINDOW {
            // Accepted and stored; the caller waits until the link catches up.
            let (tx, rx) = oneshot::channel();
            self.blocked.entry(m.to).or_default().push_back(tx);
            return Box::pin(async move {
                let _ = rx.await;
                Ok(id)
            });
        }
        Box::pin(async move { Ok(id) })
    }
}

/// Counters and outbox size.
#[derive(Debug, Message)]
#[rtype(result = "MessageStats")]
pub struct GetStats;

impl Handler<GetStats> for StreamActor {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        let c = self.counters();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MessageResult(MessageStats {
            sent: g(&c.sent),
            delivered: g(&c.delivered),
            received: g(&c.received),
            duplicates: g(&c.duplicates),
            outbox: self.outbox.len(),
            outbox_bytes: self.outbox.bytes(),
            sessions: (g(&c.sessions_in), g(&c.sessions_out)),
            streams: (g(&c.streams_in), g(&c.streams_out)),
            stream_bytes: (g(&c.stream_bytes_in), g(&c.stream_bytes_out)),
            rejected: RejectReason::ALL
                .iter()
                .map(|r| (*r, c.rejected(*r)))
                .collect(),
        })
    }
}

/// A message waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// Its metadata.
    pub meta: Meta,
    /// Why the last attempt to reach its recipient failed, when one did (cleared once a
    /// connection is made).
    pub last_error: Option<String>,
}

/// The messages waiting in the outbox.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Waiting>")]
pub struct GetOutbox;

impl Handler<GetOutbox> for StreamActor {
    type Result = MessageResult<GetOutbox>;
    fn handle(&mut self, _: GetOutbox, ctx: &mut Self::Context) -> Self::Result {
        let pending = contain::<Self, _>(ACTOR, ctx, || self.outbox.pending()).unwrap_or_default();
        MessageResult(
            pending
                .into_iter()
                .map(|meta| Waiting {
                    last_error: self.last_error.get(&meta.to).cloned(),
                    meta,
                })
                .collect(),
        )
    }
}

/// Drops a queued message from the outbox (it is not sent, or retried, any more).
#[derive(Debug, Message)]
#[rtype(result = "Result<Meta, StreamError>")]
pub struct CancelMessage(pub Id128);

impl Handler<CancelMessage> for StreamActor {
    type Result = Result<Meta, StreamError>;
    fn handle(&mut self, m: CancelMessage, ctx: &mut Self::Context) -> Self::Result {
        contain::<Self, _>(ACTOR, ctx, || self.cancel(m.0))?
    }
}

impl StreamActor {
    fn cancel(&mut self, id: Id128) -> Result<Meta, StreamError> {
        match self.outbox.cancel(&id)? {
            Cancelled::Dropped(meta) => {
                // Written through before the user hears "cancelled": left to the write-behind
                // tick, a crash in between would bring the message back and deliver it.
                let durable = self
                    .outbox
                    .store_mut()
                    .persist(std::time::Duration::ZERO)
                    .and_then(|_| self.shared.deps.store.flush());
                if let Err(e) = durable {
                    tracing::error!(id = %meta.id, error = %e, "the cancellation is not on disk yet; it is retried at the next tick");
                }
                tracing::info!(id = %meta.id, "message cancelled");
                if !self.outbox.has_queued(&meta.to) {
                    self.last_error.remove(&meta.to);
                }
                self.unblock(&meta.to);
                Ok(meta)
            }
            Cancelled::InFlight => Err(StreamError::Invalid(format!(
                "message {id} is being delivered right now and can no longer be called back"
            ))),
            Cancelled::Unknown => Err(StreamError::NotInOutbox(id)),
        }
    }
}

/// A writer asks for its next batch; answered when there is one.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Outgoing>")]
pub(crate) struct Pull {
    pub(crate) to: Hotkey,
    pub(crate) gen: u64,
}

impl Handler<Pull> for StreamActor {
    type Result = ResponseFuture<Vec<Outgoing>>;
    fn handle(&mut self, p: Pull, ctx: &mut Self::Context) -> Self::Result {
        if self.writers.get(&p.to).map(|w| w.0) != Some(p.gen) {
            return Box::pin(async { Vec::new() });
        }
        let (tx, rx) = oneshot::channel();
        let _ = contain::<Self, _>(ACTOR, ctx, || self.answer_pull(p.to, p.gen, tx));
        Box::pin(async move { rx.await.unwrap_or_default() })
    }
}

/// What a writer learnt from its recipient.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct WriterEvent {
    pub(crate) to: Hotkey,
    pub(crate) ev: SenderEvent,
}

impl Handler<WriterEvent> for StreamActor {
    type Result = ();
    fn handle(&mut self, m: WriterEvent, ctx: &mut Self::Context) {
        let _ = contain_with(ACTOR, self, ctx, |act, ctx| {
            act.on_writer_event(m.to, m.ev, ctx)
        });
    }
}

/// A writer ended (its substream closed, or it could not connect).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct WriterClosed {
    pub(crate) to: Hotkey,
    pub(crate) gen: u64,
    pub(crate) reason: Option<String>,
    pub(crate) sessions: u64,
}

impl Handler<WriterClosed> for StreamActor {
    type Result = ();
    fn handle(&mut self, m: WriterClosed, ctx: &mut Self::Context) {
        let _ = contain::<Self, _>(ACTOR, ctx, || self.writer_closed(m));
    }
}

impl StreamActor {
    fn writer_closed(&mut self, m: WriterClosed) {
        StreamCounters::add(&self.counters().sessions_out, m.sessions);
        if self.writers.get(&m.to).map(|w| w.0) != Some(m.gen) {
            return;
        }
        self.writers.remove(&m.to);
        self.parked.remove(&m.to);
        self.connected.remove(&m.to);
        self.unblock(&m.to);
        self.outbox.link_lost(&m.to, now_ms(), &mut rng());
        if let Some(reason) = m.reason {
            if self.outbox.has_queued(&m.to) {
                tracing::debug!(to = %m.to.to_ss58(self.shared.cfg.ss58_prefix), %reason, "link down; will retry");
                self.last_error.insert(m.to, reason);
            }
        }
        if !self.outbox.has_queued(&m.to) {
            self.last_error.remove(&m.to);
        }
    }
}

/// A writer has its substream open: its destination is live.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct WriterReady {
    pub(crate) to: Hotkey,
    pub(crate) gen: u64,
}

impl Handler<WriterReady> for StreamActor {
    type Result = ();
    fn handle(&mut self, m: WriterReady, _: &mut Self::Context) {
        if self.writers.get(&m.to).map(|w| w.0) == Some(m.gen) {
            self.connected.insert(m.to);
            self.last_error.remove(&m.to);
        }
    }
}

/// A session header from a peer passed its checks: is its id new?
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub(crate) struct NoteSession {
    pub(crate) session_id: Id128,
    pub(crate) keep_until: u64,
}

impl Handler<NoteSession> for StreamActor {
    type Result = bool;
    fn handle(&mut self, m: NoteSession, ctx: &mut Self::Context) -> bool {
        contain::<Self, _>(ACTOR, ctx, || {
            self.dedup
                .note_session(&m.session_id, m.keep_until)
                .unwrap_or_else(|e| {
                    tracing::error!(error = %e, "seen-set write failed");
                    false
                })
        })
        .unwrap_or(false)
    }
}

/// A session from `from` is open: it becomes the sender's current one.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct MakeCurrent {
    pub(crate) from: Hotkey,
    pub(crate) session_id: Id128,
}

impl Handler<MakeCurrent> for StreamActor {
    type Result = ();
    fn handle(&mut self, m: MakeCurrent, _: &mut Self::Context) {
        StreamCounters::add(&self.counters().sessions_in, 1);
        self.dedup.make_current(&m.from, &m.session_id);
    }
}

/// A reader's substream ended.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct CloseSession {
    pub(crate) from: Hotkey,
    pub(crate) session_id: Id128,
}

impl Handler<CloseSession> for StreamActor {
    type Result = ();
    fn handle(&mut self, m: CloseSession, _: &mut Self::Context) {
        self.dedup.close_session(&m.from, &m.session_id);
    }
}

/// An opened message to de-duplicate and deliver through `permit`.
#[derive(Message)]
#[rtype(result = "AcceptOutcome")]
pub(crate) struct Accept {
    pub(crate) from: Arc<PeerInfo>,
    pub(crate) session_id: Id128,
    pub(crate) counter: u64,
    pub(crate) body: MessageBody,
    pub(crate) in_scope: bool,
    pub(crate) permit: mpsc::OwnedPermit<Inbound>,
}

impl std::fmt::Debug for Accept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accept")
            .field("from", &self.from.ss58)
            .field("id", &self.body.id)
            .finish_non_exhaustive()
    }
}

/// What a reader does after [`Accept`].
#[derive(Debug)]
pub(crate) enum AcceptOutcome {
    /// Acknowledged by the application before: acknowledge this id now.
    Ack(Id128),
    /// Handed to the application: acknowledge this id once the receiver fires (the application
    /// acknowledged it and that is durable). A receiver that fails means it was not: close the
    /// substream so that the sender retries.
    Deliver(Id128, oneshot::Receiver<()>),
    /// Refuse the frame.
    Refused(Box<Refusal>),
}

impl Handler<Accept> for StreamActor {
    type Result = MessageResult<Accept>;
    fn handle(&mut self, a: Accept, ctx: &mut Self::Context) -> Self::Result {
        // A crash neither delivers nor acknowledges: the sender retries on a new session.
        let me = ctx.address();
        MessageResult(
            contain::<Self, _>(ACTOR, ctx, || self.accept(a, me)).unwrap_or_else(|_| {
                AcceptOutcome::Refused(Box::new(Refusal {
                    reason: RejectReason::Malformed,
                    answer: None,
                    close: true,
                }))
            }),
        )
    }
}

/// The application is done with a delivered message (`acked`), or it was dropped before the
/// application got it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Settle {
    from: Hotkey,
    id: Id128,
    acked: bool,
    durable: Option<oneshot::Sender<()>>,
}

impl Handler<Settle> for StreamActor {
    type Result = ();
    fn handle(&mut self, m: Settle, ctx: &mut Self::Context) {
        if !m.acked {
            // Never handed over: forget it was being delivered, so a retried copy is.
            self.dedup.abandon(&m.from, &m.id);
            return;
        }
        if let Err(e) = self.dedup.commit(&m.from, &m.id) {
            tracing::error!(error = %e, "recording an acknowledged id failed");
            self.dedup.abandon(&m.from, &m.id);
            return;
        }
        if let Some(tx) = m.durable {
            self.commit_wait.push(tx);
        }
        let _ = contain_with(ACTOR, self, ctx, |act, ctx| act.group_commit(ctx));
    }
}

/// The sender will not resend these ids.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct ReleaseIds {
    pub(crate) from: Hotkey,
    pub(crate) ids: Vec<Id128>,
}

impl Handler<ReleaseIds> for StreamActor {
    type Result = ();
    fn handle(&mut self, m: ReleaseIds, ctx: &mut Self::Context) {
        let _ = contain::<Self, _>(ACTOR, ctx, || {
            if let Err(e) = self.dedup.release(&m.from, &m.ids) {
                tracing::error!(error = %e, "seen-set release failed");
            }
        });
    }
}

/// Open a stream to a peer (runs on the actor's thread, whose runtime has the timers the
/// handshake needs; the returned writer works on any executor).
#[derive(Debug, Message)]
#[rtype(result = "Result<bulk::StreamWriter, StreamError>")]
pub struct OpenStream {
    /// Recipient.
    pub to: Hotkey,
    /// Subnet.
    pub netuid: u16,
    /// E2E and chunk size.
    pub opts: bulk::StreamOptions,
}

impl Handler<OpenStream> for StreamActor {
    type Result = ResponseFuture<Result<bulk::StreamWriter, StreamError>>;
    fn handle(&mut self, m: OpenStream, _: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move { bulk::open(&shared, m.to, m.netuid, m.opts).await })
    }
}

/// Test hook: a raw data-plane substream to a verified peer, to send it hand-made frames.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Message)]
#[rtype(result = "Result<libp2p::Stream, StreamError>")]
pub struct RawSubstream {
    /// The peer.
    pub to: Hotkey,
    /// `/hermes/msg/1` when true, `/hermes/stream/1` otherwise.
    pub messages: bool,
}

#[cfg(feature = "fault-injection")]
impl Handler<RawSubstream> for StreamActor {
    type Result = ResponseFuture<Result<libp2p::Stream, StreamError>>;
    fn handle(&mut self, m: RawSubstream, _: &mut Self::Context) -> Self::Result {
        let shared = self.shared.clone();
        Box::pin(async move {
            let peer = link::ensure_peer(&shared, &m.to).await?;
            let protocol = if m.messages {
                MSG_PROTOCOL
            } else {
                STREAM_PROTOCOL
            };
            shared
                .deps
                .substreams
                .open(peer.peer_id, protocol)
                .await
                .map_err(|e| StreamError::Unreachable(e.to_string()))
        })
    }
}

/// Test hook: every message frame this node writes from now on.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Message)]
#[rtype(result = "broadcast::Receiver<Vec<u8>>")]
pub struct Wiretap;

#[cfg(feature = "fault-injection")]
impl Handler<Wiretap> for StreamActor {
    type Result = MessageResult<Wiretap>;
    fn handle(&mut self, _: Wiretap, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.shared.wiretap.subscribe())
    }
}

/// Test hook: panic inside the handler so supervision can be observed.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StreamError>")]
pub struct InjectPanic;

#[cfg(feature = "fault-injection")]
impl Handler<InjectPanic> for StreamActor {
    type Result = Result<(), StreamError>;
    #[allow(clippy::panic)]
    fn handle(&mut self, _: InjectPanic, ctx: &mut Self::Context) -> Self::Result {
        contain::<Self, _>(ACTOR, ctx, || panic!("injected fault"))?
    }
}

/// The protocols this layer serves, for logs.
pub const PROTOCOLS: [libp2p::StreamProtocol; 2] = [MSG_PROTOCOL, STREAM_PROTOCOL];
