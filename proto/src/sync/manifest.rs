//! The manifest: what the receiver checks every fetched chunk against.
//!
//! 1. The sender seals each chunk ([`super::seal`]) and hashes the *sealed* bytes with BLAKE3, so
//!    a receiver (or a storage node) can check a chunk before it holds any key, and a corrupt
//!    chunk is refused before it is decrypted.
//! 2. The manifest lists those hashes in chunk order, after the layout and cipher.
//! 3. Its root is the BLAKE3 hash, in `derive_key` mode with context [`ROOT_CONTEXT`], of the
//!    manifest's canonical encoding. The signed ticket carries the root; the manifest itself is
//!    fetched separately (it is 32 bytes per chunk: 400 KiB at 100 GiB, 20 MiB at 5 TiB) and
//!    [`Manifest::decode_verified`] hashes the bytes *before* decoding them.
//!
//! Why a flat hash over the encoding rather than a Merkle tree of chunk hashes: a tree only pays
//! off when a chunk is verified without the manifest (with a proof per chunk). Our receivers
//! always fetch the whole manifest first, and an S3 ranged GET cannot carry a proof. BLAKE3 is
//! itself a tree internally, so hashing a 20 MiB manifest is SIMD-parallel and takes
//! milliseconds. The derive-key context keeps a root from ever equalling a plain BLAKE3 hash of
//! anything else (a chunk, a file), and because the root covers size, chunk size and cipher, the
//! layout needs no separate check beyond comparing it with the ticket's.
//!
//! # Encoding (version 1, little-endian)
//! ```text
//! u8      version = 1
//! u8      cipher (1 = AES-256-GCM, epoch keys, see super::seal)
//! u64     payload size
//! u32     chunk size
//! [32]×n  BLAKE3 of each sealed chunk, n = chunk_count(size, chunk size) (not sent: derived)
//! ```

use super::layout::{Layout, MAX_CHUNKS};
use crate::codec::{DecodeError, Reader, Writer};
use thiserror::Error;

/// The only manifest version this build produces and accepts.
pub const MANIFEST_VERSION: u8 = 1;
/// BLAKE3 `derive_key` context of manifest roots.
pub const ROOT_CONTEXT: &str = "hermes/sync/v1 manifest root";
/// Length of a BLAKE3 hash.
pub const HASH_LEN: usize = 32;
/// Length of the manifest's fixed header.
pub const MANIFEST_HEADER_LEN: usize = 1 + 1 + 8 + 4;
/// Largest encoded manifest (32 MiB plus the header).
pub const MAX_MANIFEST_LEN: usize = MANIFEST_HEADER_LEN + HASH_LEN * MAX_CHUNKS as usize;

/// A BLAKE3 hash (of a sealed chunk, or a manifest root).
pub type Hash = [u8; HASH_LEN];

/// How chunks are sealed. One byte on the wire so that a later cipher is a new code, not a new
/// format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[non_exhaustive]
pub enum Cipher {
    /// AES-256-GCM under per-epoch keys derived from the content key ([`super::seal`]).
    Aes256Gcm,
}

impl Cipher {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Cipher::Aes256Gcm => 1,
        }
    }

    /// The cipher of a wire code.
    ///
    /// # Errors
    /// [`DecodeError::Invalid`] for an unknown code.
    pub fn from_code(code: u8) -> Result<Self, DecodeError> {
        match code {
            1 => Ok(Cipher::Aes256Gcm),
            _ => Err(DecodeError::invalid(
                "cipher",
                format!("unknown cipher code {code}"),
            )),
        }
    }
}

/// The BLAKE3 hash of one sealed chunk, as the manifest lists it.
pub fn chunk_hash(sealed: &[u8]) -> Hash {
    *blake3::hash(sealed).as_bytes()
}

/// A hasher that yields the root of the manifest bytes fed to it, for a caller that streams a
/// large manifest to disk instead of holding it.
pub fn root_hasher() -> blake3::Hasher {
    blake3::Hasher::new_derive_key(ROOT_CONTEXT)
}

/// The root of an encoded manifest.
pub fn root_of(encoded: &[u8]) -> Hash {
    let mut h = root_hasher();
    h.update(encoded);
    *h.finalize().as_bytes()
}

/// Why a fetched manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The bytes do not hash to the ticket's root: altered, truncated, or another transfer's.
    #[error("manifest does not match the ticket's root (altered or truncated)")]
    RootMismatch,
    /// The bytes hash to the root but do not decode (a sender bug: it signed a bad manifest).
    #[error("manifest is malformed: {0}")]
    Malformed(DecodeError),
    /// The manifest's layout or cipher differs from the ticket's (a sender bug).
    #[error("manifest layout or cipher differs from the ticket's")]
    LayoutMismatch,
}

/// Sizes, cipher and the hash of every sealed chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    layout: Layout,
    cipher: Cipher,
    hashes: Vec<Hash>,
}

impl Manifest {
    /// A manifest from the hashes of every sealed chunk, in order.
    ///
    /// # Errors
    /// [`DecodeError::Invalid`] when the number of hashes is not the layout's chunk count.
    pub fn new(layout: Layout, cipher: Cipher, hashes: Vec<Hash>) -> Result<Self, DecodeError> {
        if hashes.len() as u64 != layout.chunk_count() {
            return Err(DecodeError::invalid(
                "manifest.hashes",
                format!(
                    "{} hashes for {} chunks",
                    hashes.len(),
                    layout.chunk_count()
                ),
            ));
        }
        Ok(Manifest {
            layout,
            cipher,
            hashes,
        })
    }

    /// The layout the hashes belong to.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The chunk cipher.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// All chunk hashes, in chunk order.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// The expected hash of chunk `index`, or `None` past the end.
    pub fn hash(&self, index: u64) -> Option<&Hash> {
        usize::try_from(index).ok().and_then(|i| self.hashes.get(i))
    }

    /// Whether `sealed` is chunk `index` exactly as the sender sealed it. Call before opening.
    pub fn check_chunk(&self, index: u64, sealed: &[u8]) -> bool {
        self.hash(index).is_some_and(|h| *h == chunk_hash(sealed))
    }

    /// Length of [`Manifest::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        MANIFEST_HEADER_LEN + HASH_LEN * self.hashes.len()
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        w.u8(MANIFEST_VERSION)
            .u8(self.cipher.code())
            .u64(self.layout.size())
            .put(&self.layout.chunk_size().to_le_bytes());
        for h in &self.hashes {
            w.put(h);
        }
        w.into_vec()
    }

    /// The root the ticket carries.
    pub fn root(&self) -> Hash {
        root_of(&self.encode())
    }

    /// Decodes a manifest strictly: known version and cipher, a valid layout, and exactly one
    /// hash per chunk (the count is derived from the layout and checked against the input length
    /// before the hash list is allocated).
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] when cut short; [`DecodeError::Invalid`] otherwise.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(DecodeError::invalid(
                "manifest",
                format!("{} bytes; at most {MAX_MANIFEST_LEN}", bytes.len()),
            ));
        }
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != MANIFEST_VERSION {
            return Err(DecodeError::invalid(
                "manifest.version",
                format!("unsupported version {version}; this build reads {MANIFEST_VERSION}"),
            ));
        }
        let cipher = Cipher::from_code(r.u8()?)?;
        let size = r.u64()?;
        let chunk_size = u32::from_le_bytes(r.array()?);
        let layout = Layout::new(size, chunk_size)?;
        // chunk_count <= MAX_CHUNKS (2^20), so this neither overflows nor over-allocates.
        let count = usize::try_from(layout.chunk_count())
            .map_err(|_| DecodeError::invalid("manifest", "too many chunks"))?;
        let needed = count * HASH_LEN;
        if r.remaining() < needed {
            return Err(DecodeError::Incomplete {
                needed: needed - r.remaining(),
            });
        }
        let mut hashes = Vec::with_capacity(count);
        for _ in 0..count {
            hashes.push(r.array()?);
        }
        r.finish("manifest")?;
        Ok(Manifest {
            layout,
            cipher,
            hashes,
        })
    }

    /// Checks fetched bytes against a ticket's root, layout and cipher, then decodes them. The
    /// hash comes first, so nothing from an unverified manifest is ever interpreted.
    ///
    /// # Errors
    /// [`ManifestError`] naming what did not match.
    pub fn decode_verified(
        bytes: &[u8],
        root: &Hash,
        layout: &Layout,
        cipher: Cipher,
    ) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN || root_of(bytes) != *root {
            return Err(ManifestError::RootMismatch);
        }
        let m = Self::decode(bytes).map_err(ManifestError::Malformed)?;
        if m.layout != *layout || m.cipher != cipher {
            return Err(ManifestError::LayoutMismatch);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::{CHUNK_ALIGN, DEFAULT_CHUNK_SIZE, MIN_CHUNK_SIZE};
    use super::*;
    use proptest::prelude::*;

    fn sample(size: u64, chunk: u32) -> Manifest {
        let layout = Layout::new(size, chunk).unwrap();
        let hashes = (0..layout.chunk_count())
            .map(|i| chunk_hash(&i.to_le_bytes()))
            .collect();
        Manifest::new(layout, Cipher::Aes256Gcm, hashes).unwrap()
    }

    fn arb_manifest() -> impl Strategy<Value = Manifest> {
        (0u64..(200u64 << 20), 16u32..=40, any::<u64>()).prop_map(|(size, c, seed)| {
            let layout = Layout::new(size, c * CHUNK_ALIGN).unwrap();
            let hashes = (0..layout.chunk_count())
                .map(|i| chunk_hash(&(seed ^ i).to_le_bytes()))
                .collect();
            Manifest::new(layout, Cipher::Aes256Gcm, hashes).unwrap()
        })
    }

    #[test]
    fn hash_count_must_match_the_layout() {
        let layout = Layout::new(3 * u64::from(MIN_CHUNK_SIZE), MIN_CHUNK_SIZE).unwrap();
        assert!(Manifest::new(layout, Cipher::Aes256Gcm, vec![[0; 32]; 2]).is_err());
        assert!(Manifest::new(layout, Cipher::Aes256Gcm, vec![[0; 32]; 4]).is_err());
        assert!(Manifest::new(layout, Cipher::Aes256Gcm, vec![[0; 32]; 3]).is_ok());
    }

    #[test]
    fn truncation_is_incomplete_and_extension_is_invalid() {
        let m = sample(5 << 20, MIN_CHUNK_SIZE);
        let bytes = m.encode();
        assert_eq!(
            Manifest::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Incomplete { needed: 1 })
        );
        assert_eq!(
            Manifest::decode(&bytes[..MANIFEST_HEADER_LEN]),
            Err(DecodeError::Incomplete {
                needed: 5 * HASH_LEN
            })
        );
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            Manifest::decode(&long),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn a_huge_claimed_size_is_refused_before_allocating() {
        // A 14-byte header claiming 2^20 chunks asks for 32 MiB of hashes that are not there:
        // the decoder reports what is missing without reserving it.
        let mut b = vec![MANIFEST_VERSION, 1];
        b.extend_from_slice(&(1u64 << 40).to_le_bytes());
        b.extend_from_slice(&MIN_CHUNK_SIZE.to_le_bytes());
        assert_eq!(
            Manifest::decode(&b),
            Err(DecodeError::Incomplete {
                needed: HASH_LEN << 20
            })
        );
        // One chunk more than the bound is invalid outright.
        let mut b = vec![MANIFEST_VERSION, 1];
        b.extend_from_slice(&((1u64 << 40) + 1).to_le_bytes());
        b.extend_from_slice(&MIN_CHUNK_SIZE.to_le_bytes());
        assert!(matches!(
            Manifest::decode(&b),
            Err(DecodeError::Invalid { field: "size", .. })
        ));
        let mut b = sample(0, DEFAULT_CHUNK_SIZE).encode();
        b[1] = 9;
        assert!(matches!(
            Manifest::decode(&b),
            Err(DecodeError::Invalid {
                field: "cipher",
                ..
            })
        ));
    }

    #[test]
    fn verified_decoding_checks_root_then_layout() {
        let m = sample(20 << 20, DEFAULT_CHUNK_SIZE);
        let bytes = m.encode();
        let root = m.root();
        let layout = *m.layout();
        assert_eq!(
            Manifest::decode_verified(&bytes, &root, &layout, Cipher::Aes256Gcm).as_ref(),
            Ok(&m)
        );
        let other = Layout::new(20 << 20, MIN_CHUNK_SIZE).unwrap();
        assert_eq!(
            Manifest::decode_verified(&bytes, &root, &other, Cipher::Aes256Gcm),
            Err(ManifestError::LayoutMismatch)
        );
        assert_eq!(
            Manifest::decode_verified(
                &bytes[..bytes.len() - 32],
                &root,
                &layout,
                Cipher::Aes256Gcm
            ),
            Err(ManifestError::RootMismatch)
        );
        // The root is not a plain BLAKE3 of the bytes (domain separated).
        assert_ne!(root, *blake3::hash(&bytes).as_bytes());
        assert!(m.check_chunk(1, &1u64.to_le_bytes()));
        assert!(!m.check_chunk(1, &2u64.to_le_bytes()));
        assert!(!m.check_chunk(3, &3u64.to_le_bytes()));
    }

    proptest! {
        #[test]
        fn round_trips(m in arb_manifest()) {
            let bytes = m.encode();
            prop_assert_eq!(bytes.len(), m.encoded_len());
            prop_assert_eq!(Manifest::decode(&bytes), Ok(m.clone()));
            prop_assert_eq!(root_of(&bytes), m.root());
        }

        #[test]
        fn any_flipped_bit_breaks_the_root(
            m in arb_manifest(), idx in any::<prop::sample::Index>(), bit in 0u8..8
        ) {
            let root = m.root();
            let mut bytes = m.encode();
            let i = idx.index(bytes.len());
            bytes[i] ^= 1 << bit;
            prop_assert_eq!(
                Manifest::decode_verified(&bytes, &root, m.layout(), m.cipher()),
                Err(ManifestError::RootMismatch)
            );
        }

        #[test]
        fn mutated_manifests_decode_canonically_or_not_at_all(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 1..4)) {
            let m = sample(3 << 20, MIN_CHUNK_SIZE);
            let root = m.root();
            let mut bytes = m.encode();
            super::super::mutate(&mut bytes, &edits);
            if let Ok(d) = Manifest::decode(&bytes) {
                prop_assert_eq!(d.encode(), bytes.clone());
                prop_assert_eq!(d.root() == root, d == m);
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Manifest::decode(&bytes);
        }
    }
}
