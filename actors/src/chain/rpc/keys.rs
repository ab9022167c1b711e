//! Storage keys of FRAME storage maps: `twox128(pallet) ++ twox128(item) ++ hasher(key)…`.
//!
//! Only the hashers our backends meet are built (`Blake2_128Concat`, `Twox64Concat`,
//! `Identity`); all three keep the key's SCALE bytes readable at the end of the hashed part.

use sp_crypto_hashing::{blake2_128, twox_128, twox_64};

/// A storage map hasher, as the pallet declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hasher {
    /// `blake2_128(key) ++ key`.
    Blake2_128Concat,
    /// `twox64(key) ++ key`.
    Twox64Concat,
    /// `key` unchanged.
    Identity,
}

impl Hasher {
    /// The metadata's name for this hasher.
    pub fn name(self) -> &'static str {
        match self {
            Hasher::Blake2_128Concat => "Blake2_128Concat",
            Hasher::Twox64Concat => "Twox64Concat",
            Hasher::Identity => "Identity",
        }
    }

    /// Appends `hash(key)` (the key's SCALE bytes) to `out`.
    pub fn put(self, key: &[u8], out: &mut Vec<u8>) {
        match self {
            Hasher::Blake2_128Concat => out.extend_from_slice(&blake2_128(key)),
            Hasher::Twox64Concat => out.extend_from_slice(&twox_64(key)),
            Hasher::Identity => {}
        }
        out.extend_from_slice(key);
    }
}

/// `twox128(pallet) ++ twox128(item)`: the prefix of every key of a storage item.
pub fn item_prefix(pallet: &str, item: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.extend_from_slice(&twox_128(pallet.as_bytes()));
    k.extend_from_slice(&twox_128(item.as_bytes()));
    k
}

/// The full key of a map entry (or, with fewer parts than hashers, the prefix of every entry
/// under those leading keys): each part is the SCALE encoding of one key.
pub fn map_key(pallet: &str, item: &str, parts: &[(Hasher, &[u8])]) -> Vec<u8> {
    let mut k = item_prefix(pallet, item);
    for (h, part) in parts {
        h.put(part, &mut k);
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_system_account_prefix() {
        // `System.Account`: the prefix every Substrate tool prints.
        assert_eq!(
            hex::encode(item_prefix("System", "Account")),
            "26aa394eea5630e07c48ae0c9558cef7b99d880ec681799c0cf30e8886371da9"
        );
    }

    #[test]
    fn hashers_keep_the_key_at_the_end() {
        let k = map_key(
            "P",
            "I",
            &[
                (Hasher::Blake2_128Concat, &[1, 2]),
                (Hasher::Identity, &[7]),
            ],
        );
        assert_eq!(k.len(), 32 + 16 + 2 + 1);
        assert_eq!(&k[48..], &[1, 2, 7]);
        let k = map_key("P", "I", &[(Hasher::Twox64Concat, &[9])]);
        assert_eq!(k.len(), 32 + 8 + 1);
    }
}
