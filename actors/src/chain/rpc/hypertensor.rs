//! Hypertensor storage as read by the RPC backend.
//!
//! From `hayotensor/hypertensor-evm` (commit 604a9feb), `pallets/network/src/lib.rs`
//! (pallet `Network`; accounts are 20-byte Ethereum-style `AccountId20`):
//! - `SubnetNodesData: StorageDoubleMap<Identity, u32, Identity, u32, SubnetNode<AccountId>>`,
//!   subnet id → node id → `SubnetNode { id: u32, hotkey, peer_id, bootnode_peer_id,
//!   client_peer_id: OpaquePeerId (Vec<u8>, the peer id's base58 text), bootnode:
//!   Option<BoundedVec<u8>>, classification: { node_class: Registered|Idle|Included|Validator,
//!   start_epoch: u32 }, delegate_reward_rate: u128, last_delegate_reward_rate_update: u32,
//!   unique, non_unique: Option<BoundedVec<u8>> }`.
//! - `AccountSubnetStake: StorageDoubleMap<Blake2_128Concat, AccountId, Identity, u32, u128>`:
//!   the hotkey's stake in the subnet.
//!
//! Consensus, read only (same file and commit; the arithmetic in
//! `pallets/network/src/utilities/era.rs`):
//! - `EpochLength`: a `#[pallet::constant]` `u32` of the pallet's config, blocks per epoch; the
//!   chain's epoch is `block / EpochLength`.
//! - `SubnetSlot: StorageMap<Identity, u32, u32, OptionQuery>`: subnet id → the block offset of
//!   its epochs. The subnet's epoch is `(block - slot) / EpochLength`, 0 while it has no slot
//!   (or a slot of 0) or the block is before it (`get_current_subnet_epoch_as_u32`).
//! - `SubnetElectedValidator: StorageDoubleMap<Identity, u32, Identity, u32, u32, OptionQuery>`:
//!   subnet id → subnet epoch → the elected validator's subnet node id.
//! - `SubnetConsensusSubmission: StorageDoubleMap<Identity, u32, Identity, u32,
//!   ConsensusData<AccountId>>`: subnet id → subnet epoch → the elected validator's proposal
//!   (its attestations inside); we read only whether it exists, never its value.
//!
//! Proposing and attesting are the extrinsics `propose_attestation` and `attest`, signed by the
//! node's 20-byte (ECDSA) account: Hermes holds an sr25519 hotkey, not that key, so it does not
//! submit them.
//!
//! The chain binds peer id to hotkey itself, so its registry entries carry both, the registry is
//! marked `with_chain_bound_peers` and the firewall admits by peer id. Our [`Hotkey`] is 32 bytes: a 20-byte account is
//! stored in its first 20 bytes, zero-padded (informational: a peer's binding record is signed
//! with an sr25519 hotkey, which an ECDSA account cannot produce, so on Hypertensor admission
//! rests on the chain's own peer id ↔ hotkey record and the binding only proves the transport key).

use super::decode::{Reader, ValueError};
use super::keys::{map_key, Hasher};
use super::metadata::{Constant, Expected, Shape};
use super::Listed;
use hermes_proto::chain::NodeClass;
use hermes_proto::Hotkey;

/// The pallet.
pub const PALLET: &str = "Network";

/// Longest peer id the chain accepts (`validate_peer_id`: 32..=128 bytes).
const MAX_PEER_ID: usize = 128;
/// Longest optional byte field we read (`DefaultMaxVectorLength` is far below this).
const MAX_FIELD: usize = 4096;

const NODE_CLASS: Shape = Shape::Enum(&["Registered", "Idle", "Included", "Validator"]);

/// What we read, as the metadata must describe it.
pub const EXPECTED: &[Expected] = &[
    Expected {
        pallet: PALLET,
        item: "SubnetNodesData",
        hashers: &[Hasher::Identity, Hasher::Identity],
        keys: &[Shape::U32, Shape::U32],
        value: Shape::Struct(&[
            ("id", Shape::U32),
            ("hotkey", Shape::Account20),
            ("peer_id", Shape::Bytes),
            ("bootnode_peer_id", Shape::Bytes),
            ("client_peer_id", Shape::Bytes),
            ("bootnode", Shape::OptionBytes),
            (
                "classification",
                Shape::Struct(&[("node_class", NODE_CLASS), ("start_epoch", Shape::U32)]),
            ),
            ("delegate_reward_rate", Shape::U128),
            ("last_delegate_reward_rate_update", Shape::U32),
            ("unique", Shape::OptionBytes),
            ("non_unique", Shape::OptionBytes),
        ]),
    },
    Expected {
        pallet: PALLET,
        item: "AccountSubnetStake",
        hashers: &[Hasher::Blake2_128Concat, Hasher::Identity],
        keys: &[Shape::Account20, Shape::U32],
        value: Shape::U128,
    },
    Expected {
        pallet: PALLET,
        item: "SubnetSlot",
        hashers: &[Hasher::Identity],
        keys: &[Shape::U32],
        value: Shape::U32,
    },
    Expected {
        pallet: PALLET,
        item: "SubnetElectedValidator",
        hashers: &[Hasher::Identity, Hasher::Identity],
        keys: &[Shape::U32, Shape::U32],
        value: Shape::U32,
    },
    Expected {
        pallet: PALLET,
        item: "SubnetConsensusSubmission",
        hashers: &[Hasher::Identity, Hasher::Identity],
        keys: &[Shape::U32, Shape::U32],
        value: Shape::Any,
    },
];

/// The constants we read, in this order: `EpochLength`.
pub const CONSTANTS: &[Constant] = &[Constant {
    pallet: PALLET,
    name: "EpochLength",
}];

/// Key of `SubnetNodesData(netuid, node_id)`.
pub fn node_key(netuid: u16, node_id: u32) -> Vec<u8> {
    map_key(
        PALLET,
        "SubnetNodesData",
        &[
            (Hasher::Identity, &u32::from(netuid).to_le_bytes()),
            (Hasher::Identity, &node_id.to_le_bytes()),
        ],
    )
}

/// Key of `SubnetSlot(netuid)`.
pub fn slot_key(netuid: u16) -> Vec<u8> {
    map_key(
        PALLET,
        "SubnetSlot",
        &[(Hasher::Identity, &u32::from(netuid).to_le_bytes())],
    )
}

/// Key of `SubnetElectedValidator(netuid, subnet_epoch)` (`item` `SubnetElectedValidator`) or of
/// `SubnetConsensusSubmission(netuid, subnet_epoch)` (`item` `SubnetConsensusSubmission`).
pub fn epoch_key(item: &str, netuid: u16, subnet_epoch: u32) -> Vec<u8> {
    map_key(
        PALLET,
        item,
        &[
            (Hasher::Identity, &u32::from(netuid).to_le_bytes()),
            (Hasher::Identity, &subnet_epoch.to_le_bytes()),
        ],
    )
}

/// Decodes a `u32` value (`SubnetSlot`, `SubnetElectedValidator`).
///
/// # Errors
/// Not exactly a `u32`.
pub fn decode_u32(value: &[u8], what: &str) -> Result<u32, ValueError> {
    let mut r = Reader::new(value);
    let v = r.u32(what)?;
    r.finish(what)?;
    Ok(v)
}

/// The subnet's epoch at `block` (`get_current_subnet_epoch_as_u32`): `None` while the subnet
/// has no slot (or a slot of 0), where the chain says 0, and before its slot.
pub fn subnet_epoch(block: u64, slot: Option<u32>, epoch_length: u32) -> Option<u32> {
    let slot = u64::from(slot.filter(|s| *s > 0)?);
    let offset = block.checked_sub(slot)?;
    u32::try_from(offset / u64::from(epoch_length.max(1))).ok()
}

/// Prefix of every `SubnetNodesData` entry of subnet `netuid`.
pub fn list_prefix(netuid: u16) -> Vec<u8> {
    map_key(
        PALLET,
        "SubnetNodesData",
        &[(Hasher::Identity, &u32::from(netuid).to_le_bytes())],
    )
}

/// The 32-byte [`Hotkey`] standing for a 20-byte account.
pub fn hotkey_of(account: [u8; 20]) -> Hotkey {
    let mut k = [0u8; 32];
    k[..20].copy_from_slice(&account);
    Hotkey(k)
}

/// Decodes a `SubnetNode`.
///
/// # Errors
/// Any field out of bounds, an unknown class, or trailing bytes.
pub fn decode_listed(value: &[u8]) -> Result<Listed, ValueError> {
    let mut r = Reader::new(value);
    let _id = r.u32("SubnetNode.id")?;
    let hotkey: [u8; 20] = r.array("SubnetNode.hotkey")?;
    let peer = r.bytes(MAX_PEER_ID, "SubnetNode.peer_id")?;
    let _ = r.bytes(MAX_PEER_ID, "SubnetNode.bootnode_peer_id")?;
    let _ = r.bytes(MAX_PEER_ID, "SubnetNode.client_peer_id")?;
    let _ = r.option_bytes(MAX_FIELD, "SubnetNode.bootnode")?;
    let class = match r.u8("SubnetNode.classification.node_class")? {
        0 => NodeClass::Registered,
        1 => NodeClass::Idle,
        2 => NodeClass::Included,
        3 => NodeClass::Validator,
        c => return Err(ValueError(format!("SubnetNode.classification: class {c}"))),
    };
    let _start_epoch = r.u32("SubnetNode.classification.start_epoch")?;
    let _rate = r.u128("SubnetNode.delegate_reward_rate")?;
    let _update = r.u32("SubnetNode.last_delegate_reward_rate_update")?;
    let _ = r.option_bytes(MAX_FIELD, "SubnetNode.unique")?;
    let _ = r.option_bytes(MAX_FIELD, "SubnetNode.non_unique")?;
    r.finish("SubnetNode")?;
    // A peer id that is not text cannot be a base58 peer id; the registry drops it like any
    // other invalid one.
    let peer_id = String::from_utf8(peer.to_vec()).unwrap_or_default();
    Ok(Listed {
        account: hotkey.to_vec(),
        hotkey: hotkey_of(hotkey),
        peer_id,
        class,
    })
}

/// Key of `AccountSubnetStake(account, netuid)`.
pub fn stake_key(account: &[u8], netuid: u16) -> Vec<u8> {
    map_key(
        PALLET,
        "AccountSubnetStake",
        &[
            (Hasher::Blake2_128Concat, account),
            (Hasher::Identity, &u32::from(netuid).to_le_bytes()),
        ],
    )
}

/// Decodes an `AccountSubnetStake` value.
///
/// # Errors
/// Not exactly a `u128`.
pub fn decode_stake(value: &[u8]) -> Result<u128, ValueError> {
    let mut r = Reader::new(value);
    let v = r.u128("AccountSubnetStake")?;
    r.finish("AccountSubnetStake")?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_epochs_follow_the_pallets_arithmetic() {
        // No slot, a slot of 0 (the chain's "none"), before the slot: no epoch of its own.
        assert_eq!(subnet_epoch(100, None, 10), None);
        assert_eq!(subnet_epoch(100, Some(0), 10), None);
        assert_eq!(subnet_epoch(4, Some(5), 10), None);
        // (block - slot) / length.
        assert_eq!(subnet_epoch(5, Some(5), 10), Some(0));
        assert_eq!(subnet_epoch(14, Some(5), 10), Some(0));
        assert_eq!(subnet_epoch(15, Some(5), 10), Some(1));
        assert_eq!(subnet_epoch(200, Some(50), 100), Some(1));
        // A length of 0 (refused before this is called) does not divide by zero.
        assert_eq!(subnet_epoch(7, Some(1), 0), Some(6));
    }
}
