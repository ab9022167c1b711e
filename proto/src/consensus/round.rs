//! One epoch of one subnet: the submission, its attestations and the outcome.
//!
//! 1. At the epoch's start, [`Round::open`] fixes the validator set (Validator-class nodes), the
//!    nodes the data may score (class Included or above) and the seed, and elects the validator.
//!    Everything later is judged against this snapshot, so a node registering or changing class
//!    mid-epoch changes nothing about the running epoch.
//! 2. The elected validator's [`SignedProposal`] goes through [`Round::submit`]. Accepting it
//!    counts as the proposer's own attestation.
//! 3. Every other validator's [`SignedAttestation`] goes through [`Round::attest`].
//! 4. At any time, [`Round::tally`] says whether attestations / validator-set size ≥ 0.66 (node
//!    count, not stake) and whether the 7/8 supermajority is reached; at the epoch's end
//!    [`Round::outcome`] is what the class rules ([`super::rules`]) apply.
//!
//! The chain (dev chain) and every node run this same code: a node fed the same records reaches
//! the same decision. Duplicates are idempotent and order does not matter, with one exception
//! made on purpose: a proposer that signs two different proposals for one epoch (equivocation)
//! has both refused and the epoch fails, whichever copy arrived first. Keeping the first, as a
//! chain that sees one order could, would let nodes that saw another order disagree.

use super::election::{elect, Candidate, ElectionMode, Seed};
use super::record::{ProposalHash, RecordError, SignedAttestation, SignedProposal};
use crate::codec::DecodeError;
use crate::hotkey::Hotkey;
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// Numerator and denominator of the finalization threshold: attestations / validators ≥ 66/100.
pub const CONSENSUS_THRESHOLD: (u64, u64) = (66, 100);
/// Numerator and denominator of the supermajority threshold: 7/8.
pub const SUPERMAJORITY_THRESHOLD: (u64, u64) = (7, 8);

/// Why a proposal or attestation was refused; each has its own counter name ([`Refusal::as_str`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The bytes do not decode, or the record's shape is invalid.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// The args exceed the 4 KiB limit.
    #[error("args of {0} bytes exceed the limit")]
    ArgsTooLong(usize),
    /// The signature does not verify under the hotkey the record names.
    #[error("bad signature")]
    BadSignature,
    /// The record is for another epoch than this round's.
    #[error("record for epoch {got}, this round is epoch {expected}")]
    WrongEpoch {
        /// The record's epoch.
        got: u64,
        /// The round's epoch.
        expected: u64,
    },
    /// The record is for another subnet.
    #[error("record for subnet {got}, this round is subnet {expected}")]
    WrongSubnet {
        /// The record's subnet.
        got: u16,
        /// The round's subnet.
        expected: u16,
    },
    /// The proposer is not the validator elected for the epoch.
    #[error("proposer is not the elected validator")]
    NotElected,
    /// The attester is not in the epoch's validator set.
    #[error("attester is not a validator of the epoch")]
    NotValidator,
    /// The data scores a node that is not of class Included or above (or not registered).
    #[error("data scores a node that is not Included or above")]
    NotIncluded,
    /// An attestation arrived before any proposal (callers may keep it and retry).
    #[error("no proposal yet")]
    NoProposal,
    /// An attestation names another proposal than the accepted one.
    #[error("attestation names another proposal")]
    WrongProposal,
    /// The proposer signed two different proposals for this epoch; both are refused, as is every
    /// attestation after that.
    #[error("the proposer equivocated")]
    Equivocation,
}

impl Refusal {
    /// Stable counter name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) => "malformed",
            Refusal::ArgsTooLong(_) => "args_too_long",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongEpoch { .. } => "wrong_epoch",
            Refusal::WrongSubnet { .. } => "wrong_subnet",
            Refusal::NotElected => "not_elected",
            Refusal::NotValidator => "not_validator",
            Refusal::NotIncluded => "not_included",
            Refusal::NoProposal => "no_proposal",
            Refusal::WrongProposal => "wrong_proposal",
            Refusal::Equivocation => "equivocation",
        }
    }

    /// Maps a decoder error: over-long args keep their own reason.
    pub fn from_decode(e: &DecodeError) -> Self {
        match e {
            DecodeError::Invalid {
                field: "proposal.args",
                ..
            } => Refusal::ArgsTooLong(super::record::MAX_ARGS_LEN + 1),
            e => Refusal::Malformed(e.to_string()),
        }
    }
}

impl From<RecordError> for Refusal {
    fn from(e: RecordError) -> Self {
        match e {
            RecordError::ArgsTooLong(n) => Refusal::ArgsTooLong(n),
            e => Refusal::Malformed(e.to_string()),
        }
    }
}

/// What happened to an accepted record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// It was new and now counts.
    New,
    /// It was already known (a duplicate delivery); nothing changed.
    Duplicate,
}

/// Everything a round is judged against, fixed at the epoch's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundParams {
    /// Subnet.
    pub netuid: u16,
    /// Epoch.
    pub epoch: u64,
    /// The epoch's seed.
    pub seed: Seed,
    /// How the validator is elected.
    pub election: ElectionMode,
    /// Validator-class nodes at the epoch's start.
    pub validators: Vec<Candidate>,
    /// Nodes the data may score: class Included or above at the epoch's start.
    pub eligible: BTreeSet<Hotkey>,
}

/// Counts of a round at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Distinct validators that attested the accepted proposal (the proposer included).
    pub attestations: u64,
    /// Size of the epoch's validator set.
    pub validators: u64,
    /// attestations / validators ≥ 0.66.
    pub in_consensus: bool,
    /// attestations / validators ≥ 7/8.
    pub supermajority: bool,
}

impl Tally {
    /// Counts `attestations` out of `validators`.
    pub fn new(attestations: u64, validators: u64) -> Self {
        let reaches = |(num, den): (u64, u64)| {
            validators > 0
                && u128::from(attestations) * u128::from(den)
                    >= u128::from(validators) * u128::from(num)
        };
        Tally {
            attestations,
            validators,
            in_consensus: reaches(CONSENSUS_THRESHOLD),
            supermajority: reaches(SUPERMAJORITY_THRESHOLD),
        }
    }

    /// attestations / validators, 0 without validators (for display).
    pub fn ratio(&self) -> f64 {
        if self.validators == 0 {
            0.0
        } else {
            self.attestations as f64 / self.validators as f64
        }
    }
}

/// How an epoch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No Validator-class node, nobody elected.
    NoValidators,
    /// The elected validator submitted nothing.
    NoSubmission,
    /// The elected validator signed two different proposals.
    Equivocated,
    /// A proposal was accepted but fewer than 66 % of validators attested it.
    NotAttested,
    /// Attested by at least 66 % of validators: the data counts.
    InConsensus,
}

impl Verdict {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::NoValidators => "no_validators",
            Verdict::NoSubmission => "no_submission",
            Verdict::Equivocated => "equivocated",
            Verdict::NotAttested => "not_attested",
            Verdict::InConsensus => "in_consensus",
        }
    }
}

/// A round's result, as the class rules apply it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Subnet.
    pub netuid: u16,
    /// Epoch.
    pub epoch: u64,
    /// The elected validator.
    pub elected: Option<Hotkey>,
    /// The verdict.
    pub verdict: Verdict,
    /// Attestation counts.
    pub tally: Tally,
    /// The accepted proposal, when there is one and the proposer did not equivocate.
    pub proposal: Option<SignedProposal>,
    /// Validators of the round that neither proposed nor attested the accepted proposal (all of
    /// them but the proposer when none was accepted).
    pub non_attesters: BTreeSet<Hotkey>,
}

/// One epoch of one subnet.
#[derive(Debug, Clone)]
pub struct Round {
    params: RoundParams,
    validator_set: BTreeSet<Hotkey>,
    elected: Option<Hotkey>,
    proposal: Option<(SignedProposal, ProposalHash)>,
    /// The second, different proposal of an equivocating proposer (evidence).
    conflicting: Option<SignedProposal>,
    attestations: BTreeMap<Hotkey, SignedAttestation>,
}

impl Round {
    /// Opens the round and elects its validator.
    pub fn open(mut params: RoundParams) -> Self {
        params.validators.sort_unstable_by_key(|a| a.hotkey);
        params.validators.dedup_by(|a, b| a.hotkey == b.hotkey);
        let elected = elect(&params.seed, params.election, &params.validators);
        Round {
            validator_set: params.validators.iter().map(|c| c.hotkey).collect(),
            params,
            elected,
            proposal: None,
            conflicting: None,
            attestations: BTreeMap::new(),
        }
    }

    /// What the round was opened with (validators sorted by hotkey).
    pub fn params(&self) -> &RoundParams {
        &self.params
    }

    /// The epoch.
    pub fn epoch(&self) -> u64 {
        self.params.epoch
    }

    /// The elected validator.
    pub fn elected(&self) -> Option<Hotkey> {
        self.elected
    }

    /// `true` if `hotkey` is in the epoch's validator set.
    pub fn is_validator(&self, hotkey: &Hotkey) -> bool {
        self.validator_set.contains(hotkey)
    }

    /// The accepted proposal and its hash (none after an equivocation).
    pub fn proposal(&self) -> Option<(&SignedProposal, ProposalHash)> {
        if self.conflicting.is_some() {
            return None;
        }
        self.proposal.as_ref().map(|(p, h)| (p, *h))
    }

    /// The two proposals of an equivocating proposer.
    pub fn equivocation(&self) -> Option<(&SignedProposal, &SignedProposal)> {
        match (&self.proposal, &self.conflicting) {
            (Some((a, _)), Some(b)) => Some((a, b)),
            _ => None,
        }
    }

    /// The explicit attestations received (the proposer's own is implied by its proposal).
    pub fn attestations(&self) -> impl Iterator<Item = &SignedAttestation> {
        self.attestations.values()
    }

    /// `true` if `hotkey` has attested (or proposed) the accepted proposal.
    pub fn has_attested(&self, hotkey: &Hotkey) -> bool {
        self.attestations.contains_key(hotkey)
            || self
                .proposal
                .as_ref()
                .is_some_and(|(p, _)| p.proposal.proposer == *hotkey)
    }

    fn check_target(&self, epoch: u64, netuid: u16) -> Result<(), Refusal> {
        if netuid != self.params.netuid {
            return Err(Refusal::WrongSubnet {
                got: netuid,
                expected: self.params.netuid,
            });
        }
        if epoch != self.params.epoch {
            return Err(Refusal::WrongEpoch {
                got: epoch,
                expected: self.params.epoch,
            });
        }
        Ok(())
    }

    /// Takes the elected validator's proposal. Checks, in order: shape, subnet, epoch, proposer
    /// elected, signature, every scored node eligible, then duplicates and equivocation.
    ///
    /// # Errors
    /// The [`Refusal`] of the first failed check.
    pub fn submit(&mut self, sp: &SignedProposal) -> Result<Accepted, Refusal> {
        let p = &sp.proposal;
        p.check_shape()?;
        self.check_target(p.epoch, p.netuid)?;
        if Some(p.proposer) != self.elected {
            return Err(Refusal::NotElected);
        }
        if !sp.verify_signature() {
            return Err(Refusal::BadSignature);
        }
        if p.scores
            .iter()
            .any(|s| !self.params.eligible.contains(&s.hotkey))
        {
            return Err(Refusal::NotIncluded);
        }
        if self.conflicting.is_some() {
            return Err(Refusal::Equivocation);
        }
        let hash = sp.hash();
        match &self.proposal {
            Some((_, h)) if *h == hash => Ok(Accepted::Duplicate),
            Some(_) => {
                self.conflicting = Some(sp.clone());
                Err(Refusal::Equivocation)
            }
            None => {
                self.proposal = Some((sp.clone(), hash));
                // An attestation kept before the proposal for another hash cannot exist (they are
                // refused without a proposal), so nothing else to reconcile.
                Ok(Accepted::New)
            }
        }
    }

    /// Takes a validator's attestation. Checks, in order: subnet, epoch, attester in the validator
    /// set, signature, a proposal accepted, same proposal, then duplicates.
    ///
    /// # Errors
    /// The [`Refusal`] of the first failed check.
    pub fn attest(&mut self, sa: &SignedAttestation) -> Result<Accepted, Refusal> {
        let a = &sa.attestation;
        self.check_target(a.epoch, a.netuid)?;
        if !self.validator_set.contains(&a.attester) {
            return Err(Refusal::NotValidator);
        }
        if !sa.verify_signature() {
            return Err(Refusal::BadSignature);
        }
        if self.conflicting.is_some() {
            return Err(Refusal::Equivocation);
        }
        let Some((_, hash)) = &self.proposal else {
            return Err(Refusal::NoProposal);
        };
        if a.proposal != *hash {
            return Err(Refusal::WrongProposal);
        }
        if self.has_attested(&a.attester) {
            return Ok(Accepted::Duplicate);
        }
        self.attestations.insert(a.attester, *sa);
        Ok(Accepted::New)
    }

    /// The counts now.
    pub fn tally(&self) -> Tally {
        let validators = u64::try_from(self.validator_set.len()).unwrap_or(u64::MAX);
        let attestations = match self.proposal() {
            None => 0,
            Some((p, _)) => {
                let own = !self.attestations.contains_key(&p.proposal.proposer);
                u64::try_from(self.attestations.len() + usize::from(own)).unwrap_or(u64::MAX)
            }
        };
        Tally::new(attestations, validators)
    }

    /// The round's result if it ended now.
    pub fn outcome(&self) -> Outcome {
        let tally = self.tally();
        let verdict = if self.elected.is_none() {
            Verdict::NoValidators
        } else if self.conflicting.is_some() {
            Verdict::Equivocated
        } else if self.proposal.is_none() {
            Verdict::NoSubmission
        } else if tally.in_consensus {
            Verdict::InConsensus
        } else {
            Verdict::NotAttested
        };
        Outcome {
            netuid: self.params.netuid,
            epoch: self.params.epoch,
            elected: self.elected,
            verdict,
            tally,
            proposal: self.proposal().map(|(p, _)| p.clone()),
            non_attesters: self
                .validator_set
                .iter()
                .filter(|v| !self.has_attested(v) && Some(**v) != self.elected)
                .copied()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::{Attestation, Proposal, Score};
    use super::*;
    use sp_core::{sr25519, Pair as _};

    pub(super) fn pairs(n: usize) -> Vec<sr25519::Pair> {
        (0..n)
            .map(|i| sr25519::Pair::from_string(&format!("//node{i}"), None).unwrap())
            .collect()
    }

    fn params(vals: &[sr25519::Pair], eligible: &[Hotkey]) -> RoundParams {
        RoundParams {
            netuid: 1,
            epoch: 4,
            seed: [9; 32],
            election: ElectionMode::Uniform,
            validators: vals
                .iter()
                .map(|p| Candidate {
                    hotkey: Hotkey::of(p),
                    stake: 1,
                })
                .collect(),
            eligible: eligible.iter().copied().collect(),
        }
    }

    fn find(vals: &[sr25519::Pair], hk: Hotkey) -> &sr25519::Pair {
        vals.iter().find(|p| Hotkey::of(p) == hk).unwrap()
    }

    fn propose(round: &Round, pair: &sr25519::Pair, args: &[u8]) -> SignedProposal {
        let mut scores: Vec<Score> = round
            .params()
            .eligible
            .iter()
            .map(|h| Score {
                hotkey: *h,
                score: 5,
            })
            .collect();
        scores.sort_by_key(|a| a.hotkey);
        Proposal {
            epoch: round.epoch(),
            netuid: 1,
            proposer: Hotkey::of(pair),
            scores,
            args: args.to_vec(),
        }
        .sign(pair)
        .unwrap()
    }

    fn attest(round: &Round, pair: &sr25519::Pair, hash: ProposalHash) -> SignedAttestation {
        Attestation {
            epoch: round.epoch(),
            netuid: 1,
            proposal: hash,
            attester: Hotkey::of(pair),
        }
        .sign(pair)
        .unwrap()
    }

    #[test]
    fn thresholds_count_nodes() {
        assert!(!Tally::new(0, 0).in_consensus);
        assert!(Tally::new(2, 3).in_consensus); // 0.667
        assert!(!Tally::new(65, 100).in_consensus);
        assert!(Tally::new(66, 100).in_consensus);
        assert!(!Tally::new(6, 8).supermajority);
        assert!(Tally::new(7, 8).supermajority);
        assert!(Tally::new(u64::MAX, u64::MAX).supermajority);
    }

    #[test]
    fn a_round_finalizes_at_two_thirds() {
        let vals = pairs(6);
        let eligible: Vec<Hotkey> = vals.iter().map(Hotkey::of).collect();
        let mut round = Round::open(params(&vals, &eligible));
        let elected = find(&vals, round.elected().unwrap());
        assert_eq!(round.outcome().verdict, Verdict::NoSubmission);
        let sp = propose(&round, elected, b"x");
        assert_eq!(round.submit(&sp), Ok(Accepted::New));
        assert_eq!(round.submit(&sp), Ok(Accepted::Duplicate));
        assert_eq!(round.tally().attestations, 1);
        let hash = sp.hash();
        let others: Vec<_> = vals
            .iter()
            .filter(|p| Hotkey::of(p) != Hotkey::of(elected))
            .collect();
        // The proposer's own explicit attestation is a duplicate.
        assert_eq!(
            round.attest(&attest(&round, elected, hash)),
            Ok(Accepted::Duplicate)
        );
        for (i, p) in others.iter().enumerate().take(3) {
            assert_eq!(round.attest(&attest(&round, p, hash)), Ok(Accepted::New));
            let t = round.tally();
            assert_eq!(t.attestations, 2 + i as u64);
            // 4 of 6 = 0.667 finalizes; 3 of 6 does not.
            assert_eq!(t.in_consensus, i == 2, "{t:?}");
        }
        assert_eq!(
            round.attest(&attest(&round, others[0], hash)),
            Ok(Accepted::Duplicate)
        );
        assert_eq!(round.outcome().verdict, Verdict::InConsensus);
        // The two validators still silent, and only they, are the non-attesters.
        let silent: BTreeSet<Hotkey> = others[3..].iter().map(|p| Hotkey::of(p)).collect();
        assert_eq!(round.outcome().non_attesters, silent);
        assert!(!round.tally().supermajority);
        round.attest(&attest(&round, others[3], hash)).unwrap();
        round.attest(&attest(&round, others[4], hash)).unwrap();
        assert!(round.tally().supermajority);
        assert!(round.outcome().non_attesters.is_empty());
    }

    #[test]
    fn every_bad_record_is_refused_with_its_reason() {
        let vals = pairs(4);
        let outsider = sr25519::Pair::from_string("//outsider", None).unwrap();
        let eligible: Vec<Hotkey> = vals.iter().map(Hotkey::of).collect();
        let mut round = Round::open(params(&vals, &eligible));
        let elected = find(&vals, round.elected().unwrap());
        let other = vals
            .iter()
            .find(|p| Hotkey::of(p) != Hotkey::of(elected))
            .unwrap();

        // Attestation before any proposal.
        assert_eq!(
            round.attest(&attest(&round, other, [0; 32])),
            Err(Refusal::NoProposal)
        );
        // Not the elected validator.
        let by_other = propose(&round, other, b"");
        assert_eq!(round.submit(&by_other), Err(Refusal::NotElected));
        // Wrong epoch and subnet.
        let mut p = propose(&round, elected, b"").proposal;
        p.epoch = 5;
        let sp = p.sign(elected).unwrap();
        assert_eq!(
            round.submit(&sp),
            Err(Refusal::WrongEpoch {
                got: 5,
                expected: 4
            })
        );
        let mut p = propose(&round, elected, b"").proposal;
        p.netuid = 2;
        assert!(matches!(
            round.submit(&p.sign(elected).unwrap()),
            Err(Refusal::WrongSubnet { .. })
        ));
        // Bad signature.
        let mut sp = propose(&round, elected, b"");
        sp.signature[3] ^= 1;
        assert_eq!(round.submit(&sp), Err(Refusal::BadSignature));
        // Oversize args (built in-process, bypassing sign()).
        let mut sp = propose(&round, elected, b"");
        sp.proposal.args = vec![0; super::super::record::MAX_ARGS_LEN + 1];
        assert_eq!(round.submit(&sp).unwrap_err().as_str(), "args_too_long");
        // A scored node that is not eligible.
        let mut p = propose(&round, elected, b"").proposal;
        p.scores.push(Score {
            hotkey: Hotkey([0xff; 32]),
            score: 1,
        });
        assert_eq!(
            round.submit(&p.sign(elected).unwrap()),
            Err(Refusal::NotIncluded)
        );
        // None of this was accepted.
        assert_eq!(round.outcome().verdict, Verdict::NoSubmission);

        let sp = propose(&round, elected, b"");
        round.submit(&sp).unwrap();
        let hash = sp.hash();
        // Non-validator attester, forged signature, other proposal.
        assert_eq!(
            round.attest(&attest(&round, &outsider, hash)),
            Err(Refusal::NotValidator)
        );
        let mut a = attest(&round, other, hash);
        a.signature[0] ^= 1;
        assert_eq!(round.attest(&a), Err(Refusal::BadSignature));
        assert_eq!(
            round.attest(&attest(&round, other, [1; 32])),
            Err(Refusal::WrongProposal)
        );
        assert_eq!(round.tally().attestations, 1);
    }

    #[test]
    fn equivocation_refuses_both_copies_whatever_the_order() {
        let vals = pairs(3);
        let eligible: Vec<Hotkey> = vals.iter().map(Hotkey::of).collect();
        let base = Round::open(params(&vals, &eligible));
        let elected = find(&vals, base.elected().unwrap());
        let a = propose(&base, elected, b"a");
        let b = propose(&base, elected, b"b");
        for (first, second) in [(&a, &b), (&b, &a)] {
            let mut round = base.clone();
            assert_eq!(round.submit(first), Ok(Accepted::New));
            for p in &vals {
                let _ = round.attest(&attest(&round, p, first.hash()));
            }
            assert!(round.tally().in_consensus);
            assert_eq!(round.submit(second), Err(Refusal::Equivocation));
            assert_eq!(round.submit(first), Err(Refusal::Equivocation));
            assert!(round.proposal().is_none());
            assert!(round.equivocation().is_some());
            let out = round.outcome();
            assert_eq!(out.verdict, Verdict::Equivocated);
            assert!(out.proposal.is_none());
            assert!(!out.tally.in_consensus);
        }
    }

    #[test]
    fn no_validators_no_election() {
        let round = Round::open(params(&[], &[]));
        assert_eq!(round.elected(), None);
        assert_eq!(round.outcome().verdict, Verdict::NoValidators);
    }
}
