//! `messages` section: size limit, time to live, outbox and retries.

use super::{ByteSize, Check, ConfigError, HumanDuration};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `messages` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a JSON object with the fields max_size, ttl, outbox_max_bytes, retry_min, \
                 retry_max, inbox_capacity, inbox_max_bytes_per_peer, connect_timeout"
)]
pub struct MessagesConfig {
    /// Largest message payload, sent or received; larger ones are refused before sending (use a
    /// stream). Range 1B..=64MiB.
    pub max_size: ByteSize,
    /// How long an undelivered message is kept and retried. Range 1s..=30d.
    pub ttl: HumanDuration,
    /// Most payload bytes the outbox holds; `send` fails beyond it. At least `max_size`.
    pub outbox_max_bytes: ByteSize,
    /// First retry delay after a failed delivery; doubles per failure (with jitter). Range
    /// 10ms..=1h.
    pub retry_min: HumanDuration,
    /// Longest retry delay. Range retry_min..=1d.
    pub retry_max: HumanDuration,
    /// Messages buffered for the application before senders are slowed down. Range
    /// 1..=1000000.
    pub inbox_capacity: usize,
    /// Most payload bytes of one peer's messages waiting in the inbox; that peer's links stop
    /// reading beyond it (one message may overshoot it), so one peer cannot hold the whole
    /// inbox. Range 1KiB..=64GiB.
    pub inbox_max_bytes_per_peer: ByteSize,
    /// How long to wait for a connection to a recipient (messages and streams). Range
    /// 100ms..=10m.
    pub connect_timeout: HumanDuration,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        MessagesConfig {
            // 16MiB: room for a weights delta or a batch of results; anything larger belongs in
            // a stream, which does not hold the whole payload in memory.
            max_size: ByteSize::mib(16),
            // 24h: a recipient down for maintenance still gets its messages; older ones are
            // usually stale for a subnet's epochs anyway.
            ttl: HumanDuration::secs(24 * 3600),
            // 1GiB: room for 64 messages of the maximum size (or a million of 1KiB) waiting for
            // absent recipients, while recipients that stay away cannot fill the disk.
            outbox_max_bytes: ByteSize::gib(1),
            // 500ms: a quick second try for a peer that was reconnecting.
            retry_min: HumanDuration::millis(500),
            // 60s: an offline peer costs one attempt a minute, and is reached within a minute
            // of coming back (sooner when it connects to us).
            retry_max: HumanDuration::secs(60),
            // 1024: absorbs bursts while the application is busy, small enough that a stalled
            // application slows its senders instead of growing memory.
            inbox_capacity: 1024,
            // 64MiB: four messages of the default maximum size, or tens of thousands of small
            // ones, from each peer; without it one peer could fill the whole inbox (1024 ×
            // 16MiB ≈ 16GiB) and keep the others out.
            inbox_max_bytes_per_peer: ByteSize::mib(64),
            // 10s: enough to dial, handshake and verify a binding across continents.
            connect_timeout: HumanDuration::secs(10),
        }
    }
}

impl MessagesConfig {
    pub(super) fn validate(&self, check: &Check<'_>) -> Result<(), ConfigError> {
        let secs = Duration::from_secs;
        check.size(
            "messages.max_size",
            self.max_size,
            ByteSize(1),
            ByteSize::mib(64),
            "1B..=64MiB",
        )?;
        if self.outbox_max_bytes < self.max_size {
            return Err(check.err(
                "messages.outbox_max_bytes",
                format!(
                    "{} bytes is smaller than messages.max_size ({} bytes): no message of the maximum size would fit",
                    self.outbox_max_bytes.0, self.max_size.0
                ),
            ));
        }
        check.duration(
            "messages.ttl",
            self.ttl,
            secs(1),
            secs(30 * 86400),
            "1s..=30days",
        )?;
        check.duration(
            "messages.retry_min",
            self.retry_min,
            Duration::from_millis(10),
            secs(3600),
            "10ms..=1h",
        )?;
        check.duration(
            "messages.retry_max",
            self.retry_max,
            self.retry_min.0,
            secs(86400),
            "retry_min..=1day",
        )?;
        check.duration(
            "messages.connect_timeout",
            self.connect_timeout,
            Duration::from_millis(100),
            secs(600),
            "100ms..=10m",
        )?;
        check.size(
            "messages.inbox_max_bytes_per_peer",
            self.inbox_max_bytes_per_peer,
            ByteSize::kib(1),
            ByteSize::gib(64),
            "1KiB..=64GiB",
        )?;
        check.count(
            "messages.inbox_capacity",
            self.inbox_capacity,
            1,
            1_000_000,
            "1..=1000000",
        )
    }
}
