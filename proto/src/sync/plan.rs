//! The S3 multipart plan: how the sealed object is cut into upload parts.
//!
//! # One object, parts made of whole chunks
//! The sealed chunks are stored back to back as **one** object (plus the manifest as a second,
//! small object), not one object per chunk:
//! - the ticket then carries one presigned GET URL for the payload, whatever its size (12,800
//!   per-chunk URLs for 100 GiB would not fit any ticket), and the receiver fetches chunk `i`
//!   with a ranged GET at [`Layout::sealed_offset`] — any number in parallel, from one URL;
//! - S3 charges and rate-limits per object and per request; 10 GiB in 8 MiB objects would be
//!   1,280 PUTs, listings and deletions instead of one multipart upload.
//!
//! Each upload part is `k` whole sealed chunks, so a part is sealed and hashed without state
//! from its neighbours, and a resumed upload re-sends whole parts (S3 `ListParts` says which are
//! there). `k` is the smallest value that meets S3's rules:
//! - every part but the last is at least [`MIN_PART_SIZE`] (5 MiB) and at most
//!   [`MAX_PART_SIZE`] (5 GiB);
//! - at most [`MAX_PARTS`] (10,000) parts;
//! - the object is at most [`MAX_OBJECT_SIZE`] (5 TiB).
//!
//! The smallest `k` gives the most parts, hence the most upload parallelism and the finest
//! resume granularity: with the default 8 MiB chunks, parts are single chunks up to 78 GiB, and
//! 66 chunks (528 MiB) at 5 TiB. The object holds 16 bytes of tag per chunk, so the largest
//! payload S3 can take is a little under 5 TiB ([`max_payload`]: 5 TiB − 10 MiB at 8 MiB chunks).

use super::layout::Layout;
use thiserror::Error;

/// Smallest part S3 accepts (except the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// Largest part S3 accepts.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// Most parts in one multipart upload.
pub const MAX_PARTS: u64 = 10_000;
/// Largest S3 object.
pub const MAX_OBJECT_SIZE: u64 = 5 << 40;

/// Why no plan exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The sealed object would exceed S3's object size limit.
    #[error(
        "the sealed payload is {sealed} bytes, above S3's {MAX_OBJECT_SIZE}-byte object limit \
         (payloads up to {max_payload} bytes fit at this chunk size); use the embedded store"
    )]
    TooLarge {
        /// Size of the sealed object.
        sealed: u64,
        /// Largest payload that fits at this chunk size.
        max_payload: u64,
    },
}

/// One upload part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// S3 part number (1-based).
    pub number: u32,
    /// Offset of the part in the sealed object.
    pub offset: u64,
    /// Length of the part in bytes.
    pub len: u64,
    /// First chunk in the part.
    pub first_chunk: u64,
    /// Chunks in the part.
    pub chunks: u64,
}

/// A multipart plan for one sealed object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    layout: Layout,
    chunks_per_part: u64,
}

/// The largest payload whose sealed object fits [`MAX_OBJECT_SIZE`] at `chunk_size`.
pub fn max_payload(chunk_size: u32) -> u64 {
    let sealed_chunk = u64::from(chunk_size) + crate::envelope::TAG_LEN as u64;
    let full = MAX_OBJECT_SIZE / sealed_chunk;
    let rest = MAX_OBJECT_SIZE % sealed_chunk;
    // A partial last chunk needs its tag too.
    full * u64::from(chunk_size) + rest.saturating_sub(crate::envelope::TAG_LEN as u64)
}

impl PartPlan {
    /// Plans the upload of `layout`'s sealed object.
    ///
    /// # Errors
    /// [`PlanError::TooLarge`] above S3's object size limit.
    pub fn new(layout: Layout) -> Result<Self, PlanError> {
        let sealed = layout.sealed_size();
        if sealed > MAX_OBJECT_SIZE {
            return Err(PlanError::TooLarge {
                sealed,
                max_payload: max_payload(layout.chunk_size()),
            });
        }
        let sealed_chunk = layout.max_sealed_len() as u64;
        let count = layout.chunk_count();
        let k = MIN_PART_SIZE
            .div_ceil(sealed_chunk)
            .max(count.div_ceil(MAX_PARTS))
            .clamp(1, count);
        // k·sealed_chunk <= 5 GiB holds: the object is at most 5 TiB, so count/10,000 chunks
        // are at most 5 TiB/10,000 ≈ 550 MB, and 5 MiB rounded up to whole chunks is at most
        // one 64 MiB chunk.
        debug_assert!(k * sealed_chunk <= MAX_PART_SIZE);
        Ok(PartPlan {
            layout,
            chunks_per_part: k,
        })
    }

    /// Chunks per part (all parts but the last).
    pub fn chunks_per_part(&self) -> u64 {
        self.chunks_per_part
    }

    /// Number of parts.
    pub fn part_count(&self) -> u32 {
        // At most MAX_PARTS by construction.
        u32::try_from(self.layout.chunk_count().div_ceil(self.chunks_per_part)).unwrap_or(u32::MAX)
    }

    /// Part `index` (0-based), or `None` past the end.
    pub fn part(&self, index: u32) -> Option<Part> {
        if index >= self.part_count() {
            return None;
        }
        let first = u64::from(index) * self.chunks_per_part;
        let end = (first + self.chunks_per_part).min(self.layout.chunk_count());
        let offset = self.layout.sealed_offset(first);
        Some(Part {
            number: index + 1,
            offset,
            len: self.layout.sealed_offset(end) - offset,
            first_chunk: first,
            chunks: end - first,
        })
    }

    /// The 0-based part holding chunk `chunk`.
    pub fn part_of_chunk(&self, chunk: u64) -> Option<u32> {
        if !self.layout.contains(chunk) {
            return None;
        }
        u32::try_from(chunk / self.chunks_per_part).ok()
    }

    /// Every part in order.
    pub fn parts(&self) -> impl Iterator<Item = Part> + '_ {
        (0..self.part_count()).filter_map(|i| self.part(i))
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::{CHUNK_ALIGN, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
    use super::*;
    use proptest::prelude::*;

    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;

    /// Checks every S3 rule and that the parts tile the object along chunk boundaries.
    fn check(size: u64, chunk: u32) -> PartPlan {
        let layout = Layout::new(size, chunk).unwrap();
        let plan = PartPlan::new(layout).unwrap();
        let n = plan.part_count();
        assert!(n >= 1 && u64::from(n) <= MAX_PARTS, "{size}: {n} parts");
        let (mut offset, mut chunk_no) = (0u64, 0u64);
        for p in plan.parts() {
            assert_eq!(p.offset, offset);
            assert_eq!(p.first_chunk, chunk_no);
            assert_eq!(p.offset, layout.sealed_offset(p.first_chunk));
            assert!(p.len <= MAX_PART_SIZE);
            if p.number < n {
                assert!(
                    p.len >= MIN_PART_SIZE,
                    "{size}: part {} is {}",
                    p.number,
                    p.len
                );
                assert_eq!(p.chunks, plan.chunks_per_part());
            } else {
                assert!(p.len > 0);
            }
            assert_eq!(plan.part_of_chunk(p.first_chunk), Some(p.number - 1));
            offset += p.len;
            chunk_no += p.chunks;
        }
        assert_eq!(offset, layout.sealed_size());
        assert_eq!(chunk_no, layout.chunk_count());
        assert_eq!(plan.part(n), None);
        plan
    }

    #[test]
    fn small_payloads_are_one_part() {
        for size in [0, 1, 100, u64::from(DEFAULT_CHUNK_SIZE) - 1] {
            let p = check(size, DEFAULT_CHUNK_SIZE);
            assert_eq!(p.part_count(), 1);
            assert_eq!(p.part(0).unwrap().len, size + 16);
        }
        // Two chunks of 1 MiB make one part: a first part under 5 MiB is not allowed.
        assert_eq!(check(2 << 20, MIN_CHUNK_SIZE).part_count(), 1);
        assert_eq!(check(6 << 20, MIN_CHUNK_SIZE).part_count(), 2);
    }

    #[test]
    fn default_chunks_scale_to_five_tib() {
        let c = DEFAULT_CHUNK_SIZE;
        // Up to 10,000 chunks, one chunk per part (where the old client stopped at ~78 GiB).
        assert_eq!(check(10_000 * u64::from(c), c).chunks_per_part(), 1);
        assert_eq!(check(10_000 * u64::from(c) + 1, c).chunks_per_part(), 2);
        assert_eq!(check(100 * GIB, c).part_count(), 6400);
        assert_eq!(check(TIB, c).chunks_per_part(), 14);
        let top = check(max_payload(c), c);
        assert_eq!(top.chunks_per_part(), 66);
        assert_eq!(top.part_count(), 9930);
        // 655,359 chunks (the last one partial), 16 bytes of tag each.
        assert_eq!(max_payload(c), 5 * TIB - 655_359 * 16);
    }

    #[test]
    fn every_chunk_size_plans_up_to_the_object_limit_and_refuses_above() {
        for chunk in [MIN_CHUNK_SIZE, DEFAULT_CHUNK_SIZE, 24 << 20, MAX_CHUNK_SIZE] {
            let top = max_payload(chunk);
            let Ok(layout) = Layout::new(top, chunk) else {
                // 1 MiB chunks cannot describe 5 TiB (too many chunks): the layout refuses first.
                assert_eq!(chunk, MIN_CHUNK_SIZE);
                continue;
            };
            assert!(layout.sealed_size() <= MAX_OBJECT_SIZE);
            assert!(layout.sealed_size() > MAX_OBJECT_SIZE - u64::from(chunk) - 16);
            check(top, chunk);
            let above = Layout::new(top + 1, chunk).unwrap();
            match PartPlan::new(above) {
                Err(PlanError::TooLarge {
                    sealed,
                    max_payload: m,
                }) => {
                    assert!(sealed > MAX_OBJECT_SIZE);
                    assert_eq!(m, top);
                }
                other => panic!("{chunk}: {other:?}"),
            }
        }
        let five = Layout::new(5 * TIB, DEFAULT_CHUNK_SIZE).unwrap();
        assert!(PartPlan::new(five)
            .unwrap_err()
            .to_string()
            .contains("embedded store"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_size_up_to_the_limit_plans(
            size in 0u64..=max_payload(DEFAULT_CHUNK_SIZE), chunk in 16u32..=1024
        ) {
            let chunk = chunk * CHUNK_ALIGN;
            if let Ok(layout) = Layout::new(size, chunk) {
                if layout.sealed_size() <= MAX_OBJECT_SIZE {
                    check(size, chunk);
                }
            }
        }
    }
}
