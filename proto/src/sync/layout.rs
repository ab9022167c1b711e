//! How a payload is cut into chunks, and where each sealed chunk lives.
//!
//! Every other Sync Engine format derives its offsets from this one type, so sender, receiver,
//! S3 part plan and journal cannot disagree about where chunk `i` starts. A [`Layout`] is only
//! ever built through [`Layout::new`], which enforces the bounds below; every method is therefore
//! total (no overflow is possible for a valid layout).
//!
//! Chunk `i` holds plaintext bytes `[i·chunk_size, min((i+1)·chunk_size, size))`. Sealed, it is
//! [`TAG_LEN`] bytes longer, and the sealed chunks are stored back to back: the sealed object is
//! `size + TAG_LEN · chunk_count` bytes. An empty payload still has one (empty) chunk, so every
//! transfer has a last chunk whose flag the AEAD authenticates.

use crate::codec::DecodeError;
use crate::envelope::TAG_LEN;

/// Chunk size used unless configured otherwise: large enough that per-request overhead (an HTTP
/// ranged GET, a libp2p substream round trip) is small next to the transfer time, small enough
/// that eight chunks in flight stay far below the receiver's memory budget.
pub const DEFAULT_CHUNK_SIZE: u32 = 8 << 20;
/// Smallest chunk size accepted: below this the manifest grows (32 bytes per chunk) and requests
/// get too small to fill a fast link.
pub const MIN_CHUNK_SIZE: u32 = 1 << 20;
/// Largest chunk size accepted: the receiver holds one chunk per parallel fetch in memory.
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;
/// Chunk sizes are multiples of this, so plaintext offsets stay page- and block-aligned.
pub const CHUNK_ALIGN: u32 = 64 << 10;
/// Upper bound on chunks per transfer; bounds the manifest at 32 MiB and the journal bitmap at
/// 128 KiB, checked before anything is allocated.
pub const MAX_CHUNKS: u64 = 1 << 20;
/// Upper bound on the payload size (16 TiB): far beyond today's checkpoints, and it keeps every
/// offset computation far from `u64` overflow.
pub const MAX_PAYLOAD_SIZE: u64 = 16 << 40;

/// Payload size and chunk size, validated together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    size: u64,
    chunk_size: u32,
}

impl Layout {
    /// A layout for `size` bytes cut into `chunk_size`-byte chunks.
    ///
    /// # Errors
    /// [`DecodeError::Invalid`] naming the rule: chunk size outside
    /// [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`] or not a multiple of [`CHUNK_ALIGN`]; size above
    /// [`MAX_PAYLOAD_SIZE`]; more than [`MAX_CHUNKS`] chunks.
    pub fn new(size: u64, chunk_size: u32) -> Result<Self, DecodeError> {
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(DecodeError::invalid(
                "chunk_size",
                format!("{chunk_size} bytes; expected {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"),
            ));
        }
        if !chunk_size.is_multiple_of(CHUNK_ALIGN) {
            return Err(DecodeError::invalid(
                "chunk_size",
                format!("{chunk_size} bytes is not a multiple of {CHUNK_ALIGN}"),
            ));
        }
        if size > MAX_PAYLOAD_SIZE {
            return Err(DecodeError::invalid(
                "size",
                format!("{size} bytes exceeds the maximum {MAX_PAYLOAD_SIZE}"),
            ));
        }
        let chunks = size.div_ceil(u64::from(chunk_size)).max(1);
        if chunks > MAX_CHUNKS {
            return Err(DecodeError::invalid(
                "size",
                format!(
                    "{size} bytes in {chunk_size}-byte chunks is {chunks} chunks; at most \
                     {MAX_CHUNKS} (use larger chunks)"
                ),
            ));
        }
        Ok(Layout { size, chunk_size })
    }

    /// Payload (plaintext) size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Plaintext bytes per chunk (the last chunk may be shorter).
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Number of chunks: `⌈size / chunk_size⌉`, and 1 for an empty payload.
    pub fn chunk_count(&self) -> u64 {
        self.size.div_ceil(u64::from(self.chunk_size)).max(1)
    }

    /// Whether `index` names a chunk of this layout.
    pub fn contains(&self, index: u64) -> bool {
        index < self.chunk_count()
    }

    /// Whether `index` is the last chunk (the one sealed with the last flag).
    pub fn is_last(&self, index: u64) -> bool {
        index + 1 == self.chunk_count()
    }

    /// Plaintext offset of chunk `index` in the payload.
    pub fn plain_offset(&self, index: u64) -> u64 {
        index.min(self.chunk_count()) * u64::from(self.chunk_size)
    }

    /// Plaintext length of chunk `index` (0 for an index past the end).
    pub fn plain_len(&self, index: u64) -> u32 {
        let start = self.plain_offset(index).min(self.size);
        let len = (self.size - start).min(u64::from(self.chunk_size));
        // `len <= chunk_size`, which is a u32.
        u32::try_from(len).unwrap_or(self.chunk_size)
    }

    /// Sealed length of chunk `index` (plaintext plus tag).
    pub fn sealed_len(&self, index: u64) -> u32 {
        self.plain_len(index) + TAG_LEN as u32
    }

    /// Largest sealed chunk: the buffer size a sealer or opener needs.
    pub fn max_sealed_len(&self) -> usize {
        self.chunk_size as usize + TAG_LEN
    }

    /// Offset of sealed chunk `index` in the sealed object; `sealed_offset(chunk_count())` is the
    /// sealed object's size.
    pub fn sealed_offset(&self, index: u64) -> u64 {
        let i = index.min(self.chunk_count());
        if i == self.chunk_count() {
            return self.sealed_size();
        }
        i * (u64::from(self.chunk_size) + TAG_LEN as u64)
    }

    /// Size of the sealed object: every sealed chunk back to back.
    pub fn sealed_size(&self) -> u64 {
        self.size + TAG_LEN as u64 * self.chunk_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bounds_are_enforced_with_named_fields() {
        let bad = [
            (0, MIN_CHUNK_SIZE - CHUNK_ALIGN, "chunk_size"),
            (0, MAX_CHUNK_SIZE + CHUNK_ALIGN, "chunk_size"),
            (0, MIN_CHUNK_SIZE + 1, "chunk_size"),
            (MAX_PAYLOAD_SIZE + 1, MAX_CHUNK_SIZE, "size"),
            (
                MAX_CHUNKS * u64::from(MIN_CHUNK_SIZE) + 1,
                MIN_CHUNK_SIZE,
                "size",
            ),
        ];
        for (size, chunk, field) in bad {
            match Layout::new(size, chunk) {
                Err(DecodeError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{size}/{chunk}: {other:?}"),
            }
        }
        assert!(Layout::new(MAX_CHUNKS * u64::from(MIN_CHUNK_SIZE), MIN_CHUNK_SIZE).is_ok());
        assert!(Layout::new(MAX_PAYLOAD_SIZE, MAX_CHUNK_SIZE).is_ok());
    }

    #[test]
    fn empty_payload_has_one_empty_chunk() {
        let l = Layout::new(0, DEFAULT_CHUNK_SIZE).unwrap();
        assert_eq!(l.chunk_count(), 1);
        assert_eq!(l.plain_len(0), 0);
        assert_eq!(l.sealed_len(0), TAG_LEN as u32);
        assert!(l.is_last(0));
        assert_eq!(l.sealed_size(), TAG_LEN as u64);
    }

    proptest! {
        #[test]
        fn chunks_tile_the_payload_and_the_sealed_object(
            size in 0u64..(40 << 20), chunk in 16u32..=24
        ) {
            let l = Layout::new(size, chunk * CHUNK_ALIGN).unwrap();
            let (mut plain, mut sealed) = (0u64, 0u64);
            for i in 0..l.chunk_count() {
                prop_assert_eq!(l.plain_offset(i), plain);
                prop_assert_eq!(l.sealed_offset(i), sealed);
                prop_assert!(l.plain_len(i) > 0 || size == 0);
                prop_assert_eq!(l.is_last(i), i + 1 == l.chunk_count());
                plain += u64::from(l.plain_len(i));
                sealed += u64::from(l.sealed_len(i));
            }
            prop_assert_eq!(plain, size);
            prop_assert_eq!(sealed, l.sealed_size());
            prop_assert_eq!(l.sealed_offset(l.chunk_count()), sealed);
            prop_assert!(!l.contains(l.chunk_count()));
        }
    }
}
