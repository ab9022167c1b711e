//! Subtensor storage as the chain holds it, built with the real SCALE codec and key hashing:
//! what the tests, the end-to-end tests of the root crate and the benchmark serve.

use super::metadata as meta;
use parity_scale_codec::Encode;
use sp_crypto_hashing::{blake2_128, twox_128};
use std::collections::BTreeMap;

/// A block's storage: key → SCALE value.
pub type Storage = BTreeMap<Vec<u8>, Vec<u8>>;

/// The prefix of storage item `pallet.item`.
pub fn prefix(pallet: &str, item: &str) -> Vec<u8> {
    [twox_128(pallet.as_bytes()), twox_128(item.as_bytes())].concat()
}

/// `Blake2_128Concat` of a key.
pub fn blake2_128_concat(k: &[u8]) -> Vec<u8> {
    [blake2_128(k).as_slice(), k].concat()
}

/// The hotkey of neuron `uid` in [`subtensor_storage`].
pub fn st_hotkey(uid: u16) -> [u8; 32] {
    let mut k = [7u8; 32];
    k[..2].copy_from_slice(&uid.to_le_bytes());
    k
}

/// `SubtensorModule.Keys(netuid, uid)`.
pub fn st_keys_key(netuid: u16, uid: u16) -> Vec<u8> {
    [
        prefix("SubtensorModule", "Keys"),
        meta::NetUid(netuid).encode(),
        uid.encode(),
    ]
    .concat()
}

/// `SubtensorModule.TotalHotkeyAlpha(hotkey, netuid)`.
pub fn st_stake_key(hk: [u8; 32], netuid: u16) -> Vec<u8> {
    [
        prefix("SubtensorModule", "TotalHotkeyAlpha"),
        blake2_128_concat(&meta::AccountId32(hk).encode()),
        meta::NetUid(netuid).encode(),
    ]
    .concat()
}

/// Registers `hk` as neuron `uid` of `netuid` with `stake`.
pub fn st_register(s: &mut Storage, netuid: u16, uid: u16, hk: [u8; 32], stake: u64) {
    s.insert(st_keys_key(netuid, uid), meta::AccountId32(hk).encode());
    s.insert(
        st_stake_key(hk, netuid),
        meta::AlphaCurrency(stake).encode(),
    );
}

/// Subtensor storage: `n` neurons in `netuid`, neuron `uid` with hotkey [`st_hotkey`] staked
/// `1000 + uid`.
pub fn subtensor_storage(netuid: u16, n: u16) -> Storage {
    let mut s = Storage::new();
    for uid in 0..n {
        st_register(&mut s, netuid, uid, st_hotkey(uid), 1000 + u64::from(uid));
    }
    s
}

/// The current Subtensor runtime's metadata, recorded from a node
/// (`actors/tests/fixtures/metadata/`), from either crate's tests or benches.
pub fn recorded_subtensor_metadata() -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let name = "tests/fixtures/metadata/subtensor-devnet-2025-11.scale";
    let p = [root.join(name), root.join("actors").join(name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not found under {}", root.display()));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
