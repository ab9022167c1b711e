//! `streams` section: chunking, queueing and whether plaintext streams are accepted.

use super::{ByteSize, Check, ConfigError};
use serde::{Deserialize, Serialize};

/// `streams` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a JSON object with the fields chunk_size, max_incoming, max_incoming_per_peer, \
                 allow_plaintext"
)]
pub struct StreamsConfig {
    /// Plaintext bytes per encrypted chunk of the streams this node opens. Larger chunks cost
    /// fewer frames; each side buffers one. Range 1KiB..=1MiB.
    pub chunk_size: ByteSize,
    /// Incoming streams waiting for the application to take them; more are refused as busy.
    /// Range 1..=4096.
    pub max_incoming: usize,
    /// Incoming streams from one peer waiting for the application to take them; more from that
    /// peer are refused as busy, so one peer cannot take every slot. Range 1..=4096; at most
    /// `max_incoming` in effect.
    pub max_incoming_per_peer: usize,
    /// Accept streams that peers open without end-to-end encryption (transport encryption only).
    pub allow_plaintext: bool,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        StreamsConfig {
            // 256KiB: per-chunk framing and AEAD cost is negligible at this size, and the one
            // buffered chunk per side stays small.
            chunk_size: ByteSize::kib(256),
            // 64: more concurrent transfers than an application usually handles, few enough that
            // a peer cannot pile up unbounded work.
            max_incoming: 64,
            // 16: a quarter of the queue, so at least four peers can always have streams waiting.
            max_incoming_per_peer: 16,
            // Off: every stream is end-to-end encrypted unless the operator opts out.
            allow_plaintext: false,
        }
    }
}

impl StreamsConfig {
    pub(super) fn validate(&self, check: &Check<'_>) -> Result<(), ConfigError> {
        check.size(
            "streams.chunk_size",
            self.chunk_size,
            ByteSize::kib(1),
            ByteSize::mib(1),
            "1KiB..=1MiB",
        )?;
        check.count(
            "streams.max_incoming",
            self.max_incoming,
            1,
            4096,
            "1..=4096",
        )?;
        check.count(
            "streams.max_incoming_per_peer",
            self.max_incoming_per_peer,
            1,
            4096,
            "1..=4096",
        )
    }
}
