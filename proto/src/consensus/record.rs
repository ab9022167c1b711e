//! The signed consensus records: the elected validator's proposal and the validators'
//! attestations.
//!
//! Both are hand-written canonical encodings (one byte string per record, strict decoders), signed
//! by the node's sr25519 hotkey over `DOMAIN ‖ encoding` with their own domain tags, like the
//! binding record: a consensus signature can never verify as a binding, a session header, a
//! ticket, an application signature or a chain extrinsic.
//!
//! A proposal is identified by [`Proposal::hash`], a domain-separated BLAKE3 of its *unsigned*
//! encoding. sr25519 signatures are randomized, so the same statement signed twice gives two
//! different signed byte strings; attestations name the statement, not one of its signatures.
//!
//! # Proposal encoding (version 1, little-endian)
//! ```text
//! u8      version = 1
//! u64     epoch
//! u16     netuid
//! [32]    proposer hotkey (the elected validator; signs the proposal)
//! u16     score count K (K <= MAX_SCORES), then K times:
//!           [32]  node hotkey (strictly increasing)
//!           u128  score
//! u16+N   args (opaque to Hermes, N <= MAX_ARGS_LEN)
//! [64]    signature (proposer over PROPOSAL_DOMAIN ‖ all of the above)
//! ```
//!
//! # Attestation encoding (version 1, little-endian)
//! ```text
//! u8      version = 1
//! u64     epoch
//! u16     netuid
//! [32]    proposal hash
//! [32]    attester hotkey
//! [64]    signature (attester over ATTESTATION_DOMAIN ‖ all of the above)
//! ```

use crate::codec::{DecodeError, Reader, Writer};
use crate::hotkey::{sign, Hotkey, SIGNATURE_LEN};
use sp_core::sr25519;
use thiserror::Error;

/// Domain tag of proposal signatures.
pub const PROPOSAL_DOMAIN: &[u8] = b"hermes/consensus-proposal/v1";
/// Domain tag of attestation signatures.
pub const ATTESTATION_DOMAIN: &[u8] = b"hermes/consensus-attestation/v1";
/// BLAKE3 key-derivation context of [`Proposal::hash`].
pub const PROPOSAL_HASH_CONTEXT: &str = "hermes/consensus-proposal-hash/v1";
/// The only record version this build produces and accepts.
pub const RECORD_VERSION: u8 = 1;
/// Largest opaque argument blob, as the chain allows.
pub const MAX_ARGS_LEN: usize = 4096;
/// Most scored nodes in one proposal (a subnet holds far fewer nodes).
pub const MAX_SCORES: usize = 1024;
/// Largest encoded signed proposal.
pub const MAX_PROPOSAL_LEN: usize =
    1 + 8 + 2 + 32 + 2 + MAX_SCORES * (32 + 16) + 2 + MAX_ARGS_LEN + SIGNATURE_LEN;
/// Length of an encoded signed attestation.
pub const ATTESTATION_LEN: usize = 1 + 8 + 2 + 32 + 32 + SIGNATURE_LEN;

/// Identifies a proposal's statement: [`Proposal::hash`].
pub type ProposalHash = [u8; 32];

/// One node's score in the consensus data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Score {
    /// The node's hotkey.
    pub hotkey: Hotkey,
    /// Its score, in the application's unit (the chain uses 1e18 = 1.0).
    pub score: u128,
}

/// What the elected validator submits for an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The epoch it is for.
    pub epoch: u64,
    /// The subnet.
    pub netuid: u16,
    /// The elected validator's hotkey, which signs it.
    pub proposer: Hotkey,
    /// Scores of nodes of class Included or above, strictly increasing by hotkey.
    pub scores: Vec<Score>,
    /// Opaque application arguments, at most [`MAX_ARGS_LEN`] bytes.
    pub args: Vec<u8>,
}

/// A proposal with its proposer's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedProposal {
    /// The signed statement.
    pub proposal: Proposal,
    /// sr25519 by `proposal.proposer` over `PROPOSAL_DOMAIN ‖ proposal.encode()`.
    pub signature: [u8; SIGNATURE_LEN],
}

/// A validator's statement that it agrees with a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Attestation {
    /// The epoch.
    pub epoch: u64,
    /// The subnet.
    pub netuid: u16,
    /// [`Proposal::hash`] of the proposal it agrees with.
    pub proposal: ProposalHash,
    /// The attesting validator's hotkey, which signs it.
    pub attester: Hotkey,
}

/// An attestation with its attester's signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedAttestation {
    /// The signed statement.
    pub attestation: Attestation,
    /// sr25519 by `attestation.attester` over `ATTESTATION_DOMAIN ‖ attestation.encode()`.
    pub signature: [u8; SIGNATURE_LEN],
}

/// Why a record could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A field breaks a structural rule (counts, lengths, ordering).
    #[error("malformed consensus record: {0}")]
    Malformed(String),
    /// The args exceed [`MAX_ARGS_LEN`].
    #[error("consensus args of {0} bytes; at most {MAX_ARGS_LEN}")]
    ArgsTooLong(usize),
    /// The signing key is not the record's proposer or attester.
    #[error("the signing key is not the record's hotkey")]
    WrongKey,
}

fn check_version(r: &mut Reader<'_>, field: &'static str) -> Result<(), DecodeError> {
    let version = r.u8()?;
    if version != RECORD_VERSION {
        return Err(DecodeError::invalid(
            field,
            format!("unsupported version {version}; this build reads {RECORD_VERSION}"),
        ));
    }
    Ok(())
}

impl Proposal {
    /// Checks the rules the decoder enforces, so that encoding never produces bytes the decoder
    /// would refuse.
    ///
    /// # Errors
    /// [`RecordError::ArgsTooLong`] or [`RecordError::Malformed`] naming the rule.
    pub fn check_shape(&self) -> Result<(), RecordError> {
        if self.args.len() > MAX_ARGS_LEN {
            return Err(RecordError::ArgsTooLong(self.args.len()));
        }
        if self.scores.len() > MAX_SCORES {
            return Err(RecordError::Malformed(format!(
                "{} scores; at most {MAX_SCORES}",
                self.scores.len()
            )));
        }
        if self.scores.windows(2).any(|w| w[0].hotkey >= w[1].hotkey) {
            return Err(RecordError::Malformed(
                "scores must be strictly increasing by hotkey".into(),
            ));
        }
        Ok(())
    }

    /// Length of [`Proposal::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        1 + 8 + 2 + 32 + 2 + self.scores.len() * (32 + 16) + 2 + self.args.len()
    }

    /// The canonical unsigned encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        self.write(&mut w);
        w.into_vec()
    }

    fn write(&self, w: &mut Writer) {
        w.u8(RECORD_VERSION)
            .u64(self.epoch)
            .u16(self.netuid)
            .put(&self.proposer.0);
        // Bounded by MAX_SCORES once the shape is checked; saturate rather than panic otherwise.
        w.u16(u16::try_from(self.scores.len()).unwrap_or(u16::MAX));
        for s in &self.scores {
            w.put(&s.hotkey.0).u128(s.score);
        }
        w.bytes_u16(&self.args);
    }

    /// The bytes the proposer signs: `PROPOSAL_DOMAIN ‖ encode()`.
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(PROPOSAL_DOMAIN.len() + self.encoded_len());
        w.put(PROPOSAL_DOMAIN);
        self.write(&mut w);
        w.into_vec()
    }

    /// The statement's identity: BLAKE3 in derive-key mode ([`PROPOSAL_HASH_CONTEXT`]) over
    /// [`Proposal::encode`].
    pub fn hash(&self) -> ProposalHash {
        let mut h = blake3::Hasher::new_derive_key(PROPOSAL_HASH_CONTEXT);
        h.update(&self.encode());
        *h.finalize().as_bytes()
    }

    /// The score of `hotkey`, if the data holds it.
    pub fn score_of(&self, hotkey: &Hotkey) -> Option<u128> {
        self.scores
            .binary_search_by(|s| s.hotkey.cmp(hotkey))
            .ok()
            .and_then(|i| self.scores.get(i))
            .map(|s| s.score)
    }

    /// Signs with `pair`, whose public key must be `self.proposer`.
    ///
    /// # Errors
    /// [`RecordError`] for a bad shape or another key.
    pub fn sign(self, pair: &sr25519::Pair) -> Result<SignedProposal, RecordError> {
        self.check_shape()?;
        if Hotkey::of(pair) != self.proposer {
            return Err(RecordError::WrongKey);
        }
        let signature = sign(pair, &self.signing_payload());
        Ok(SignedProposal {
            proposal: self,
            signature,
        })
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        check_version(r, "proposal.version")?;
        let epoch = r.u64()?;
        let netuid = r.u16()?;
        let proposer = Hotkey(r.array()?);
        let count = usize::from(r.u16()?);
        if count > MAX_SCORES {
            return Err(DecodeError::invalid(
                "proposal.scores",
                format!("{count} entries; at most {MAX_SCORES}"),
            ));
        }
        let mut scores: Vec<Score> = Vec::with_capacity(count);
        for _ in 0..count {
            let hotkey = Hotkey(r.array()?);
            let score = r.u128()?;
            if scores.last().is_some_and(|last| last.hotkey >= hotkey) {
                return Err(DecodeError::invalid(
                    "proposal.scores",
                    "not strictly increasing by hotkey",
                ));
            }
            scores.push(Score { hotkey, score });
        }
        let args = r.bytes_u16("proposal.args", MAX_ARGS_LEN)?.to_vec();
        Ok(Proposal {
            epoch,
            netuid,
            proposer,
            scores,
            args,
        })
    }
}

impl SignedProposal {
    /// Length of [`SignedProposal::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        self.proposal.encoded_len() + SIGNATURE_LEN
    }

    /// Wire form: the proposal's encoding followed by the signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        self.proposal.write(&mut w);
        w.put(&self.signature);
        w.into_vec()
    }

    /// Decodes a signed proposal. Does not verify it: see [`SignedProposal::verify_signature`].
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] when truncated; [`DecodeError::Invalid`] for another version,
    /// too many or unordered scores, over-long args (field `proposal.args`) or trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_PROPOSAL_LEN {
            return Err(DecodeError::invalid(
                "proposal",
                format!("{} bytes; at most {MAX_PROPOSAL_LEN}", bytes.len()),
            ));
        }
        let mut r = Reader::new(bytes);
        let proposal = Proposal::read(&mut r)?;
        let signature = r.array()?;
        r.finish("proposal")?;
        Ok(SignedProposal {
            proposal,
            signature,
        })
    }

    /// `true` if the signature is the proposer's over the proposal.
    pub fn verify_signature(&self) -> bool {
        self.proposal
            .proposer
            .verify(&self.proposal.signing_payload(), &self.signature)
    }

    /// [`Proposal::hash`] of the statement.
    pub fn hash(&self) -> ProposalHash {
        self.proposal.hash()
    }
}

impl Attestation {
    /// Length of [`Attestation::encode`]'s output.
    pub const ENCODED_LEN: usize = ATTESTATION_LEN - SIGNATURE_LEN;

    /// The canonical unsigned encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(Self::ENCODED_LEN);
        self.write(&mut w);
        w.into_vec()
    }

    fn write(&self, w: &mut Writer) {
        w.u8(RECORD_VERSION)
            .u64(self.epoch)
            .u16(self.netuid)
            .put(&self.proposal)
            .put(&self.attester.0);
    }

    /// The bytes the attester signs: `ATTESTATION_DOMAIN ‖ encode()`.
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(ATTESTATION_DOMAIN.len() + Self::ENCODED_LEN);
        w.put(ATTESTATION_DOMAIN);
        self.write(&mut w);
        w.into_vec()
    }

    /// Signs with `pair`, whose public key must be `self.attester`.
    ///
    /// # Errors
    /// [`RecordError::WrongKey`] for another key.
    pub fn sign(self, pair: &sr25519::Pair) -> Result<SignedAttestation, RecordError> {
        if Hotkey::of(pair) != self.attester {
            return Err(RecordError::WrongKey);
        }
        let signature = sign(pair, &self.signing_payload());
        Ok(SignedAttestation {
            attestation: self,
            signature,
        })
    }
}

impl SignedAttestation {
    /// Wire form: the attestation's encoding followed by the signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(ATTESTATION_LEN);
        self.attestation.write(&mut w);
        w.put(&self.signature);
        w.into_vec()
    }

    /// Decodes a signed attestation. Does not verify it.
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] when truncated; [`DecodeError::Invalid`] for another version
    /// or trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > ATTESTATION_LEN {
            return Err(DecodeError::invalid(
                "attestation",
                format!("{} bytes; exactly {ATTESTATION_LEN}", bytes.len()),
            ));
        }
        let mut r = Reader::new(bytes);
        check_version(&mut r, "attestation.version")?;
        let attestation = Attestation {
            epoch: r.u64()?,
            netuid: r.u16()?,
            proposal: r.array()?,
            attester: Hotkey(r.array()?),
        };
        let signature = r.array()?;
        r.finish("attestation")?;
        Ok(SignedAttestation {
            attestation,
            signature,
        })
    }

    /// `true` if the signature is the attester's over the attestation.
    pub fn verify_signature(&self) -> bool {
        self.attestation
            .attester
            .verify(&self.attestation.signing_payload(), &self.signature)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Proposal {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut scores: Vec<Score> = u.arbitrary()?;
        scores.truncate(MAX_SCORES);
        scores.sort_unstable_by_key(|a| a.hotkey);
        scores.dedup_by(|a, b| a.hotkey == b.hotkey);
        let args_len = u.int_in_range(0..=MAX_ARGS_LEN.min(u.len()))?;
        Ok(Proposal {
            epoch: u.arbitrary()?,
            netuid: u.arbitrary()?,
            proposer: u.arbitrary()?,
            scores,
            args: u.bytes(args_len)?.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sp_core::Pair as _;

    fn pair(name: &str) -> sr25519::Pair {
        sr25519::Pair::from_string(&format!("//{name}"), None).unwrap()
    }

    fn proposal(p: &sr25519::Pair) -> Proposal {
        Proposal {
            epoch: 7,
            netuid: 3,
            proposer: Hotkey::of(p),
            scores: vec![
                Score {
                    hotkey: Hotkey([1; 32]),
                    score: 10,
                },
                Score {
                    hotkey: Hotkey([2; 32]),
                    score: u128::MAX,
                },
            ],
            args: b"round 7".to_vec(),
        }
    }

    #[test]
    fn proposal_signs_round_trips_and_verifies() {
        let alice = pair("Alice");
        let sp = proposal(&alice).sign(&alice).unwrap();
        assert!(sp.verify_signature());
        let bytes = sp.encode();
        assert_eq!(bytes.len(), sp.encoded_len());
        let back = SignedProposal::decode(&bytes).unwrap();
        assert_eq!(back, sp);
        assert!(back.verify_signature());
        assert_eq!(back.proposal.score_of(&Hotkey([2; 32])), Some(u128::MAX));
        assert_eq!(back.proposal.score_of(&Hotkey([3; 32])), None);
        // Signing twice gives another signature but the same statement hash.
        let again = proposal(&alice).sign(&alice).unwrap();
        assert_ne!(again.signature, sp.signature);
        assert_eq!(again.hash(), sp.hash());
        // Any change of the statement changes the hash and breaks the signature.
        let mut t = sp.clone();
        t.proposal.epoch += 1;
        assert_ne!(t.hash(), sp.hash());
        assert!(!t.verify_signature());
        let mut t = sp.clone();
        t.proposal.scores[0].score += 1;
        assert!(!t.verify_signature());
        let mut t = sp.clone();
        t.proposal.proposer = Hotkey::of(&pair("Bob"));
        assert!(!t.verify_signature());
    }

    #[test]
    fn shape_rules_refuse_to_sign() {
        let alice = pair("Alice");
        let mut p = proposal(&alice);
        p.args = vec![0; MAX_ARGS_LEN + 1];
        assert_eq!(
            p.sign(&alice),
            Err(RecordError::ArgsTooLong(MAX_ARGS_LEN + 1))
        );
        let mut p = proposal(&alice);
        p.args = vec![0; MAX_ARGS_LEN];
        assert!(p.sign(&alice).is_ok());
        let mut p = proposal(&alice);
        p.scores.swap(0, 1);
        assert!(matches!(p.sign(&alice), Err(RecordError::Malformed(_))));
        let mut p = proposal(&alice);
        p.scores[1].hotkey = p.scores[0].hotkey;
        assert!(matches!(p.sign(&alice), Err(RecordError::Malformed(_))));
        assert_eq!(
            proposal(&alice).sign(&pair("Bob")),
            Err(RecordError::WrongKey)
        );
    }

    #[test]
    fn proposal_decoder_refuses_bad_bytes() {
        let alice = pair("Alice");
        let bytes = proposal(&alice).sign(&alice).unwrap().encode();
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    SignedProposal::decode(&bytes[..cut]),
                    Err(DecodeError::Incomplete { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut v = bytes.clone();
        v[0] = 2;
        assert!(matches!(
            SignedProposal::decode(&v),
            Err(DecodeError::Invalid {
                field: "proposal.version",
                ..
            })
        ));
        let mut v = bytes.clone();
        v.push(0);
        assert!(matches!(
            SignedProposal::decode(&v),
            Err(DecodeError::Invalid {
                field: "proposal",
                ..
            })
        ));
        // Scores out of order: swap the two hotkeys in place.
        let mut v = bytes.clone();
        let first = 1 + 8 + 2 + 32 + 2;
        v[first..first + 32].copy_from_slice(&[3; 32]);
        assert!(matches!(
            SignedProposal::decode(&v),
            Err(DecodeError::Invalid {
                field: "proposal.scores",
                ..
            })
        ));
        // An args length over the limit is refused before the body is read.
        let args_at = first + 2 * 48;
        let mut v = bytes[..args_at].to_vec();
        v.extend_from_slice(&u16::try_from(MAX_ARGS_LEN + 1).unwrap().to_le_bytes());
        assert!(matches!(
            SignedProposal::decode(&v),
            Err(DecodeError::Invalid {
                field: "proposal.args",
                ..
            })
        ));
        // A score count over the limit likewise.
        let mut v = bytes[..first - 2].to_vec();
        v.extend_from_slice(&u16::try_from(MAX_SCORES + 1).unwrap().to_le_bytes());
        assert!(matches!(
            SignedProposal::decode(&v),
            Err(DecodeError::Invalid {
                field: "proposal.scores",
                ..
            })
        ));
    }

    #[test]
    fn attestation_signs_round_trips_and_verifies() {
        let bob = pair("Bob");
        let a = Attestation {
            epoch: 7,
            netuid: 3,
            proposal: [5; 32],
            attester: Hotkey::of(&bob),
        };
        assert_eq!(a.sign(&pair("Alice")), Err(RecordError::WrongKey));
        let sa = a.sign(&bob).unwrap();
        assert!(sa.verify_signature());
        let bytes = sa.encode();
        assert_eq!(bytes.len(), ATTESTATION_LEN);
        assert_eq!(SignedAttestation::decode(&bytes), Ok(sa));
        for cut in 0..bytes.len() {
            assert!(matches!(
                SignedAttestation::decode(&bytes[..cut]),
                Err(DecodeError::Incomplete { .. })
            ));
        }
        let mut v = bytes.clone();
        v.push(1);
        assert!(SignedAttestation::decode(&v).is_err());
        let mut t = sa;
        t.attestation.proposal[0] ^= 1;
        assert!(!t.verify_signature());
    }

    /// A proposal signature never verifies as an attestation, or as any other Hermes record.
    #[test]
    fn signatures_do_not_cross_domains() {
        let alice = pair("Alice");
        let sp = proposal(&alice).sign(&alice).unwrap();
        let hk = Hotkey::of(&alice);
        assert!(!hk.verify(&sp.proposal.encode(), &sp.signature));
        assert!(!hk.verify_app(&sp.proposal.encode(), &sp.signature));
    }

    fn arb_proposal() -> impl Strategy<Value = Proposal> {
        (
            any::<u64>(),
            any::<u16>(),
            any::<[u8; 32]>(),
            proptest::collection::btree_map(any::<[u8; 32]>(), any::<u128>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..=MAX_ARGS_LEN),
        )
            .prop_map(|(epoch, netuid, proposer, scores, args)| Proposal {
                epoch,
                netuid,
                proposer: Hotkey(proposer),
                scores: scores
                    .into_iter()
                    .map(|(h, score)| Score {
                        hotkey: Hotkey(h),
                        score,
                    })
                    .collect(),
                args,
            })
    }

    proptest! {
        #[test]
        fn proposal_encoding_round_trips(p in arb_proposal(), sig in any::<[u8; 32]>()) {
            prop_assert!(p.check_shape().is_ok());
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&sig);
            let sp = SignedProposal { proposal: p, signature };
            let bytes = sp.encode();
            prop_assert_eq!(bytes.len(), sp.encoded_len());
            prop_assert!(bytes.len() <= MAX_PROPOSAL_LEN);
            prop_assert_eq!(SignedProposal::decode(&bytes).unwrap(), sp);
        }

        #[test]
        fn attestation_encoding_round_trips(
            epoch in any::<u64>(), netuid in any::<u16>(), h in any::<[u8; 32]>(),
            k in any::<[u8; 32]>(), sig in any::<[u8; 32]>(),
        ) {
            let mut signature = [0u8; 64];
            signature[32..].copy_from_slice(&sig);
            let sa = SignedAttestation {
                attestation: Attestation { epoch, netuid, proposal: h, attester: Hotkey(k) },
                signature,
            };
            prop_assert_eq!(SignedAttestation::decode(&sa.encode()), Ok(sa));
        }

        #[test]
        fn any_flipped_bit_fails_verification(idx in any::<prop::sample::Index>(), bit in 0u8..8) {
            let alice = pair("Alice");
            let mut bytes = proposal(&alice).sign(&alice).unwrap().encode();
            let i = idx.index(bytes.len());
            bytes[i] ^= 1 << bit;
            if let Ok(d) = SignedProposal::decode(&bytes) {
                prop_assert!(!d.verify_signature());
            }
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = SignedProposal::decode(&bytes);
            let _ = SignedAttestation::decode(&bytes);
        }
    }
}
