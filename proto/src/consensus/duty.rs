//! What a node has already signed, so that it never signs twice for one epoch, even across a
//! restart.
//!
//! A node records its decision *before* the signed record leaves it (write-ahead): the
//! [`Duties`] value is persisted (16 + 2 × 40 bytes, [`Duties::encode`]) and only then is the
//! proposal or attestation sent. After a crash between the two, the node re-sends the record it
//! already decided on (the same statement, hence the same hash) instead of deciding again.

use super::record::ProposalHash;
use crate::codec::{DecodeError, Reader, Writer};

/// Length of [`Duties::encode`]'s output.
pub const DUTIES_LEN: usize = 1 + 2 * (1 + 8 + 32);

/// The last epoch a node proposed in and the last it attested in, with what it signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Duties {
    /// Last proposal: epoch and statement hash.
    pub proposed: Option<(u64, ProposalHash)>,
    /// Last attestation: epoch and the proposal it named.
    pub attested: Option<(u64, ProposalHash)>,
}

/// What the node may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing signed yet for this epoch: record, then sign.
    Sign,
    /// Already signed this very statement: sending it again is harmless.
    Resend,
    /// Already signed something else for this epoch (or a later epoch): refuse.
    Refuse,
}

fn decide(last: Option<(u64, ProposalHash)>, epoch: u64, hash: &ProposalHash) -> Decision {
    match last {
        None => Decision::Sign,
        Some((e, _)) if e < epoch => Decision::Sign,
        Some((e, h)) if e == epoch && h == *hash => Decision::Resend,
        Some(_) => Decision::Refuse,
    }
}

impl Duties {
    /// May the node propose the statement `hash` for `epoch`?
    pub fn may_propose(&self, epoch: u64, hash: &ProposalHash) -> Decision {
        decide(self.proposed, epoch, hash)
    }

    /// May the node attest the proposal `hash` for `epoch`?
    pub fn may_attest(&self, epoch: u64, hash: &ProposalHash) -> Decision {
        decide(self.attested, epoch, hash)
    }

    /// Records a proposal (call, persist, then send).
    pub fn record_proposal(&mut self, epoch: u64, hash: ProposalHash) {
        self.proposed = Some((epoch, hash));
    }

    /// Records an attestation (call, persist, then send).
    pub fn record_attestation(&mut self, epoch: u64, hash: ProposalHash) {
        self.attested = Some((epoch, hash));
    }

    /// Fixed-size encoding: a version byte, then per slot a presence byte, epoch and hash.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(DUTIES_LEN);
        w.u8(1);
        for slot in [self.proposed, self.attested] {
            let (present, (e, h)) = match slot {
                Some(v) => (1, v),
                None => (0, (0, [0; 32])),
            };
            w.u8(present).u64(e).put(&h);
        }
        w.into_vec()
    }

    /// Decodes [`Duties::encode`]'s output.
    ///
    /// # Errors
    /// [`DecodeError`] for a short, long or non-canonical input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != 1 {
            return Err(DecodeError::invalid("duties.version", "unsupported"));
        }
        let slot = |r: &mut Reader<'_>| -> Result<Option<(u64, ProposalHash)>, DecodeError> {
            let present = r.u8()?;
            let e = r.u64()?;
            let h: ProposalHash = r.array()?;
            match present {
                1 => Ok(Some((e, h))),
                0 if e == 0 && h == [0; 32] => Ok(None),
                _ => Err(DecodeError::invalid("duties.slot", "not canonical")),
            }
        };
        let proposed = slot(&mut r)?;
        let attested = slot(&mut r)?;
        r.finish("duties")?;
        Ok(Duties { proposed, attested })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// The node wants to attest `hash` in `epoch`.
        Attest(u64, u8),
        /// The node restarts: only what was persisted survives.
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..6, 0u8..3).prop_map(|(e, h)| Op::Attest(e, h)),
            1 => Just(Op::Restart),
        ]
    }

    proptest! {
        /// Whatever the order of requests and restarts, a node never signs two different
        /// attestations for one epoch, and never signs for an epoch older than its last.
        #[test]
        fn never_two_attestations_per_epoch(ops in proptest::collection::vec(op(), 0..60)) {
            let mut disk = Duties::default().encode();
            let mut mem = Duties::decode(&disk).unwrap();
            let mut signed: std::collections::BTreeMap<u64, [u8; 32]> = Default::default();
            let mut last_epoch = None;
            for op in ops {
                match op {
                    Op::Restart => mem = Duties::decode(&disk).unwrap(),
                    Op::Attest(e, h) => {
                        let hash = [h; 32];
                        if mem.may_attest(e, &hash) == Decision::Sign {
                            mem.record_attestation(e, hash);
                            disk = mem.encode();
                            // The signature leaves only now.
                            if let Some(prev) = signed.insert(e, hash) {
                                prop_assert_eq!(prev, hash, "two attestations in epoch {}", e);
                            }
                            prop_assert!(last_epoch.is_none_or(|l| l < e));
                            last_epoch = Some(e);
                        }
                    }
                }
            }
        }

        #[test]
        fn decode_round_trips_and_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Ok(d) = Duties::decode(&bytes) {
                prop_assert_eq!(d.encode(), bytes);
            }
        }
    }

    #[test]
    fn decisions() {
        let mut d = Duties::default();
        assert_eq!(d.may_propose(3, &[1; 32]), Decision::Sign);
        d.record_proposal(3, [1; 32]);
        assert_eq!(d.may_propose(3, &[1; 32]), Decision::Resend);
        assert_eq!(d.may_propose(3, &[2; 32]), Decision::Refuse);
        assert_eq!(d.may_propose(2, &[1; 32]), Decision::Refuse);
        assert_eq!(d.may_propose(4, &[2; 32]), Decision::Sign);
        assert_eq!(d.may_attest(3, &[1; 32]), Decision::Sign);
        assert_eq!(Duties::decode(&d.encode()), Ok(d));
        assert_eq!(d.encode().len(), DUTIES_LEN);
    }
}
