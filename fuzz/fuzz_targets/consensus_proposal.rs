//! Arbitrary bytes into the consensus proposal decoder: never panics, whatever decodes re-encodes
//! to the same bytes (one encoding per proposal), and checking its signature or submitting it to a
//! round never panics.
#![no_main]

use hermes_proto::consensus::{Candidate, ElectionMode, Round, RoundParams, SignedProposal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = SignedProposal::decode(data) {
        assert_eq!(p.encode(), data, "proposal encoding is not canonical");
        assert_eq!(p.encoded_len(), data.len());
        let _ = p.verify_signature();
        let mut round = Round::open(RoundParams {
            netuid: p.proposal.netuid,
            epoch: p.proposal.epoch,
            seed: [0; 32],
            election: ElectionMode::Uniform,
            validators: vec![Candidate {
                hotkey: p.proposal.proposer,
                stake: 1,
            }],
            eligible: p.proposal.scores.iter().map(|s| s.hotkey).collect(),
        });
        // A random signature never verifies.
        assert!(round.submit(&p).is_err());
    }
});
