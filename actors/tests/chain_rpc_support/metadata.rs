//! Runtime metadata for the test node, built from types that mirror the real pallets' storage,
//! for the tests that need drift on purpose or a short epoch (README.md: the metadata recorded
//! from the real runtimes confirms these layouts).

use frame_metadata::v14::{
    ExtrinsicMetadata, PalletConstantMetadata, PalletMetadata, PalletStorageMetadata,
    RuntimeMetadataV14, StorageEntryMetadata, StorageEntryModifier, StorageEntryType,
    StorageHasher,
};
use frame_metadata::RuntimeMetadataPrefixed;
use parity_scale_codec::Encode;
use scale_info::{meta_type, MetaType, TypeInfo};

/// `sp_core::crypto::AccountId32`.
#[derive(Encode, TypeInfo)]
pub struct AccountId32(pub [u8; 32]);
/// Subtensor's `NetUid`.
#[derive(Encode, TypeInfo)]
pub struct NetUid(pub u16);
/// Subtensor's `AlphaCurrency`.
#[derive(Encode, TypeInfo)]
pub struct AlphaCurrency(pub u64);

/// `fp_account::AccountId20`.
#[derive(Encode, TypeInfo, Clone)]
pub struct AccountId20(pub [u8; 20]);
/// `sp_core::OpaquePeerId`.
#[derive(Encode, TypeInfo, Clone)]
pub struct OpaquePeerId(pub Vec<u8>);
/// `BoundedVec<u8, _>`.
#[derive(Encode, TypeInfo, Clone)]
pub struct BoundedVec(pub Vec<u8>);

/// Hypertensor's `SubnetNodeClass`.
#[derive(Encode, TypeInfo, Clone, Copy)]
pub enum SubnetNodeClass {
    /// Registered.
    Registered,
    /// Idle.
    Idle,
    /// Included.
    Included,
    /// Validator.
    Validator,
}

/// Hypertensor's `SubnetNodeClassification`.
#[derive(Encode, TypeInfo, Clone)]
pub struct SubnetNodeClassification {
    pub node_class: SubnetNodeClass,
    pub start_epoch: u32,
}

/// Hypertensor's `SubnetNode<AccountId20>`.
#[derive(Encode, TypeInfo, Clone)]
pub struct SubnetNode {
    pub id: u32,
    pub hotkey: AccountId20,
    pub peer_id: OpaquePeerId,
    pub bootnode_peer_id: OpaquePeerId,
    pub client_peer_id: OpaquePeerId,
    pub bootnode: Option<BoundedVec>,
    pub classification: SubnetNodeClassification,
    pub delegate_reward_rate: u128,
    pub last_delegate_reward_rate_update: u32,
    pub unique: Option<BoundedVec>,
    pub non_unique: Option<BoundedVec>,
}

/// An older `SubnetNode` layout (no `non_unique`), for the drift test.
#[derive(Encode, TypeInfo)]
pub struct SubnetNodeOld {
    pub id: u32,
    pub hotkey: AccountId20,
    pub peer_id: OpaquePeerId,
    pub bootnode_peer_id: OpaquePeerId,
    pub client_peer_id: OpaquePeerId,
    pub bootnode: Option<BoundedVec>,
    pub classification: SubnetNodeClassification,
    pub delegate_reward_rate: u128,
    pub last_delegate_reward_rate_update: u32,
    pub unique: Option<BoundedVec>,
}

/// Hypertensor's `ConsensusData<AccountId20>` stands in as an opaque value: the backend reads
/// only whether a submission exists, and its check accepts any value type there.
#[derive(Encode, TypeInfo)]
pub struct ConsensusData(pub Vec<u8>);

/// The `EpochLength` constant of the test runtime's `Network` pallet.
pub const HT_EPOCH_LENGTH: u32 = 4;

/// What to get wrong on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drift {
    /// Nothing: the layout the backends expect.
    None,
    /// `TotalHotkeyAlpha` hashed with Twox64Concat.
    StakeHasher,
    /// `TotalHotkeyAlpha` holding a u128.
    StakeValue,
    /// No `Keys` item.
    NoKeys,
    /// `SubnetNodesData` of the old layout.
    OldSubnetNode,
    /// No `EpochLength` constant.
    NoEpochLength,
    /// `SubnetElectedValidator` keyed by subnet with Blake2_128Concat.
    ElectedHasher,
}

fn map(
    name: &'static str,
    hashers: Vec<StorageHasher>,
    key: MetaType,
    value: MetaType,
) -> StorageEntryMetadata {
    StorageEntryMetadata {
        name,
        modifier: StorageEntryModifier::Default,
        ty: StorageEntryType::Map {
            hashers,
            key,
            value,
        },
        default: vec![],
        docs: vec![],
    }
}

fn encode(
    pallet: &'static str,
    entries: Vec<StorageEntryMetadata>,
    constants: Vec<PalletConstantMetadata>,
) -> Vec<u8> {
    let pallets = vec![
        // A pallet without storage first, as real runtimes have.
        PalletMetadata {
            name: "Timestamp",
            storage: None,
            calls: None,
            event: None,
            constants: vec![],
            error: None,
            index: 0,
        },
        PalletMetadata {
            name: pallet,
            storage: Some(PalletStorageMetadata {
                prefix: pallet,
                entries,
            }),
            calls: None,
            event: None,
            constants,
            error: None,
            index: 7,
        },
    ];
    let extrinsic = ExtrinsicMetadata {
        ty: meta_type::<()>(),
        version: 4,
        signed_extensions: vec![],
    };
    RuntimeMetadataPrefixed::from(RuntimeMetadataV14::new(
        pallets,
        extrinsic,
        meta_type::<()>(),
    ))
    .encode()
}

/// Subtensor's `SubtensorModule` storage as we read it.
pub fn subtensor(drift: Drift) -> Vec<u8> {
    use StorageHasher::*;
    let mut entries = vec![map(
        "Uids",
        vec![Identity, Blake2_128Concat],
        meta_type::<(NetUid, AccountId32)>(),
        meta_type::<u16>(),
    )];
    if drift != Drift::NoKeys {
        entries.push(map(
            "Keys",
            vec![Identity, Identity],
            meta_type::<(NetUid, u16)>(),
            meta_type::<AccountId32>(),
        ));
    }
    let hashers = if drift == Drift::StakeHasher {
        vec![Twox64Concat, Identity]
    } else {
        vec![Blake2_128Concat, Identity]
    };
    let value = if drift == Drift::StakeValue {
        meta_type::<u128>()
    } else {
        meta_type::<AlphaCurrency>()
    };
    entries.push(map(
        "TotalHotkeyAlpha",
        hashers,
        meta_type::<(AccountId32, NetUid)>(),
        value,
    ));
    encode("SubtensorModule", entries, vec![])
}

/// Hypertensor's `Network` storage as we read it.
pub fn hypertensor(drift: Drift) -> Vec<u8> {
    use StorageHasher::*;
    let node = if drift == Drift::OldSubnetNode {
        meta_type::<SubnetNodeOld>()
    } else {
        meta_type::<SubnetNode>()
    };
    let elected = if drift == Drift::ElectedHasher {
        vec![Blake2_128Concat, Identity]
    } else {
        vec![Identity, Identity]
    };
    let entries = vec![
        map(
            "SubnetNodesData",
            vec![Identity, Identity],
            meta_type::<(u32, u32)>(),
            node,
        ),
        map(
            "AccountSubnetStake",
            vec![Blake2_128Concat, Identity],
            meta_type::<(AccountId20, u32)>(),
            meta_type::<u128>(),
        ),
        map(
            "SubnetSlot",
            vec![Identity],
            meta_type::<u32>(),
            meta_type::<u32>(),
        ),
        map(
            "SubnetElectedValidator",
            elected,
            meta_type::<(u32, u32)>(),
            meta_type::<u32>(),
        ),
        map(
            "SubnetConsensusSubmission",
            vec![Identity, Identity],
            meta_type::<(u32, u32)>(),
            meta_type::<ConsensusData>(),
        ),
    ];
    let mut constants = vec![PalletConstantMetadata {
        name: "EpochsPerYear",
        ty: meta_type::<u32>(),
        value: 1_000u32.encode(),
        docs: vec![],
    }];
    if drift != Drift::NoEpochLength {
        constants.push(PalletConstantMetadata {
            name: "EpochLength",
            ty: meta_type::<u32>(),
            value: HT_EPOCH_LENGTH.encode(),
            docs: vec![],
        });
    }
    encode("Network", entries, constants)
}
