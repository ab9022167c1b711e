//! Checks that the runtime's metadata describes the storage items we read exactly as we decode
//! them: the pallet and item exist, the hashers are the ones our keys use, and key and value types
//! have the shape our decoders assume. Drift fails closed with [`MetadataError`] naming the item.
//!
//! Metadata V14, V15 and V16 are read with the `frame-metadata` types (decode only): all three
//! share the storage-entry and type-registry layout, and a hand-written decoder of the type
//! registry would be more code to get wrong than the crate, whose build is small (scale-info and
//! the codec are already in the tree through sp-core). A node's `state_getMetadata` answers V14;
//! tools that record metadata through the runtime API (`Metadata_metadata_at_version`) keep V15 or
//! V16, which the tests' fixtures recorded from the real chains are.

use super::keys::Hasher;
use frame_metadata::v14::{StorageEntryType, StorageHasher};
use frame_metadata::{RuntimeMetadata, RuntimeMetadataPrefixed};
use parity_scale_codec::Decode;
use scale_info::{form::PortableForm, PortableRegistry, TypeDef, TypeDefPrimitive};
use thiserror::Error;

/// How deep newtype wrappers are unwrapped before giving up (guards cyclic registries).
const MAX_DEPTH: usize = 16;

/// The shape of a SCALE value, as our decoders read it. Single-field wrappers (newtypes such as
/// `NetUid(u16)`, `BoundedVec<u8, _>`) match their inner shape.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// `u16`.
    U16,
    /// `u32`.
    U32,
    /// `u64`.
    U64,
    /// `u128`.
    U128,
    /// A 32-byte account (`[u8; 32]`).
    Account32,
    /// A 20-byte account (`[u8; 20]`).
    Account20,
    /// `Vec<u8>`.
    Bytes,
    /// `Option<Vec<u8>>`.
    OptionBytes,
    /// A struct with these named fields, in order.
    Struct(&'static [(&'static str, Shape)]),
    /// A field-less enum with these variants at indices 0, 1, ….
    Enum(&'static [&'static str]),
    /// Anything: a value we never decode (only whether it exists is read).
    Any,
}

/// One storage map as we read it.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    /// Pallet name.
    pub pallet: &'static str,
    /// Storage item name.
    pub item: &'static str,
    /// One hasher per key.
    pub hashers: &'static [Hasher],
    /// One shape per key.
    pub keys: &'static [Shape],
    /// The value's shape.
    pub value: Shape,
}

/// One `u32` pallet constant we read (`#[pallet::constant]`, e.g. `Network.EpochLength`).
#[derive(Debug, Clone, Copy)]
pub struct Constant {
    /// Pallet name.
    pub pallet: &'static str,
    /// Constant name.
    pub name: &'static str,
}

/// The metadata does not describe what we decode.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The metadata blob does not decode, or is a version we do not read.
    #[error("runtime metadata unreadable: {0}")]
    Unreadable(String),
    /// A storage item is missing or has another layout: reading it would misinterpret the chain.
    #[error("runtime storage {item} changed: {reason}")]
    Drift {
        /// `Pallet.Item`.
        item: String,
        /// What differs.
        reason: String,
    },
}

/// Decodes `bytes` (the answer of `state_getMetadata`) and checks every item of `expected`.
///
/// # Errors
/// [`MetadataError`] for the first item that differs.
pub fn check(bytes: &[u8], expected: &[Expected]) -> Result<(), MetadataError> {
    check_and_read(bytes, expected, &[]).map(|_| ())
}

/// [`check`], then reads each of `constants` (a `u32` each), in order, from the same decoded
/// metadata.
///
/// # Errors
/// [`MetadataError`] for the first item or constant that differs or is missing.
pub fn check_and_read(
    bytes: &[u8],
    expected: &[Expected],
    constants: &[Constant],
) -> Result<Vec<u32>, MetadataError> {
    let mut input = bytes;
    let prefixed = RuntimeMetadataPrefixed::decode(&mut input)
        .map_err(|e| MetadataError::Unreadable(e.to_string()))?;
    // "meta", little-endian.
    if prefixed.0 != 0x6174_656d {
        return Err(MetadataError::Unreadable("no metadata magic".into()));
    }
    // The versions differ around the storage entries and constants, not in them: one view of
    // each pallet.
    macro_rules! view {
        ($m:expr) => {
            (
                &$m.types,
                $m.pallets
                    .iter()
                    .map(|p| Pallet {
                        name: p.name.as_str(),
                        storage: p.storage.as_ref().map(|s| {
                            s.entries
                                .iter()
                                .map(|e| (e.name.as_str(), &e.ty))
                                .collect::<Vec<_>>()
                        }),
                        constants: p
                            .constants
                            .iter()
                            .map(|c| (c.name.as_str(), c.ty.id, c.value.as_slice()))
                            .collect(),
                    })
                    .collect::<Vec<_>>(),
            )
        };
    }
    let (types, pallets) = match &prefixed.1 {
        RuntimeMetadata::V14(m) => view!(m),
        RuntimeMetadata::V15(m) => view!(m),
        RuntimeMetadata::V16(m) => view!(m),
        other => {
            return Err(MetadataError::Unreadable(format!(
                "metadata version {} is not read (V14 to V16 are)",
                other.version()
            )))
        }
    };
    check_all(types, &pallets, expected)?;
    constants
        .iter()
        .map(|c| read_constant(types, &pallets, c))
        .collect()
}

/// One pallet as the checks see it, whatever the metadata version.
struct Pallet<'a> {
    name: &'a str,
    /// Its storage items (`None`: the pallet has no storage).
    storage: Storage<'a>,
    /// Its constants: name, type, SCALE value.
    constants: Vec<(&'a str, u32, &'a [u8])>,
}

fn read_constant(
    types: &PortableRegistry,
    pallets: &[Pallet<'_>],
    c: &Constant,
) -> Result<u32, MetadataError> {
    let drift = |reason: String| MetadataError::Drift {
        item: format!("{}.{}", c.pallet, c.name),
        reason,
    };
    let pallet = pallets
        .iter()
        .find(|p| p.name == c.pallet)
        .ok_or_else(|| drift("no such pallet".into()))?;
    let (_, ty, value) = pallet
        .constants
        .iter()
        .find(|(name, _, _)| *name == c.name)
        .ok_or_else(|| drift("no such constant".into()))?;
    matches(types, *ty, Shape::U32, 0).map_err(|r| drift(format!("value: {r}")))?;
    let bytes: [u8; 4] = (*value)
        .try_into()
        .map_err(|_| drift(format!("a u32 of {} bytes", value.len())))?;
    Ok(u32::from_le_bytes(bytes))
}

/// A pallet's storage items (`None`: the pallet has no storage).
type Storage<'a> = Option<Vec<(&'a str, &'a StorageEntryType<PortableForm>)>>;

fn check_all(
    types: &PortableRegistry,
    pallets: &[Pallet<'_>],
    expected: &[Expected],
) -> Result<(), MetadataError> {
    for e in expected {
        let item = format!("{}.{}", e.pallet, e.item);
        let drift = |reason: String| MetadataError::Drift {
            item: item.clone(),
            reason,
        };
        let storage = pallets
            .iter()
            .find(|p| p.name == e.pallet)
            .ok_or_else(|| drift("no such pallet".into()))?
            .storage
            .as_ref()
            .ok_or_else(|| drift("the pallet has no storage".into()))?;
        let (_, ty) = storage
            .iter()
            .find(|(name, _)| *name == e.item)
            .ok_or_else(|| drift("no such storage item".into()))?;
        let StorageEntryType::Map {
            hashers,
            key,
            value,
        } = ty
        else {
            return Err(drift("a plain value, not a map".into()));
        };
        let got: Vec<&str> = hashers.iter().map(hasher_name).collect();
        let want: Vec<&str> = e.hashers.iter().map(|h| h.name()).collect();
        if got != want {
            return Err(drift(format!("hashers {got:?}, expected {want:?}")));
        }
        let key_ids: Vec<u32> = if e.keys.len() == 1 {
            vec![key.id]
        } else {
            match types.resolve(key.id).map(|t| &t.type_def) {
                Some(TypeDef::Tuple(t)) => t.fields.iter().map(|f| f.id).collect(),
                _ => return Err(drift("the key is not a tuple".into())),
            }
        };
        if key_ids.len() != e.keys.len() {
            return Err(drift(format!(
                "{} keys, expected {}",
                key_ids.len(),
                e.keys.len()
            )));
        }
        for (i, (id, shape)) in key_ids.iter().zip(e.keys).enumerate() {
            matches(types, *id, *shape, 0).map_err(|r| drift(format!("key {i}: {r}")))?;
        }
        matches(types, value.id, e.value, 0).map_err(|r| drift(format!("value: {r}")))?;
    }
    Ok(())
}

fn hasher_name(h: &StorageHasher) -> &'static str {
    match h {
        StorageHasher::Blake2_128Concat => "Blake2_128Concat",
        StorageHasher::Twox64Concat => "Twox64Concat",
        StorageHasher::Identity => "Identity",
        StorageHasher::Blake2_128 => "Blake2_128",
        StorageHasher::Blake2_256 => "Blake2_256",
        StorageHasher::Twox128 => "Twox128",
        StorageHasher::Twox256 => "Twox256",
    }
}

/// Whether type `id` has `shape`; the error says what it is instead.
fn matches(types: &PortableRegistry, id: u32, shape: Shape, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("types nested too deep".into());
    }
    let ty = types
        .resolve(id)
        .ok_or_else(|| format!("type {id} missing from the registry"))?;
    let direct = match (&ty.type_def, shape) {
        (_, Shape::Any) => true,
        (TypeDef::Primitive(p), Shape::U16) => *p == TypeDefPrimitive::U16,
        (TypeDef::Primitive(p), Shape::U32) => *p == TypeDefPrimitive::U32,
        (TypeDef::Primitive(p), Shape::U64) => *p == TypeDefPrimitive::U64,
        (TypeDef::Primitive(p), Shape::U128) => *p == TypeDefPrimitive::U128,
        (TypeDef::Array(a), Shape::Account32) => a.len == 32 && is_u8(types, a.type_param.id),
        (TypeDef::Array(a), Shape::Account20) => a.len == 20 && is_u8(types, a.type_param.id),
        (TypeDef::Sequence(s), Shape::Bytes) => is_u8(types, s.type_param.id),
        (TypeDef::Variant(v), Shape::OptionBytes) => {
            ty.path.segments.last().map(String::as_str) == Some("Option")
                && v.variants.len() == 2
                && v.variants.iter().any(|x| {
                    x.name == "Some"
                        && x.index == 1
                        && x.fields.len() == 1
                        && x.fields.first().is_some_and(|f| {
                            matches(types, f.ty.id, Shape::Bytes, depth + 1).is_ok()
                        })
                })
        }
        (TypeDef::Variant(v), Shape::Enum(names)) => {
            if v.variants.len() != names.len() {
                return Err(format!(
                    "enum with {} variants, expected {}",
                    v.variants.len(),
                    names.len()
                ));
            }
            for (i, name) in names.iter().enumerate() {
                let ok = v
                    .variants
                    .iter()
                    .any(|x| x.name == *name && usize::from(x.index) == i && x.fields.is_empty());
                if !ok {
                    return Err(format!("enum variant {i} is not a field-less {name}"));
                }
            }
            true
        }
        (TypeDef::Composite(c), Shape::Struct(fields)) => {
            if c.fields.len() != fields.len() {
                return Err(format!(
                    "struct with {} fields, expected {}",
                    c.fields.len(),
                    fields.len()
                ));
            }
            for (f, (name, inner)) in c.fields.iter().zip(fields.iter()) {
                if f.name.as_deref() != Some(*name) {
                    return Err(format!("field {:?} where {name} was expected", f.name));
                }
                matches(types, f.ty.id, *inner, depth + 1)
                    .map_err(|r| format!("field {name}: {r}"))?;
            }
            true
        }
        _ => false,
    };
    if direct {
        return Ok(());
    }
    // A newtype matches its only field's shape.
    if let TypeDef::Composite(c) = &ty.type_def {
        if let [only] = c.fields.as_slice() {
            return matches(types, only.ty.id, shape, depth + 1);
        }
    }
    Err(format!(
        "{} is not {shape:?}",
        if ty.path.segments.is_empty() {
            format!("{:?}", ty.type_def).chars().take(80).collect()
        } else {
            ty.path.segments.join("::")
        }
    ))
}

fn is_u8(types: &PortableRegistry, id: u32) -> bool {
    matches!(
        types.resolve(id).map(|t| &t.type_def),
        Some(TypeDef::Primitive(TypeDefPrimitive::U8))
    )
}
