//! Sealing transfer chunks: AES-256-GCM under the per-transfer content key.
//!
//! Unlike a stream, a transfer is read in any order by several parallel fetches, so every chunk
//! must open on its own, from its index alone:
//!
//! 1. The sender draws a random 32-byte [`ContentKey`] per transfer. It never seals anything
//!    itself: chunk keys are derived from it, one per *epoch* of chunks,
//!    `HMAC-SHA256(content key, "hermes/sync/v1 chunk key" ‖ transfer id ‖ epoch)`, where an
//!    epoch covers [`EPOCH_BYTES`] (64 GiB) of payload. No AES-GCM key therefore seals more than
//!    64 GiB (2^32 blocks), as the stream layer guarantees for streams, even for a 16 TiB payload.
//! 2. Chunk `i` is sealed with nonce `0⁴ ‖ i (u64 big-endian)`, unique under its epoch key, and
//!    additional data `transfer id ‖ i ‖ last flag ‖ "hsyn"`. A chunk served at another index,
//!    from another transfer, or presented as last when it is not (or the reverse) fails to
//!    authenticate. The last flag is computed from the [`Layout`], never taken from the caller.
//! 3. Sealing and opening work in place on a caller's buffer of [`Layout::sealed_len`] bytes
//!    (plaintext, then room for the tag), so a receiver loops over one buffer per parallel fetch
//!    and allocates nothing per chunk. The epoch key is cached in the [`ChunkCipher`], so it is
//!    derived once per 64 GiB, not once per chunk.
//!
//! A chunk must never be *sent* sealed twice with different contents (same key, same nonce).
//! The embedded store re-encrypts from the source file on every read, so it compares each
//! re-sealed chunk's hash with the manifest ([`super::Manifest::check_chunk`]) before sending:
//! a changed source gives another ciphertext, hence another hash, and is refused. Sealing
//! without sending reveals nothing.

use super::layout::Layout;
use crate::envelope::{Id128, ID_LEN, TAG_LEN};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hmac;
use hpke::rand_core::CryptoRng;
use std::fmt;
use thiserror::Error;
use zeroize::Zeroizing;

/// Payload bytes sealed under one derived key.
pub const EPOCH_BYTES: u64 = 64 << 30;
/// Label of chunk-key derivation.
const CHUNK_KEY_LABEL: &[u8] = b"hermes/sync/v1 chunk key";
/// Length of a content key.
pub const CONTENT_KEY_LEN: usize = 32;

/// The per-transfer secret. Zeroized on drop, redacted in `Debug`.
#[derive(Clone)]
pub struct ContentKey(Zeroizing<[u8; CONTENT_KEY_LEN]>);

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentKey(<redacted>)")
    }
}

impl ContentKey {
    /// A fresh random key.
    pub fn random(rng: &mut impl CryptoRng) -> Self {
        let mut k = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
        rng.fill_bytes(k.as_mut());
        ContentKey(k)
    }

    /// Wraps raw bytes (e.g. reloaded from the node's store).
    pub fn from_bytes(bytes: [u8; CONTENT_KEY_LEN]) -> Self {
        ContentKey(Zeroizing::new(bytes))
    }

    /// The raw bytes, for persisting or wrapping.
    pub fn expose(&self) -> &[u8; CONTENT_KEY_LEN] {
        &self.0
    }
}

/// Why a chunk could not be sealed or opened. Opening failures never say which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SealError {
    /// The chunk does not authenticate at this index of this transfer under this key.
    #[error("chunk does not authenticate (altered, misplaced, or another transfer's)")]
    BadChunk,
    /// The index is past the last chunk.
    #[error("chunk index {index} is past the last chunk ({count} chunks)")]
    NoSuchChunk {
        /// The index asked for.
        index: u64,
        /// Chunks in the transfer.
        count: u64,
    },
    /// The buffer is not exactly the sealed length of that chunk.
    #[error("chunk buffer is {got} bytes; chunk needs exactly {expected}")]
    WrongLength {
        /// Sealed length of the chunk.
        expected: usize,
        /// Buffer length given.
        got: usize,
    },
}

/// Seals and opens the chunks of one transfer, in any order.
pub struct ChunkCipher {
    transfer_id: Id128,
    layout: Layout,
    key: ContentKey,
    chunks_per_epoch: u64,
    epoch: Option<(u64, LessSafeKey)>,
}

impl fmt::Debug for ChunkCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkCipher")
            .field("transfer_id", &self.transfer_id)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl ChunkCipher {
    /// A cipher for transfer `transfer_id` with the given layout and content key. Parallel
    /// workers each take their own (it is cheap: the key is derived on first use).
    pub fn new(transfer_id: Id128, layout: Layout, key: &ContentKey) -> Self {
        ChunkCipher {
            transfer_id,
            layout,
            key: key.clone(),
            // chunk_size <= 64 MiB, so an epoch holds at least 1024 chunks.
            chunks_per_epoch: (EPOCH_BYTES / u64::from(layout.chunk_size())).max(1),
            epoch: None,
        }
    }

    /// The layout chunks are cut by.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn key_for(&mut self, index: u64) -> Result<&LessSafeKey, SealError> {
        let epoch = index / self.chunks_per_epoch;
        if self.epoch.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let mac = hmac::Key::new(hmac::HMAC_SHA256, self.key.expose());
            let mut ctx = hmac::Context::with_key(&mac);
            ctx.update(CHUNK_KEY_LABEL);
            ctx.update(&self.transfer_id.0);
            ctx.update(&epoch.to_le_bytes());
            let mut k = Zeroizing::new([0u8; 32]);
            k.copy_from_slice(ctx.sign().as_ref());
            let aead = UnboundKey::new(&AES_256_GCM, k.as_ref())
                .map(LessSafeKey::new)
                .map_err(|_| SealError::BadChunk)?;
            self.epoch = Some((epoch, aead));
        }
        match &self.epoch {
            Some((_, k)) => Ok(k),
            None => Err(SealError::BadChunk),
        }
    }

    fn check(&self, index: u64, buf_len: usize) -> Result<usize, SealError> {
        if !self.layout.contains(index) {
            return Err(SealError::NoSuchChunk {
                index,
                count: self.layout.chunk_count(),
            });
        }
        let expected = self.layout.sealed_len(index) as usize;
        if buf_len != expected {
            return Err(SealError::WrongLength {
                expected,
                got: buf_len,
            });
        }
        Ok(expected - TAG_LEN)
    }

    fn nonce(index: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&index.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    fn aad(&self, index: u64) -> [u8; ID_LEN + 8 + 1 + 4] {
        let mut a = [0u8; ID_LEN + 8 + 1 + 4];
        a[..ID_LEN].copy_from_slice(&self.transfer_id.0);
        a[ID_LEN..ID_LEN + 8].copy_from_slice(&index.to_le_bytes());
        a[ID_LEN + 8] = u8::from(self.layout.is_last(index));
        a[ID_LEN + 9..].copy_from_slice(b"hsyn");
        a
    }

    /// Seals chunk `index` in place. `buf` is exactly [`Layout::sealed_len`]`(index)` bytes: the
    /// plaintext followed by [`TAG_LEN`] bytes of room, which receive the tag.
    ///
    /// # Errors
    /// [`SealError::NoSuchChunk`] or [`SealError::WrongLength`] for a buffer that does not fit
    /// the chunk.
    pub fn seal_in_place(&mut self, index: u64, buf: &mut [u8]) -> Result<(), SealError> {
        let plain = self.check(index, buf.len())?;
        let aad = self.aad(index);
        let key = self.key_for(index)?;
        let (data, tag_room) = buf.split_at_mut(plain);
        let tag = key
            .seal_in_place_separate_tag(Self::nonce(index), Aad::from(aad), data)
            .map_err(|_| SealError::BadChunk)?;
        tag_room.copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens sealed chunk `index` in place; on success `buf[..n]` is the plaintext, where `n` is
    /// the returned length ([`Layout::plain_len`]).
    ///
    /// # Errors
    /// [`SealError::BadChunk`] when it does not authenticate; the length errors as for sealing.
    pub fn open_in_place(&mut self, index: u64, buf: &mut [u8]) -> Result<usize, SealError> {
        let plain = self.check(index, buf.len())?;
        let aad = self.aad(index);
        let key = self.key_for(index)?;
        let n = key
            .open_in_place(Self::nonce(index), Aad::from(aad), buf)
            .map_err(|_| SealError::BadChunk)?
            .len();
        debug_assert_eq!(n, plain);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::MIN_CHUNK_SIZE;
    use super::*;
    use crate::envelope::tests::TestRng;
    use proptest::prelude::*;

    const C: u32 = MIN_CHUNK_SIZE;

    fn cipher(size: u64) -> ChunkCipher {
        let key = ContentKey::random(&mut TestRng(5));
        ChunkCipher::new(Id128([1; 16]), Layout::new(size, C).unwrap(), &key)
    }

    fn sealed(c: &mut ChunkCipher, index: u64, fill: u8) -> Vec<u8> {
        let mut buf = vec![fill; c.layout().sealed_len(index) as usize];
        c.seal_in_place(index, &mut buf).unwrap();
        buf
    }

    #[test]
    fn chunks_open_in_any_order_with_one_buffer() {
        let size = 3 * u64::from(C) + 10;
        let mut tx = cipher(size);
        let chunks: Vec<_> = (0..4).map(|i| sealed(&mut tx, i, i as u8)).collect();
        assert_eq!(chunks[3].len(), 10 + TAG_LEN);
        let mut rx = cipher(size);
        let mut buf = vec![0u8; rx.layout().max_sealed_len()];
        for i in [2u64, 0, 3, 1] {
            let c = &chunks[i as usize];
            let b = &mut buf[..c.len()];
            b.copy_from_slice(c);
            let n = rx.open_in_place(i, b).unwrap();
            assert_eq!(n, rx.layout().plain_len(i) as usize);
            assert!(b[..n].iter().all(|x| *x == i as u8));
        }
    }

    #[test]
    fn misplaced_foreign_and_mislabelled_chunks_fail() {
        let size = 2 * u64::from(C);
        let mut tx = cipher(size);
        let c0 = sealed(&mut tx, 0, 7);
        let c1 = sealed(&mut tx, 1, 7);
        // Same plaintext, same length: only the index and last flag differ, and both are bound.
        let mut rx = cipher(size);
        assert_eq!(
            rx.open_in_place(1, &mut c0.clone()),
            Err(SealError::BadChunk)
        );
        assert_eq!(
            rx.open_in_place(0, &mut c1.clone()),
            Err(SealError::BadChunk)
        );
        // The last chunk of a longer transfer is not the last chunk here (the flag is bound).
        let mut longer = cipher(3 * u64::from(C));
        assert_eq!(
            longer.open_in_place(1, &mut c1.clone()),
            Err(SealError::BadChunk)
        );
        // Another transfer id or another key.
        let key = ContentKey::random(&mut TestRng(5));
        let mut other = ChunkCipher::new(Id128([2; 16]), Layout::new(size, C).unwrap(), &key);
        assert_eq!(
            other.open_in_place(0, &mut c0.clone()),
            Err(SealError::BadChunk)
        );
        let key = ContentKey::random(&mut TestRng(6));
        let mut other = ChunkCipher::new(Id128([1; 16]), Layout::new(size, C).unwrap(), &key);
        assert_eq!(
            other.open_in_place(0, &mut c0.clone()),
            Err(SealError::BadChunk)
        );
        // Length and index errors are reported before any crypto.
        assert_eq!(
            rx.open_in_place(0, &mut c0[..c0.len() - 1].to_vec()),
            Err(SealError::WrongLength {
                expected: c0.len(),
                got: c0.len() - 1
            })
        );
        assert_eq!(
            rx.open_in_place(2, &mut c0.clone()),
            Err(SealError::NoSuchChunk { index: 2, count: 2 })
        );
        assert!(rx.open_in_place(0, &mut c0.clone()).is_ok());
    }

    #[test]
    fn epochs_use_different_keys() {
        // With 64 MiB chunks an epoch is 1024 chunks: chunk 1023 and 1024 are under different
        // keys, and a chunk opens only under its own epoch's key.
        let layout = Layout::new(2048 * (64 << 20), 64 << 20).unwrap();
        let key = ContentKey::from_bytes([3; 32]);
        let mut c = ChunkCipher::new(Id128([1; 16]), layout, &key);
        assert_eq!(c.chunks_per_epoch, 1024);
        // The same plaintext under the same nonce differs across the boundary: another key.
        let mut a = vec![0u8; 64];
        let mut b = vec![0u8; 64];
        let ta = c
            .key_for(1023)
            .unwrap()
            .seal_in_place_separate_tag(ChunkCipher::nonce(5), Aad::from([]), &mut a)
            .unwrap();
        let tb = c
            .key_for(1024)
            .unwrap()
            .seal_in_place_separate_tag(ChunkCipher::nonce(5), Aad::from([]), &mut b)
            .unwrap();
        assert_ne!(a, b);
        assert_ne!(ta.as_ref(), tb.as_ref());
    }

    #[test]
    fn the_content_key_is_redacted() {
        let k = ContentKey::from_bytes([0xAB; 32]);
        assert!(!format!("{k:?}").contains("ab"));
        assert!(!format!("{:?}", cipher(0)).contains("ab"));
    }

    proptest! {
        #[test]
        fn any_flipped_bit_fails(
            tail in 1u32..2000, idx in any::<prop::sample::Index>(), bit in 0u8..8
        ) {
            // The last chunk is short (at least one byte, so that chunk 1 exists), which keeps the
            // test fast; a full chunk is no different.
            let size = u64::from(C) + u64::from(tail);
            let mut tx = cipher(size);
            let mut c = sealed(&mut tx, 1, 0x5a);
            let mut rx = cipher(size);
            prop_assert!(rx.open_in_place(1, &mut c.clone()).is_ok());
            let i = idx.index(c.len());
            c[i] ^= 1 << bit;
            prop_assert_eq!(rx.open_in_place(1, &mut c), Err(SealError::BadChunk));
        }
    }
}
