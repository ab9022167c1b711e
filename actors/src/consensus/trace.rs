//! What one node saw of each recent epoch's consensus records, and when: the instants it
//! proposed, first held the elected validator's proposal, and first counted ≥ 66 % attestations,
//! and the records it published and received on the subnet's gossip topic.
//!
//! 1. Timestamps are taken by the actor when it acts or learns something (a poll that read the
//!    chain, a record taken from gossip), never by whoever reads the status, so a reader that
//!    looks late still gets the time things happened. They are monotonic [`Instant`]s: comparable
//!    across nodes of one process (the loopback benchmark), meaningless across processes.
//! 2. "Finalized" is this node's own view: the round it holds (the chain's, as last read, plus
//!    the records taken from gossip since and its own attestation) counts ≥ 66 % of the
//!    validators. The chain's verdict comes at the epoch's end and is reported by the outcome.
//! 3. Traffic counts consensus payloads (tagged with `GOSSIP_TAG`) as the application publishes
//!    and receives them: after gossipsub's de-duplication on receipt, before its forwarding to
//!    mesh peers on sending. Each is charged to the epoch the record names (or, for a payload
//!    that does not decode, to the latest epoch traced).
//! 4. The last [`MAX_TRACES`] epochs are kept, oldest dropped first.

use std::collections::VecDeque;
use std::time::Instant;

/// Epochs whose traces a node keeps.
pub const MAX_TRACES: usize = 8;

/// Consensus records published or received: count and payload bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Messages.
    pub messages: u64,
    /// Payload bytes (tag, kind and record).
    pub bytes: u64,
}

impl Traffic {
    /// Counts one more message of `len` bytes.
    pub fn add(&mut self, len: usize) {
        self.messages = self.messages.saturating_add(1);
        self.bytes = self
            .bytes
            .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
    }
}

/// One epoch as this node lived it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochTrace {
    /// Epoch.
    pub epoch: u64,
    /// When this node, elected, had signed its proposal and was about to publish and submit it.
    pub proposed_at: Option<Instant>,
    /// When this node first held the elected validator's proposal (from gossip or the chain).
    pub proposal_at: Option<Instant>,
    /// When this node's view of the round first counted ≥ 66 % of the validators.
    pub finalized_at: Option<Instant>,
    /// Consensus records this node published on the subnet's gossip topic.
    pub sent: Traffic,
    /// Consensus records this node received from the subnet's gossip topic.
    pub received: Traffic,
}

impl EpochTrace {
    fn new(epoch: u64) -> Self {
        EpochTrace {
            epoch,
            proposed_at: None,
            proposal_at: None,
            finalized_at: None,
            sent: Traffic::default(),
            received: Traffic::default(),
        }
    }
}

/// The traces of the last [`MAX_TRACES`] epochs, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Traces {
    list: VecDeque<EpochTrace>,
    /// Where what concerns an epoch older than every one kept goes (and is forgotten).
    scratch: Option<EpochTrace>,
}

impl Traces {
    /// The trace of `epoch`, created when new (dropping the oldest past [`MAX_TRACES`]).
    pub(crate) fn of(&mut self, epoch: u64) -> &mut EpochTrace {
        if self.list.len() >= MAX_TRACES && self.list.front().is_some_and(|t| t.epoch > epoch) {
            return self.scratch.insert(EpochTrace::new(epoch));
        }
        let i = match self.list.iter().position(|t| t.epoch >= epoch) {
            Some(i) if self.list[i].epoch == epoch => i,
            at => {
                let i = at.unwrap_or(self.list.len());
                self.list.insert(i, EpochTrace::new(epoch));
                if self.list.len() > MAX_TRACES {
                    // Not `i` itself: an epoch older than every one kept is handled above.
                    self.list.pop_front();
                    i.saturating_sub(1)
                } else {
                    i
                }
            }
        };
        &mut self.list[i]
    }

    /// The latest epoch traced.
    pub(crate) fn latest(&self) -> Option<u64> {
        self.list.back().map(|t| t.epoch)
    }

    /// Marks what the round held at `now`: the proposal, and whether it counts ≥ 66 %. The
    /// first instant of each is kept.
    pub(crate) fn saw(&mut self, round: &hermes_proto::consensus::Round, now: Instant) {
        let t = self.of(round.epoch());
        if round.proposal().is_some() {
            t.proposal_at.get_or_insert(now);
        }
        if round.tally().in_consensus {
            t.finalized_at.get_or_insert(now);
        }
    }

    /// Every trace kept, oldest first.
    pub(crate) fn to_vec(&self) -> Vec<EpochTrace> {
        self.list.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_stay_sorted_and_bounded() {
        let mut t = Traces::default();
        for e in [5, 3, 9, 4, 5] {
            t.of(e).sent.add(10);
        }
        let v = t.to_vec();
        assert_eq!(
            v.iter().map(|x| x.epoch).collect::<Vec<_>>(),
            vec![3, 4, 5, 9]
        );
        assert_eq!(v[2].sent.messages, 2);
        assert_eq!(v[2].sent.bytes, 20);
        for e in 10..20 {
            t.of(e);
        }
        let v = t.to_vec();
        assert_eq!(v.len(), MAX_TRACES);
        assert_eq!(v.first().map(|x| x.epoch), Some(12));
        assert_eq!(t.latest(), Some(19));
        // An epoch older than everything kept, when full, comes and goes at once.
        t.of(1).received.add(1);
        let v = t.to_vec();
        assert_eq!(v.first().map(|x| x.epoch), Some(12));
        assert!(v.iter().all(|x| x.received == Traffic::default()));
    }
}
