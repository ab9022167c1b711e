//! What the ConsensusActor reports and what it asks of the application: the outcome of a
//! finished epoch ([`EpochOutcome`]), equivocation evidence ([`Equivocation`]), and the
//! application's hook ([`ConsensusHook`], with the default [`EqualScores`]).

use crate::chain::EpochView;
use hermes_proto::consensus::{Change, Proposal, ProposalHash, Score, SignedProposal, Verdict};
use hermes_proto::Hotkey;
use std::collections::BTreeSet;

/// How one epoch of one subnet ended, as the chain recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EpochOutcome {
    /// Subnet.
    pub netuid: u16,
    /// Epoch.
    pub epoch: u64,
    /// The elected validator (`None`: the subnet had no validator).
    pub elected: Option<Hotkey>,
    /// The hash of the accepted proposal, if one was accepted.
    pub proposal: Option<ProposalHash>,
    /// Attestations counted (the proposer's own included).
    pub attestations: u64,
    /// Validator-set size.
    pub validators: u64,
    /// How it ended: `InConsensus` when attestations / validators ≥ 0.66.
    pub verdict: Verdict,
    /// What it did to nodes: promotions, penalties or reputation losses, removals.
    pub changes: Vec<Change>,
    /// Whether this node's proposal was the accepted one.
    pub proposed: bool,
    /// Whether the chain holds this node's attestation.
    pub attested: bool,
}

impl EpochOutcome {
    /// The outcome of a finished epoch as `me` sees it; `None` while the epoch is open.
    pub fn of(view: &EpochView, me: &Hotkey) -> Option<Self> {
        let f = view.finalized.as_ref()?;
        let round = &view.round;
        let p = round.params();
        Some(EpochOutcome {
            netuid: p.netuid,
            epoch: p.epoch,
            elected: round.elected(),
            proposal: round.proposal().map(|(_, h)| h),
            attestations: f.tally.attestations,
            validators: f.tally.validators,
            verdict: f.verdict,
            changes: f.changes.clone(),
            proposed: round
                .proposal()
                .is_some_and(|(sp, _)| sp.proposal.proposer == *me),
            attested: round.attestations().any(|a| a.attestation.attester == *me),
        })
    }
}

/// Evidence that a subnet's elected validator signed two different proposals for one epoch, as
/// heard in gossip. Stored in the node's `consensus` tree under `evidence/<netuid BE><epoch BE>`
/// (first proposal's length as u32 LE ‖ first ‖ second, wire bytes), once per subnet and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Equivocation {
    /// Subnet.
    pub netuid: u16,
    /// Epoch.
    pub epoch: u64,
    /// The elected validator that signed both.
    pub proposer: Hotkey,
    /// The proposal this node knew first (from the chain or gossip).
    pub first: SignedProposal,
    /// The different one heard next.
    pub second: SignedProposal,
    /// SS58 of the gossip author that published the second.
    pub from: String,
}

impl Equivocation {
    /// The stored form: first's length (u32 LE) ‖ first ‖ second.
    pub fn encode(&self) -> Vec<u8> {
        let a = self.first.encode();
        let b = self.second.encode();
        let mut v = Vec::with_capacity(4 + a.len() + b.len());
        v.extend_from_slice(&u32::try_from(a.len()).unwrap_or(u32::MAX).to_le_bytes());
        v.extend_from_slice(&a);
        v.extend_from_slice(&b);
        v
    }

    pub(crate) fn key(netuid: u16, epoch: u64) -> Vec<u8> {
        let mut k = EVIDENCE_PREFIX.to_vec();
        k.extend_from_slice(&netuid.to_be_bytes());
        k.extend_from_slice(&epoch.to_be_bytes());
        k
    }
}

pub(crate) const EVIDENCE_PREFIX: &[u8] = b"evidence/";

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
