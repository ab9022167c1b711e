//! The binding record: a wallet hotkey vouching for a libp2p peer id.
//!
//! A node's transport key (ed25519 or RSA) is what noise/TLS authenticate; its wallet hotkey
//! (sr25519) is what the chain knows. The binding record ties the two together:
//!
//! 1. The node builds `{version, hotkey, ss58_prefix, peer_id, netuids, prekey, issued_at,
//!    expires_at}`, encodes it canonically (see [`BindingRecord::encode`]) and signs
//!    `DOMAIN || encoding` with the hotkey. The domain tag keeps this signature from ever being
//!    valid as a signature over any other Hermes structure or a chain extrinsic.
//! 2. It presents the signed record on every new connection and publishes it in the DHT.
//! 3. A verifier decodes it (strictly: one encoding per record, bounded lengths), then
//!    [`SignedBinding::verify`] checks, in this order: the signature under the record's hotkey, the
//!    expected hotkey (if the verifier knows whom it expects), the peer id against the one the
//!    transport authenticated, and the validity window against its own clock.
//!
//! Each failure has its own [`BindingError`] variant so that logs and counters are precise; what a
//! remote peer is told is up to the caller.
//!
//! # Encoding (version 1, little-endian)
//! ```text
//! u8      version = 1
//! [32]    hotkey (sr25519 public key)
//! u16     ss58_prefix
//! u16+N   peer_id (libp2p multihash bytes, N <= 128)
//! u16+2K  netuids (K <= 256 entries, strictly increasing)
//! [32]    prekey (X25519 public key)
//! u64     issued_at  (unix seconds)
//! u64     expires_at (unix seconds)
//! [64]    signature  (sr25519 over DOMAIN || all of the above)
//! ```

use crate::codec::{DecodeError, Reader, Writer};
use crate::hotkey::{sign, Hotkey, SIGNATURE_LEN};
use sp_core::sr25519;
use thiserror::Error;

/// Domain-separation tag prepended to the encoding before signing.
pub const DOMAIN: &[u8] = b"hermes/binding/v1";
/// The only record version this build produces and accepts.
pub const VERSION: u8 = 1;
/// Upper bound on the peer-id bytes (a multihash); the chain's own limit on the text form is 128.
pub const MAX_PEER_ID_BYTES: usize = 128;
/// Upper bound on the number of subnets one record can name.
pub const MAX_NETUIDS: usize = 256;
/// Longest validity window accepted: a leaked binding must not stay usable for long.
pub const MAX_LIFETIME_SECS: u64 = 30 * 24 * 3600;
/// Clock skew tolerated on `issued_at` so that peers with slightly fast clocks are not refused.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// Largest possible encoded size of a signed record.
pub const MAX_ENCODED_LEN: usize =
    1 + 32 + 2 + 2 + MAX_PEER_ID_BYTES + 2 + 2 * MAX_NETUIDS + 32 + 8 + 8 + SIGNATURE_LEN;

/// The statement a hotkey signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRecord {
    /// The wallet hotkey that vouches for `peer_id`.
    pub hotkey: Hotkey,
    /// SS58 prefix the owner writes its address with (display only; the key is what counts).
    pub ss58_prefix: u16,
    /// libp2p peer id bytes (multihash) of the node's transport key.
    pub peer_id: Vec<u8>,
    /// Subnets the node serves, strictly increasing.
    pub netuids: Vec<u16>,
    /// Current X25519 prekey to which peers encrypt end-to-end.
    pub prekey: [u8; 32],
    /// Start of validity, unix seconds.
    pub issued_at: u64,
    /// End of validity (exclusive), unix seconds.
    pub expires_at: u64,
}

/// A record with its hotkey signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBinding {
    /// The signed statement.
    pub record: BindingRecord,
    /// sr25519 signature over `DOMAIN || record.encode()`.
    pub signature: [u8; SIGNATURE_LEN],
}

/// Why a binding record was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BindingError {
    /// The record's fields break a structural rule (lengths, ordering, window).
    #[error("malformed binding record: {0}")]
    Malformed(String),
    /// The signature is not the record hotkey's signature over the record.
    #[error("binding signature does not verify under hotkey {0}")]
    BadSignature(String),
    /// The record is validly signed, but by another hotkey than the one expected.
    #[error("binding is signed by {got}, expected {expected}")]
    WrongSigner {
        /// SS58 of the hotkey the verifier expected.
        expected: String,
        /// SS58 of the hotkey that signed.
        got: String,
    },
    /// The record vouches for another peer id than the connection's.
    #[error("binding is for peer id {claimed}, but the connection is from {actual}")]
    PeerIdMismatch {
        /// Peer id in the record (base58).
        claimed: String,
        /// Peer id the transport authenticated (base58).
        actual: String,
    },
    /// `now >= expires_at`.
    #[error("binding expired at {expires_at} (now {now})")]
    Expired {
        /// End of validity.
        expires_at: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// `issued_at` is further in the future than the tolerated clock skew.
    #[error("binding is not valid before {issued_at} (now {now})")]
    NotYetValid {
        /// Start of validity.
        issued_at: u64,
        /// The verifier's clock.
        now: u64,
    },
}

impl BindingRecord {
    /// Checks the structural rules the decoder enforces, so that encoding never produces bytes the
    /// decoder would refuse.
    ///
    /// # Errors
    /// [`BindingError::Malformed`] naming the rule.
    pub fn check_shape(&self) -> Result<(), BindingError> {
        if self.peer_id.is_empty() || self.peer_id.len() > MAX_PEER_ID_BYTES {
            return Err(BindingError::Malformed(format!(
                "peer id is {} bytes; expected 1..={MAX_PEER_ID_BYTES}",
                self.peer_id.len()
            )));
        }
        if self.netuids.len() > MAX_NETUIDS {
            return Err(BindingError::Malformed(format!(
                "{} netuids; at most {MAX_NETUIDS}",
                self.netuids.len()
            )));
        }
        if self.netuids.windows(2).any(|w| w[0] >= w[1]) {
            return Err(BindingError::Malformed(
                "netuids must be strictly increasing".into(),
            ));
        }
        if self.expires_at <= self.issued_at {
            return Err(BindingError::Malformed(format!(
                "expires_at {} is not after issued_at {}",
                self.expires_at, self.issued_at
            )));
        }
        if self.expires_at - self.issued_at > MAX_LIFETIME_SECS {
            return Err(BindingError::Malformed(format!(
                "validity window of {}s exceeds the maximum {MAX_LIFETIME_SECS}s",
                self.expires_at - self.issued_at
            )));
        }
        Ok(())
    }

    /// Length of [`BindingRecord::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        1 + 32 + 2 + 2 + self.peer_id.len() + 2 + 2 * self.netuids.len() + 32 + 8 + 8
    }

    /// The canonical unsigned encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        self.write(&mut w);
        w.into_vec()
    }

    fn write(&self, w: &mut Writer) {
        w.u8(VERSION)
            .put(&self.hotkey.0)
            .u16(self.ss58_prefix)
            .bytes_u16(&self.peer_id);
        // Bounded by MAX_NETUIDS when the shape is checked; saturate rather than panic otherwise.
        w.u16(u16::try_from(self.netuids.len()).unwrap_or(u16::MAX));
        for n in &self.netuids {
            w.u16(*n);
        }
        w.put(&self.prekey).u64(self.issued_at).u64(self.expires_at);
    }

    /// The bytes the hotkey signs: `DOMAIN || encode()`.
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(DOMAIN.len() + self.encoded_len());
        w.put(DOMAIN);
        self.write(&mut w);
        w.into_vec()
    }

    /// Signs the record with `pair`, whose public key must be `self.hotkey`.
    ///
    /// # Errors
    /// [`BindingError::Malformed`] if the shape is invalid or `pair` is not the record's hotkey.
    pub fn sign(self, pair: &sr25519::Pair) -> Result<SignedBinding, BindingError> {
        self.check_shape()?;
        if Hotkey::of(pair) != self.hotkey {
            return Err(BindingError::Malformed(
                "signing key is not the record's hotkey".into(),
            ));
        }
        let signature = sign(pair, &self.signing_payload());
        Ok(SignedBinding {
            record: self,
            signature,
        })
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::invalid(
                "binding.version",
                format!("unsupported version {version}; this build reads {VERSION}"),
            ));
        }
        let hotkey = Hotkey(r.array()?);
        let ss58_prefix = r.u16()?;
        let peer_id = r.bytes_u16("binding.peer_id", MAX_PEER_ID_BYTES)?.to_vec();
        if peer_id.is_empty() {
            return Err(DecodeError::invalid("binding.peer_id", "empty"));
        }
        let count = usize::from(r.u16()?);
        if count > MAX_NETUIDS {
            return Err(DecodeError::invalid(
                "binding.netuids",
                format!("{count} entries; at most {MAX_NETUIDS}"),
            ));
        }
        let mut netuids = Vec::with_capacity(count);
        for _ in 0..count {
            let n = r.u16()?;
            if netuids.last().is_some_and(|last| *last >= n) {
                return Err(DecodeError::invalid(
                    "binding.netuids",
                    "not strictly increasing",
                ));
            }
            netuids.push(n);
        }
        let prekey = r.array()?;
        let issued_at = r.u64()?;
        let expires_at = r.u64()?;
        Ok(BindingRecord {
            hotkey,
            ss58_prefix,
            peer_id,
            netuids,
            prekey,
            issued_at,
            expires_at,
        })
    }
}

impl SignedBinding {
    /// Length of [`SignedBinding::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        self.record.encoded_len() + SIGNATURE_LEN
    }

    /// Wire form: the record's encoding followed by the signature.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        self.record.write(&mut w);
        w.put(&self.signature);
        w.into_vec()
    }

    /// Decodes a signed record. Does not verify it: call [`SignedBinding::verify`].
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] for a truncated record, [`DecodeError::Invalid`] for an unknown
    /// version, an over-long field, unordered netuids or trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_ENCODED_LEN {
            return Err(DecodeError::invalid(
                "binding",
                format!("{} bytes; at most {MAX_ENCODED_LEN}", bytes.len()),
            ));
        }
        let mut r = Reader::new(bytes);
        let record = BindingRecord::read(&mut r)?;
        let signature = r.array()?;
        r.finish("binding")?;
        Ok(SignedBinding { record, signature })
    }

    /// Verifies the record for a connection from `peer_id` (multihash bytes), optionally
    /// requiring that it was signed by `expected` (e.g. the hotkey the chain registered for that
    /// peer id), at time `now` (unix seconds).
    ///
    /// # Errors
    /// The first failed check, in the order given in the module documentation.
    pub fn verify(
        &self,
        peer_id: &[u8],
        expected: Option<&Hotkey>,
        now: u64,
    ) -> Result<(), BindingError> {
        let rec = &self.record;
        rec.check_shape()?;
        let prefix = rec.ss58_prefix;
        if !rec.hotkey.verify(&rec.signing_payload(), &self.signature) {
            return Err(BindingError::BadSignature(rec.hotkey.to_ss58(prefix)));
        }
        if let Some(expected) = expected {
            if *expected != rec.hotkey {
                return Err(BindingError::WrongSigner {
                    expected: expected.to_ss58(prefix),
                    got: rec.hotkey.to_ss58(prefix),
                });
            }
        }
        if rec.peer_id != peer_id {
            return Err(BindingError::PeerIdMismatch {
                claimed: bs58::encode(&rec.peer_id).into_string(),
                actual: bs58::encode(peer_id).into_string(),
            });
        }
        if now >= rec.expires_at {
            return Err(BindingError::Expired {
                expires_at: rec.expires_at,
                now,
            });
        }
        if rec.issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(BindingError::NotYetValid {
                issued_at: rec.issued_at,
                now,
            });
        }
        Ok(())
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for BindingRecord {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let peer_len = u.int_in_range(1..=MAX_PEER_ID_BYTES)?;
        let mut netuids: Vec<u16> = u.arbitrary()?;
        netuids.truncate(MAX_NETUIDS);
        netuids.sort_unstable();
        netuids.dedup();
        let issued_at: u64 = u.arbitrary()?;
        let life = u.int_in_range(1..=MAX_LIFETIME_SECS)?;
        Ok(BindingRecord {
            hotkey: u.arbitrary()?,
            ss58_prefix: u.arbitrary()?,
            peer_id: u.bytes(peer_len)?.to_vec(),
            netuids,
            prekey: u.arbitrary()?,
            issued_at,
            expires_at: issued_at.saturating_add(life),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sp_core::Pair as _;

    const NOW: u64 = 1_800_000_000;

    fn alice() -> sr25519::Pair {
        sr25519::Pair::from_string("//Alice", None).unwrap()
    }

    fn record(pair: &sr25519::Pair) -> BindingRecord {
        BindingRecord {
            hotkey: Hotkey::of(pair),
            ss58_prefix: 42,
            peer_id: vec![0, 36, 8, 1, 18, 32, 7, 7, 7],
            netuids: vec![1, 42, 75],
            prekey: [9; 32],
            issued_at: NOW - 10,
            expires_at: NOW + 3600,
        }
    }

    fn signed() -> SignedBinding {
        record(&alice()).sign(&alice()).unwrap()
    }

    #[test]
    fn valid_record_verifies() {
        let b = signed();
        let peer = b.record.peer_id.clone();
        assert_eq!(b.verify(&peer, None, NOW), Ok(()));
        assert_eq!(b.verify(&peer, Some(&Hotkey::of(&alice())), NOW), Ok(()));
        let back = SignedBinding::decode(&b.encode()).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.verify(&peer, None, NOW), Ok(()));
    }

    #[test]
    fn every_break_is_rejected_with_its_own_error() {
        let b = signed();
        let peer = b.record.peer_id.clone();
        let bob = sr25519::Pair::from_string("//Bob", None).unwrap();

        // Signed by another key than the one it names.
        let mut forged = b.clone();
        forged.record.hotkey = Hotkey::of(&bob);
        assert!(matches!(
            forged.verify(&peer, None, NOW),
            Err(BindingError::BadSignature(_))
        ));
        // Valid, but by someone else than expected (a node presenting another hotkey's binding).
        let bobs = record(&bob).sign(&bob).unwrap();
        assert!(matches!(
            bobs.verify(&peer, Some(&Hotkey::of(&alice())), NOW),
            Err(BindingError::WrongSigner { .. })
        ));
        // Any field changed after signing breaks the signature.
        let mut t = b.clone();
        t.record.netuids.push(900);
        assert!(matches!(
            t.verify(&peer, None, NOW),
            Err(BindingError::BadSignature(_))
        ));
        let mut t = b.clone();
        t.record.expires_at += 1;
        assert!(matches!(
            t.verify(&peer, None, NOW),
            Err(BindingError::BadSignature(_))
        ));
        let mut t = b.clone();
        t.signature[0] ^= 1;
        assert!(matches!(
            t.verify(&peer, None, NOW),
            Err(BindingError::BadSignature(_))
        ));
        // Presented over a connection from another peer id.
        assert!(matches!(
            b.verify(&[0, 36, 8, 1, 18, 32, 6, 6, 6], None, NOW),
            Err(BindingError::PeerIdMismatch { .. })
        ));
        // Window.
        assert_eq!(
            b.verify(&peer, None, NOW + 3600),
            Err(BindingError::Expired {
                expires_at: NOW + 3600,
                now: NOW + 3600
            })
        );
        assert!(matches!(
            b.verify(&peer, None, NOW - 10 - MAX_CLOCK_SKEW_SECS - 1),
            Err(BindingError::NotYetValid { .. })
        ));
        // Within skew is fine.
        assert_eq!(
            b.verify(&peer, None, NOW - 10 - MAX_CLOCK_SKEW_SECS),
            Ok(())
        );
    }

    #[test]
    fn shape_rules_refuse_to_sign() {
        let a = alice();
        let mut r = record(&a);
        r.netuids = vec![5, 5];
        assert!(matches!(r.sign(&a), Err(BindingError::Malformed(_))));
        let mut r = record(&a);
        r.expires_at = r.issued_at;
        assert!(matches!(r.sign(&a), Err(BindingError::Malformed(_))));
        let mut r = record(&a);
        r.expires_at = r.issued_at + MAX_LIFETIME_SECS + 1;
        assert!(matches!(r.sign(&a), Err(BindingError::Malformed(_))));
        let mut r = record(&a);
        r.peer_id.clear();
        assert!(matches!(r.sign(&a), Err(BindingError::Malformed(_))));
        let bob = sr25519::Pair::from_string("//Bob", None).unwrap();
        assert!(matches!(
            record(&a).sign(&bob),
            Err(BindingError::Malformed(_))
        ));
    }

    #[test]
    fn decoder_refuses_bad_bytes() {
        let bytes = signed().encode();
        // Every strict prefix is incomplete, never a panic or a wrong value.
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    SignedBinding::decode(&bytes[..cut]),
                    Err(DecodeError::Incomplete { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut v = bytes.clone();
        v[0] = 2;
        assert!(matches!(
            SignedBinding::decode(&v),
            Err(DecodeError::Invalid {
                field: "binding.version",
                ..
            })
        ));
        let mut v = bytes.clone();
        v.push(0);
        assert!(matches!(
            SignedBinding::decode(&v),
            Err(DecodeError::Invalid {
                field: "binding",
                ..
            })
        ));
        // Over-long peer id length prefix is refused before reading the body.
        let mut v = bytes.clone();
        v[35..37].copy_from_slice(&500u16.to_le_bytes());
        assert!(matches!(
            SignedBinding::decode(&v),
            Err(DecodeError::Invalid {
                field: "binding.peer_id",
                ..
            })
        ));
    }

    fn arb_record() -> impl Strategy<Value = BindingRecord> {
        (
            any::<[u8; 32]>(),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 1..=MAX_PEER_ID_BYTES),
            proptest::collection::btree_set(any::<u16>(), 0..40),
            any::<[u8; 32]>(),
            0u64..u64::MAX / 2,
            1u64..=MAX_LIFETIME_SECS,
        )
            .prop_map(|(hk, prefix, peer_id, netuids, prekey, issued_at, life)| {
                BindingRecord {
                    hotkey: Hotkey(hk),
                    ss58_prefix: prefix,
                    peer_id,
                    netuids: netuids.into_iter().collect(),
                    prekey,
                    issued_at,
                    expires_at: issued_at + life,
                }
            })
    }

    proptest! {
        #[test]
        fn encoding_round_trips(rec in arb_record(), sig in any::<[u8; 32]>()) {
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&sig);
            let b = SignedBinding { record: rec, signature };
            let bytes = b.encode();
            prop_assert_eq!(bytes.len(), b.encoded_len());
            prop_assert!(bytes.len() <= MAX_ENCODED_LEN);
            prop_assert_eq!(SignedBinding::decode(&bytes).unwrap(), b);
        }

        #[test]
        fn any_flipped_bit_fails_verification(idx in any::<prop::sample::Index>(), bit in 0u8..8) {
            let b = signed();
            let peer = b.record.peer_id.clone();
            let mut bytes = b.encode();
            let i = idx.index(bytes.len());
            bytes[i] ^= 1 << bit;
            if let Ok(d) = SignedBinding::decode(&bytes) {
                prop_assert!(d.verify(&peer, None, NOW).is_err());
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = SignedBinding::decode(&bytes);
        }
    }
}
