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
//! 4. Once an epoch is over, its outcome (verdict, counts) is stored and kept as the last one.
//!
//! Duties ([`Duties`]) are written to the node's sled tree before a signed record leaves, so a
//! restart in the middle of an epoch re-sends the same statement (the chain answers `Duplicate`)
//! or nothing: never a second proposal or attestation for one epoch.
//!
//! Accepts [`GetConsensusStatus`] → [`ConsensusStatus`] and [`Tick`] (poll now).
//!
//! Not yet here: gossip and DHT distribution of the records (the chain is the only channel),
//! equivocation evidence from gossip, an event stream of outcomes.

use crate::chain::{Chain, ChainError};
use actix::prelude::*;
use hermes_proto::consensus::{Attestation, Decision, Duties, Proposal, Score, Verdict};
use hermes_proto::Hotkey;
use sp_core::sr25519;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// What the embedding application decides in consensus.
pub trait ConsensusHook: Send + Sync + std::fmt::Debug + 'static {
    /// The data this node submits when elected: scores of (some of) the `eligible` nodes, and
    /// opaque args (≤ 4 KiB).
    fn produce(
        &self,
        netuid: u16,
        epoch: u64,
        eligible: &BTreeSet<Hotkey>,
    ) -> (Vec<Score>, Vec<u8>);

    /// Whether this node agrees with the elected validator's proposal.
    fn check(&self, proposal: &Proposal, eligible: &BTreeSet<Hotkey>) -> bool;
}

/// The default hook: every eligible node scores 1.0 (1e18), no args; a proposal is accepted when
/// it scores exactly the eligible nodes. Applications with their own notion of work replace it.
#[derive(Debug, Clone, Copy, Default)]
pub struct EqualScores;

/// 1.0 in the chain's score unit.
pub const SCORE_ONE: u128 = 1_000_000_000_000_000_000;

impl ConsensusHook for EqualScores {
    fn produce(&self, _: u16, _: u64, eligible: &BTreeSet<Hotkey>) -> (Vec<Score>, Vec<u8>) {
        let scores = eligible
            .iter()
            .map(|h| Score {
                hotkey: *h,
                score: SCORE_ONE,
            })
            .collect();
        (scores, Vec::new())
    }

    fn check(&self, proposal: &Proposal, eligible: &BTreeSet<Hotkey>) -> bool {
        proposal.scores.len() == eligible.len()
            && proposal.scores.iter().all(|s| eligible.contains(&s.hotkey))
    }
}

/// What the actor knows now.
#[derive(Debug, Clone, Default, PartialEq, Eq, MessageResponse)]
pub struct ConsensusStatus {
    /// The chain's current epoch, once read.
    pub epoch: Option<u64>,
    /// The current epoch's elected validator.
    pub elected: Option<Hotkey>,
    /// Attestations and validator-set size of the current epoch.
    pub attestations: (u64, u64),
    /// Whether this node is a validator in the current epoch.
    pub validator: bool,
    /// The last finished epoch and its verdict.
    pub last: Option<(u64, Verdict)>,
    /// What this node signed last (persisted).
    pub duties: Duties,
    /// Chain errors and refusals seen (the last one's text).
    pub last_error: Option<String>,
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
        Ok(ConsensusActor {
            chain,
            me: Hotkey::of(&pair),
            pair,
            netuid,
            hook,
            tree,
            poll,
            status: ConsensusStatus {
                duties,
                ..ConsensusStatus::default()
            },
        })
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
        record: impl Fn(u64, Verdict),
    ) -> ConsensusStatus {
        let head = match chain.head().await {
            Ok(h) => h,
            Err(e) => {
                status.last_error = Some(e.to_string());
                return status;
            }
        };
        if head.epoch > 0 {
            if let Ok(Some(prev)) = chain.epoch(netuid, Some(head.epoch - 1)).await {
                if let Some(f) = prev.finalized {
                    if status.last.map(|(e, _)| e) != Some(head.epoch - 1) {
                        record(head.epoch - 1, f.verdict);
                    }
                    status.last = Some((head.epoch - 1, f.verdict));
                }
            }
        }
        status.epoch = Some(head.epoch);
        let view = match chain.epoch(netuid, Some(head.epoch)).await {
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
        let round = &view.round;
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
                            if let Err(e) = chain.submit_proposal(sp).await {
                                err(&mut status, e);
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
                            if let Err(e) = chain.attest(sa).await {
                                err(&mut status, e);
                            }
                        }
                        Err(e) => status.last_error = Some(e.to_string()),
                    }
                }
            }
        }
        // Counts after acting.
        if let Ok(Some(v)) = chain.epoch(netuid, Some(head.epoch)).await {
            let t = v.round.tally();
            status.attestations = (t.attestations, t.validators);
        }
        status
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
        let record = move |epoch: u64, verdict: Verdict| {
            let mut k = b"epoch/".to_vec();
            k.extend_from_slice(&netuid.to_be_bytes());
            k.extend_from_slice(&epoch.to_be_bytes());
            if let Err(e) = tree.insert(k, verdict.as_str().as_bytes()) {
                tracing::warn!(error = %e, "could not record an epoch outcome");
            }
        };
        let fut = Self::poll_once(
            self.chain.clone(),
            self.hook.clone(),
            self.pair.clone(),
            self.me,
            self.netuid,
            self.status.clone(),
            persist,
            record,
        );
        Box::pin(fut.into_actor(self).map(|status, act, _| {
            act.status = status.clone();
            status
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
        ctx.run_interval(self.poll, |act, ctx| {
            // One poll at a time: wait blocks this actor's mailbox until the poll is done.
            ctx.wait(act.tick().map(|_, _, _| ()));
        });
    }
}

impl Handler<GetConsensusStatus> for ConsensusActor {
    type Result = ConsensusStatus;
    fn handle(&mut self, _: GetConsensusStatus, _: &mut Self::Context) -> ConsensusStatus {
        self.status.clone()
    }
}

impl Handler<Tick> for ConsensusActor {
    // Atomic: the mailbox waits for the poll, so two polls never decide at once.
    type Result = AtomicResponse<Self, ConsensusStatus>;
    fn handle(&mut self, _: Tick, _: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(self.tick())
    }
}
