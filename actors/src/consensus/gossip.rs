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

use hermes_proto::consensus::{SignedAttestation, SignedProposal};

/// Prefix of consensus records on a subnet's gossip topic.
pub const GOSSIP_TAG: &[u8] = b"hermes/consensus/v1";
const KIND_PROPOSAL: u8 = 1;
const KIND_ATTESTATION: u8 = 2;

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
    let rest = data.strip_prefix(GOSSIP_TAG)?;
    let (kind, body) = rest.split_first()?;
    match *kind {
        KIND_PROPOSAL => SignedProposal::decode(body)
            .ok()
            .map(GossipRecord::Proposal),
        KIND_ATTESTATION => SignedAttestation::decode(body)
            .ok()
            .map(GossipRecord::Attestation),
        _ => None,
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
}
