//! `encryption` section: how often end-to-end keys change.

use super::{Check, ConfigError, HumanDuration};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `encryption` section: how often keys change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a JSON object with the fields prekey_rotation, prekey_grace, \
                 session_max_messages, session_max_age, replay_window"
)]
pub struct EncryptionConfig {
    /// How often the X25519 prekey (named in the binding record) is replaced. Range 1s..=30d.
    pub prekey_rotation: HumanDuration,
    /// How long a replaced prekey still opens sessions before it is erased, covering peers that
    /// have not yet seen the new binding. Range 0s..=7d.
    pub prekey_grace: HumanDuration,
    /// Messages sealed in one session before a new one starts (one public-key operation per
    /// session, not per message). Range 1..=2^40.
    pub session_max_messages: u64,
    /// Age at which a session is replaced, healing after any compromise of its keys. Range
    /// 1s..=1d.
    pub session_max_age: HumanDuration,
    /// Oldest session header accepted (its creation time against this node's clock); older ones
    /// are refused as replays. Range 10s..=1d.
    pub replay_window: HumanDuration,
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        EncryptionConfig {
            // 1h: a stolen prekey opens at most the sessions sealed to it in that hour, and a
            // re-signed binding an hour costs nothing.
            prekey_rotation: HumanDuration::secs(3600),
            // 15m: bindings spread in seconds; a quarter hour covers peers that were briefly
            // away without keeping old keys around for long.
            prekey_grace: HumanDuration::secs(15 * 60),
            // 65536: one public-key operation per 64Ki messages is noise, and a session's key
            // still changes often under heavy traffic.
            session_max_messages: 1 << 16,
            // 10m: a compromised session key heals within minutes.
            session_max_age: HumanDuration::secs(600),
            // 10m, the same as session_max_age: session ids are remembered this long, so a replayed
            // header is either recognised or too old, and honest clocks may be minutes apart.
            replay_window: HumanDuration::secs(600),
        }
    }
}

impl EncryptionConfig {
    pub(super) fn validate(&self, check: &Check<'_>) -> Result<(), ConfigError> {
        let secs = Duration::from_secs;
        check.duration(
            "encryption.prekey_rotation",
            self.prekey_rotation,
            secs(1),
            secs(30 * 86400),
            "1s..=30days",
        )?;
        check.duration(
            "encryption.prekey_grace",
            self.prekey_grace,
            secs(0),
            secs(7 * 86400),
            "0s..=7days",
        )?;
        check.duration(
            "encryption.session_max_age",
            self.session_max_age,
            secs(1),
            secs(86400),
            "1s..=1day",
        )?;
        check.duration(
            "encryption.replay_window",
            self.replay_window,
            secs(10),
            secs(86400),
            "10s..=1day",
        )?;
        check.count(
            "encryption.session_max_messages",
            self.session_max_messages,
            1,
            1 << 40,
            "1..=2^40",
        )
    }
}
