//! ChainActor and the `Chain` backends: where the node learns who is registered, in which subnet,
//! with what stake.
//!
//! Backends:
//! - [`DevChain`]: an embedded development chain in a sled database directory. Several nodes (and
//!   the `hermes devchain` CLI) share one directory: each operation opens the database, does its
//!   work and closes it again, retrying briefly while another process holds it, so no process keeps
//!   it locked.
//! - [`StaticChain`]: a read-only JSON snapshot (`{"nodes": [...]}`), the format that
//!   `hermes devchain list` prints.
//! - [`rpc::RpcChain`]: a Subtensor or Hypertensor node's JSON-RPC interface (see [`rpc`]).
//!
//! Beyond the registry, a chain has blocks and epochs: the [`Chain`] trait offers the head, each
//! epoch's consensus round, proposal and attestation submission and node standings, with default
//! implementations that answer [`ChainError::Unsupported`] (the static snapshot keeps them).
//!
//! ChainActor accepts:
//! - [`GetRegistry`] → the latest [`Registry`] snapshot
//! - [`Refresh`] → reloads now and publishes if it changed
//!
//! and emits [`RegistryUpdated`] to its subscriber (the FirewallActor) whenever the snapshot
//! changes, polling the backend every `poll_interval` (one read at a time; after failures the wait
//! grows exponentially up to [`MAX_BACKOFF`], see [`ChainActor::next_delay`]). When the backend keeps failing for
//! `max_staleness` (or could not be read at start), the last registry is published as stale: the
//! firewall then refuses new peers (`chain_stale`) until a read succeeds again.
//!
//! A backend that can follow new heads ([`Chain::follow_heads`]: the RPC backends on a `ws://` or
//! `wss://` URL) also has each new head read at once, through the same one-read-at-a-time path:
//! heads arriving while a read runs cause one more read after it, however many they are. The
//! poll stays, as the fallback while the subscription is down and as what declares staleness. A
//! lost subscription is taken again after [`ChainActor::resubscribe_delay`] (the same jittered
//! exponential backoff, from at most [`RESUBSCRIBE_FIRST`] up to [`MAX_BACKOFF`]); it only ever
//! triggers reads, so losing it cannot make admission fail open.

use actix::prelude::*;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use hermes_proto::chain::{NodeClass, NodeEntry, Registry};
use hermes_proto::consensus::{
    Accepted, Change, Refusal, Round, SignedAttestation, SignedProposal, Standing, Tally, Verdict,
};
use hermes_proto::{Hotkey, PeerIdRuleError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod dev;
mod dev_state;
pub mod rpc;
mod static_chain;

pub use dev::{DevChain, DevParams};
pub use static_chain::StaticChain;
use thiserror::Error;

/// Errors from chain backends.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The backend's storage failed or stayed locked.
    #[error("chain storage {path}: {reason}")]
    Storage {
        /// The chain's path.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A snapshot or entry is malformed.
    #[error("chain data {path}: {reason}")]
    Format {
        /// Where it came from.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The chain refused the registration because of its peer id.
    #[error("registration refused: {0}")]
    BadPeerId(#[from] PeerIdRuleError),
    /// The chain refused the registration for another reason.
    #[error("registration refused: {0}")]
    Refused(String),
    /// The backend cannot register nodes.
    #[error("this chain backend is read-only")]
    ReadOnly,
    /// The chain refused a consensus record; [`Refusal::as_str`] names its counter.
    #[error("consensus record refused: {0}")]
    Rejected(#[from] Refusal),
    /// No consensus round is open for the subnet in the epoch the record names (the subnet had no
    /// nodes when the epoch started, or the epoch is not the current one).
    #[error("no consensus round for subnet {netuid} in epoch {epoch}")]
    NoRound {
        /// Subnet.
        netuid: u16,
        /// The chain's current epoch.
        epoch: u64,
    },
    /// A JSON-RPC round trip failed (unreachable, timeout, error answer, garbage, too large).
    #[error("chain RPC: {0}")]
    Rpc(#[from] rpc::RpcError),
    /// The chain's runtime metadata does not describe the storage we decode: reading on would
    /// misinterpret it, so the registry stays as it was (stale after `max_staleness`).
    #[error("chain RPC: {0}")]
    Metadata(#[from] rpc::MetadataError),
    /// The backend does not offer this (a snapshot has no blocks or epochs).
    #[error("this chain backend does not support {0}")]
    Unsupported(&'static str),
}

/// Where the chain is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// The latest block.
    pub block: u64,
    /// Its epoch.
    pub epoch: u64,
    /// Blocks per epoch.
    pub blocks_per_epoch: u64,
    /// The latest block's hash.
    pub block_hash: [u8; 32],
    /// Time per block, `None` when blocks only advance when stepped.
    pub block_time: Option<Duration>,
}

/// How a past epoch ended on the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finalized {
    /// The verdict.
    pub verdict: Verdict,
    /// The final counts.
    pub tally: Tally,
    /// What it did to nodes (promotions, punishments, removals).
    pub changes: Vec<Change>,
}

/// One epoch of one subnet as the chain holds it.
#[derive(Debug, Clone)]
pub struct EpochView {
    /// The round: validator set, elected validator, proposal, attestations, tally.
    pub round: Round,
    /// How it ended, once the epoch is over.
    pub finalized: Option<Finalized>,
}

/// A registered node with its consensus standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStanding {
    /// The registration.
    pub entry: NodeEntry,
    /// Class, penalties, reputation.
    pub standing: Standing,
}

fn unsupported<T: Send + 'static>(what: &'static str) -> BoxFuture<'static, Result<T, ChainError>> {
    Box::pin(async move { Err(ChainError::Unsupported(what)) })
}

/// The node's view of a chain.
pub trait Chain: Send + Sync + std::fmt::Debug + 'static {
    /// The current registry of every subnet.
    fn registry(&self) -> BoxFuture<'_, Result<Registry, ChainError>>;

    /// Registers (or updates) a node, with the chain's own checks.
    fn register(&self, entry: NodeEntry) -> BoxFuture<'_, Result<(), ChainError>> {
        let _ = entry;
        Box::pin(async { Err(ChainError::ReadOnly) })
    }

    /// The latest block and epoch.
    fn head(&self) -> BoxFuture<'_, Result<ChainHead, ChainError>> {
        unsupported("blocks and epochs")
    }

    /// Epoch `epoch` (the current one for `None`) of subnet `netuid`; `None` when the subnet had
    /// no round then.
    fn epoch(
        &self,
        netuid: u16,
        epoch: Option<u64>,
    ) -> BoxFuture<'_, Result<Option<EpochView>, ChainError>> {
        let _ = (netuid, epoch);
        unsupported("epochs")
    }

    /// Submits the elected validator's proposal for the current epoch.
    fn submit_proposal(
        &self,
        proposal: SignedProposal,
    ) -> BoxFuture<'_, Result<Accepted, ChainError>> {
        let _ = proposal;
        unsupported("consensus submissions")
    }

    /// Submits a validator's attestation of the current epoch's proposal.
    fn attest(
        &self,
        attestation: SignedAttestation,
    ) -> BoxFuture<'_, Result<Accepted, ChainError>> {
        let _ = attestation;
        unsupported("attestations")
    }

    /// Every node of subnet `netuid` with its class, penalties and reputation.
    fn standings(&self, netuid: u16) -> BoxFuture<'_, Result<Vec<NodeStanding>, ChainError>> {
        let _ = netuid;
        unsupported("node standings")
    }

    /// The chain's new finalized heads as they come, when the backend can follow them: a stream
    /// that connects when first polled, yields each head's block number and ends after its first
    /// error (the subscription is lost; the ChainActor takes it again with backoff). `None`, the
    /// default, when heads can only be polled.
    fn follow_heads(&self) -> Option<BoxStream<'static, Result<u64, ChainError>>> {
        None
    }
}

/// One node in a JSON snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a node: a JSON object with netuid, hotkey (SS58), peer_id, stake and optionally class"
)]
pub struct NodeJson {
    /// Subnet.
    pub netuid: u16,
    /// Hotkey SS58 address.
    pub hotkey: String,
    /// Peer id, text form.
    pub peer_id: String,
    /// Stake in the smallest unit.
    pub stake: u128,
    /// `registered`, `idle`, `included` or `validator`.
    #[serde(default = "default_class")]
    pub class: String,
}

fn default_class() -> String {
    NodeClass::Registered.as_str().into()
}

/// A JSON registry snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a registry snapshot: a JSON object {\"nodes\": [...]}, as `hermes devchain list` prints"
)]
pub struct SnapshotJson {
    /// Every registration.
    pub nodes: Vec<NodeJson>,
}

impl NodeJson {
    /// Converts to a registry entry, checking every field.
    ///
    /// # Errors
    /// A message naming the bad field.
    pub fn to_entry(&self) -> Result<NodeEntry, String> {
        let (hotkey, _) = Hotkey::from_ss58(&self.hotkey).map_err(|e| format!("hotkey: {e}"))?;
        let class = NodeClass::parse(&self.class).ok_or_else(|| {
            format!(
                "class: `{}` is not one of registered, idle, included, validator",
                self.class
            )
        })?;
        let entry = NodeEntry {
            netuid: self.netuid,
            hotkey,
            peer_id: self.peer_id.clone(),
            stake: self.stake,
            class,
        };
        entry.validate().map_err(|e| format!("peer_id: {e}"))?;
        Ok(entry)
    }

    /// The JSON form of an entry.
    pub fn from_entry(e: &NodeEntry, ss58_prefix: u16) -> Self {
        NodeJson {
            netuid: e.netuid,
            hotkey: e.hotkey.to_ss58(ss58_prefix),
            peer_id: e.peer_id.clone(),
            stake: e.stake,
            class: e.class.as_str().into(),
        }
    }
}

/// Parses a snapshot, naming the index of a bad node.
///
/// # Errors
/// [`ChainError::Format`].
pub fn parse_snapshot(text: &str, path: &Path) -> Result<Registry, ChainError> {
    let snap: SnapshotJson = serde_json::from_str(text).map_err(|e| ChainError::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut entries = Vec::with_capacity(snap.nodes.len());
    for (i, n) in snap.nodes.iter().enumerate() {
        entries.push(n.to_entry().map_err(|reason| ChainError::Format {
            path: path.to_path_buf(),
            reason: format!("nodes[{i}].{reason}"),
        })?);
    }
    Ok(Registry::new(entries))
}

/// Published when the registry or its staleness changes.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct RegistryUpdated {
    /// The latest registry read (the last good one while the backend fails).
    pub registry: Arc<Registry>,
    /// Whether it is stale: the backend has failed for longer than `max_staleness`, or has never
    /// answered since start. New peers are refused meanwhile.
    pub stale: bool,
}

/// Ask for the latest snapshot.
#[derive(Debug, Message)]
#[rtype(result = "Arc<Registry>")]
pub struct GetRegistry;

/// Reload from the backend now.
#[derive(Debug, Message)]
#[rtype(result = "Result<Arc<Registry>, String>")]
pub struct Refresh;

/// The ChainActor.
#[derive(Debug)]
pub struct ChainActor {
    chain: Arc<dyn Chain>,
    current: Arc<Registry>,
    poll: Duration,
    subscriber: Recipient<RegistryUpdated>,
    /// How long the backend may fail before the registry counts as stale.
    max_staleness: Duration,
    /// When the backend last answered; `None` when it has not since start.
    last_ok: Option<Instant>,
    /// What the subscriber was last told.
    stale: bool,
    /// An update the subscriber's full mailbox refused, to send again at the next poll.
    unsent: bool,
    /// Reads failed in a row: the next read waits longer (exponential backoff).
    failures: u32,
    /// A read is running: reads never overlap.
    reading: bool,
    /// A new head arrived while a read was running: read once more right after it.
    read_again: bool,
    /// The next periodic read, cancelled when a new head brings the read forward.
    timer: Option<SpawnHandle>,
    /// Head subscriptions lost in a row (the resubscription backoff).
    sub_failures: u32,
}

/// The longest wait between two reads of a failing backend: at most this many poll intervals…
pub const MAX_BACKOFF_POLLS: u32 = 8;
/// …and at most this long (or one poll interval, if longer), so that a recovered endpoint is
/// read again soon.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The first wait before taking a lost head subscription again (or `poll_interval`, if shorter):
/// a node restarting behind its endpoint is followed again within a second or two.
pub const RESUBSCRIBE_FIRST: Duration = Duration::from_secs(1);

/// `base · 2^k`, at most `cap`, jittered down by up to a fifth so that nodes that lost the same
/// endpoint do not come back in step.
fn backoff(base: Duration, k: u32, cap: Duration) -> Duration {
    base.saturating_mul(1u32 << k.min(16))
        .min(cap)
        .mul_f64(rand::Rng::gen_range(&mut rand::thread_rng(), 0.8..=1.0))
}

impl ChainActor {
    /// An actor polling `chain` every `poll` and publishing changes to `subscriber`. `initial` is
    /// what was read at start, `None` when the chain could not be read then: the registry is stale
    /// from the start (new peers refused) until a read succeeds. After that, it becomes stale once
    /// the backend has failed for `max_staleness`.
    pub fn new(
        chain: Arc<dyn Chain>,
        initial: Option<Registry>,
        poll: Duration,
        max_staleness: Duration,
        subscriber: Recipient<RegistryUpdated>,
    ) -> Self {
        let last_ok = initial.as_ref().map(|_| Instant::now());
        ChainActor {
            chain,
            stale: initial.is_none(),
            current: Arc::new(initial.unwrap_or_default()),
            poll,
            subscriber,
            max_staleness,
            last_ok,
            unsent: false,
            failures: 0,
            reading: false,
            read_again: false,
            timer: None,
            sub_failures: 0,
        }
    }

    /// How long to wait before the next read: `poll` while the backend answers; after `k`
    /// failures in a row `poll * 2^k` (jittered down by up to a fifth, so nodes that lost the same
    /// endpoint do not come back in step), at most [`MAX_BACKOFF_POLLS`] polls and
    /// [`MAX_BACKOFF`] (or `poll` if longer). While the
    /// registry is not yet stale, never past the moment it would become so: `chain_stale` is
    /// declared on time however long the backoff has grown.
    pub fn next_delay(&self) -> Duration {
        if self.failures == 0 {
            return self.poll;
        }
        let cap = self
            .poll
            .saturating_mul(MAX_BACKOFF_POLLS)
            .min(MAX_BACKOFF)
            .max(self.poll);
        let mut delay = backoff(self.poll, self.failures, cap);
        if !self.stale {
            if let Some(t) = self.last_ok {
                let left = self.max_staleness.saturating_sub(t.elapsed());
                delay = delay.min(left.max(Duration::from_millis(10)));
            }
        }
        delay
    }

    /// How long to wait before taking a lost head subscription again: after the `k`-th loss in a
    /// row, `min(poll, RESUBSCRIBE_FIRST) · 2^(k-1)` jittered as [`ChainActor::next_delay`], at
    /// most [`MAX_BACKOFF`]. Reset by the first head of a new subscription.
    pub fn resubscribe_delay(&self) -> Duration {
        backoff(
            self.poll.min(RESUBSCRIBE_FIRST),
            self.sub_failures.saturating_sub(1),
            MAX_BACKOFF,
        )
    }

    /// Reads the backend, then schedules the next read: one read at a time, so a backend that
    /// hangs until the RPC timeout never has reads piling up against it.
    fn poll_now(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        self.reading = true;
        let chain = self.chain.clone();
        ctx.spawn(
            async move { chain.registry().await }
                .into_actor(self)
                .map(|res, act, ctx| {
                    act.reading = false;
                    let ok = act.apply(res).is_ok();
                    // Heads came during the read: one more read now, unless reads fail (then
                    // the backoff decides).
                    if std::mem::take(&mut act.read_again) && ok {
                        act.poll_now(ctx);
                    } else {
                        act.poll_later(ctx);
                    }
                }),
        );
    }

    fn poll_later(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        self.timer = Some(ctx.run_later(self.next_delay(), |act, ctx| {
            act.timer = None;
            act.poll_now(ctx);
        }));
    }

    /// Subscribes to new heads, if the backend can.
    fn follow(&mut self, ctx: &mut Context<Self>) {
        let Some(heads) = self.chain.follow_heads() else {
            return;
        };
        ctx.spawn(
            actix::fut::wrap_stream::<_, Self>(heads)
                .map(|head, act, ctx| act.on_head(head, ctx))
                .finish()
                .map(|(), act, ctx| {
                    act.sub_failures = act.sub_failures.saturating_add(1);
                    let delay = act.resubscribe_delay();
                    tracing::debug!(?delay, "subscribing to new heads again");
                    ctx.run_later(delay, |act, ctx| act.follow(ctx));
                }),
        );
    }

    /// A new head (read it now, or right after the running read) or the subscription's loss.
    fn on_head(&mut self, head: Result<u64, ChainError>, ctx: &mut Context<Self>) {
        match head {
            Ok(block) => {
                if self.sub_failures > 0 {
                    tracing::info!(block, "following new heads again");
                    self.sub_failures = 0;
                }
                if self.reading {
                    self.read_again = true;
                } else if self.failures == 0 {
                    self.poll_now(ctx);
                }
                // While reads fail, the backoff paces them; a head does not bring them forward.
            }
            Err(e) => {
                tracing::warn!(error = %e, "lost the subscription to new heads; polling every poll_interval until it is back");
            }
        }
    }

    fn reload(&mut self, ctx: &mut Context<Self>) {
        let chain = self.chain.clone();
        let fut = async move { chain.registry().await };
        ctx.spawn(
            fut.into_actor(self)
                .map(|res, act, _| act.apply(res).map(|_| ()))
                .map(|_, _, _| ()),
        );
    }

    fn publish(&mut self) {
        // try_send: a full firewall mailbox only delays this update to the next poll.
        let update = RegistryUpdated {
            registry: self.current.clone(),
            stale: self.stale,
        };
        self.unsent = false;
        if let Err(e) = self.subscriber.try_send(update) {
            tracing::warn!(error = %e, "could not publish registry update; retrying at the next poll");
            self.unsent = true;
        }
    }

    fn apply(&mut self, res: Result<Registry, ChainError>) -> Result<Arc<Registry>, String> {
        match res {
            Ok(reg) => {
                self.last_ok = Some(Instant::now());
                self.failures = 0;
                let mut changed = self.unsent;
                if reg.entries() != self.current.entries() {
                    tracing::debug!(nodes = reg.len(), "chain registry changed");
                    self.current = Arc::new(reg);
                    changed = true;
                }
                if self.stale {
                    tracing::info!("the chain registry reads again; admitting new peers");
                    self.stale = false;
                    changed = true;
                }
                if changed {
                    self.publish();
                }
                Ok(self.current.clone())
            }
            Err(e) => {
                self.failures = self.failures.saturating_add(1);
                let age = self.last_ok.map(|t| t.elapsed());
                if !self.stale && age.is_none_or(|a| a >= self.max_staleness) {
                    tracing::error!(error = %e, "the chain registry has not been readable for max_staleness; refusing new peers (chain_stale) until it reads again");
                    self.stale = true;
                    self.publish();
                } else {
                    tracing::warn!(error = %e, stale = self.stale, "chain refresh failed; keeping the last registry");
                    if self.unsent {
                        self.publish();
                    }
                }
                Err(e.to_string())
            }
        }
    }
}

impl Actor for ChainActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(64);
        self.poll_later(ctx);
        self.follow(ctx);
    }
}

impl Supervised for ChainActor {
    fn restarting(&mut self, ctx: &mut Self::Context) {
        tracing::warn!("ChainActor restarted; reloading the registry");
        // A restart dropped the running read, the timer and the subscription (`started` sets
        // them up again).
        self.reading = false;
        self.read_again = false;
        self.timer = None;
        self.reload(ctx);
    }
}

impl Handler<GetRegistry> for ChainActor {
    type Result = Arc<Registry>;
    fn handle(&mut self, _: GetRegistry, _: &mut Self::Context) -> Self::Result {
        self.current.clone()
    }
}

impl Handler<Refresh> for ChainActor {
    type Result = ResponseActFuture<Self, Result<Arc<Registry>, String>>;
    fn handle(&mut self, _: Refresh, _: &mut Self::Context) -> Self::Result {
        let chain = self.chain.clone();
        Box::pin(
            async move { chain.registry().await }
                .into_actor(self)
                .map(|res, act, _| act.apply(res)),
        )
    }
}

#[cfg(test)]
mod tests;
