//! Consensus records beyond the chain: the elected validator's signed proposal is published on
//! the subnet's gossip topic and stored in the DHT, attestations are published on the topic, so
//! every node can fetch the same bytes even when the chain holds only what it needs.
//!
//! 1. Gossip payload: [`GOSSIP_TAG`] ‖ kind (1 proposal, 2 attestation) ‖ the record's wire bytes.
//!    Application gossip shares the topic; anything without the tag is not ours and ignored.
//! 2. DHT: the proposal's wire bytes under [`dht_key`] (`/hermes/consensus/<netuid>/<epoch>`).
//! 3. A node keeps the latest proposal it heard per subnet ([`Heard`]) and trusts nothing in it:
//!    at its next poll the copy goes through the round's own checks (`Round::submit` on a copy of
//!    the chain's round: subnet, epoch, elected signer, signature, eligible scores) before it is
//!    relayed to a chain that does not have it yet, and only then attested.
//! 4. Every record heard is judged ([`GossipJudge`]) against the node's copy of the current
//!    round, by the round's own checks; a refused one moves the counter of its reason
//!    ([`BadRecords`]), shown in the consensus status. Not counted, because an honest peer can
//!    cause them while this node's copy lags: records for a later epoch than the copy's, and
//!    attestations arriving before the node knows the proposal.
//! 5. Those early attestations are kept (at most [`MAX_EARLY`], unverified until used) and
//!    applied once the copy holds their epoch's proposal; a proposal for the epoch after the
//!    copy's is handed back ([`Taken::Early`]) for the actor to check against the chain's round.

use hermes_proto::consensus::record::{ATTESTATION_LEN, MAX_PROPOSAL_LEN};
use hermes_proto::consensus::{Accepted, Refusal, Round, SignedAttestation, SignedProposal};
use hermes_proto::Hotkey;
use std::collections::BTreeSet;

/// Prefix of consensus records on a subnet's gossip topic.
pub const GOSSIP_TAG: &[u8] = b"hermes/consensus/v1";
const KIND_PROPOSAL: u8 = 1;
const KIND_ATTESTATION: u8 = 2;

/// Most early attestations a judge keeps (a validator set of this size fits; later ones are
/// dropped, and the chain still holds them).
pub const MAX_EARLY: usize = 1024;

/// A consensus record heard in gossip (decoded, not yet checked against any round).
#[derive(Debug, Clone)]
pub enum GossipRecord {
    /// A signed proposal.
    Proposal(SignedProposal),
    /// A signed attestation.
    Attestation(SignedAttestation),
}

/// The gossip payload of a proposal.
pub fn proposal_payload(sp: &SignedProposal) -> Vec<u8> {
    let mut v = GOSSIP_TAG.to_vec();
    v.push(KIND_PROPOSAL);
    v.extend_from_slice(&sp.encode());
    v
}

/// The gossip payload of an attestation.
pub fn attestation_payload(sa: &SignedAttestation) -> Vec<u8> {
    let mut v = GOSSIP_TAG.to_vec();
    v.push(KIND_ATTESTATION);
    v.extend_from_slice(&sa.encode());
    v
}

/// Decodes a gossip payload; `None` for anything that is not a well-formed consensus record
/// (application gossip included). The decoders are the strict, fuzzed ones of the records.
pub fn decode(data: &[u8]) -> Option<GossipRecord> {
    parse(data).ok().flatten()
}

/// Decodes a gossip payload: `Ok(None)` when it is not ours (no [`GOSSIP_TAG`]: application
/// gossip), `Err` when it carries the tag but no well-formed record. The length is checked
/// before anything is decoded.
///
/// # Errors
/// [`BadRecord::Oversized`] for a body longer than its kind allows (or args over 4 KiB),
/// [`BadRecord::Malformed`] for an unknown kind or bytes the record's decoder refuses.
pub fn parse(data: &[u8]) -> Result<Option<GossipRecord>, BadRecord> {
    let Some(rest) = data.strip_prefix(GOSSIP_TAG) else {
        return Ok(None);
    };
    let (kind, body) = rest.split_first().ok_or(BadRecord::Malformed)?;
    let refused = |r: Refusal| BadRecord::of(&r).unwrap_or(BadRecord::Malformed);
    match *kind {
        KIND_PROPOSAL if body.len() > MAX_PROPOSAL_LEN => Err(BadRecord::Oversized),
        KIND_PROPOSAL => SignedProposal::decode(body)
            .map(|p| Some(GossipRecord::Proposal(p)))
            .map_err(|e| refused(Refusal::from_decode(&e))),
        KIND_ATTESTATION if body.len() > ATTESTATION_LEN => Err(BadRecord::Oversized),
        KIND_ATTESTATION => SignedAttestation::decode(body)
            .map(|a| Some(GossipRecord::Attestation(a)))
            .map_err(|e| refused(Refusal::from_decode(&e))),
        _ => Err(BadRecord::Malformed),
    }
}

/// Why a record heard on the consensus topic was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BadRecord {
    /// Tagged, but no record decodes (unknown kind, damaged bytes, invalid shape).
    Malformed,
    /// Longer than any record of its kind may be (or args over 4 KiB).
    Oversized,
    /// The signature does not verify under the hotkey the record names.
    BadSignature,
    /// For another subnet than the topic's.
    WrongSubnet,
    /// For an epoch that is over.
    WrongEpoch,
    /// A proposal not signed by the epoch's elected validator.
    NotElected,
    /// An attestation by a node outside the epoch's validator set.
    NotValidator,
    /// A proposal scoring a node that is not Included or above.
    NotIncluded,
    /// An attestation of another proposal than the elected validator's.
    WrongProposal,
    /// A second, different proposal of the elected validator (or anything after one).
    Equivocation,
    /// A statement already heard in gossip this epoch.
    Duplicate,
}

impl BadRecord {
    /// Every reason, in counter order.
    pub const ALL: [BadRecord; 11] = [
        BadRecord::Malformed,
        BadRecord::Oversized,
        BadRecord::BadSignature,
        BadRecord::WrongSubnet,
        BadRecord::WrongEpoch,
        BadRecord::NotElected,
        BadRecord::NotValidator,
        BadRecord::NotIncluded,
        BadRecord::WrongProposal,
        BadRecord::Equivocation,
        BadRecord::Duplicate,
    ];

    /// Stable counter name.
    pub fn as_str(&self) -> &'static str {
        match self {
            BadRecord::Malformed => "malformed",
            BadRecord::Oversized => "oversized",
            BadRecord::BadSignature => "bad_signature",
            BadRecord::WrongSubnet => "wrong_subnet",
            BadRecord::WrongEpoch => "wrong_epoch",
            BadRecord::NotElected => "not_elected",
            BadRecord::NotValidator => "not_validator",
            BadRecord::NotIncluded => "not_included",
            BadRecord::WrongProposal => "wrong_proposal",
            BadRecord::Equivocation => "equivocation",
            BadRecord::Duplicate => "duplicate",
        }
    }

    /// The reason of a round's refusal; `None` for one an honest peer can cause by being early
    /// ([`Refusal::NoProposal`]).
    pub fn of(r: &Refusal) -> Option<Self> {
        Some(match r {
            Refusal::Malformed(_) => BadRecord::Malformed,
            Refusal::ArgsTooLong(_) => BadRecord::Oversized,
            Refusal::BadSignature => BadRecord::BadSignature,
            Refusal::WrongEpoch { .. } => BadRecord::WrongEpoch,
            Refusal::WrongSubnet { .. } => BadRecord::WrongSubnet,
            Refusal::NotElected => BadRecord::NotElected,
            Refusal::NotValidator => BadRecord::NotValidator,
            Refusal::NotIncluded => BadRecord::NotIncluded,
            Refusal::NoProposal => return None,
            Refusal::WrongProposal => BadRecord::WrongProposal,
            Refusal::Equivocation => BadRecord::Equivocation,
            _ => BadRecord::Malformed,
        })
    }
}

/// Bad consensus records heard in gossip, per reason, since the node started.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct BadRecords {
    counts: [u64; BadRecord::ALL.len()],
}

impl std::fmt::Debug for BadRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(r, n)| (r.as_str(), n)))
            .finish()
    }
}

impl BadRecords {
    /// Counts one more record refused for `reason`.
    pub fn add(&mut self, reason: BadRecord) {
        let i = reason as usize;
        self.counts[i] = self.counts[i].saturating_add(1);
    }

    /// Records refused for `reason`.
    pub fn get(&self, reason: BadRecord) -> u64 {
        self.counts[reason as usize]
    }

    /// Records refused for any reason.
    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0, |a, b| a.saturating_add(*b))
    }

    /// Every reason with its count, in counter order.
    pub fn iter(&self) -> impl Iterator<Item = (BadRecord, u64)> + '_ {
        BadRecord::ALL.iter().map(|r| (*r, self.get(*r)))
    }
}

/// What [`GossipJudge::take`] made of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Not a consensus record, or one that cannot be judged yet; nothing counted.
    Ignored,
    /// Refused and counted.
    Bad(BadRecord),
    /// A valid proposal of the elected validator, new to this node's copy of the round.
    Proposal(Box<SignedProposal>),
    /// A valid attestation (new, or one the chain already holds).
    Attestation,
    /// A proposal for the epoch after the copy's: not judged yet (the chain has probably moved
    /// on and this node's copy not yet).
    Early(Box<SignedProposal>),
    /// Two different valid proposals of the elected validator for one epoch: the first one this
    /// node knew and the one just heard.
    Equivocation(Box<(SignedProposal, SignedProposal)>),
}

/// Judges records heard in gossip against the node's copy of the current round.
#[derive(Debug, Default)]
pub struct GossipJudge {
    round: Option<Round>,
    /// Statements taken from gossip in the copy's epoch: kind, signer, proposal hash.
    seen: BTreeSet<(u8, Hotkey, [u8; 32])>,
    /// Attestations heard before the copy held their proposal (this epoch or the next).
    early: Vec<SignedAttestation>,
    bad: BadRecords,
}

impl GossipJudge {
    /// The counters so far.
    pub fn bad(&self) -> BadRecords {
        self.bad
    }

    /// The epoch of the round copy, once a poll has given one.
    pub fn epoch(&self) -> Option<u64> {
        self.round.as_ref().map(Round::epoch)
    }

    /// The round copy with what gossip brought, once a poll has given one.
    pub fn round(&self) -> Option<&Round> {
        self.round.as_ref()
    }

    /// Counts this node's own attestation in the copy (gossip does not bring it back).
    pub fn own(&mut self, sa: &SignedAttestation) {
        if let Some(round) = self.round.as_mut() {
            let _ = round.attest(sa);
        }
    }

    /// Keeps an attestation that cannot be judged yet.
    fn keep_early(&mut self, sa: SignedAttestation) {
        if self.early.len() < MAX_EARLY {
            self.early.push(sa);
        }
    }

    /// Applies the early attestations of the copy's epoch once it holds a proposal; forgets
    /// those of past epochs.
    fn apply_early(&mut self) {
        let Some(round) = self.round.as_mut() else {
            return;
        };
        if round.proposal().is_none() {
            return;
        }
        let epoch = round.epoch();
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.early)
            .into_iter()
            .filter(|a| a.attestation.epoch >= epoch)
            .partition(|a| a.attestation.epoch == epoch);
        self.early = later;
        for sa in now {
            if round.attest(&sa).is_ok() {
                let a = &sa.attestation;
                self.seen.insert((KIND_ATTESTATION, a.attester, a.proposal));
            }
        }
    }

    /// Replaces the copy with the round a poll read from the chain. Within the same epoch the
    /// proposal already taken from gossip is kept (the chain may not hold it yet); a new epoch
    /// forgets what gossip brought.
    pub fn set_round(&mut self, mut round: Round) {
        match &self.round {
            Some(old) if old.epoch() == round.epoch() => {
                if let (None, Some((sp, _))) = (round.proposal(), old.proposal()) {
                    let _ = round.submit(sp);
                }
                if let (None, Some((a, b))) = (round.equivocation(), old.equivocation()) {
                    let _ = round.submit(a);
                    let _ = round.submit(b);
                }
            }
            _ => self.seen.clear(),
        }
        self.round = Some(round);
        self.apply_early();
    }

    /// Judges one payload of the subnet's topic and counts it when bad.
    pub fn take(&mut self, data: &[u8]) -> Taken {
        let taken = self.judge(data);
        if let Taken::Bad(r) = taken {
            self.bad.add(r);
        }
        taken
    }

    fn judge(&mut self, data: &[u8]) -> Taken {
        let record = match parse(data) {
            Ok(Some(r)) => r,
            Ok(None) => return Taken::Ignored,
            Err(r) => return Taken::Bad(r),
        };
        let Some(round) = self.round.as_mut() else {
            return Taken::Ignored;
        };
        let (epoch, netuid) = match &record {
            GossipRecord::Proposal(p) => (p.proposal.epoch, p.proposal.netuid),
            GossipRecord::Attestation(a) => (a.attestation.epoch, a.attestation.netuid),
        };
        // This copy may lag the chain by a poll: a later epoch cannot be judged yet.
        if epoch > round.epoch() && netuid == round.params().netuid {
            let next = epoch == round.epoch().saturating_add(1);
            return match record {
                GossipRecord::Proposal(sp) if next => Taken::Early(Box::new(sp)),
                GossipRecord::Attestation(sa) if next => {
                    self.keep_early(sa);
                    Taken::Ignored
                }
                _ => Taken::Ignored,
            };
        }
        let known = round.proposal().map(|(sp, _)| sp.clone());
        match record {
            GossipRecord::Proposal(sp) => {
                let key = (KIND_PROPOSAL, sp.proposal.proposer, sp.hash());
                match round.submit(&sp) {
                    Ok(Accepted::New) => {
                        self.seen.insert(key);
                        self.apply_early();
                        Taken::Proposal(Box::new(sp))
                    }
                    Ok(_) if !self.seen.insert(key) => Taken::Bad(BadRecord::Duplicate),
                    Ok(_) => Taken::Ignored,
                    Err(Refusal::Equivocation) => match known {
                        // The first conflicting copy: evidence.
                        Some(first) if first.hash() != sp.hash() => {
                            Taken::Equivocation(Box::new((first, sp)))
                        }
                        _ => Taken::Bad(BadRecord::Equivocation),
                    },
                    Err(r) => BadRecord::of(&r).map_or(Taken::Ignored, Taken::Bad),
                }
            }
            GossipRecord::Attestation(sa) => {
                let a = &sa.attestation;
                let key = (KIND_ATTESTATION, a.attester, a.proposal);
                match round.attest(&sa) {
                    Ok(_) if !self.seen.insert(key) => Taken::Bad(BadRecord::Duplicate),
                    Ok(_) => Taken::Attestation,
                    Err(Refusal::NoProposal) => {
                        self.keep_early(sa);
                        Taken::Ignored
                    }
                    Err(r) => BadRecord::of(&r).map_or(Taken::Ignored, Taken::Bad),
                }
            }
        }
    }
}

/// The DHT key of subnet `netuid`'s proposal in `epoch`.
pub fn dht_key(netuid: u16, epoch: u64) -> Vec<u8> {
    let mut k = b"/hermes/consensus/".to_vec();
    k.extend_from_slice(&netuid.to_be_bytes());
    k.push(b'/');
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_and_damaged_payloads_are_not_records() {
        assert!(decode(b"hello").is_none());
        assert!(decode(GOSSIP_TAG).is_none());
        let mut p = GOSSIP_TAG.to_vec();
        p.extend_from_slice(&[KIND_PROPOSAL, 1, 2, 3]);
        assert!(decode(&p).is_none());
        p[GOSSIP_TAG.len()] = 9;
        assert!(decode(&p).is_none());
        assert_ne!(dht_key(1, 2), dht_key(2, 1));
    }

    #[test]
    fn the_judge_counts_only_what_an_honest_peer_cannot_cause() {
        use hermes_proto::consensus::{
            Attestation, Candidate, ElectionMode, Proposal, RoundParams,
        };
        use sp_core::{sr25519, Pair};
        let pair = sr25519::Pair::from_seed(&[1; 32]);
        let me = Hotkey::of(&pair);
        let round = |epoch| {
            Round::open(RoundParams {
                netuid: 3,
                epoch,
                seed: [0; 32],
                election: ElectionMode::Uniform,
                validators: vec![Candidate {
                    hotkey: me,
                    stake: 1,
                }],
                eligible: BTreeSet::new(),
            })
        };
        let prop = |epoch, args: &[u8]| {
            let p = Proposal {
                epoch,
                netuid: 3,
                proposer: me,
                scores: vec![],
                args: args.to_vec(),
            };
            proposal_payload(&p.sign(&pair).unwrap())
        };
        let mut j = GossipJudge::default();
        // No round yet: nothing can be judged.
        assert_eq!(j.take(&prop(1, b"")), Taken::Ignored);
        j.set_round(round(1));
        // An attestation before the proposal, a record of a later epoch: not counted.
        let hash = SignedProposal::decode(&prop(1, b"")[GOSSIP_TAG.len() + 1..])
            .unwrap()
            .hash();
        let att = Attestation {
            epoch: 1,
            netuid: 3,
            proposal: hash,
            attester: me,
        }
        .sign(&pair)
        .unwrap();
        assert_eq!(j.take(&attestation_payload(&att)), Taken::Ignored);
        assert!(matches!(j.take(&prop(2, b"")), Taken::Early(_)));
        assert_eq!(j.bad().total(), 0);
        // Taken, and kept across a poll whose chain does not hold it yet.
        assert!(matches!(j.take(&prop(1, b"")), Taken::Proposal(_)));
        j.set_round(round(1));
        // The same statement again (another signature): a duplicate.
        assert_eq!(j.take(&prop(1, b"")), Taken::Bad(BadRecord::Duplicate));
        // A different one: evidence once, then counted.
        match j.take(&prop(1, b"x")) {
            Taken::Equivocation(pair) => assert_eq!(pair.0.hash(), hash),
            t => panic!("{t:?}"),
        }
        assert_eq!(j.take(&prop(1, b"y")), Taken::Bad(BadRecord::Equivocation));
        // A new epoch forgets what gossip brought.
        j.set_round(round(2));
        assert!(matches!(j.take(&prop(2, b"")), Taken::Proposal(_)));
        assert_eq!(j.bad().get(BadRecord::Duplicate), 1);
        assert_eq!(j.bad().get(BadRecord::Equivocation), 1);
        assert_eq!(j.bad().total(), 2);
    }

    /// An attestation heard before its proposal (this epoch's, or the next epoch's while the
    /// copy lags) counts once the copy holds the proposal.
    #[test]
    fn early_attestations_count_once_the_proposal_is_known() {
        use hermes_proto::consensus::{
            Attestation, Candidate, ElectionMode, Proposal, RoundParams,
        };
        use sp_core::{sr25519, Pair};
        let pairs: Vec<sr25519::Pair> = (1..=3u8)
            .map(|i| sr25519::Pair::from_seed(&[i; 32]))
            .collect();
        let round = |epoch| {
            Round::open(RoundParams {
                netuid: 3,
                epoch,
                seed: [0; 32],
                election: ElectionMode::Uniform,
                validators: pairs
                    .iter()
                    .map(|p| Candidate {
                        hotkey: Hotkey::of(p),
                        stake: 1,
                    })
                    .collect(),
                eligible: BTreeSet::new(),
            })
        };
        // The elected validator's proposal and the two others' attestations of it.
        let records = |epoch| {
            let r = round(epoch);
            let elected = r.elected().unwrap();
            let signer = pairs.iter().find(|p| Hotkey::of(p) == elected).unwrap();
            let sp = Proposal {
                epoch,
                netuid: 3,
                proposer: elected,
                scores: vec![],
                args: vec![],
            }
            .sign(signer)
            .unwrap();
            let atts: Vec<Vec<u8>> = pairs
                .iter()
                .filter(|p| Hotkey::of(p) != elected)
                .map(|p| {
                    let a = Attestation {
                        epoch,
                        netuid: 3,
                        proposal: sp.hash(),
                        attester: Hotkey::of(p),
                    };
                    attestation_payload(&a.sign(p).unwrap())
                })
                .collect();
            (proposal_payload(&sp), atts)
        };
        let tally = |j: &GossipJudge| j.round().unwrap().tally().attestations;
        let mut j = GossipJudge::default();
        j.set_round(round(1));
        let (p1, a1) = records(1);
        assert_eq!(j.take(&a1[0]), Taken::Ignored);
        assert!(matches!(j.take(&p1), Taken::Proposal(_)));
        // The proposer's own and the early one.
        assert_eq!(tally(&j), 2);
        assert_eq!(j.take(&a1[1]), Taken::Attestation);
        assert_eq!(tally(&j), 3);
        // The next epoch's, heard while the copy is still at epoch 1.
        let (p2, a2) = records(2);
        assert_eq!(j.take(&a2[0]), Taken::Ignored);
        assert_eq!(j.take(&a2[1]), Taken::Ignored);
        let Taken::Early(sp) = j.take(&p2) else {
            panic!("a next-epoch proposal is handed back")
        };
        // The poll's chain read: epoch 2 with the proposal (relayed), none of the attestations.
        let mut r2 = round(2);
        r2.submit(&sp).unwrap();
        j.set_round(r2);
        assert_eq!(tally(&j), 3);
        assert_eq!(j.bad().total(), 0);
    }
}
