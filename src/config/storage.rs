//! `storage` section: tuning of the node's sled database.

use super::{ByteSize, Check, ConfigError, HumanDuration};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `storage` section: tuning of the node's sled database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a JSON object with the fields cache_size, flush_every"
)]
pub struct StorageConfig {
    /// Page cache size. Range 1MiB..=64GiB.
    pub cache_size: ByteSize,
    /// Interval of background flushes to disk; bounds what a power cut can lose (acknowledged
    /// writes that must be durable are flushed explicitly). Range 10ms..=1m.
    pub flush_every: HumanDuration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            // 64MiB: sled's own default (1GB) is far too much for a process that also hosts a
            // subnet's model.
            cache_size: ByteSize::mib(64),
            // 500ms: writes that must be durable are flushed explicitly, so this only bounds what
            // else a power cut can lose, for two background flushes a second.
            flush_every: HumanDuration::millis(500),
        }
    }
}

impl StorageConfig {
    pub(super) fn validate(&self, check: &Check<'_>) -> Result<(), ConfigError> {
        check.size(
            "storage.cache_size",
            self.cache_size,
            ByteSize::mib(1),
            ByteSize::gib(64),
            "1MiB..=64GiB",
        )?;
        check.duration(
            "storage.flush_every",
            self.flush_every,
            Duration::from_millis(10),
            Duration::from_secs(60),
            "10ms..=1m",
        )
    }
}
