//! Arbitrary bytes into the decoder of the consensus gossip topic (what a node does with every
//! message on a subnet's topic before anything else): never panics; whatever it takes for a
//! record re-encodes to the same payload; it takes exactly the tagged, well-formed records (the
//! input framed as a proposal or an attestation decodes iff the record decoder takes it); and
//! checking the signature or submitting the record to a round never panics. The node's judge of
//! gossip records counts at most one bad record per payload, and none for application gossip.
#![no_main]

use hermes_actors::consensus::gossip::{self, GossipJudge, GossipRecord, GOSSIP_TAG};
use hermes_proto::consensus::{
    Candidate, ElectionMode, Round, RoundParams, SignedAttestation, SignedProposal,
};
use libfuzzer_sys::fuzz_target;

fn round_for(netuid: u16, epoch: u64, proposer: hermes_proto::Hotkey) -> Round {
    Round::open(RoundParams {
        netuid,
        epoch,
        seed: [0; 32],
        election: ElectionMode::Uniform,
        validators: vec![Candidate {
            hotkey: proposer,
            stake: 1,
        }],
        eligible: Default::default(),
    })
}

fuzz_target!(|data: &[u8]| {
    let mut judge = GossipJudge::default();
    judge.set_round(round_for(3, 1, hermes_proto::Hotkey([1; 32])));
    let _ = judge.take(data);
    assert!(judge.bad().total() <= 1);
    if !data.starts_with(GOSSIP_TAG) {
        assert_eq!(judge.bad().total(), 0);
    }
    match gossip::decode(data) {
        Some(GossipRecord::Proposal(p)) => {
            assert_eq!(gossip::proposal_payload(&p), data, "not canonical");
            let _ = p.verify_signature();
            let mut round = round_for(p.proposal.netuid, p.proposal.epoch, p.proposal.proposer);
            // A random signature never verifies.
            assert!(round.submit(&p).is_err());
        }
        Some(GossipRecord::Attestation(a)) => {
            assert_eq!(gossip::attestation_payload(&a), data, "not canonical");
            let _ = a.verify_signature();
            let mut round = round_for(
                a.attestation.netuid,
                a.attestation.epoch,
                a.attestation.attester,
            );
            // No proposal in the round: nothing to attest.
            assert!(round.attest(&a).is_err());
        }
        None => {}
    }
    // The same bytes framed as each kind of record.
    for (kind, ok) in [
        (1u8, SignedProposal::decode(data).is_ok()),
        (2u8, SignedAttestation::decode(data).is_ok()),
    ] {
        let mut framed = GOSSIP_TAG.to_vec();
        framed.push(kind);
        framed.extend_from_slice(data);
        assert_eq!(gossip::decode(&framed).is_some(), ok, "kind {kind}");
    }
});
