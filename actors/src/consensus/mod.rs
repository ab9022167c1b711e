//! ConsensusActor: follows the chain's epochs for one subnet, proposes when this node is elected,
//! checks the elected validator's proposal through the application's [`ConsensusHook`] and
//! attests it when the application agrees.
//!
//! 1. Every `poll` it reads the chain's head and the current epoch's round ([`Chain::epoch`]).
//! 2. Elected and no proposal yet: asks the hook for the data ([`ConsensusHook::produce`]), signs
//!    it, records the duty, then submits ([`Chain::submit_proposal`]).
//! 3. A validator, not the proposer, a proposal on the chain: asks the hook
//!    ([`ConsensusHook::check`]); if it agrees, records the duty, signs and attests
//!    ([`Chain::attest`]).
//! 4. Once an epoch is over, its outcome (verdict, counts, what it did to nodes) is stored, kept
//!    as the last one and sent as an [`EpochOutcome`] to the subscribers of [`ConsensusActor::with_events`].
//!    Epochs that ended between two polls are read too (at most [`MAX_CATCH_UP`] at a time), so
//!    no outcome is skipped when the chain moves faster than the poll.
//!
//! Duties ([`Duties`]) are written to the node's sled tree before a signed record leaves, so a
//! restart in the middle of an epoch re-sends the same statement (the chain answers `Duplicate`)
//! or nothing: never a second proposal or attestation for one epoch.
//!
//! Accepts [`GetConsensusStatus`] → [`ConsensusStatus`] and [`Tick`] (poll now); emits
//! [`EpochOutcome`] on its broadcast channel.
//!
//! With [`ConsensusActor::with_network`], records also travel beyond the chain ([`gossip`]): the
//! elected validator publishes its signed proposal on the subnet's gossip topic and stores it in
//! the DHT, attesters publish their attestations, and a validator whose chain does not hold the
//! proposal yet takes it from gossip or the DHT, checks it like the chain would (a copy of the
//! round), relays it to the chain and attests it. Every record heard is judged against the node's
//! copy of the round ([`gossip::GossipJudge`]); bad ones are counted per reason in the status, and
//! two different proposals of the elected validator for one epoch are stored as evidence
//! ([`Equivocation`]) and announced on the channel of [`ConsensusActor::with_evidence`].
//!
//! Gossip is the fast path: a validator that takes a new proposal from gossip attests it at once
//! from its copy of the round (`fast.rs`) and submits to the chain at its next poll; one that hears
//! a proposal for the epoch after its copy's (a sign that the chain moved on) polls at once; an
//! attester publishes its attestation before submitting it to the chain. What
//! each node saw of recent epochs, and when, is in [`ConsensusStatus::traces`] ([`trace`]).

use crate::chain::{Chain, ChainError};
use crate::network::{Command, GossipMessage};
use actix::prelude::*;
use hermes_proto::consensus::{
    Attestation, Decision, Duties, Proposal, ProposalHash, Round, SignedProposal, Standing, Verdict,
};
use hermes_proto::Hotkey;
use sp_core::sr25519;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};

mod fast;
pub mod gossip;
pub mod trace;
mod types;

use types::EVIDENCE_PREFIX;
pub use types::{ConsensusHook, EpochOutcome, EqualScores, Equivocation, SCORE_ONE};

/// How long a publication or DHT request may take before the poll goes on without it.
const NET_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a poll looks for a proposal in the DHT.
const DHT_LOOKUP: Duration = Duration::from_millis(300);

/// Sends one request to the network task and waits (bounded) for its answer. `try_send`: a
/// full network queue drops a publication rather than stalling the poll.
async fn net_request<T>(
    net: &mpsc::Sender<Command>,
    wait: Duration,
    make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Command,
) -> Result<T, String> {
    let (tx, rx) = oneshot::channel();
    net.try_send(make(tx)).map_err(|e| e.to_string())?;
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err("the network task stopped".into()),
        Err(_) => Err("no answer in time".into()),
    }
}

/// Most past epochs one poll reads to catch up (a node that was down longer reports only the
/// latest ones).
pub const MAX_CATCH_UP: u64 = 16;

/// What the actor knows now.
#[derive(Debug, Clone, Default, PartialEq, Eq, MessageResponse)]
pub struct ConsensusStatus {
    /// Subnet.
    pub netuid: u16,
    /// The chain's latest block, once read.
    pub block: Option<u64>,
    /// The chain's current epoch, once read.
    pub epoch: Option<u64>,
    /// The current epoch's elected validator.
    pub elected: Option<Hotkey>,
    /// Attestations and validator-set size of the current epoch.
    pub attestations: (u64, u64),
    /// Whether this node is a validator in the current epoch.
    pub validator: bool,
    /// This node's class, penalties and reputation in the subnet as the chain holds them, read
    /// once per epoch (after the previous one closed); `None` while unread, when the node is not
    /// (or no longer) registered, or when the chain backend keeps no standings.
    pub standing: Option<Standing>,
    /// The last finished epoch and its verdict.
    pub last: Option<(u64, Verdict)>,
    /// The last finished epoch's outcome in full.
    pub last_outcome: Option<EpochOutcome>,
    /// The latest past epoch whose outcome has been read (none, or reported).
    pub followed: Option<u64>,
    /// What this node signed last (persisted).
    pub duties: Duties,
    /// Chain errors and refusals seen (the last one's text).
    pub last_error: Option<String>,
    /// Bad consensus records heard in gossip since the node started, per reason.
    pub bad_records: gossip::BadRecords,
    /// Equivocations of this subnet's elected validators recorded as evidence (persisted).
    pub evidence: u64,
    /// The last [`trace::MAX_TRACES`] epochs as this node saw them, oldest first: when it
    /// proposed, first held the proposal and first counted ≥ 66 % attestations, and the
    /// consensus records it published and received on the gossip topic (since it started).
    pub traces: Vec<trace::EpochTrace>,
}

/// Ask for the status.
#[derive(Debug, Message)]
#[rtype(result = "ConsensusStatus")]
pub struct GetConsensusStatus;

/// Poll the chain now (tests and the `refresh` path); answers once the poll is done.
#[derive(Debug, Message)]
#[rtype(result = "ConsensusStatus")]
pub struct Tick;

const DUTIES_KEY: &[u8] = b"duties";

/// What one poll did besides updating the status.
#[derive(Debug, Default)]
struct PollReport {
    /// The current epoch's round as this node now holds it (the chain's, with a relayed
    /// proposal and its own attestation).
    round: Option<Round>,
    /// When this node signed its proposal, if it did.
    proposed_at: Option<Instant>,
    /// Consensus payloads handed to gossip: epoch, bytes.
    published: Vec<(u64, usize)>,
}

/// The ConsensusActor of one subnet.
pub struct ConsensusActor {
    chain: Arc<dyn Chain>,
    pair: sr25519::Pair,
    me: Hotkey,
    netuid: u16,
    hook: Arc<dyn ConsensusHook>,
    /// The node's `consensus` tree: `duties` and `epoch/<netuid BE><epoch BE>` → verdict name.
    tree: sled::Tree,
    poll: Duration,
    status: ConsensusStatus,
    /// Where finished epochs are announced; `None`: nobody listens.
    events: Option<broadcast::Sender<EpochOutcome>>,
    /// A timer poll is queued or running.
    poll_queued: bool,
    /// The network task's requests, and the gossip feed, when records travel beyond the chain.
    net: Option<(mpsc::Sender<Command>, broadcast::Sender<GossipMessage>)>,
    /// The latest valid proposal of the elected validator heard in gossip for this subnet
    /// (checked again against the chain's round at the next poll).
    heard: Option<SignedProposal>,
    /// A proposal heard in gossip for the epoch after the copy's (not judged yet: the poll checks
    /// it against the chain's round like `heard`).
    early: Option<SignedProposal>,
    /// The epoch an early proposal last made this actor poll at once (once per epoch, so that
    /// peers cannot keep it reading the chain).
    early_poll: Option<u64>,
    /// What this node saw of recent epochs, and when.
    traces: trace::Traces,
    /// The attestation this node last gossiped straight from a heard proposal (epoch, hash):
    /// the poll that follows submits it to the chain without gossiping it again.
    gossiped: Option<(u64, ProposalHash)>,
    /// Judges what gossip brings against a copy of the current round, and counts the bad.
    judge: gossip::GossipJudge,
    /// Evidence records stored for this subnet.
    evidence: u64,
    /// Where new evidence is announced.
    evidence_events: Option<broadcast::Sender<Equivocation>>,
    /// Test hook: the elected validator only gossips its proposal, never submits it itself.
    withhold: bool,
}

impl std::fmt::Debug for ConsensusActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signing pair is secret: only its public key is shown.
        f.debug_struct("ConsensusActor")
            .field("me", &self.me)
            .field("netuid", &self.netuid)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl ConsensusActor {
    /// An actor for subnet `netuid`, signing with `pair`, persisting in `tree`.
    ///
    /// # Errors
    /// The tree cannot be read, or holds damaged duties.
    pub fn new(
        chain: Arc<dyn Chain>,
        pair: sr25519::Pair,
        netuid: u16,
        hook: Arc<dyn ConsensusHook>,
        tree: sled::Tree,
        poll: Duration,
    ) -> Result<Self, String> {
        let duties = match tree
            .get(Self::duties_key(netuid))
            .map_err(|e| e.to_string())?
        {
            Some(v) => Duties::decode(&v).map_err(|e| format!("consensus duties: {e}"))?,
            None => Duties::default(),
        };
        let mut prefix = EVIDENCE_PREFIX.to_vec();
        prefix.extend_from_slice(&netuid.to_be_bytes());
        let evidence = u64::try_from(tree.scan_prefix(&prefix).count()).unwrap_or(u64::MAX);
        Ok(ConsensusActor {
            chain,
            me: Hotkey::of(&pair),
            pair,
            netuid,
            hook,
            tree,
            poll,
            status: ConsensusStatus {
                netuid,
                duties,
                ..ConsensusStatus::default()
            },
            events: None,
            poll_queued: false,
            net: None,
            heard: None,
            early: None,
            early_poll: None,
            traces: trace::Traces::default(),
            gossiped: None,
            judge: gossip::GossipJudge::default(),
            evidence,
            evidence_events: None,
            withhold: false,
        })
    }

    /// Publishes proposals and attestations on the subnet's gossip topic (proposals in the DHT
    /// too) and takes proposals the chain does not hold yet from there ([`gossip`]).
    pub fn with_network(
        mut self,
        commands: mpsc::Sender<Command>,
        gossip: broadcast::Sender<GossipMessage>,
    ) -> Self {
        self.net = Some((commands, gossip));
        self
    }

    /// Test hook: when elected, only gossip the proposal (and store it in the DHT); never submit
    /// it to the chain. The other validators must relay it for the epoch to count.
    #[cfg(feature = "fault-injection")]
    pub fn withhold_from_chain(mut self) -> Self {
        self.withhold = true;
        self
    }

    /// Announces every equivocation recorded as evidence on `events`.
    pub fn with_evidence(mut self, events: broadcast::Sender<Equivocation>) -> Self {
        self.evidence_events = Some(events);
        self
    }

    /// Announces every finished epoch on `events` (a full channel drops the oldest for slow
    /// readers, who are told how many they missed).
    pub fn with_events(mut self, events: broadcast::Sender<EpochOutcome>) -> Self {
        self.events = Some(events);
        self
    }

    /// The status with the gossip counters as they are now (they move between polls).
    fn current_status(&self) -> ConsensusStatus {
        let mut s = self.status.clone();
        s.bad_records = self.judge.bad();
        s.evidence = self.evidence;
        s.traces = self.traces.to_vec();
        s
    }

    /// Queues a poll now, unless one is queued or running (the timer's rule).
    fn poll_now(&mut self, ctx: &mut Context<Self>) {
        if self.poll_queued {
            return;
        }
        self.poll_queued = true;
        // One poll at a time: wait blocks this actor's mailbox until the poll is done. The
        // poll takes its copy of the status only when it runs (`deferred_tick`), never
        // when queued: a poll queued behind another would otherwise start from the status
        // before it and, on finishing, overwrite the duties the other one recorded.
        ctx.wait(self.deferred_tick().map(|_, act: &mut Self, _| {
            act.poll_queued = false;
        }));
    }

    /// Stores `ev` unless this subnet's epoch has evidence already; announces it when new.
    fn record_evidence(&mut self, ev: Equivocation) {
        let key = Equivocation::key(ev.netuid, ev.epoch);
        let stored = self
            .tree
            .compare_and_swap(key, None::<&[u8]>, Some(ev.encode()))
            .map_err(|e| e.to_string())
            .and_then(|r| {
                self.tree.flush().map_err(|e| e.to_string())?;
                Ok(r.is_ok())
            });
        match stored {
            Ok(true) => {
                self.evidence += 1;
                tracing::warn!(
                    netuid = ev.netuid,
                    epoch = ev.epoch,
                    proposer = ?ev.proposer,
                    from = %ev.from,
                    "the elected validator signed two different proposals: evidence recorded"
                );
                if let Some(tx) = &self.evidence_events {
                    let _ = tx.send(ev);
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not record equivocation evidence"),
        }
    }

    fn duties_key(netuid: u16) -> Vec<u8> {
        let mut k = DUTIES_KEY.to_vec();
        k.extend_from_slice(&netuid.to_be_bytes());
        k
    }

    /// Persists the duties before anything signed leaves (flushed: a crash right after must
    /// still find them).
    fn persist(&self, duties: &Duties) -> Result<(), String> {
        self.tree
            .insert(Self::duties_key(self.netuid), duties.encode())
            .map_err(|e| e.to_string())?;
        self.tree.flush().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// One poll: read the round, act, record.
    #[allow(clippy::too_many_arguments)]
    async fn poll_once(
        chain: Arc<dyn Chain>,
        hook: Arc<dyn ConsensusHook>,
        pair: sr25519::Pair,
        me: Hotkey,
        netuid: u16,
        mut status: ConsensusStatus,
        persist: impl Fn(&Duties) -> Result<(), String>,
        record: impl Fn(&EpochOutcome),
        net: Option<mpsc::Sender<Command>>,
        heard: [Option<SignedProposal>; 2],
        gossiped: Option<(u64, ProposalHash)>,
        withhold: bool,
        report: &mut PollReport,
    ) -> ConsensusStatus {
        let head = match chain.head().await {
            Ok(h) => h,
            Err(e) => {
                status.last_error = Some(e.to_string());
                return status;
            }
        };
        // Report every epoch that ended since the last poll (at first, only the latest one).
        let from = match status.followed {
            Some(e) => e.saturating_add(1),
            None => head.epoch.saturating_sub(1),
        }
        .max(head.epoch.saturating_sub(MAX_CATCH_UP));
        for e in from..head.epoch {
            match chain.epoch(netuid, Some(e)).await {
                Ok(Some(view)) => {
                    // A past epoch is always closed; an open one means the chain moved back.
                    let Some(outcome) = EpochOutcome::of(&view, &me) else {
                        break;
                    };
                    record(&outcome);
                    status.last = Some((e, outcome.verdict));
                    status.last_outcome = Some(outcome);
                }
                // The subnet had no round then: nothing to report.
                Ok(None) => {}
                Err(err) => {
                    status.last_error = Some(err.to_string());
                    break;
                }
            }
            status.followed = Some(e);
        }
        status.block = Some(head.block);
        // Classes and penalties change only when an epoch closes: read them once per epoch.
        if status.epoch != Some(head.epoch) {
            match chain.standings(netuid).await {
                Ok(list) => {
                    status.standing = list
                        .into_iter()
                        .find(|n| n.entry.hotkey == me)
                        .map(|n| n.standing);
                }
                Err(ChainError::Unsupported(_)) => status.standing = None,
                Err(e) => {
                    status.last_error = Some(e.to_string());
                    return status;
                }
            }
        }
        status.epoch = Some(head.epoch);
        let mut view = match chain.epoch(netuid, Some(head.epoch)).await {
            Ok(Some(v)) => v,
            Ok(None) => {
                status.elected = None;
                status.validator = false;
                return status;
            }
            Err(e) => {
                status.last_error = Some(e.to_string());
                return status;
            }
        };
        // A proposal the chain does not hold yet, heard in gossip or found in the DHT: checked
        // on a copy of the round exactly as the chain would, then relayed to the chain.
        if view.round.proposal().is_none()
            && view.round.is_validator(&me)
            && view.round.elected().is_some_and(|e| e != me)
        {
            let mut candidate = heard
                .into_iter()
                .flatten()
                .find(|sp| sp.proposal.epoch == head.epoch);
            if candidate.is_none() {
                if let Some(net) = &net {
                    let key = gossip::dht_key(netuid, head.epoch);
                    if let Ok(bytes) =
                        net_request(net, DHT_LOOKUP, |tx| Command::GetRecord(key, tx)).await
                    {
                        candidate = SignedProposal::decode(&bytes).ok();
                    }
                }
            }
            if let Some(sp) = candidate {
                let mut copy = view.round.clone();
                match copy.submit(&sp) {
                    Ok(_) => {
                        tracing::debug!(
                            netuid,
                            epoch = head.epoch,
                            "relaying a proposal the chain lacks"
                        );
                        if let Err(e) = chain.submit_proposal(sp).await {
                            tracing::debug!(error = %e, "the chain refused the relayed proposal");
                        }
                        view.round = copy;
                    }
                    Err(r) => {
                        tracing::debug!(
                            refusal = r.as_str(),
                            "a proposal from gossip or the DHT was refused"
                        );
                    }
                }
            }
        }
        report.round = Some(view.round.clone());
        let round = &view.round;
        let mut sent = false;
        let eligible = round.params().eligible.clone();
        status.elected = round.elected();
        status.validator = round.is_validator(&me);
        let err = |status: &mut ConsensusStatus, e: ChainError| {
            tracing::warn!(error = %e, "consensus record refused by the chain");
            status.last_error = Some(e.to_string());
        };
        // Propose.
        if round.elected() == Some(me)
            && round.proposal().is_none()
            && round.equivocation().is_none()
        {
            let (scores, args) = hook.produce(netuid, head.epoch, &eligible);
            let mut scores = scores;
            scores.sort_by_key(|s| s.hotkey);
            scores.dedup_by_key(|s| s.hotkey);
            let proposal = Proposal {
                epoch: head.epoch,
                netuid,
                proposer: me,
                scores,
                args,
            };
            let hash = proposal.hash();
            match status.duties.may_propose(head.epoch, &hash) {
                Decision::Refuse => {}
                d => {
                    if d == Decision::Sign {
                        let mut duties = status.duties;
                        duties.record_proposal(head.epoch, hash);
                        if let Err(e) = persist(&duties) {
                            status.last_error = Some(e);
                            return status;
                        }
                        status.duties = duties;
                    }
                    match proposal.sign(&pair) {
                        Ok(sp) => {
                            sent = true;
                            report.proposed_at = Some(Instant::now());
                            tracing::debug!(netuid, epoch = head.epoch, decision = ?d, "proposing");
                            if let Some(net) = &net {
                                // Best effort: the chain (or the DHT) still has it for whoever
                                // missed the publication.
                                let bytes = gossip::proposal_payload(&sp);
                                let len = bytes.len();
                                match net_request(net, NET_TIMEOUT, |tx| {
                                    Command::Publish(netuid, bytes, tx)
                                })
                                .await
                                {
                                    Ok(()) => report.published.push((head.epoch, len)),
                                    Err(e) => tracing::debug!(error = %e, "proposal not gossiped"),
                                }
                                // Not awaited: a DHT put completes when enough peers have
                                // stored it, and the poll (with this actor's mailbox, gossip
                                // included) must not wait for that.
                                let key = gossip::dht_key(netuid, head.epoch);
                                let (net, bytes) = (net.clone(), sp.encode());
                                actix::spawn(async move {
                                    let put = net_request(&net, NET_TIMEOUT, |tx| {
                                        Command::PutRecord(key, bytes, tx)
                                    });
                                    if let Err(e) = put.await {
                                        tracing::debug!(error = %e, "proposal not stored in the DHT");
                                    }
                                });
                            }
                            if !withhold {
                                if let Err(e) = chain.submit_proposal(sp).await {
                                    err(&mut status, e);
                                }
                            }
                        }
                        Err(e) => status.last_error = Some(e.to_string()),
                    }
                }
            }
        }
        // Attest.
        if let Some((sp, hash)) = round.proposal() {
            if status.validator && sp.proposal.proposer != me && !round.has_attested(&me) {
                let decision = status.duties.may_attest(head.epoch, &hash);
                if decision != Decision::Refuse && hook.check(&sp.proposal, &eligible) {
                    if decision == Decision::Sign {
                        let mut duties = status.duties;
                        duties.record_attestation(head.epoch, hash);
                        if let Err(e) = persist(&duties) {
                            status.last_error = Some(e);
                            return status;
                        }
                        status.duties = duties;
                    }
                    let att = Attestation {
                        epoch: head.epoch,
                        netuid,
                        proposal: hash,
                        attester: me,
                    };
                    match att.sign(&pair) {
                        Ok(sa) => {
                            sent = true;
                            tracing::debug!(netuid, epoch = head.epoch, ?decision, "attesting");
                            // Gossip first: it reaches the other nodes in milliseconds, while a
                            // chain submission may wait for a block. Not again when this node
                            // already gossiped this statement (`fast::attest_heard`).
                            let again = gossiped == Some((head.epoch, hash));
                            if let Some(net) = net.as_ref().filter(|_| !again) {
                                let bytes = gossip::attestation_payload(&sa);
                                let len = bytes.len();
                                match net_request(net, NET_TIMEOUT, |tx| {
                                    Command::Publish(netuid, bytes, tx)
                                })
                                .await
                                {
                                    Ok(()) => report.published.push((head.epoch, len)),
                                    Err(e) => {
                                        tracing::debug!(error = %e, "attestation not gossiped")
                                    }
                                }
                            }
                            if let Some(r) = report.round.as_mut() {
                                let _ = r.attest(&sa);
                            }
                            if let Err(e) = chain.attest(sa).await {
                                err(&mut status, e);
                            }
                        }
                        Err(e) => status.last_error = Some(e.to_string()),
                    }
                }
            }
        }
        // Counts after acting: read again only when this poll sent something (each read of the
        // dev chain opens its database).
        let t = round.tally();
        status.attestations = (t.attestations, t.validators);
        if sent {
            if let Ok(Some(v)) = chain.epoch(netuid, Some(head.epoch)).await {
                let t = v.round.tally();
                status.attestations = (t.attestations, t.validators);
                // The fresher round, unless this node's copy counts more (its own attestation
                // or a relayed proposal the chain refused to take).
                if report
                    .round
                    .as_ref()
                    .is_none_or(|r| r.tally().attestations <= t.attestations)
                {
                    report.round = Some(v.round);
                }
            }
        }
        status
    }

    /// [`ConsensusActor::tick`], started when the returned future is first polled.
    fn deferred_tick(&mut self) -> ResponseActFuture<Self, ConsensusStatus> {
        Box::pin(actix::fut::ready(()).then(|(), act: &mut Self, _| act.tick()))
    }

    fn tick(&mut self) -> ResponseActFuture<Self, ConsensusStatus> {
        let tree = self.tree.clone();
        let key = Self::duties_key(self.netuid);
        let netuid = self.netuid;
        let persist = {
            let tree = tree.clone();
            move |d: &Duties| -> Result<(), String> {
                tree.insert(key.as_slice(), d.encode())
                    .map_err(|e| e.to_string())?;
                tree.flush().map_err(|e| e.to_string())?;
                Ok(())
            }
        };
        let events = self.events.clone();
        let record = move |o: &EpochOutcome| {
            let mut k = b"epoch/".to_vec();
            k.extend_from_slice(&netuid.to_be_bytes());
            k.extend_from_slice(&o.epoch.to_be_bytes());
            if let Err(e) = tree.insert(k, o.verdict.as_str().as_bytes()) {
                tracing::warn!(error = %e, "could not record an epoch outcome");
            }
            tracing::info!(
                netuid,
                epoch = o.epoch,
                verdict = o.verdict.as_str(),
                attestations = o.attestations,
                validators = o.validators,
                "epoch finished"
            );
            if let Some(tx) = &events {
                // No receiver is not an error: nobody is listening right now.
                let _ = tx.send(o.clone());
            }
        };
        let (chain, hook, pair, me, status) = (
            self.chain.clone(),
            self.hook.clone(),
            self.pair.clone(),
            self.me,
            self.status.clone(),
        );
        let net = self.net.as_ref().map(|(c, _)| c.clone());
        let heard = [self.heard.clone(), self.early.clone()];
        let gossiped = self.gossiped;
        let withhold = self.withhold;
        let fut = async move {
            let mut report = PollReport::default();
            let status = Self::poll_once(
                chain,
                hook,
                pair,
                me,
                netuid,
                status,
                persist,
                record,
                net,
                heard,
                gossiped,
                withhold,
                &mut report,
            )
            .await;
            (status, report)
        };
        Box::pin(fut.into_actor(self).map(|(status, report), act, _| {
            act.status = status;
            let now = Instant::now();
            for (epoch, len) in report.published {
                act.traces.of(epoch).sent.add(len);
            }
            if let Some(round) = report.round {
                if let Some(at) = report.proposed_at {
                    act.traces.of(round.epoch()).proposed_at.get_or_insert(at);
                }
                act.judge.set_round(round);
            }
            if let Some(round) = act.judge.round() {
                act.traces.saw(round, now);
            }
            act.current_status()
        }))
    }
}

impl Actor for ConsensusActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16);
        // The duties were read in `new`; make sure they are on disk before anything else.
        if let Err(e) = self.persist(&self.status.duties) {
            tracing::error!(error = %e, "cannot persist consensus duties");
        }
        if let Some((_, feed)) = &self.net {
            // Gossip of this node's subnets; a reader that lags skips what it missed (the chain
            // and the DHT still hold it).
            let rx = feed.subscribe();
            ctx.add_stream(futures::stream::unfold(rx, |mut rx| async move {
                loop {
                    match rx.recv().await {
                        Ok(m) => return Some((m, rx)),
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }));
        }
        // A poll that took longer than the interval makes the timer fire several times in a
        // row: one queued poll is enough.
        ctx.run_interval(self.poll, |act, ctx| act.poll_now(ctx));
    }
}

impl StreamHandler<GossipMessage> for ConsensusActor {
    fn handle(&mut self, m: GossipMessage, ctx: &mut Self::Context) {
        if m.netuid != self.netuid || !m.data.starts_with(gossip::GOSSIP_TAG) {
            return;
        }
        let epoch = match gossip::decode(&m.data) {
            Some(gossip::GossipRecord::Proposal(sp)) => Some(sp.proposal.epoch),
            Some(gossip::GossipRecord::Attestation(sa)) => Some(sa.attestation.epoch),
            None => None,
        };
        if let Some(e) = epoch.or(self.traces.latest()) {
            self.traces.of(e).received.add(m.data.len());
        }
        // Judged against the node's copy of the round (the round's own checks), so a stray or
        // forged copy can never displace the real one; the poll checks a kept proposal again
        // against the chain's round before relaying it.
        match self.judge.take(&m.data) {
            gossip::Taken::Proposal(sp) => {
                // Attest now from the copy of the round (the next timer poll submits it to the
                // chain); when it cannot, poll now rather than at the next timer poll.
                let attested = self.attest_heard(&sp);
                self.heard = Some(*sp);
                if !attested {
                    self.poll_now(ctx);
                }
            }
            gossip::Taken::Early(sp) => {
                // The chain moved on and this node's copy has not yet: read it now, once per
                // epoch, and check this proposal against it then.
                let e = sp.proposal.epoch;
                self.early = Some(*sp);
                if self.early_poll.is_none_or(|p| p < e) {
                    self.early_poll = Some(e);
                    self.poll_now(ctx);
                }
            }
            gossip::Taken::Bad(reason) => {
                tracing::debug!(
                    netuid = self.netuid,
                    from = %m.from,
                    reason = reason.as_str(),
                    "bad consensus record in gossip"
                );
            }
            gossip::Taken::Equivocation(pair) => {
                let (first, second) = *pair;
                self.record_evidence(Equivocation {
                    netuid: self.netuid,
                    epoch: second.proposal.epoch,
                    proposer: second.proposal.proposer,
                    first,
                    second,
                    from: m.from,
                });
            }
            gossip::Taken::Ignored | gossip::Taken::Attestation => {}
        }
        if let Some(round) = self.judge.round() {
            self.traces.saw(round, Instant::now());
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // The gossip feed closes only when the network stops; the chain keeps the actor going.
    }
}

impl Supervised for ConsensusActor {
    fn restarting(&mut self, _: &mut Self::Context) {
        // The duties in memory are the ones persisted; polling resumes from `started` (a poll
        // cut short by the restart is queued no more).
        self.poll_queued = false;
        tracing::warn!(netuid = self.netuid, "ConsensusActor restarted");
    }
}

impl Handler<GetConsensusStatus> for ConsensusActor {
    type Result = ConsensusStatus;
    fn handle(&mut self, _: GetConsensusStatus, _: &mut Self::Context) -> ConsensusStatus {
        self.current_status()
    }
}

impl Handler<Tick> for ConsensusActor {
    // Atomic: the mailbox waits for the poll, so two polls never decide at once.
    type Result = AtomicResponse<Self, ConsensusStatus>;
    fn handle(&mut self, _: Tick, _: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(self.deferred_tick())
    }
}
