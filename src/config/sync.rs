//! `sync` section: the Sync Engine (large transfers through the embedded store or S3).

use super::values::one_of;
use super::{ByteSize, Check, ConfigError, HumanDuration};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Where offered payloads are stored by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncBackend {
    /// Served by this node over `/hermes/sync/1`, straight from the source file.
    Embedded,
    /// Uploaded to the S3-compatible store of `sync.s3`.
    S3,
}

impl<'de> Deserialize<'de> for SyncBackend {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        one_of(
            d,
            &[("embedded", SyncBackend::Embedded), ("s3", SyncBackend::S3)],
        )
    }
}

/// `sync.s3`: an S3-compatible store. Credentials are never in this file: they come from
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), or from the
/// credentials file named here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a JSON object with the fields endpoint, bucket, region, prefix, path_style, \
                 credentials_file, profile"
)]
pub struct S3Config {
    /// `http(s)://host[:port]` of the service.
    pub endpoint: String,
    /// Bucket the objects go to.
    pub bucket: String,
    /// Region the requests are signed for.
    pub region: String,
    /// Prefix of the object keys.
    pub prefix: String,
    /// Path-style URLs (`endpoint/bucket/key`), as MinIO, Garage and most self-hosted stores
    /// want; `false` for virtual-hosted style (`bucket.endpoint/key`).
    pub path_style: bool,
    /// AWS-style credentials file (INI); `None`: `~/.aws/credentials` when the environment has
    /// no keys.
    pub credentials_file: Option<PathBuf>,
    /// Section of the credentials file (default: `AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            bucket: String::new(),
            // us-east-1: what S3-compatible stores without regions accept.
            region: "us-east-1".into(),
            prefix: "hermes/".into(),
            // Path style: works with every self-hosted store and with AWS.
            path_style: true,
            credentials_file: None,
            profile: None,
        }
    }
}

/// `sync` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a JSON object with the fields enabled, backend, chunk_size, parallelism, \
                 ticket_ttl, fetch_timeout, max_attempts, preallocate, s3"
)]
pub struct SyncConfig {
    /// Serve offers and accept downloads. Off: `/hermes/sync/1` is not offered at all.
    pub enabled: bool,
    /// Default store of offers: `embedded` or `s3`.
    pub backend: SyncBackend,
    /// Plaintext bytes per chunk of new offers. Range 1MiB..=64MiB, a multiple of 64KiB.
    pub chunk_size: ByteSize,
    /// Chunks fetched in parallel by a download. Range 1..=64.
    pub parallelism: usize,
    /// How long a ticket stays valid. Range 1m..=30d.
    pub ticket_ttl: HumanDuration,
    /// A chunk not received within this long is asked for again. Range 1s..=1h.
    pub fetch_timeout: HumanDuration,
    /// Attempts per chunk before a download stops (a corrupt or missing chunk). Range 1..=100.
    pub max_attempts: u32,
    /// Reserve a download's disk space before its first chunk, so a destination without room
    /// fails at once. Off: the partial file is sparse (copy-on-write or thin-provisioned file
    /// systems), and a full disk is reported at the write that hits it.
    pub preallocate: bool,
    /// The S3-compatible store (needed when `backend` is `s3` or an offer asks for it).
    pub s3: Option<S3Config>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            enabled: true,
            // Embedded: nothing to set up, and no copy of the payload anywhere.
            backend: SyncBackend::Embedded,
            // 8MiB: per-request overhead is negligible, and 8 fetches in flight hold 64MiB.
            chunk_size: ByteSize::mib(8),
            // 8: enough requests in flight to fill a long fat link, bounded memory.
            parallelism: 8,
            // 24h: a receiver that is offline for a night still gets the payload.
            ticket_ttl: HumanDuration::secs(24 * 3600),
            // 90s: an 8MiB chunk at 1Mbit/s.
            fetch_timeout: HumanDuration::secs(90),
            // 4: rides out a transient error or a corrupt read or two, then reports.
            max_attempts: 4,
            // On: "disk full" after a minute beats "disk full" after 90 GB.
            preallocate: true,
            s3: None,
        }
    }
}

impl SyncConfig {
    pub(super) fn validate(&self, check: &Check<'_>) -> Result<(), ConfigError> {
        check.size(
            "sync.chunk_size",
            self.chunk_size,
            ByteSize::mib(1),
            ByteSize::mib(64),
            "1MiB..=64MiB",
        )?;
        if !self.chunk_size.0.is_multiple_of(64 << 10) {
            return Err(check.err(
                "sync.chunk_size",
                format!("{} bytes is not a multiple of 64KiB", self.chunk_size.0),
            ));
        }
        check.count("sync.parallelism", self.parallelism, 1, 64, "1..=64")?;
        check.duration(
            "sync.ticket_ttl",
            self.ticket_ttl,
            Duration::from_secs(60),
            Duration::from_secs(30 * 24 * 3600),
            "1m..=30d",
        )?;
        check.duration(
            "sync.fetch_timeout",
            self.fetch_timeout,
            Duration::from_secs(1),
            Duration::from_secs(3600),
            "1s..=1h",
        )?;
        check.count("sync.max_attempts", self.max_attempts, 1, 100, "1..=100")?;
        match (&self.s3, self.backend) {
            (None, SyncBackend::S3) => Err(check.err(
                "sync.s3",
                "backend `s3` needs the store: set sync.s3.endpoint and sync.s3.bucket",
            )),
            (Some(s3), _) => s3.validate(check),
            (None, SyncBackend::Embedded) => Ok(()),
        }
    }
}

impl S3Config {
    fn validate(&self, check: &Check<'_>) -> Result<(), ConfigError> {
        let e = &self.endpoint;
        if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() < 9 {
            return Err(check.err(
                "sync.s3.endpoint",
                format!("`{e}` is not an http:// or https:// URL"),
            ));
        }
        // S3's bucket naming rules, the part every implementation shares.
        let b = &self.bucket;
        let ok = (3..=63).contains(&b.len())
            && b.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
            && !b.starts_with(['-', '.'])
            && !b.ends_with(['-', '.']);
        if !ok {
            return Err(check.err(
                "sync.s3.bucket",
                format!(
                    "`{b}` is not a bucket name (3 to 63 lower-case letters, digits, `-` and `.`)"
                ),
            ));
        }
        if self.region.is_empty() {
            return Err(check.err("sync.s3.region", "must not be empty"));
        }
        if self.prefix.len() > 512 {
            return Err(check.err("sync.s3.prefix", "longer than 512 bytes"));
        }
        Ok(())
    }
}
