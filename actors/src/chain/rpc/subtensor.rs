//! Subtensor (Bittensor) storage as read by the RPC backend.
//!
//! From `opentensor/subtensor`, `pallets/subtensor/src/lib.rs` (pallet `SubtensorModule`):
//! - `Keys: StorageDoubleMap<Identity, NetUid, Identity, u16, AccountId>`: a subnet's neurons,
//!   uid → hotkey (`NetUid` is a `u16` newtype; the account is an sr25519 `AccountId32`).
//! - `TotalHotkeyAlpha: StorageDoubleMap<Blake2_128Concat, AccountId, Identity, NetUid,
//!   AlphaCurrency>`: the hotkey's stake on the subnet (`AlphaCurrency` is a `u64` newtype;
//!   absent means 0).
//!
//! The chain knows hotkeys, not libp2p peer ids: entries carry an empty peer id and are found
//! by hotkey only; the firewall links a peer to them through its verified binding record.

use super::decode::{Reader, ValueError};
use super::keys::{map_key, Hasher};
use super::metadata::{Expected, Shape};
use super::Listed;
use hermes_proto::chain::NodeClass;
use hermes_proto::Hotkey;

/// The pallet.
pub const PALLET: &str = "SubtensorModule";

/// What we read, as the metadata must describe it.
pub const EXPECTED: &[Expected] = &[
    Expected {
        pallet: PALLET,
        item: "Keys",
        hashers: &[Hasher::Identity, Hasher::Identity],
        keys: &[Shape::U16, Shape::U16],
        value: Shape::Account32,
    },
    Expected {
        pallet: PALLET,
        item: "TotalHotkeyAlpha",
        hashers: &[Hasher::Blake2_128Concat, Hasher::Identity],
        keys: &[Shape::Account32, Shape::U16],
        value: Shape::U64,
    },
];

/// Prefix of every `Keys` entry of subnet `netuid`.
pub fn list_prefix(netuid: u16) -> Vec<u8> {
    map_key(PALLET, "Keys", &[(Hasher::Identity, &netuid.to_le_bytes())])
}

/// Decodes a `Keys` value (the hotkey).
///
/// # Errors
/// Not exactly 32 bytes.
pub fn decode_listed(value: &[u8]) -> Result<Listed, ValueError> {
    let mut r = Reader::new(value);
    let key: [u8; 32] = r.array("Keys hotkey")?;
    r.finish("Keys hotkey")?;
    Ok(Listed {
        account: key.to_vec(),
        hotkey: Hotkey(key),
        peer_id: String::new(),
        class: NodeClass::Registered,
    })
}

/// Key of `TotalHotkeyAlpha(account, netuid)`.
pub fn stake_key(account: &[u8], netuid: u16) -> Vec<u8> {
    map_key(
        PALLET,
        "TotalHotkeyAlpha",
        &[
            (Hasher::Blake2_128Concat, account),
            (Hasher::Identity, &netuid.to_le_bytes()),
        ],
    )
}

/// Decodes a `TotalHotkeyAlpha` value.
///
/// # Errors
/// Not exactly a `u64`.
pub fn decode_stake(value: &[u8]) -> Result<u128, ValueError> {
    let mut r = Reader::new(value);
    let v = r.u64("TotalHotkeyAlpha")?;
    r.finish("TotalHotkeyAlpha")?;
    Ok(u128::from(v))
}
