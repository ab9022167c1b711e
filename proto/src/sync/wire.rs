//! The `/hermes/sync/1` protocol's frames: how a receiver asks the sender's node for a
//! transfer's manifest and sealed chunks.
//!
//! A substream carries any number of request/answer pairs, one at a time, so a receiver keeps one
//! substream per parallel fetch and reuses it. Every frame has a fixed header:
//!
//! - request (25 bytes): `kind` (1 manifest, 2 chunk) ‖ transfer id (16) ‖ chunk index (u64 BE,
//!   0 for the manifest);
//! - answer header (5 bytes): `status` ‖ body length (u32 BE), then the body: the manifest or the
//!   sealed chunk when `status` is 0, otherwise a refusal text (UTF-8, ≤ [`MAX_REFUSAL_TEXT`]).
//!
//! The bytes inside are already protected (chunks are sealed under the content key and checked
//! against the manifest, the manifest against the ticket's root), so the frames only need to be
//! bounded and strict: a length past what the request can legitimately answer is refused from the
//! header alone, before any body is read.

use crate::codec::{DecodeError, Reader, Writer};
use crate::envelope::Id128;

use super::manifest::MAX_MANIFEST_LEN;

/// Length of an encoded [`Request`].
pub const REQUEST_LEN: usize = 1 + 16 + 8;
/// Length of an encoded [`AnswerHead`].
pub const ANSWER_HEAD_LEN: usize = 1 + 4;
/// Longest refusal text.
pub const MAX_REFUSAL_TEXT: usize = 512;
/// Longest body any answer can have (the largest manifest; chunks are smaller).
pub const MAX_BODY: usize = MAX_MANIFEST_LEN;

const KIND_MANIFEST: u8 = 1;
const KIND_CHUNK: u8 = 2;

/// What a receiver asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The transfer's manifest.
    Manifest {
        /// The transfer.
        transfer_id: Id128,
    },
    /// One sealed chunk.
    Chunk {
        /// The transfer.
        transfer_id: Id128,
        /// The chunk's index.
        index: u64,
    },
}

impl Request {
    /// The transfer asked about.
    pub fn transfer_id(&self) -> Id128 {
        match self {
            Request::Manifest { transfer_id } | Request::Chunk { transfer_id, .. } => *transfer_id,
        }
    }

    /// The fixed-size encoding.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let (kind, id, index) = match *self {
            Request::Manifest { transfer_id } => (KIND_MANIFEST, transfer_id, 0),
            Request::Chunk { transfer_id, index } => (KIND_CHUNK, transfer_id, index),
        };
        let mut w = Writer::with_capacity(REQUEST_LEN);
        w.u8(kind).put(&id.0).u64(index);
        let mut out = [0u8; REQUEST_LEN];
        out.copy_from_slice(&w.into_vec());
        out
    }

    /// Decodes a request strictly.
    ///
    /// # Errors
    /// [`DecodeError`] for a wrong length, an unknown kind, or a manifest request with a
    /// non-zero index.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let kind = r.u8()?;
        let transfer_id = Id128(r.array()?);
        let index = r.u64()?;
        r.finish("sync request")?;
        match kind {
            KIND_MANIFEST if index == 0 => Ok(Request::Manifest { transfer_id }),
            KIND_MANIFEST => Err(DecodeError::invalid(
                "sync request",
                "a manifest request carries index 0",
            )),
            KIND_CHUNK => Ok(Request::Chunk { transfer_id, index }),
            k => Err(DecodeError::invalid(
                "sync request",
                format!("unknown request kind {k}"),
            )),
        }
    }
}

/// Why the serving node refused a request. The receiver stops on every code but
/// [`Refusal::Busy`] and [`Refusal::Failed`], which are worth asking again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such transfer for this peer. A transfer offered to someone else gets the same answer,
    /// so a peer cannot probe which transfer ids exist.
    Unknown,
    /// The offer's ticket has expired.
    Expired,
    /// The sender revoked the offer.
    Revoked,
    /// The source file changed since the offer: its chunks can no longer be served.
    Changed,
    /// Too many requests in flight; ask again shortly.
    Busy,
    /// The request names a chunk past the end.
    BadRequest,
    /// The sender failed to read the chunk (an I/O error on its side).
    Failed,
}

impl Refusal {
    fn code(self) -> u8 {
        match self {
            Refusal::Unknown => 1,
            Refusal::Expired => 2,
            Refusal::Revoked => 3,
            Refusal::Changed => 4,
            Refusal::Busy => 5,
            Refusal::BadRequest => 6,
            Refusal::Failed => 7,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Refusal::Unknown,
            2 => Refusal::Expired,
            3 => Refusal::Revoked,
            4 => Refusal::Changed,
            5 => Refusal::Busy,
            6 => Refusal::BadRequest,
            7 => Refusal::Failed,
            _ => return None,
        })
    }

    /// Whether asking again later may succeed.
    pub fn retryable(self) -> bool {
        matches!(self, Refusal::Busy | Refusal::Failed)
    }

    /// What it means, for the receiving user.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Unknown => {
                "the sender's node does not offer this transfer to this node (revoked and \
                 forgotten, or never offered to us)"
            }
            Refusal::Expired => "the ticket has expired; ask the sender for a new one",
            Refusal::Revoked => "the sender revoked this transfer",
            Refusal::Changed => {
                "the source file changed on the sender's side since it was offered; ask for a \
                 new ticket"
            }
            Refusal::Busy => "the sender's node is busy",
            Refusal::BadRequest => "the sender's node refused the request as malformed",
            Refusal::Failed => "the sender's node could not read the chunk",
        }
    }
}

/// The header of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerHead {
    /// The body (`len` bytes) is the manifest or the sealed chunk asked for.
    Ok {
        /// Body length.
        len: u32,
    },
    /// Refused; the body (`len` bytes) is a UTF-8 explanation.
    Refused {
        /// Why.
        refusal: Refusal,
        /// Length of the explanation.
        len: u32,
    },
}

impl AnswerHead {
    /// The fixed-size encoding.
    pub fn encode(&self) -> [u8; ANSWER_HEAD_LEN] {
        let (status, len) = match *self {
            AnswerHead::Ok { len } => (0, len),
            AnswerHead::Refused { refusal, len } => (refusal.code(), len),
        };
        let mut out = [0u8; ANSWER_HEAD_LEN];
        out[0] = status;
        out[1..].copy_from_slice(&len.to_be_bytes());
        out
    }

    /// Decodes an answer header strictly: a known status and a body length within the bounds
    /// of what it may carry ([`MAX_BODY`], [`MAX_REFUSAL_TEXT`]).
    ///
    /// # Errors
    /// [`DecodeError`] for a wrong length, an unknown status or an over-long body.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let status = r.u8()?;
        let len = u32::from_be_bytes(r.array()?);
        r.finish("sync answer")?;
        if status == 0 {
            if len as usize > MAX_BODY {
                return Err(DecodeError::invalid(
                    "sync answer",
                    format!("body of {len} bytes; at most {MAX_BODY}"),
                ));
            }
            return Ok(AnswerHead::Ok { len });
        }
        let refusal = Refusal::from_code(status).ok_or_else(|| {
            DecodeError::invalid("sync answer", format!("unknown status {status}"))
        })?;
        if len as usize > MAX_REFUSAL_TEXT {
            return Err(DecodeError::invalid(
                "sync answer",
                format!("refusal text of {len} bytes; at most {MAX_REFUSAL_TEXT}"),
            ));
        }
        Ok(AnswerHead::Refused { refusal, len })
    }
}

/// A refusal's header and text, truncated to [`MAX_REFUSAL_TEXT`] on a character boundary.
pub fn refusal_frame(refusal: Refusal, text: &str) -> Vec<u8> {
    let mut end = text.len().min(MAX_REFUSAL_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text.as_bytes()[..end];
    let head = AnswerHead::Refused {
        refusal,
        len: u32::try_from(text.len()).unwrap_or(0),
    };
    let mut out = head.encode().to_vec();
    out.extend_from_slice(text);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_round_trip_and_are_strict() {
        let id = Id128([7; 16]);
        for r in [
            Request::Manifest { transfer_id: id },
            Request::Chunk {
                transfer_id: id,
                index: u64::MAX,
            },
        ] {
            assert_eq!(Request::decode(&r.encode()), Ok(r));
        }
        let mut m = Request::Manifest { transfer_id: id }.encode();
        m[REQUEST_LEN - 1] = 1;
        assert!(Request::decode(&m).is_err(), "manifest with an index");
        let mut k = m;
        k[0] = 3;
        assert!(Request::decode(&k).is_err(), "unknown kind");
        assert!(Request::decode(&m[..REQUEST_LEN - 1]).is_err(), "short");
        let mut long = m.to_vec();
        long.push(0);
        assert!(Request::decode(&long).is_err(), "trailing byte");
    }

    #[test]
    fn answer_heads_are_bounded_before_any_body_is_read() {
        let ok = AnswerHead::Ok {
            len: MAX_BODY as u32,
        };
        assert_eq!(AnswerHead::decode(&ok.encode()), Ok(ok));
        let big = AnswerHead::Ok {
            len: MAX_BODY as u32 + 1,
        };
        assert!(AnswerHead::decode(&big.encode()).is_err());
        let r = AnswerHead::Refused {
            refusal: Refusal::Changed,
            len: MAX_REFUSAL_TEXT as u32 + 1,
        };
        assert!(AnswerHead::decode(&r.encode()).is_err());
        assert!(
            AnswerHead::decode(&[9, 0, 0, 0, 0]).is_err(),
            "unknown status"
        );
    }

    #[test]
    fn refusal_text_is_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_REFUSAL_TEXT);
        let f = refusal_frame(Refusal::Revoked, &text);
        let head = AnswerHead::decode(&f[..ANSWER_HEAD_LEN]).unwrap();
        let AnswerHead::Refused { refusal, len } = head else {
            panic!("not a refusal")
        };
        assert_eq!(refusal, Refusal::Revoked);
        assert_eq!(len as usize, f.len() - ANSWER_HEAD_LEN);
        assert!(std::str::from_utf8(&f[ANSWER_HEAD_LEN..]).is_ok());
    }

    proptest! {
        #[test]
        fn decoders_never_panic_and_what_decodes_re_encodes(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(r) = Request::decode(&bytes) {
                prop_assert_eq!(&r.encode()[..], &bytes[..]);
            }
            if let Ok(h) = AnswerHead::decode(&bytes) {
                prop_assert_eq!(&h.encode()[..], &bytes[..]);
            }
        }
    }
}
