//! Wire frames of the message protocol (`/hermes/msg/1`) and of the stream protocol's control
//! exchange (`/hermes/stream/1`).
//!
//! Every frame is `u32 length ‖ u8 version ‖ u8 type ‖ body`, little-endian; the length counts
//! everything after itself and is checked against the reader's maximum before anything is
//! allocated (see [`read_length`]).
//!
//! # Message protocol
//!
//! The sender opens one substream per destination and writes:
//! 1. `SessionInit` (a signed [`SessionHeader`]), then
//! 2. `Msg` frames sealed by the session's ratchet, and from time to time `Release` frames naming
//!    acknowledged message ids the receiver may forget;
//! 3. a new `SessionInit` whenever the session reaches its message or age limit.
//!
//! The receiver answers on the same substream with `Ack` (ids processed: delivered now or
//! earlier), `Reject` (one message refused, with a [`RejectCode`]) and `SessionRefused`
//! ([`RefuseCode`], with the receiver's fresh binding when the sender used a stale prekey).
//!
//! ```text
//! type 1 SessionInit     header (220 bytes)
//! type 2 Msg             [16] session id, u64 counter, ciphertext‖tag (rest of frame)
//! type 3 Ack             u16 n, n × [16] message id
//! type 4 Reject          [16] session id, u64 counter, u8 code
//! type 5 SessionRefused  [16] session id, u8 code, u16 len, binding (len bytes, 0 = none)
//! type 6 Release         u16 n, n × [16] message id
//! ```
//!
//! # Stream protocol
//!
//! The opener writes `Open`; the receiver answers `Accept` or `Refuse`; then the opener writes
//! chunk frames ([`crate::chunk`]); once the final chunk authenticates the receiver writes `Done`
//! with the byte count, so the sender knows the data arrived whole.
//!
//! An `Open` may carry a name (e.g. the file's), sealed with [`crate::chunk::seal_name`] when the
//! stream is end-to-end encrypted. Unnamed, `Open` is byte for byte what it was before names
//! existed, so unnamed streams interoperate with nodes that predate them; such a node refuses a
//! named `Open` (unknown flag bit) rather than misread it. The decoder is strict: unknown flag
//! bits, an empty or over-long name, and trailing bytes are all refused.
//!
//! ```text
//! type 16 Open      header (220 bytes), u8 flags (bit 0: end-to-end encrypted, bit 1: named),
//!                   u32 chunk max, and when named: u16 len (1..=271), name (len bytes)
//! type 17 Accept    (empty)
//! type 18 Refuse    u8 code, u16 len, binding (len bytes, 0 = none)
//! type 19 Done      u64 bytes received
//! ```

use crate::binding::MAX_ENCODED_LEN as MAX_BINDING_LEN;
use crate::codec::{DecodeError, Reader, Writer};
use crate::envelope::{Id128, SessionHeader, SESSION_HEADER_LEN, TAG_LEN};
use crate::filename::MAX_NAME_LEN;

/// Version byte of every frame.
pub const FRAME_VERSION: u8 = 1;
/// Length of the `u32` prefix.
pub const LEN_PREFIX: usize = 4;
/// Most ids one `Ack` or `Release` frame may carry.
pub const MAX_IDS: usize = 4096;
/// Bytes of a `Msg` frame before its ciphertext (after the length prefix).
pub const MSG_PREFIX_LEN: usize = 2 + 16 + 8;
/// Longest name field of an `Open` frame: a name of [`MAX_NAME_LEN`] bytes and its AEAD tag.
pub const MAX_OPEN_NAME: usize = MAX_NAME_LEN + TAG_LEN;
/// `Open` flag: chunks are end-to-end encrypted.
const OPEN_E2E: u8 = 1;
/// `Open` flag: a name follows the chunk maximum.
const OPEN_NAMED: u8 = 2;
/// Upper bound on any control frame (everything but `Msg`).
pub const MAX_CONTROL_FRAME: usize = 2 + 2 + MAX_IDS * 16;

const T_SESSION_INIT: u8 = 1;
const T_MSG: u8 = 2;
const T_ACK: u8 = 3;
const T_REJECT: u8 = 4;
const T_SESSION_REFUSED: u8 = 5;
const T_RELEASE: u8 = 6;
const T_OPEN: u8 = 16;
const T_ACCEPT: u8 = 17;
const T_REFUSE: u8 = 18;
const T_DONE: u8 = 19;

/// Why the receiver refused one message. Terminal codes end the message's life at the sender
/// (it is dropped from the outbox and reported failed); `Retry` leaves it queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum RejectCode {
    /// Larger than the receiver accepts. Terminal.
    TooLarge,
    /// Past its expiry when it arrived. Terminal.
    Expired,
    /// For a subnet the receiver does not serve, or in which the sender is not admitted. Terminal.
    OutOfScope,
    /// Refused for a reason the receiver does not disclose; retried in a new session later.
    Retry,
}

impl RejectCode {
    fn code(self) -> u8 {
        match self {
            RejectCode::TooLarge => 1,
            RejectCode::Expired => 2,
            RejectCode::OutOfScope => 3,
            RejectCode::Retry => 4,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => RejectCode::TooLarge,
            2 => RejectCode::Expired,
            3 => RejectCode::OutOfScope,
            4 => RejectCode::Retry,
            _ => return None,
        })
    }

    /// Whether the sender should give the message up.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RejectCode::Retry)
    }

    /// A stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::TooLarge => "too_large",
            RejectCode::Expired => "expired",
            RejectCode::OutOfScope => "out_of_scope",
            RejectCode::Retry => "refused",
        }
    }
}

/// Why a session or stream was refused, as told to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum RefuseCode {
    /// Sealed to a prekey the receiver no longer holds; the refusal carries the current binding.
    StalePrekey,
    /// The receiver has no room (too many open streams, or nobody accepting streams).
    Busy,
    /// Refused; the receiver does not say why.
    Refused,
}

impl RefuseCode {
    fn code(self) -> u8 {
        match self {
            RefuseCode::StalePrekey => 1,
            RefuseCode::Busy => 2,
            RefuseCode::Refused => 3,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => RefuseCode::StalePrekey,
            2 => RefuseCode::Busy,
            3 => RefuseCode::Refused,
            _ => return None,
        })
    }
}

/// A frame of `/hermes/msg/1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsgFrame {
    /// Starts a new session on this substream.
    SessionInit(SessionHeader),
    /// One sealed message.
    Msg {
        /// Session the message belongs to.
        session_id: Id128,
        /// Ratchet counter.
        counter: u64,
        /// Ciphertext and tag.
        ciphertext: Vec<u8>,
    },
    /// Messages the receiver has processed (delivered now, or de-duplicated).
    Ack(Vec<Id128>),
    /// One message refused.
    Reject {
        /// Its session.
        session_id: Id128,
        /// Its counter.
        counter: u64,
        /// Why.
        code: RejectCode,
    },
    /// The session was refused; the sender must start a new one.
    SessionRefused {
        /// The refused session.
        session_id: Id128,
        /// Why.
        code: RefuseCode,
        /// The receiver's current binding record, when the prekey was stale.
        binding: Option<Vec<u8>>,
    },
    /// Acknowledged ids the receiver may drop from its seen-set.
    Release(Vec<Id128>),
}

/// A control frame of `/hermes/stream/1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamControl {
    /// Opens a stream.
    Open {
        /// The stream's signed session header; its session id is the stream id.
        header: Box<SessionHeader>,
        /// Whether chunks are end-to-end encrypted (otherwise only the transport encrypts them).
        e2e: bool,
        /// Largest chunk plaintext the sender will use.
        chunk_max: u32,
        /// The stream's name as sent: sealed (see [`crate::chunk::seal_name`]) when `e2e`,
        /// plain otherwise; 1..=[`MAX_OPEN_NAME`] bytes.
        name: Option<Vec<u8>>,
    },
    /// The receiver accepts the stream.
    Accept,
    /// The receiver refuses the stream.
    Refuse {
        /// Why.
        code: RefuseCode,
        /// The receiver's current binding, when the prekey was stale.
        binding: Option<Vec<u8>>,
    },
    /// Every chunk arrived and authenticated.
    Done {
        /// Plaintext bytes received.
        bytes: u64,
    },
}

/// Reads a frame's `u32` length prefix and checks it against `max`.
///
/// # Errors
/// [`DecodeError::Invalid`] when it exceeds `max` or is too short to hold a version and type.
pub fn read_length(prefix: [u8; LEN_PREFIX], max: usize) -> Result<usize, DecodeError> {
    let len = usize::try_from(u32::from_le_bytes(prefix))
        .map_err(|_| DecodeError::invalid("frame.length", "does not fit in memory"))?;
    if len > max {
        return Err(DecodeError::invalid(
            "frame.length",
            format!("{len} bytes exceeds the maximum {max}"),
        ));
    }
    if len < 2 {
        return Err(DecodeError::invalid(
            "frame.length",
            "shorter than a frame header",
        ));
    }
    Ok(len)
}

fn start(cap: usize, ty: u8) -> Writer {
    let mut w = Writer::with_capacity(LEN_PREFIX + cap);
    w.put(&[0; LEN_PREFIX]).u8(FRAME_VERSION).u8(ty);
    w
}

fn finish(w: Writer) -> Vec<u8> {
    let mut v = w.into_vec();
    let len = u32::try_from(v.len() - LEN_PREFIX).unwrap_or(u32::MAX);
    v[..LEN_PREFIX].copy_from_slice(&len.to_le_bytes());
    v
}

fn write_ids(w: &mut Writer, ids: &[Id128]) {
    let n = ids.len().min(MAX_IDS);
    w.u16(u16::try_from(n).unwrap_or(u16::MAX));
    for id in &ids[..n] {
        w.put(&id.0);
    }
}

fn read_ids(r: &mut Reader<'_>, field: &'static str) -> Result<Vec<Id128>, DecodeError> {
    let n = usize::from(r.u16()?);
    if n > MAX_IDS {
        return Err(DecodeError::invalid(
            field,
            format!("{n} ids; at most {MAX_IDS}"),
        ));
    }
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(Id128(r.array()?));
    }
    Ok(ids)
}

fn write_binding(w: &mut Writer, binding: &Option<Vec<u8>>) {
    match binding {
        Some(b) if b.len() <= MAX_BINDING_LEN => {
            w.bytes_u16(b);
        }
        _ => {
            w.u16(0);
        }
    }
}

fn read_binding(r: &mut Reader<'_>) -> Result<Option<Vec<u8>>, DecodeError> {
    let b = r.bytes_u16("frame.binding", MAX_BINDING_LEN)?;
    Ok((!b.is_empty()).then(|| b.to_vec()))
}

fn header(r: &mut Reader<'_>, expect: &[u8]) -> Result<u8, DecodeError> {
    let version = r.u8()?;
    if version != FRAME_VERSION {
        return Err(DecodeError::invalid(
            "frame.version",
            format!("unsupported version {version}; this build speaks {FRAME_VERSION}"),
        ));
    }
    let ty = r.u8()?;
    if !expect.contains(&ty) {
        return Err(DecodeError::invalid(
            "frame.type",
            format!("unknown frame type {ty}"),
        ));
    }
    Ok(ty)
}

/// The bytes of a `Msg` frame up to its ciphertext (length prefix included): write these, then
/// the ciphertext, without copying the ciphertext into a new buffer.
pub fn msg_prefix(
    session_id: &Id128,
    counter: u64,
    ciphertext_len: usize,
) -> [u8; LEN_PREFIX + MSG_PREFIX_LEN] {
    let mut p = [0u8; LEN_PREFIX + MSG_PREFIX_LEN];
    let len = u32::try_from(MSG_PREFIX_LEN + ciphertext_len).unwrap_or(u32::MAX);
    p[..4].copy_from_slice(&len.to_le_bytes());
    p[4] = FRAME_VERSION;
    p[5] = T_MSG;
    p[6..22].copy_from_slice(&session_id.0);
    p[22..30].copy_from_slice(&counter.to_le_bytes());
    p
}

/// Parses the session id and counter at the front of a `Msg` frame body (after the length
/// prefix), e.g. to refuse an over-long frame without reading it all.
///
/// # Errors
/// [`DecodeError`] when `prefix` is not the start of a `Msg` frame.
pub fn parse_msg_prefix(prefix: &[u8; MSG_PREFIX_LEN]) -> Result<(Id128, u64), DecodeError> {
    let mut r = Reader::new(prefix);
    header(&mut r, &[T_MSG])?;
    let session = Id128(r.array()?);
    let counter = r.u64()?;
    Ok((session, counter))
}

impl MsgFrame {
    /// The complete frame, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            MsgFrame::SessionInit(h) => {
                let mut w = start(2 + SESSION_HEADER_LEN, T_SESSION_INIT);
                w.put(&h.encode());
                finish(w)
            }
            MsgFrame::Msg {
                session_id,
                counter,
                ciphertext,
            } => {
                let mut v = Vec::with_capacity(LEN_PREFIX + MSG_PREFIX_LEN + ciphertext.len());
                v.extend_from_slice(&msg_prefix(session_id, *counter, ciphertext.len()));
                v.extend_from_slice(ciphertext);
                v
            }
            MsgFrame::Ack(ids) => {
                let mut w = start(4 + 16 * ids.len(), T_ACK);
                write_ids(&mut w, ids);
                finish(w)
            }
            MsgFrame::Reject {
                session_id,
                counter,
                code,
            } => {
                let mut w = start(2 + 16 + 8 + 1, T_REJECT);
                w.put(&session_id.0).u64(*counter).u8(code.code());
                finish(w)
            }
            MsgFrame::SessionRefused {
                session_id,
                code,
                binding,
            } => {
                let mut w = start(2 + 16 + 1 + 2 + MAX_BINDING_LEN, T_SESSION_REFUSED);
                w.put(&session_id.0).u8(code.code());
                write_binding(&mut w, binding);
                finish(w)
            }
            MsgFrame::Release(ids) => {
                let mut w = start(4 + 16 * ids.len(), T_RELEASE);
                write_ids(&mut w, ids);
                finish(w)
            }
        }
    }

    /// Decodes a frame body (everything after the length prefix), taking ownership so that a
    /// `Msg` ciphertext is moved rather than copied.
    ///
    /// # Errors
    /// [`DecodeError`] for an unknown version or type, bad lengths, or trailing bytes.
    pub fn decode_body(mut body: Vec<u8>) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&body);
        let ty = header(
            &mut r,
            &[
                T_SESSION_INIT,
                T_MSG,
                T_ACK,
                T_REJECT,
                T_SESSION_REFUSED,
                T_RELEASE,
            ],
        )?;
        let frame = match ty {
            T_SESSION_INIT => MsgFrame::SessionInit(SessionHeader::read(&mut r)?),
            T_MSG => {
                let session_id = Id128(r.array()?);
                let counter = r.u64()?;
                body.drain(..MSG_PREFIX_LEN);
                return Ok(MsgFrame::Msg {
                    session_id,
                    counter,
                    ciphertext: body,
                });
            }
            T_ACK => MsgFrame::Ack(read_ids(&mut r, "ack.ids")?),
            T_REJECT => {
                let session_id = Id128(r.array()?);
                let counter = r.u64()?;
                let code = RejectCode::from_code(r.u8()?)
                    .ok_or_else(|| DecodeError::invalid("reject.code", "unknown code"))?;
                MsgFrame::Reject {
                    session_id,
                    counter,
                    code,
                }
            }
            T_SESSION_REFUSED => {
                let session_id = Id128(r.array()?);
                let code = RefuseCode::from_code(r.u8()?)
                    .ok_or_else(|| DecodeError::invalid("refused.code", "unknown code"))?;
                let binding = read_binding(&mut r)?;
                MsgFrame::SessionRefused {
                    session_id,
                    code,
                    binding,
                }
            }
            _ => MsgFrame::Release(read_ids(&mut r, "release.ids")?),
        };
        r.finish("msg frame")?;
        Ok(frame)
    }

    /// Decodes a complete frame, length prefix included, refusing one longer than `max`.
    ///
    /// # Errors
    /// As [`read_length`] and [`MsgFrame::decode_body`]; [`DecodeError::Incomplete`] when cut
    /// short.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Self, DecodeError> {
        let body = split_frame(bytes, max)?;
        Self::decode_body(body.to_vec())
    }
}

/// Splits a complete frame into its body, checking the prefix.
fn split_frame(bytes: &[u8], max: usize) -> Result<&[u8], DecodeError> {
    let mut r = Reader::new(bytes);
    let len = read_length(r.array()?, max)?;
    let body = r.take(len)?;
    r.finish("frame")?;
    Ok(body)
}

impl StreamControl {
    /// The complete frame, length prefix included.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            StreamControl::Open {
                header,
                e2e,
                chunk_max,
                name,
            } => {
                // A name the decoder would refuse is not sent (callers bound it first).
                let name = name
                    .as_deref()
                    .filter(|n| (1..=MAX_OPEN_NAME).contains(&n.len()));
                let mut flags = if *e2e { OPEN_E2E } else { 0 };
                if name.is_some() {
                    flags |= OPEN_NAMED;
                }
                let mut w = start(2 + SESSION_HEADER_LEN + 7 + MAX_OPEN_NAME, T_OPEN);
                w.put(&header.encode())
                    .u8(flags)
                    .put(&chunk_max.to_le_bytes());
                if let Some(n) = name {
                    w.bytes_u16(n);
                }
                finish(w)
            }
            StreamControl::Accept => finish(start(2, T_ACCEPT)),
            StreamControl::Refuse { code, binding } => {
                let mut w = start(2 + 1 + 2 + MAX_BINDING_LEN, T_REFUSE);
                w.u8(code.code());
                write_binding(&mut w, binding);
                finish(w)
            }
            StreamControl::Done { bytes } => {
                let mut w = start(2 + 8, T_DONE);
                w.u64(*bytes);
                finish(w)
            }
        }
    }

    /// Decodes a frame body (after the length prefix).
    ///
    /// # Errors
    /// [`DecodeError`] for an unknown version, type, flag or code, or trailing bytes.
    pub fn decode_body(body: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let ty = header(&mut r, &[T_OPEN, T_ACCEPT, T_REFUSE, T_DONE])?;
        let frame = match ty {
            T_OPEN => {
                let header = Box::new(SessionHeader::read(&mut r)?);
                let flags = r.u8()?;
                if flags & !(OPEN_E2E | OPEN_NAMED) != 0 {
                    return Err(DecodeError::invalid("open.flags", "unknown flag bits"));
                }
                let chunk_max = u32::from_le_bytes(r.array()?);
                let name = if flags & OPEN_NAMED != 0 {
                    let n = r.bytes_u16("open.name", MAX_OPEN_NAME)?;
                    if n.is_empty() {
                        return Err(DecodeError::invalid("open.name", "empty name"));
                    }
                    Some(n.to_vec())
                } else {
                    None
                };
                StreamControl::Open {
                    header,
                    e2e: flags & OPEN_E2E != 0,
                    chunk_max,
                    name,
                }
            }
            T_ACCEPT => StreamControl::Accept,
            T_REFUSE => {
                let code = RefuseCode::from_code(r.u8()?)
                    .ok_or_else(|| DecodeError::invalid("refuse.code", "unknown code"))?;
                StreamControl::Refuse {
                    code,
                    binding: read_binding(&mut r)?,
                }
            }
            _ => StreamControl::Done { bytes: r.u64()? },
        };
        r.finish("stream control frame")?;
        Ok(frame)
    }

    /// Decodes a complete frame, length prefix included.
    ///
    /// # Errors
    /// As [`StreamControl::decode_body`]; [`DecodeError::Incomplete`] when cut short.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_body(split_frame(bytes, MAX_CONTROL_FRAME)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::tests::session;
    use crate::envelope::SessionKind;
    use proptest::prelude::*;

    fn all_msg_frames() -> Vec<MsgFrame> {
        let (h, _) = session(SessionKind::Messages);
        vec![
            MsgFrame::SessionInit(h),
            MsgFrame::Msg {
                session_id: Id128([1; 16]),
                counter: 7,
                ciphertext: vec![9; 40],
            },
            MsgFrame::Msg {
                session_id: Id128([1; 16]),
                counter: 0,
                ciphertext: vec![],
            },
            MsgFrame::Ack(vec![Id128([2; 16]), Id128([3; 16])]),
            MsgFrame::Ack(vec![]),
            MsgFrame::Reject {
                session_id: Id128([4; 16]),
                counter: u64::MAX,
                code: RejectCode::TooLarge,
            },
            MsgFrame::SessionRefused {
                session_id: Id128([5; 16]),
                code: RefuseCode::StalePrekey,
                binding: Some(vec![1, 2, 3]),
            },
            MsgFrame::SessionRefused {
                session_id: Id128([5; 16]),
                code: RefuseCode::Refused,
                binding: None,
            },
            MsgFrame::Release(vec![Id128([6; 16])]),
        ]
    }

    fn all_stream_frames() -> Vec<StreamControl> {
        let (h, _) = session(SessionKind::Stream);
        vec![
            StreamControl::Open {
                header: Box::new(h.clone()),
                e2e: true,
                chunk_max: 1 << 16,
                name: None,
            },
            StreamControl::Open {
                header: Box::new(h.clone()),
                e2e: true,
                chunk_max: 1 << 16,
                name: Some(vec![0xAB; MAX_OPEN_NAME]),
            },
            StreamControl::Open {
                header: Box::new(h),
                e2e: false,
                chunk_max: 1024,
                name: Some(b"x".to_vec()),
            },
            StreamControl::Accept,
            StreamControl::Refuse {
                code: RefuseCode::Busy,
                binding: None,
            },
            StreamControl::Done { bytes: 1 << 40 },
        ]
    }

    #[test]
    fn every_frame_round_trips_and_every_prefix_is_incomplete() {
        for f in all_msg_frames() {
            let bytes = f.encode();
            assert_eq!(MsgFrame::decode(&bytes, 1 << 20).unwrap(), f);
            for cut in 0..bytes.len() {
                assert!(
                    matches!(
                        MsgFrame::decode(&bytes[..cut], 1 << 20),
                        Err(DecodeError::Incomplete { .. })
                    ),
                    "{f:?} cut at {cut}"
                );
            }
        }
        for f in all_stream_frames() {
            let bytes = f.encode();
            assert_eq!(StreamControl::decode(&bytes).unwrap(), f);
            for cut in 0..bytes.len() {
                assert!(matches!(
                    StreamControl::decode(&bytes[..cut]),
                    Err(DecodeError::Incomplete { .. })
                ));
            }
        }
    }

    #[test]
    fn unnamed_open_keeps_its_old_layout_and_names_are_checked() {
        let (h, _) = session(SessionKind::Stream);
        let open = |name: Option<Vec<u8>>| StreamControl::Open {
            header: Box::new(h.clone()),
            e2e: true,
            chunk_max: 4096,
            name,
        };
        // The layout before names: header, flags = 1, chunk max.
        let mut old = (2 + SESSION_HEADER_LEN as u32 + 5).to_le_bytes().to_vec();
        old.extend_from_slice(&[FRAME_VERSION, T_OPEN]);
        old.extend_from_slice(&h.encode());
        old.push(1);
        old.extend_from_slice(&4096u32.to_le_bytes());
        assert_eq!(open(None).encode(), old);
        assert_eq!(StreamControl::decode(&old).unwrap(), open(None));
        // Named: flag bit 1, then the length-prefixed name.
        let named = open(Some(b"a.bin".to_vec())).encode();
        assert_eq!(named[4 + 2 + SESSION_HEADER_LEN], OPEN_E2E | OPEN_NAMED);
        // A named flag with an empty name, an over-long name, unknown flags, trailing bytes.
        let flag_at = 4 + 2 + SESSION_HEADER_LEN;
        let mut empty = old.clone();
        empty[flag_at] |= OPEN_NAMED;
        empty.extend_from_slice(&0u16.to_le_bytes());
        empty[0] += 2;
        assert!(matches!(
            StreamControl::decode(&empty),
            Err(DecodeError::Invalid {
                field: "open.name",
                ..
            })
        ));
        let mut long = old.clone();
        long[flag_at] |= OPEN_NAMED;
        long.extend_from_slice(&u16::try_from(MAX_OPEN_NAME + 1).unwrap().to_le_bytes());
        long.extend_from_slice(&[b'a'; MAX_OPEN_NAME + 1]);
        let len = u32::try_from(long.len() - 4).unwrap();
        long[..4].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(
            StreamControl::decode(&long),
            Err(DecodeError::Invalid {
                field: "open.name",
                ..
            })
        ));
        let mut flags = old.clone();
        flags[flag_at] |= 4;
        assert!(matches!(
            StreamControl::decode(&flags),
            Err(DecodeError::Invalid {
                field: "open.flags",
                ..
            })
        ));
        let mut trailing = named.clone();
        trailing.push(0);
        trailing[0] += 1;
        assert!(StreamControl::decode(&trailing).is_err());
        // An unsendable name is left out rather than sent malformed.
        assert_eq!(open(Some(Vec::new())).encode(), old);
    }

    #[test]
    fn bad_frames_are_refused_with_a_field() {
        let mut ack = MsgFrame::Ack(vec![]).encode();
        ack[4] = 9;
        assert!(matches!(
            MsgFrame::decode(&ack, 100),
            Err(DecodeError::Invalid {
                field: "frame.version",
                ..
            })
        ));
        let mut ack = MsgFrame::Ack(vec![]).encode();
        ack[5] = 77;
        assert!(matches!(
            MsgFrame::decode(&ack, 100),
            Err(DecodeError::Invalid {
                field: "frame.type",
                ..
            })
        ));
        // Stream types are not message frames and vice versa.
        assert!(MsgFrame::decode(&StreamControl::Accept.encode(), 100).is_err());
        assert!(StreamControl::decode(&MsgFrame::Ack(vec![]).encode()).is_err());
        // Over-long frames are refused from the prefix alone.
        let big = MsgFrame::Msg {
            session_id: Id128([1; 16]),
            counter: 1,
            ciphertext: vec![0; 100],
        }
        .encode();
        assert!(matches!(
            MsgFrame::decode(&big, 50),
            Err(DecodeError::Invalid {
                field: "frame.length",
                ..
            })
        ));
        // Id counts above the limit are refused before reading them.
        let mut w = start(4, T_ACK);
        w.u16(u16::try_from(MAX_IDS + 1).unwrap());
        assert!(matches!(
            MsgFrame::decode(&finish(w), 1 << 20),
            Err(DecodeError::Invalid {
                field: "ack.ids",
                ..
            })
        ));
        // Trailing bytes.
        let mut rej = MsgFrame::Reject {
            session_id: Id128([4; 16]),
            counter: 1,
            code: RejectCode::Retry,
        }
        .encode();
        rej.push(0);
        rej[0] += 1;
        assert!(MsgFrame::decode(&rej, 100).is_err());
        // Unknown codes.
        let mut rej = MsgFrame::Reject {
            session_id: Id128([4; 16]),
            counter: 1,
            code: RejectCode::Retry,
        }
        .encode();
        let last = rej.len() - 1;
        rej[last] = 0;
        assert!(MsgFrame::decode(&rej, 100).is_err());
    }

    #[test]
    fn msg_prefix_parses_back() {
        let p = msg_prefix(&Id128([8; 16]), 99, 1234);
        let mut body = [0u8; MSG_PREFIX_LEN];
        body.copy_from_slice(&p[LEN_PREFIX..]);
        assert_eq!(parse_msg_prefix(&body), Ok((Id128([8; 16]), 99)));
        assert_eq!(
            read_length(p[..4].try_into().unwrap(), usize::MAX),
            Ok(MSG_PREFIX_LEN + 1234)
        );
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = MsgFrame::decode(&bytes, 1 << 20);
            let _ = MsgFrame::decode_body(bytes.clone());
            let _ = StreamControl::decode(&bytes);
            let _ = StreamControl::decode_body(&bytes);
        }

        #[test]
        fn open_frames_round_trip(
            name in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..=MAX_OPEN_NAME)),
            e2e in any::<bool>(),
            chunk_max in any::<u32>(),
        ) {
            let (h, _) = session(SessionKind::Stream);
            let f = StreamControl::Open { header: Box::new(h), e2e, chunk_max, name };
            let bytes = f.encode();
            prop_assert_eq!(StreamControl::decode(&bytes).unwrap(), f);
        }

        #[test]
        fn id_lists_round_trip(ids in proptest::collection::vec(any::<[u8; 16]>(), 0..50)) {
            let ids: Vec<Id128> = ids.into_iter().map(Id128).collect();
            let f = MsgFrame::Release(ids);
            prop_assert_eq!(MsgFrame::decode(&f.encode(), 1 << 20).unwrap(), f);
        }
    }
}
