//! The peer-id rule the Hypertensor chain applies when a node registers.
//!
//! The chain stores a peer id as the bytes of its text form and accepts it when its length is
//! 32..=128 and it starts with `1` (base58btc identity multihash, ed25519 keys: `12D3KooW…`),
//! `Qm` (base58btc sha256 multihash: RSA and other large keys), or one of the multibase prefixes
//! `f`, `b`, `z`, `m` (peer ids written as CIDs). Hermes applies the same rule before it registers
//! or admits a node so that nothing the chain would refuse ever reaches it.

use thiserror::Error;

/// Shortest peer id the chain accepts, in bytes of its text form.
pub const MIN_PEER_ID_LEN: usize = 32;
/// Longest peer id the chain accepts, in bytes of its text form.
pub const MAX_PEER_ID_LEN: usize = 128;

/// Why a peer id fails the chain's rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PeerIdRuleError {
    /// Length outside `32..=128` bytes.
    #[error(
        "peer id is {len} bytes long; the chain accepts {MIN_PEER_ID_LEN}..={MAX_PEER_ID_LEN}"
    )]
    Length {
        /// The length seen.
        len: usize,
    },
    /// Does not start with `1`, `Qm`, `f`, `b`, `z` or `m`.
    #[error("peer id must start with '1', 'Qm', 'f', 'b', 'z' or 'm'")]
    Prefix,
}

/// Checks a peer id (its text form, e.g. `12D3KooW…`) exactly as the chain does.
///
/// # Errors
/// [`PeerIdRuleError`] says which part of the rule failed.
pub fn check_peer_id(peer_id: &[u8]) -> Result<(), PeerIdRuleError> {
    let len = peer_id.len();
    if !(MIN_PEER_ID_LEN..=MAX_PEER_ID_LEN).contains(&len) {
        return Err(PeerIdRuleError::Length { len });
    }
    // Length >= 32 guarantees both indexes exist.
    match (peer_id[0], peer_id[1]) {
        (b'1', _) | (b'Q', b'm') | (b'f' | b'b' | b'z' | b'm', _) => Ok(()),
        _ => Err(PeerIdRuleError::Prefix),
    }
}

/// `true` when the chain would accept `peer_id` (see [`check_peer_id`]).
pub fn validate_peer_id(peer_id: &[u8]) -> bool {
    check_peer_id(peer_id).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The three example peer ids of the libp2p peer-id specification, one per accepted family.
    const ED25519: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    const SHA256: &str = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N";
    const CID: &str = "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe";

    #[test]
    fn documented_examples_are_valid() {
        for id in [ED25519, SHA256, CID] {
            assert!(validate_peer_id(id.as_bytes()), "{id}");
        }
    }

    #[test]
    fn length_edges() {
        let pad = |prefix: &str, len: usize| {
            let mut s = prefix.to_string();
            while s.len() < len {
                s.push('a');
            }
            s
        };
        assert_eq!(
            check_peer_id(pad("1", 31).as_bytes()),
            Err(PeerIdRuleError::Length { len: 31 })
        );
        assert!(validate_peer_id(pad("1", 32).as_bytes()));
        assert!(validate_peer_id(pad("Qm", 128).as_bytes()));
        assert_eq!(
            check_peer_id(pad("1", 129).as_bytes()),
            Err(PeerIdRuleError::Length { len: 129 })
        );
        assert_eq!(check_peer_id(b""), Err(PeerIdRuleError::Length { len: 0 }));
    }

    #[test]
    fn prefix_edges() {
        let body = "a".repeat(40);
        for ok in ["1", "Qm", "f", "b", "z", "m"] {
            assert!(validate_peer_id(format!("{ok}{body}").as_bytes()), "{ok}");
        }
        // `Q` alone, `QM`, upper-case multibase letters and other base58 digits are refused.
        for bad in ["Q", "QM", "qm", "F", "B", "Z", "M", "2", "x", "k"] {
            assert_eq!(
                check_peer_id(format!("{bad}{body}").as_bytes()),
                Err(PeerIdRuleError::Prefix),
                "{bad}"
            );
        }
        // A real id with its first character changed becomes invalid.
        let mutated = format!("2{}", &ED25519[1..]);
        assert!(!validate_peer_id(mutated.as_bytes()));
    }

    proptest! {
        #[test]
        fn never_panics_and_matches_rule(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let ok = validate_peer_id(&bytes);
            let expect = (32..=128).contains(&bytes.len())
                && (bytes[0] == b'1'
                    || (bytes[0] == b'Q' && bytes[1] == b'm')
                    || matches!(bytes[0], b'f' | b'b' | b'z' | b'm'));
            prop_assert_eq!(ok, expect);
        }
    }
}
