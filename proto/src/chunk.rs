//! Stream chunks: the STREAM construction over AES-256-GCM.
//!
//! A stream pays for one HPKE encapsulation (its [`SessionHeader`](crate::envelope::SessionHeader));
//! everything after that is symmetric:
//!
//! 1. The 32-byte key exported from the stream's session keys the first epoch. Every
//!    [`REKEY_EVERY`] chunks the key is replaced by `HMAC(key, "hermes/v1 rekey")` and the old one
//!    erased, so no key ever seals more than `REKEY_EVERY × MAX_CHUNK` = 64 GiB, far inside
//!    AES-GCM's limits, and a key taken from memory mid-stream does not open earlier epochs.
//! 2. Chunk `i` is sealed with nonce `0⁴ ‖ i (u64 big-endian)` and additional data
//!    `stream id ‖ i ‖ flags`. The index is implicit (never sent), so a reordered, dropped or
//!    duplicated chunk fails to authenticate; the `final` flag is authenticated, so a stream cut
//!    short ([`ChunkError::Truncated`]) or extended past its last chunk
//!    ([`ChunkError::AfterFinal`]) is detected too.
//!
//! # Chunk frame
//! ```text
//! u32   length of the body (ciphertext and tag, or plaintext when E2E is off), <= max + 16
//! u8    flags: bit 0 = final chunk; other bits must be zero
//! ...   body
//! ```

use crate::codec::DecodeError;
use crate::envelope::{Id128, SessionSecret, ID_LEN, TAG_LEN};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hmac;
use std::fmt;
use thiserror::Error;
use zeroize::Zeroizing;

/// Length of a chunk frame header.
pub const CHUNK_HEADER_LEN: usize = 5;
/// Largest plaintext a chunk may carry.
pub const MAX_CHUNK: usize = 1 << 20;
/// Chunks sealed under one key before it is replaced.
pub const REKEY_EVERY: u64 = 1 << 16;
/// Flag bit of the last chunk of a stream.
pub const FLAG_FINAL: u8 = 1;

/// Why a chunk or a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// A chunk failed to authenticate: altered, reordered, dropped or duplicated.
    #[error("stream chunk does not authenticate (altered, reordered or missing chunks)")]
    BadChunk,
    /// Data arrived after the final chunk.
    #[error("data after the final chunk (stream extended)")]
    AfterFinal,
    /// The stream ended without its final chunk.
    #[error("stream ended before its final chunk (truncated)")]
    Truncated,
    /// A chunk longer than the agreed maximum, or unknown flag bits.
    #[error("malformed chunk frame")]
    Malformed,
}

impl ChunkError {
    /// A stable snake_case name for counters.
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkError::BadChunk => "bad_chunk",
            ChunkError::AfterFinal => "stream_extended",
            ChunkError::Truncated => "stream_truncated",
            ChunkError::Malformed => "malformed",
        }
    }
}

/// Decodes a chunk frame header, checking the length against `max_body` before anything is read.
///
/// # Errors
/// [`DecodeError::Invalid`] for an over-long body or unknown flag bits.
pub fn decode_chunk_header(
    header: &[u8; CHUNK_HEADER_LEN],
    max_body: usize,
) -> Result<(usize, u8), DecodeError> {
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[..4]);
    let len = usize::try_from(u32::from_le_bytes(len))
        .map_err(|_| DecodeError::invalid("chunk.length", "does not fit in memory"))?;
    if len > max_body {
        return Err(DecodeError::invalid(
            "chunk.length",
            format!("{len} bytes exceeds the maximum {max_body}"),
        ));
    }
    let flags = header[4];
    if flags & !FLAG_FINAL != 0 {
        return Err(DecodeError::invalid("chunk.flags", "unknown flag bits"));
    }
    Ok((len, flags))
}

/// Writes a chunk frame header.
pub fn encode_chunk_header(body_len: usize, final_chunk: bool) -> [u8; CHUNK_HEADER_LEN] {
    let mut h = [0u8; CHUNK_HEADER_LEN];
    // Bodies are bounded by MAX_CHUNK + TAG_LEN, far below u32::MAX.
    h[..4].copy_from_slice(&u32::try_from(body_len).unwrap_or(u32::MAX).to_le_bytes());
    h[4] = if final_chunk { FLAG_FINAL } else { 0 };
    h
}

/// The key schedule shared by both directions.
struct Keys {
    stream_id: Id128,
    epoch_key: Zeroizing<[u8; 32]>,
    aead: LessSafeKey,
    index: u64,
}

impl Keys {
    fn new(stream_id: Id128, secret: &SessionSecret) -> Result<Self, ChunkError> {
        let epoch_key = Zeroizing::new(*secret.expose());
        let aead = aead_key(&epoch_key)?;
        Ok(Keys {
            stream_id,
            epoch_key,
            aead,
            index: 0,
        })
    }

    /// Moves to the next epoch's key when the index crosses an epoch boundary.
    fn maybe_rekey(&mut self) -> Result<(), ChunkError> {
        if self.index > 0 && self.index.is_multiple_of(REKEY_EVERY) {
            let k = hmac::Key::new(hmac::HMAC_SHA256, self.epoch_key.as_slice());
            self.epoch_key
                .copy_from_slice(hmac::sign(&k, b"hermes/v1 rekey").as_ref());
            self.aead = aead_key(&self.epoch_key)?;
        }
        Ok(())
    }

    fn nonce(&self) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.index.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    fn aad(&self, flags: u8) -> [u8; ID_LEN + 8 + 1 + 4] {
        let mut a = [0u8; ID_LEN + 8 + 1 + 4];
        a[..ID_LEN].copy_from_slice(&self.stream_id.0);
        a[ID_LEN..ID_LEN + 8].copy_from_slice(&self.index.to_le_bytes());
        a[ID_LEN + 8] = flags;
        a[ID_LEN + 9..].copy_from_slice(b"hchk");
        a
    }
}

fn aead_key(k: &[u8; 32]) -> Result<LessSafeKey, ChunkError> {
    UnboundKey::new(&AES_256_GCM, k)
        .map(LessSafeKey::new)
        .map_err(|_| ChunkError::Malformed)
}

/// Seals the chunks of one outgoing stream.
pub struct ChunkSealer {
    keys: Keys,
    done: bool,
}

impl fmt::Debug for ChunkSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkSealer")
            .field("stream_id", &self.keys.stream_id)
            .field("index", &self.keys.index)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ChunkSealer {
    /// A sealer for stream `stream_id` keyed by its session secret.
    ///
    /// # Errors
    /// [`ChunkError::Malformed`] only if the AEAD refuses a 32-byte key (never expected).
    pub fn new(stream_id: Id128, secret: &SessionSecret) -> Result<Self, ChunkError> {
        Ok(ChunkSealer {
            keys: Keys::new(stream_id, secret)?,
            done: false,
        })
    }

    /// Chunks sealed so far.
    pub fn chunks(&self) -> u64 {
        self.keys.index
    }

    /// Seals one chunk in place. `frame` must hold [`CHUNK_HEADER_LEN`] bytes of room followed by
    /// the plaintext (at most [`MAX_CHUNK`]); on return it is a complete chunk frame (header, then
    /// ciphertext and tag).
    ///
    /// # Errors
    /// [`ChunkError::AfterFinal`] once the final chunk was sealed; [`ChunkError::Malformed`] for an
    /// over-long plaintext.
    pub fn seal_frame(&mut self, frame: &mut Vec<u8>, final_chunk: bool) -> Result<(), ChunkError> {
        if self.done {
            return Err(ChunkError::AfterFinal);
        }
        let body = frame.len().saturating_sub(CHUNK_HEADER_LEN);
        if frame.len() < CHUNK_HEADER_LEN || body > MAX_CHUNK {
            return Err(ChunkError::Malformed);
        }
        self.keys.maybe_rekey()?;
        let flags = if final_chunk { FLAG_FINAL } else { 0 };
        let tag = self
            .keys
            .aead
            .seal_in_place_separate_tag(
                self.keys.nonce(),
                Aad::from(self.keys.aad(flags)),
                &mut frame[CHUNK_HEADER_LEN..],
            )
            .map_err(|_| ChunkError::Malformed)?;
        frame.extend_from_slice(tag.as_ref());
        frame[..CHUNK_HEADER_LEN]
            .copy_from_slice(&encode_chunk_header(body + TAG_LEN, final_chunk));
        self.keys.index += 1;
        self.done = final_chunk;
        Ok(())
    }
}

/// Opens the chunks of one incoming stream, in order, and tells a complete stream from a cut one.
pub struct ChunkOpener {
    keys: Keys,
    done: bool,
}

impl fmt::Debug for ChunkOpener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkOpener")
            .field("stream_id", &self.keys.stream_id)
            .field("index", &self.keys.index)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ChunkOpener {
    /// An opener for stream `stream_id` keyed by its session secret.
    ///
    /// # Errors
    /// [`ChunkError::Malformed`] only if the AEAD refuses a 32-byte key (never expected).
    pub fn new(stream_id: Id128, secret: &SessionSecret) -> Result<Self, ChunkError> {
        Ok(ChunkOpener {
            keys: Keys::new(stream_id, secret)?,
            done: false,
        })
    }

    /// Whether the final chunk has been opened.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Opens the next chunk in place; returns the plaintext length (the plaintext is
    /// `body[..len]`).
    ///
    /// # Errors
    /// [`ChunkError::AfterFinal`] for anything after the final chunk, [`ChunkError::BadChunk`] when
    /// it does not authenticate at this position.
    pub fn open(&mut self, flags: u8, body: &mut [u8]) -> Result<usize, ChunkError> {
        if self.done {
            return Err(ChunkError::AfterFinal);
        }
        if body.len() < TAG_LEN {
            return Err(ChunkError::BadChunk);
        }
        self.keys.maybe_rekey()?;
        let len = self
            .keys
            .aead
            .open_in_place(self.keys.nonce(), Aad::from(self.keys.aad(flags)), body)
            .map_err(|_| ChunkError::BadChunk)?
            .len();
        self.keys.index += 1;
        self.done = flags & FLAG_FINAL != 0;
        Ok(len)
    }

    /// Call at end of input: a stream is complete only if its final chunk was opened.
    ///
    /// # Errors
    /// [`ChunkError::Truncated`] otherwise.
    pub fn finish(&self) -> Result<(), ChunkError> {
        if self.done {
            Ok(())
        } else {
            Err(ChunkError::Truncated)
        }
    }
}

/// Tracks the final flag of a stream sent without end-to-end encryption (transport encryption
/// only), so truncation and extension are still detected.
#[derive(Debug, Default)]
pub struct PlainChunks {
    done: bool,
}

impl PlainChunks {
    /// Accepts the next chunk's flags.
    ///
    /// # Errors
    /// [`ChunkError::AfterFinal`] for anything after the final chunk.
    pub fn next(&mut self, flags: u8) -> Result<(), ChunkError> {
        if self.done {
            return Err(ChunkError::AfterFinal);
        }
        self.done = flags & FLAG_FINAL != 0;
        Ok(())
    }

    /// As [`ChunkOpener::finish`].
    ///
    /// # Errors
    /// [`ChunkError::Truncated`] when the final chunk never came.
    pub fn finish(&self) -> Result<(), ChunkError> {
        if self.done {
            Ok(())
        } else {
            Err(ChunkError::Truncated)
        }
    }
}

/// The key that seals a stream's name: `HMAC(stream key, "hermes/v1 stream name")`, distinct
/// from every chunk key (chunk epochs derive theirs with another label), so the name's single
/// nonce never meets a chunk's.
fn name_key(secret: &SessionSecret) -> Result<LessSafeKey, ChunkError> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, secret.expose());
    let mut derived = Zeroizing::new([0u8; 32]);
    derived.copy_from_slice(hmac::sign(&k, b"hermes/v1 stream name").as_ref());
    aead_key(&derived)
}

fn name_aad(stream_id: &Id128) -> [u8; ID_LEN + 4] {
    let mut a = [0u8; ID_LEN + 4];
    a[..ID_LEN].copy_from_slice(&stream_id.0);
    a[ID_LEN..].copy_from_slice(b"hnam");
    a
}

/// Seals the name a stream carries in its `Open` frame, end to end like its chunks: only the
/// recipient's prekey opens it, and it is bound to the stream id. Returns ciphertext ‖ tag.
///
/// # Errors
/// [`ChunkError::Malformed`] only if the AEAD refuses (never expected).
pub fn seal_name(
    stream_id: &Id128,
    secret: &SessionSecret,
    name: &[u8],
) -> Result<Vec<u8>, ChunkError> {
    let key = name_key(secret)?;
    let mut out = name.to_vec();
    // One name per key, so the all-zero nonce is used exactly once.
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key([0u8; 12]),
        Aad::from(name_aad(stream_id)),
        &mut out,
    )
    .map_err(|_| ChunkError::Malformed)?;
    Ok(out)
}

/// Opens a name sealed by [`seal_name`].
///
/// # Errors
/// [`ChunkError::BadChunk`] when it does not authenticate for this stream.
pub fn open_name(
    stream_id: &Id128,
    secret: &SessionSecret,
    sealed: &[u8],
) -> Result<Vec<u8>, ChunkError> {
    let key = name_key(secret)?;
    let mut buf = sealed.to_vec();
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key([0u8; 12]),
            Aad::from(name_aad(stream_id)),
            &mut buf,
        )
        .map_err(|_| ChunkError::BadChunk)?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::tests::{prekey, session};
    use crate::envelope::SessionKind;
    use proptest::prelude::*;

    fn pair() -> (ChunkSealer, ChunkOpener) {
        let (h, s) = session(SessionKind::Stream);
        let r = h.open(&prekey(7)).unwrap();
        (
            ChunkSealer::new(h.session_id, &s).unwrap(),
            ChunkOpener::new(h.session_id, &r).unwrap(),
        )
    }

    fn frame(data: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; CHUNK_HEADER_LEN];
        f.extend_from_slice(data);
        f
    }

    fn split(f: &[u8]) -> (u8, Vec<u8>) {
        let mut h = [0u8; CHUNK_HEADER_LEN];
        h.copy_from_slice(&f[..CHUNK_HEADER_LEN]);
        let (len, flags) = decode_chunk_header(&h, MAX_CHUNK + TAG_LEN).unwrap();
        assert_eq!(len, f.len() - CHUNK_HEADER_LEN);
        (flags, f[CHUNK_HEADER_LEN..].to_vec())
    }

    fn seal_all(s: &mut ChunkSealer, parts: &[&[u8]]) -> Vec<Vec<u8>> {
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut f = frame(p);
                s.seal_frame(&mut f, i + 1 == parts.len()).unwrap();
                f
            })
            .collect()
    }

    #[test]
    fn chunks_round_trip_in_order() {
        let (mut s, mut o) = pair();
        let frames = seal_all(&mut s, &[b"one", b"", b"three", b"last"]);
        let mut out = Vec::new();
        for f in &frames {
            let (flags, mut body) = split(f);
            let n = o.open(flags, &mut body).unwrap();
            out.extend_from_slice(&body[..n]);
        }
        assert_eq!(out, b"onethreelast");
        assert_eq!(o.finish(), Ok(()));
        // Nothing may follow the final chunk on either side.
        assert_eq!(
            s.seal_frame(&mut frame(b"x"), false),
            Err(ChunkError::AfterFinal)
        );
        let (flags, mut body) = split(&frames[0]);
        assert_eq!(o.open(flags, &mut body), Err(ChunkError::AfterFinal));
    }

    #[test]
    fn reorder_truncation_extension_and_flag_flips_are_detected() {
        let (mut s, _) = pair();
        let frames = seal_all(&mut s, &[b"a", b"b", b"c"]);
        // Reordered.
        let (_, mut o) = pair();
        let (f, mut b) = split(&frames[1]);
        assert_eq!(o.open(f, &mut b), Err(ChunkError::BadChunk));
        // Truncated: the last chunk never comes.
        let (_, mut o) = pair();
        for fr in &frames[..2] {
            let (f, mut b) = split(fr);
            o.open(f, &mut b).unwrap();
        }
        assert_eq!(o.finish(), Err(ChunkError::Truncated));
        // A middle chunk presented as final (to cut the stream short) fails.
        let (_, mut o) = pair();
        let (f, mut b) = split(&frames[0]);
        o.open(f, &mut b).unwrap();
        let (f, mut b) = split(&frames[1]);
        assert_eq!(o.open(f | FLAG_FINAL, &mut b), Err(ChunkError::BadChunk));
        // The final chunk presented as non-final (to extend the stream) fails.
        let (_, mut o) = pair();
        for fr in &frames[..2] {
            let (f, mut b) = split(fr);
            o.open(f, &mut b).unwrap();
        }
        let (f, mut b) = split(&frames[2]);
        assert_eq!(o.open(f & !FLAG_FINAL, &mut b), Err(ChunkError::BadChunk));
        // Chunks of another stream (same key material, another stream id) do not authenticate.
        let (_, sec) = session(SessionKind::Stream);
        let mut other = ChunkOpener::new(Id128([9; 16]), &sec).unwrap();
        let (f, mut b) = split(&frames[0]);
        assert_eq!(other.open(f, &mut b), Err(ChunkError::BadChunk));
    }

    /// Opens a sealed chunk `frame` at position `index` of stream `id` directly with AES-GCM
    /// under `key`, independently of the key schedule under test.
    fn opens_under(key: &[u8; 32], id: Id128, index: u64, frame: &[u8]) -> bool {
        let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&index.to_be_bytes());
        let mut aad = Vec::new();
        aad.extend_from_slice(&id.0);
        aad.extend_from_slice(&index.to_le_bytes());
        aad.push(frame[CHUNK_HEADER_LEN - 1]);
        aad.extend_from_slice(b"hchk");
        let mut body = frame[CHUNK_HEADER_LEN..].to_vec();
        k.open_in_place(
            Nonce::assume_unique_for_key(n),
            Aad::from(aad.as_slice()),
            &mut body,
        )
        .is_ok()
    }

    #[test]
    fn keys_rotate_at_the_epoch_boundary_in_step() {
        let (h, secret) = session(SessionKind::Stream);
        let id = h.session_id;
        let mut s = ChunkSealer::new(id, &secret).unwrap();
        let mut o = ChunkOpener::new(id, &h.open(&prekey(7)).unwrap()).unwrap();
        let n = usize::try_from(REKEY_EVERY).unwrap() + 3;
        let mut kept = Vec::new();
        for i in 0..n {
            let mut f = frame(&[i as u8; 8]);
            s.seal_frame(&mut f, i + 1 == n).unwrap();
            let (flags, mut b) = split(&f);
            let len = o.open(flags, &mut b).unwrap();
            assert_eq!(&b[..len], &[i as u8; 8]);
            if i as u64 == REKEY_EVERY - 1 || i as u64 == REKEY_EVERY {
                kept.push(f);
            }
        }
        assert_eq!(o.finish(), Ok(()));
        // The documented schedule, computed here on its own: the first epoch uses the session
        // secret, the next one HMAC(secret, "hermes/v1 rekey").
        let first = *secret.expose();
        let mut second = [0u8; 32];
        second.copy_from_slice(
            hmac::sign(
                &hmac::Key::new(hmac::HMAC_SHA256, &first),
                b"hermes/v1 rekey",
            )
            .as_ref(),
        );
        let last_of_first = REKEY_EVERY - 1;
        assert!(opens_under(&first, id, last_of_first, &kept[0]));
        assert!(!opens_under(&second, id, last_of_first, &kept[0]));
        // The first chunk of the new epoch is sealed under the new key, and no longer under the
        // old one: a rekey that did nothing would fail here.
        assert!(opens_under(&second, id, REKEY_EVERY, &kept[1]));
        assert!(!opens_under(&first, id, REKEY_EVERY, &kept[1]));
    }

    #[test]
    fn header_bounds_are_checked_before_reading() {
        let h = encode_chunk_header(MAX_CHUNK + TAG_LEN + 1, false);
        assert!(decode_chunk_header(&h, MAX_CHUNK + TAG_LEN).is_err());
        let mut h = encode_chunk_header(10, true);
        assert_eq!(decode_chunk_header(&h, 100), Ok((10, FLAG_FINAL)));
        h[4] = 0x82;
        assert!(decode_chunk_header(&h, 100).is_err());
    }

    #[test]
    fn plain_chunks_detect_truncation_and_extension() {
        let mut p = PlainChunks::default();
        p.next(0).unwrap();
        assert_eq!(p.finish(), Err(ChunkError::Truncated));
        p.next(FLAG_FINAL).unwrap();
        assert_eq!(p.finish(), Ok(()));
        assert_eq!(p.next(0), Err(ChunkError::AfterFinal));
    }

    proptest! {
        #[test]
        fn any_flipped_bit_fails(len in 0usize..2000, idx in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (mut s, mut o) = pair();
            let mut f = frame(&vec![7u8; len]);
            s.seal_frame(&mut f, true).unwrap();
            let (flags, mut b) = split(&f);
            let i = idx.index(b.len());
            b[i] ^= 1 << bit;
            prop_assert_eq!(o.open(flags, &mut b), Err(ChunkError::BadChunk));
        }
    }

    #[test]
    fn names_open_only_for_their_stream_and_any_flipped_bit_fails() {
        let secret = SessionSecret::from_bytes([7; 32]);
        let id = Id128([3; 16]);
        let sealed = seal_name(&id, &secret, b"weights.bin").unwrap();
        assert_eq!(sealed.len(), 11 + TAG_LEN);
        assert_eq!(open_name(&id, &secret, &sealed).unwrap(), b"weights.bin");
        for bit in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(open_name(&id, &secret, &bad), Err(ChunkError::BadChunk));
        }
        assert!(open_name(&Id128([4; 16]), &secret, &sealed).is_err());
        assert!(open_name(&id, &SessionSecret::from_bytes([8; 32]), &sealed).is_err());
        // The name key is not the first chunk key: a name does not open as chunk 0.
        let mut o = ChunkOpener::new(id, &secret).unwrap();
        let mut body = sealed.clone();
        assert!(o.open(FLAG_FINAL, &mut body).is_err());
    }
}
