//! `identity` section: the wallet hotkey, the transport key and the binding record they sign.

use super::{check_readable_file, Check, ConfigError, HumanDuration};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// `identity` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a JSON object with the fields hotkey_file, transport_key_file, ss58_prefix, binding_ttl"
)]
pub struct IdentityConfig {
    /// Bittensor hotkey file (e.g. `~/.bittensor/wallets/default/hotkeys/default`). Not needed
    /// when `HERMES_HOTKEY_URI` is set, which takes precedence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hotkey_file: Option<PathBuf>,
    /// Existing transport key (protobuf ed25519, or RSA PKCS#8 DER/PEM). When absent, an ed25519
    /// key is generated in `data_dir/transport.key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport_key_file: Option<PathBuf>,
    /// SS58 prefix for printing addresses. Range 0..=16383.
    pub ss58_prefix: u16,
    /// Lifetime of each signed binding record. Range 1m..=30d.
    pub binding_ttl: HumanDuration,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            // No default hotkey: guessing a wallet path could sign with a key the operator did
            // not mean to use, so the file (or HERMES_HOTKEY_URI) must be named.
            hotkey_file: None,
            // None: a fresh ed25519 key is generated in the data dir, which is what almost every
            // node wants; an existing key is only needed to keep a known peer id.
            transport_key_file: None,
            // 42, generic substrate: the format bittensor prints addresses in.
            ss58_prefix: hermes_proto::hotkey::DEFAULT_SS58_PREFIX,
            // 24h: long enough that re-signing is rare, short enough that a stolen record soon
            // stops working.
            binding_ttl: HumanDuration::secs(24 * 3600),
        }
    }
}

impl IdentityConfig {
    pub(super) fn validate(&self, check: &Check<'_>) -> Result<(), ConfigError> {
        let env = hermes_actors::identity::keys::HOTKEY_URI_ENV;
        match (&self.hotkey_file, std::env::var_os(env).is_some()) {
            (None, false) => {
                return Err(check.err(
                    "identity.hotkey_file",
                    format!("required: the path of a Bittensor hotkey file (or set {env})"),
                ))
            }
            (Some(p), false) => {
                check_readable_file(p).map_err(|r| check.err("identity.hotkey_file", r))?
            }
            (_, true) => {}
        }
        if let Some(p) = &self.transport_key_file {
            check_readable_file(p).map_err(|r| check.err("identity.transport_key_file", r))?;
        }
        if self.ss58_prefix > 16383 {
            return Err(check.err(
                "identity.ss58_prefix",
                format!(
                    "{} is out of range; SS58 prefixes are 0..=16383",
                    self.ss58_prefix
                ),
            ));
        }
        check.duration(
            "identity.binding_ttl",
            self.binding_ttl,
            Duration::from_secs(60),
            // The record counts whole seconds, so a fraction past the limit is dropped, not refused.
            Duration::new(hermes_proto::binding::MAX_LIFETIME_SECS, 999_999_999),
            "between 1m and 30days",
        )
    }
}
