//! Wallet hotkeys: sr25519 public keys written as SS58 addresses.
//!
//! Signatures use sp-core's sr25519 scheme, whose signing context is `b"substrate"`: exactly what
//! bittensor (`Keypair.verify`), polkadot.js (`signatureVerify`) and subkey check, so a signature
//! made by Hermes verifies in every wallet tool and vice versa.

use sp_core::crypto::{Ss58AddressFormat, Ss58Codec};
use sp_core::{sr25519, Pair as _};
use std::fmt;
use thiserror::Error;

/// Default SS58 address prefix: 42, the generic substrate format that bittensor uses.
pub const DEFAULT_SS58_PREFIX: u16 = 42;

/// Length of an sr25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// An sr25519 public key: the identity of a wallet hotkey.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Hotkey(pub [u8; 32]);

/// Why an SS58 address or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HotkeyError {
    /// The text is not a valid SS58 address (bad base58, checksum or length).
    #[error("`{address}` is not a valid SS58 address: {reason}")]
    BadAddress {
        /// The text given.
        address: String,
        /// What sp-core reported.
        reason: String,
    },
    /// A signature was not 64 bytes long.
    #[error("an sr25519 signature is {SIGNATURE_LEN} bytes, got {0}")]
    SignatureLength(usize),
}

impl Hotkey {
    /// Parses an SS58 address of any prefix, returning the key and the prefix it was written with.
    ///
    /// # Errors
    /// [`HotkeyError::BadAddress`] when the checksum, alphabet or length is wrong.
    pub fn from_ss58(address: &str) -> Result<(Self, u16), HotkeyError> {
        let (public, format) =
            sr25519::Public::from_ss58check_with_version(address).map_err(|e| {
                HotkeyError::BadAddress {
                    address: address.to_string(),
                    reason: e.to_string(),
                }
            })?;
        Ok((Hotkey(public.0), format.prefix()))
    }

    /// The SS58 text form of this key under `prefix`.
    pub fn to_ss58(&self, prefix: u16) -> String {
        sr25519::Public::from_raw(self.0)
            .to_ss58check_with_version(Ss58AddressFormat::custom(prefix))
    }

    /// The public key of a signing pair.
    pub fn of(pair: &sr25519::Pair) -> Self {
        Hotkey(pair.public().0)
    }

    /// `true` if `signature` is this key's sr25519 signature over `message` (substrate context).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = <[u8; SIGNATURE_LEN]>::try_from(signature) else {
            return false;
        };
        sr25519::Pair::verify(
            &sr25519::Signature::from_raw(sig),
            message,
            &sr25519::Public::from_raw(self.0),
        )
    }

    /// `true` if `signature` is this key's application signature over `message`, as made by
    /// [`sign_app`] (`RuntimeHandle::sign`, `hermes sign`): sr25519 over
    /// [`APP_DOMAIN`]` || message`.
    pub fn verify_app(&self, message: &[u8], signature: &[u8]) -> bool {
        self.verify(&app_signing_payload(message), signature)
    }

    /// `0x`-prefixed lower-case hex of the public key, the form wallet tools print.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(66);
        s.push_str("0x");
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl fmt::Debug for Hotkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hotkey({})", self.to_ss58(DEFAULT_SS58_PREFIX))
    }
}

/// Signs `message` with `pair` in the standard substrate context, as it is: no domain tag.
///
/// Never call this on bytes a caller or a peer chose: they could be a binding record's or a
/// session header's signing payload, or a chain extrinsic, and the signature would then be valid
/// for that. Protocol structures sign their own domain-tagged payloads; applications use
/// [`sign_app`].
pub fn sign(pair: &sr25519::Pair, message: &[u8]) -> [u8; SIGNATURE_LEN] {
    pair.sign(message).0
}

/// Domain tag of application signatures. Every Hermes signature covers a payload that starts with
/// its own tag (`hermes/binding/v1`, `hermes/session/v1`, this one), and no tag is a prefix of
/// another, so an application signature can never be valid for a binding record or a session
/// header, whatever bytes the application was asked to sign.
pub const APP_DOMAIN: &[u8] = b"hermes/app/v1";

/// The bytes an application signature covers: `APP_DOMAIN || message`.
pub fn app_signing_payload(message: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(APP_DOMAIN.len() + message.len());
    v.extend_from_slice(APP_DOMAIN);
    v.extend_from_slice(message);
    v
}

/// Signs `message` for an application: sr25519 over [`app_signing_payload`]. Verify with
/// [`Hotkey::verify_app`].
pub fn sign_app(pair: &sr25519::Pair, message: &[u8]) -> [u8; SIGNATURE_LEN] {
    sign(pair, &app_signing_payload(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";

    #[test]
    fn alice_round_trips() {
        let (key, prefix) = Hotkey::from_ss58(ALICE).unwrap();
        assert_eq!(prefix, 42);
        assert_eq!(
            key.to_hex(),
            "0xd43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d"
        );
        assert_eq!(key.to_ss58(42), ALICE);
        // Polkadot's prefix 0 writes the same key differently.
        assert_eq!(
            key.to_ss58(0),
            "15oF4uVJwmo4TdGW7VfQxNLavjCXviqxT9S1MgbjMNHr6Sp5"
        );
    }

    #[test]
    fn bad_addresses_are_refused() {
        let mut wrong_checksum = ALICE.to_string();
        wrong_checksum.pop();
        wrong_checksum.push('Z');
        for bad in ["", "hello", &wrong_checksum, "0xd435"] {
            assert!(Hotkey::from_ss58(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sign_verify() {
        let pair = sr25519::Pair::from_string("//Alice", None).unwrap();
        let bob = sr25519::Pair::from_string("//Bob", None).unwrap();
        let sig = sign(&pair, b"hello");
        let alice = Hotkey::of(&pair);
        assert!(alice.verify(b"hello", &sig));
        assert!(!alice.verify(b"hellO", &sig));
        assert!(!Hotkey::of(&bob).verify(b"hello", &sig));
        assert!(!alice.verify(b"hello", &sig[..63]));

        // Application signatures verify only as such.
        let app = sign_app(&pair, b"hello");
        assert!(alice.verify_app(b"hello", &app));
        assert!(!alice.verify(b"hello", &app));
        assert!(!alice.verify_app(b"hello", &sig));
        assert!(!alice.verify_app(b"hellO", &app));
    }

    #[test]
    fn no_domain_tag_is_a_prefix_of_another() {
        let tags = [
            APP_DOMAIN,
            crate::binding::DOMAIN,
            crate::envelope::SESSION_DOMAIN,
            crate::sync::ticket::TICKET_DOMAIN,
            crate::consensus::record::PROPOSAL_DOMAIN,
            crate::consensus::record::ATTESTATION_DOMAIN,
        ];
        for (i, a) in tags.iter().enumerate() {
            for (j, b) in tags.iter().enumerate() {
                if i != j {
                    assert!(!b.starts_with(a), "{a:?} is a prefix of {b:?}");
                }
            }
        }
    }
}
