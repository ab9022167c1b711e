//! The receiver's progress journal: which chunks are already in the `.partial` file.
//!
//! The receiver writes a chunk at its offset, makes it durable, and only then sets its bit here
//! and persists the journal. After a crash it reloads the journal and fetches only the chunks
//! whose bit is clear: nothing already written is re-hashed or re-fetched, and a chunk that was
//! in flight is simply fetched again (its bit was never set). The journal names the transfer id,
//! manifest root and layout, so it is never applied to another transfer's partial file.
//!
//! # Encoding (version 1, little-endian)
//! ```text
//! u8      version = 1
//! [16]    transfer id
//! [32]    manifest root
//! u64     payload size
//! u32     chunk size
//! [⌈n/8⌉] done bitmap: bit (i mod 8) of byte ⌊i/8⌋ is chunk i; bits past chunk n−1 are zero
//! ```
//! At most 128 KiB of bitmap (2^20 chunks); 1.6 KiB for 100 GiB in 8 MiB chunks.

use super::layout::Layout;
use super::manifest::{Hash, HASH_LEN};
use crate::codec::{DecodeError, Reader, Writer};
use crate::envelope::{Id128, ID_LEN};

/// The only journal version this build produces and accepts.
pub const JOURNAL_VERSION: u8 = 1;
/// Length of the fixed header.
pub const JOURNAL_HEADER_LEN: usize = 1 + ID_LEN + HASH_LEN + 8 + 4;

/// Done chunks of one download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    transfer_id: Id128,
    root: Hash,
    layout: Layout,
    bitmap: Vec<u8>,
    done: u64,
}

fn bitmap_len(layout: &Layout) -> usize {
    // chunk_count <= 2^20, so this is at most 128 KiB.
    usize::try_from(layout.chunk_count().div_ceil(8)).unwrap_or(usize::MAX)
}

impl Journal {
    /// An empty journal for a new download.
    pub fn new(transfer_id: Id128, root: Hash, layout: Layout) -> Self {
        Journal {
            transfer_id,
            root,
            bitmap: vec![0; bitmap_len(&layout)],
            layout,
            done: 0,
        }
    }

    /// Whether this journal belongs to the given transfer (same id, root and layout).
    pub fn is_for(&self, transfer_id: &Id128, root: &Hash, layout: &Layout) -> bool {
        self.transfer_id == *transfer_id && self.root == *root && self.layout == *layout
    }

    /// The transfer's id.
    pub fn transfer_id(&self) -> Id128 {
        self.transfer_id
    }

    /// The transfer's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether chunk `index` is done (false past the end).
    pub fn is_done(&self, index: u64) -> bool {
        if !self.layout.contains(index) {
            return false;
        }
        let (byte, bit) = (index / 8, index % 8);
        usize::try_from(byte)
            .ok()
            .and_then(|b| self.bitmap.get(b))
            .is_some_and(|v| v & (1 << bit) != 0)
    }

    /// Marks chunk `index` done; returns whether it was newly marked. Indexes past the end are
    /// ignored (returns false): the caller fetched by the same layout, so that is a caller bug,
    /// not a reason to corrupt the journal.
    pub fn mark_done(&mut self, index: u64) -> bool {
        if !self.layout.contains(index) || self.is_done(index) {
            return false;
        }
        let Some(b) = usize::try_from(index / 8)
            .ok()
            .and_then(|b| self.bitmap.get_mut(b))
        else {
            return false;
        };
        *b |= 1 << (index % 8);
        self.done += 1;
        true
    }

    /// Chunks done.
    pub fn done_chunks(&self) -> u64 {
        self.done
    }

    /// Plaintext bytes done (for progress: bytes, rate, ETA).
    pub fn done_bytes(&self) -> u64 {
        let last = self.layout.chunk_count() - 1;
        let full = self.done - u64::from(self.is_done(last));
        full * u64::from(self.layout.chunk_size())
            + if self.is_done(last) {
                u64::from(self.layout.plain_len(last))
            } else {
                0
            }
    }

    /// Whether every chunk is done.
    pub fn is_complete(&self) -> bool {
        self.done == self.layout.chunk_count()
    }

    /// Chunks still to fetch, in order.
    pub fn missing(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.layout.chunk_count()).filter(|i| !self.is_done(*i))
    }

    /// Length of [`Journal::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        JOURNAL_HEADER_LEN + self.bitmap.len()
    }

    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        w.u8(JOURNAL_VERSION)
            .put(&self.transfer_id.0)
            .put(&self.root)
            .u64(self.layout.size())
            .put(&self.layout.chunk_size().to_le_bytes())
            .put(&self.bitmap);
        w.into_vec()
    }

    /// Decodes a stored journal strictly: a valid layout, exactly the bitmap it needs (its
    /// length checked before it is copied) and no bits set past the last chunk.
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] when cut short (a torn write); [`DecodeError::Invalid`]
    /// otherwise.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != JOURNAL_VERSION {
            return Err(DecodeError::invalid(
                "journal.version",
                format!("unsupported version {version}; this build reads {JOURNAL_VERSION}"),
            ));
        }
        let transfer_id = Id128(r.array()?);
        let root = r.array()?;
        let size = r.u64()?;
        let chunk_size = u32::from_le_bytes(r.array()?);
        let layout = Layout::new(size, chunk_size)?;
        let bitmap = r.take(bitmap_len(&layout))?.to_vec();
        r.finish("journal")?;
        let count = layout.chunk_count();
        let spare = (bitmap.len() as u64 * 8) - count;
        if spare > 0 {
            let last = bitmap.last().copied().unwrap_or(0);
            if last >> (8 - spare) != 0 {
                return Err(DecodeError::invalid(
                    "journal.bitmap",
                    "bits set past the last chunk",
                ));
            }
        }
        let done = bitmap.iter().map(|b| u64::from(b.count_ones())).sum();
        Ok(Journal {
            transfer_id,
            root,
            layout,
            bitmap,
            done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::{CHUNK_ALIGN, MIN_CHUNK_SIZE};
    use super::*;
    use proptest::prelude::*;

    const C: u32 = MIN_CHUNK_SIZE;

    fn journal(chunks: u64, tail: u64) -> Journal {
        let size = (chunks - 1) * u64::from(C) + tail;
        Journal::new(Id128([4; 16]), [5; 32], Layout::new(size, C).unwrap())
    }

    #[test]
    fn marks_count_and_resume() {
        let mut j = journal(11, 10);
        assert_eq!(j.missing().count(), 11);
        assert!(j.mark_done(3));
        assert!(!j.mark_done(3));
        assert!(!j.mark_done(11));
        assert!(j.mark_done(10));
        assert_eq!(j.done_chunks(), 2);
        assert_eq!(j.done_bytes(), u64::from(C) + 10);
        let back = Journal::decode(&j.encode()).unwrap();
        assert_eq!(back, j);
        assert_eq!(
            back.missing().collect::<Vec<_>>(),
            [0, 1, 2, 4, 5, 6, 7, 8, 9]
        );
        for i in 0..11 {
            j.mark_done(i);
        }
        assert!(j.is_complete());
        assert!(j.is_for(&Id128([4; 16]), &[5; 32], j.layout()));
        assert!(!j.is_for(&Id128([4; 16]), &[6; 32], j.layout()));
    }

    #[test]
    fn strict_decoding() {
        let j = journal(11, 10);
        let bytes = j.encode();
        assert_eq!(bytes.len(), JOURNAL_HEADER_LEN + 2);
        assert_eq!(
            Journal::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Incomplete { needed: 1 })
        );
        let mut long = bytes.clone();
        long.push(0);
        assert!(Journal::decode(&long).is_err());
        // A bit for chunk 11 of an 11-chunk transfer.
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] |= 1 << 3;
        assert!(matches!(
            Journal::decode(&bad),
            Err(DecodeError::Invalid {
                field: "journal.bitmap",
                ..
            })
        ));
        let mut bad = bytes.clone();
        bad[0] = 2;
        assert!(Journal::decode(&bad).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(
            chunks in 1u64..300, tail in 0u64..1000, chunk in 16u32..=64,
            marks in proptest::collection::vec(any::<u64>(), 0..300)
        ) {
            let size = (chunks - 1) * u64::from(chunk * CHUNK_ALIGN) + tail;
            let layout = Layout::new(size, chunk * CHUNK_ALIGN).unwrap();
            let mut j = Journal::new(Id128([1; 16]), [2; 32], layout);
            let mut model = std::collections::BTreeSet::new();
            for m in marks {
                let i = m % (layout.chunk_count() + 2);
                prop_assert_eq!(j.mark_done(i), i < layout.chunk_count() && model.insert(i));
            }
            prop_assert_eq!(j.done_chunks(), model.len() as u64);
            let bytes = j.encode();
            prop_assert_eq!(bytes.len(), j.encoded_len());
            let back = Journal::decode(&bytes).unwrap();
            prop_assert_eq!(&back, &j);
            let missing: Vec<u64> = back.missing().collect();
            let expected: Vec<u64> =
                (0..layout.chunk_count()).filter(|i| !model.contains(i)).collect();
            prop_assert_eq!(missing, expected);
        }

        #[test]
        fn mutated_journals_decode_canonically_or_not_at_all(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 1..4)) {
            let mut j = journal(20, 10);
            j.mark_done(4);
            j.mark_done(19);
            let mut bytes = j.encode();
            super::super::mutate(&mut bytes, &edits);
            if let Ok(d) = Journal::decode(&bytes) {
                prop_assert_eq!(d.encode(), bytes.clone());
                prop_assert_eq!(d.missing().count() as u64 + d.done_chunks(), d.layout().chunk_count());
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Journal::decode(&bytes);
        }
    }
}
