//! Why the receiving side refused a session, a message or a stream: one counter per reason.
//!
//! These are the receiver's own records. The peer is told far less (see
//! [`crate::frame::RejectCode`] and [`crate::frame::RefuseCode`]): crypto failures are never
//! explained to the party that caused them.

use crate::chunk::ChunkError;
use crate::envelope::{RatchetError, SessionReject};

/// A refusal reason with a stable counter name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RejectReason {
    /// A frame or header that does not decode, or a frame of the wrong direction.
    Malformed,
    /// A session header addressed to another node.
    WrongRecipient,
    /// A session header whose sender is not the connection's verified hotkey.
    SenderMismatch,
    /// A session header whose signature does not verify (tampered or forged).
    BadHeader,
    /// A replay: an old or already-seen session header, or a message counter already used.
    Replay,
    /// A session header dated in the future beyond the tolerated clock skew.
    FromFuture,
    /// A session sealed to a prekey this node no longer holds (erased) or never held.
    StalePrekey,
    /// A session key that could not be derived.
    Undecryptable,
    /// A message whose ciphertext does not authenticate (tampered).
    BadCiphertext,
    /// A message counter that skips ahead.
    OutOfOrder,
    /// A message for a session that is not open on this substream.
    NoSession,
    /// A message past its expiry.
    Expired,
    /// A message or frame larger than this node accepts.
    TooLarge,
    /// A message for a subnet outside this node's scope, or in which the sender is not admitted.
    OutOfScope,
    /// A stream chunk that does not authenticate (altered, reordered, dropped or duplicated).
    BadChunk,
    /// A stream that ended without its final chunk.
    StreamTruncated,
    /// Data after a stream's final chunk.
    StreamExtended,
    /// A stream refused for lack of room (too many open, nobody accepting).
    Busy,
}

impl RejectReason {
    /// Every reason, for listing counters.
    pub const ALL: [RejectReason; 18] = [
        RejectReason::Malformed,
        RejectReason::WrongRecipient,
        RejectReason::SenderMismatch,
        RejectReason::BadHeader,
        RejectReason::Replay,
        RejectReason::FromFuture,
        RejectReason::StalePrekey,
        RejectReason::Undecryptable,
        RejectReason::BadCiphertext,
        RejectReason::OutOfOrder,
        RejectReason::NoSession,
        RejectReason::Expired,
        RejectReason::TooLarge,
        RejectReason::OutOfScope,
        RejectReason::BadChunk,
        RejectReason::StreamTruncated,
        RejectReason::StreamExtended,
        RejectReason::Busy,
    ];

    /// A stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::WrongRecipient => "wrong_recipient",
            RejectReason::SenderMismatch => "sender_mismatch",
            RejectReason::BadHeader => "bad_header",
            RejectReason::Replay => "replay",
            RejectReason::FromFuture => "from_future",
            RejectReason::StalePrekey => "stale_prekey",
            RejectReason::Undecryptable => "undecryptable",
            RejectReason::BadCiphertext => "bad_ciphertext",
            RejectReason::OutOfOrder => "out_of_order",
            RejectReason::NoSession => "no_session",
            RejectReason::Expired => "expired",
            RejectReason::TooLarge => "too_large",
            RejectReason::OutOfScope => "out_of_scope",
            RejectReason::BadChunk => "bad_chunk",
            RejectReason::StreamTruncated => "stream_truncated",
            RejectReason::StreamExtended => "stream_extended",
            RejectReason::Busy => "busy",
        }
    }

    /// Index into [`RejectReason::ALL`], for counter arrays.
    pub fn index(self) -> usize {
        RejectReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(0)
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<SessionReject> for RejectReason {
    fn from(r: SessionReject) -> Self {
        match r {
            SessionReject::Malformed => RejectReason::Malformed,
            SessionReject::WrongRecipient => RejectReason::WrongRecipient,
            SessionReject::SenderMismatch => RejectReason::SenderMismatch,
            SessionReject::BadSignature => RejectReason::BadHeader,
            SessionReject::Replay => RejectReason::Replay,
            SessionReject::FromFuture => RejectReason::FromFuture,
            SessionReject::StalePrekey => RejectReason::StalePrekey,
            SessionReject::Undecryptable => RejectReason::Undecryptable,
        }
    }
}

impl From<RatchetError> for RejectReason {
    fn from(r: RatchetError) -> Self {
        match r {
            RatchetError::Replay => RejectReason::Replay,
            RatchetError::OutOfOrder => RejectReason::OutOfOrder,
            RatchetError::BadCiphertext => RejectReason::BadCiphertext,
        }
    }
}

impl From<ChunkError> for RejectReason {
    fn from(e: ChunkError) -> Self {
        match e {
            ChunkError::BadChunk => RejectReason::BadChunk,
            ChunkError::AfterFinal => RejectReason::StreamExtended,
            ChunkError::Truncated => RejectReason::StreamTruncated,
            ChunkError::Malformed => RejectReason::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indexes_match() {
        let mut names: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RejectReason::ALL.len());
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
