//! Subtensor and Hypertensor storage as the chains hold it, built with the real SCALE codec and
//! key hashing: what the tests, the end-to-end tests of the root crate and the benchmark serve.

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

/// `Network.SubnetNodesData(subnet, node_id)`.
pub fn ht_node_key(subnet: u32, node_id: u32) -> Vec<u8> {
    [
        prefix("Network", "SubnetNodesData"),
        subnet.encode(),
        node_id.encode(),
    ]
    .concat()
}

/// `Network.AccountSubnetStake(account, subnet)`.
pub fn ht_stake_key(account: [u8; 20], subnet: u32) -> Vec<u8> {
    [
        prefix("Network", "AccountSubnetStake"),
        blake2_128_concat(&meta::AccountId20(account).encode()),
        subnet.encode(),
    ]
    .concat()
}

/// `Network.SubnetSlot(subnet)`.
pub fn ht_slot_key(subnet: u32) -> Vec<u8> {
    [prefix("Network", "SubnetSlot"), subnet.encode()].concat()
}

/// `Network.<item>(subnet, subnet_epoch)`: `SubnetElectedValidator` or
/// `SubnetConsensusSubmission`.
pub fn ht_epoch_key(item: &str, subnet: u32, subnet_epoch: u32) -> Vec<u8> {
    [
        prefix("Network", item),
        subnet.encode(),
        subnet_epoch.encode(),
    ]
    .concat()
}

/// Node `id` of `account` with peer id `peer_id` (base58 text, as the chain stores it) in
/// `class`; the other fields set as a registration leaves them.
pub fn ht_node(
    id: u32,
    account: [u8; 20],
    peer_id: &str,
    class: meta::SubnetNodeClass,
) -> meta::SubnetNode {
    meta::SubnetNode {
        id,
        hotkey: meta::AccountId20(account),
        peer_id: meta::OpaquePeerId(peer_id.as_bytes().to_vec()),
        bootnode_peer_id: meta::OpaquePeerId(vec![]),
        client_peer_id: meta::OpaquePeerId(vec![]),
        bootnode: Some(meta::BoundedVec(b"/ip4/127.0.0.1/tcp/1".to_vec())),
        classification: meta::SubnetNodeClassification {
            node_class: class,
            start_epoch: 3,
        },
        delegate_reward_rate: 5,
        last_delegate_reward_rate_update: 1,
        unique: None,
        non_unique: Some(meta::BoundedVec(b"x".to_vec())),
    }
}

/// Lists node `id` (`account`, `peer_id`, `class`) in `subnet`, with `stake` on that subnet.
pub fn ht_register(
    s: &mut Storage,
    subnet: u32,
    id: u32,
    account: [u8; 20],
    peer_id: &str,
    class: meta::SubnetNodeClass,
    stake: u128,
) {
    s.insert(
        ht_node_key(subnet, id),
        ht_node(id, account, peer_id, class).encode(),
    );
    s.insert(ht_stake_key(account, subnet), stake.encode());
}

/// The current Subtensor runtime's metadata, recorded from a node
/// (`actors/tests/fixtures/metadata/`), from either crate's tests or benches.
pub fn recorded_subtensor_metadata() -> Vec<u8> {
    recorded_metadata("subtensor-devnet-2025-11.scale")
}

/// The Hypertensor testnet runtime's metadata, recorded by executing the runtime of the
/// repository's raw chain spec (`actors/tests/fixtures/metadata/README.md`).
pub fn recorded_hypertensor_metadata() -> Vec<u8> {
    recorded_metadata(HT_RECORDED)
}

/// The fixture of [`recorded_hypertensor_metadata`].
pub const HT_RECORDED: &str = "hypertensor-hoskinson-2025-12.scale";

/// The `EpochLength` of the recorded Hypertensor runtime: its `BLOCKS_PER_EPOCH` was built as 20
/// (the repository's "Local" setting; its source at the spec's commit says 150, "Testnet").
pub const HT_RECORDED_EPOCH_LENGTH: u32 = 20;

/// Metadata fixture `name` of `actors/tests/fixtures/metadata/`, from either crate's tests or
/// benches.
pub fn recorded_metadata(name: &str) -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let name = format!("tests/fixtures/metadata/{name}");
    let p = [root.join(&name), root.join("actors").join(&name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not found under {}", root.display()));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
