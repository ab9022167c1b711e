//! The S3-compatible store: the sender uploads a transfer's sealed chunks as one object, the
//! receiver fetches chunks with ranged GETs on presigned URLs.
//!
//! What is stored, for transfer `t` (lower-case hex id) under the configured key prefix:
//! - `{prefix}{t}.manifest`: the manifest's encoding (one PUT);
//! - `{prefix}{t}.sealed`: every sealed chunk back to back, uploaded by multipart upload along
//!   `hermes_proto::sync::PartPlan` (each part whole sealed chunks, at most 10,000 parts up to
//!   5 TiB). Part bodies are streamed from [`SealedSource::read_chunk`]: each part in flight holds
//!   at most two sealed chunks (one being sealed, one being sent), so memory is bounded by
//!   `parallelism × 2 × chunk size`, not by the part size (528 MiB at 5 TiB).
//!
//! Upload steps ([`S3Store::upload`]):
//! 1. PUT the manifest object unless HEAD shows it with the right size;
//! 2. HEAD the payload object: with the sealed size it is already complete, done;
//! 3. ListMultipartUploads for the payload key: an open upload is resumed (extra ones, left by a
//!    race, are aborted), else CreateMultipartUpload;
//! 4. ListParts: parts with the planned size are kept, the others (absent, or cut short) are
//!    uploaded, `parallelism` at a time, each retried on transient errors (bounded);
//! 5. CompleteMultipartUpload with every part's ETag, given time for the server to assemble
//!    the object (at 10 MiB/s, on top of the request timeout); if it fails but HEAD finds the
//!    object with the sealed size, an earlier attempt whose answer was lost completed it. Then
//!    HEAD checks the object's size.
//!
//! No local state is kept: a sender killed mid-upload finds its parts on the server. A part that
//! was only partly received does not count (S3 lists only whole parts; a size check covers
//! servers that list anything else).
//!
//! The receiver side, [`PresignedSource`], holds only the two presigned URLs (no credentials)
//! and implements [`ChunkSource`](super::ChunkSource) with `Range: bytes=a-b` GETs; refusals
//! (403 for an expired or revoked URL, 404 for a deleted object) stop the download with a clear
//! message, transient failures (5xx, connection errors, short or long bodies) are retried by the
//! [`Downloader`](super::Downloader) within its bound.

mod client;
mod credentials;
mod presigned;
mod upload;

pub use credentials::S3Credentials;
pub use presigned::{PresignedSource, DEFAULT_GET_TIMEOUT};
pub use upload::UploadSummary;

use super::source::{SealedSource, SourceError};
use client::{full, read_body, s3_error_of, xml_blocks, xml_text, HttpClient, ReqBody};
use hermes_proto::sync::ticket::Location;
use hermes_proto::sync::PlanError;
use hermes_proto::Id128;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Longest validity S3 accepts for a presigned URL (SigV4 `X-Amz-Expires`): 7 days.
pub const MAX_PRESIGN_SECS: u64 = 7 * 24 * 3600;
/// Validity of the signature on each request the store makes itself.
const REQUEST_SIGNATURE_SECS: u64 = 15 * 60;
/// Attempts per request (part, listing, completion) before a transient failure is reported.
pub const MAX_ATTEMPTS: u32 = 4;
/// First wait before retrying a request; doubled per attempt.
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// How long a request may go without an answer, plus the time its body takes at
/// [`MIN_RATE`], unless set otherwise ([`S3Store::with_request_timeout`]).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Slowest upload rate a request body is given time for (100 KiB/s): a 528 MiB part may take
/// 90 minutes before it counts as stalled and is sent again.
const MIN_RATE: u64 = 100 << 10;
/// Slowest rate a server is given for assembling an object from its parts on
/// CompleteMultipartUpload (10 MiB/s): servers that copy the parts into one file before
/// answering (s3s-fs, file-backed gateways) take time proportional to the object, and AWS
/// keeps the answer's body open (whitespace) while it assembles. A completion cut short by a
/// flat limit is asked again after the server already consumed the upload id.
const MIN_ASSEMBLY_RATE: u64 = 10 << 20;
/// Largest error body read (S3 error documents are a few hundred bytes).
const MAX_ERROR_LEN: usize = 64 << 10;
/// Upper bound on parts uploaded at once.
pub const MAX_UPLOAD_PARALLELISM: usize = 64;

/// Where the objects go. Credentials are not part of it: see [`S3Credentials::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `http(s)://host[:port]`, e.g. `https://s3.eu-central-1.amazonaws.com` or a MinIO server.
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Region the signature is scoped to (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// Prefix of every object key (e.g. `hermes/`); may be empty.
    pub prefix: String,
    /// Path-style URLs (`endpoint/bucket/key`, MinIO, Ceph) instead of virtual-hosted ones
    /// (`bucket.endpoint/key`, AWS).
    pub path_style: bool,
}

/// Why an S3 operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum S3Error {
    /// The settings are unusable (endpoint, bucket, parallelism).
    #[error("S3 settings: {0}")]
    Config(String),
    /// No usable credentials (names the variable, file or section at fault).
    #[error("S3 credentials: {0}")]
    Credentials(String),
    /// The server answered with an error status.
    #[error("S3 {op} of {key}: HTTP {status} {code}: {message}{}", hint(*.status))]
    Http {
        /// The S3 operation.
        op: &'static str,
        /// The object key (or bucket) it was about.
        key: String,
        /// HTTP status.
        status: u16,
        /// S3 error code (`AccessDenied`, `SignatureDoesNotMatch`, …), empty if none was sent.
        code: String,
        /// S3 error message, empty if none was sent.
        message: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("S3 {op} of {key}: {message}")]
    Transport {
        /// The S3 operation.
        op: &'static str,
        /// The object key.
        key: String,
        /// What failed.
        message: String,
    },
    /// The server's answer made no sense (missing upload id, wrong object size after completion).
    #[error("S3 {op} of {key}: unexpected answer: {message}")]
    Protocol {
        /// The S3 operation.
        op: &'static str,
        /// The object key.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// The source file could not be read or changed since it was offered.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The payload does not fit one S3 object.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Stopped through the cancel channel; the parts already uploaded stay for a resume.
    #[error("S3 upload cancelled; the uploaded parts are kept for a resume")]
    Cancelled,
}

fn hint(status: u16) -> &'static str {
    match status {
        403 => {
            " (check the access key and secret, the bucket's permissions, and this machine's \
             clock)"
        }
        404 => " (check the endpoint and the bucket name)",
        _ => "",
    }
}

impl S3Error {
    /// Whether asking again may help: connection failures, 5xx, throttling.
    pub fn is_transient(&self) -> bool {
        match self {
            S3Error::Transport { .. } => true,
            S3Error::Http { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || *status == 408
                    || matches!(
                        code.as_str(),
                        "SlowDown" | "RequestTimeout" | "InternalError"
                    )
            }
            _ => false,
        }
    }
}

/// A bucket to upload transfers to, presign them in, and delete them from.
///
/// Cheap to clone (one `Arc`); `Send + Sync`. Its HTTP connections are pooled and reused by
/// every operation.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    settings: S3Settings,
    creds: S3Credentials,
    bucket: rusty_s3::Bucket,
    http: HttpClient,
    timeout: Duration,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("settings", &self.inner.settings)
            .field("access_key_id", &self.inner.creds.access_key_id)
            .finish_non_exhaustive()
    }
}

/// A signed request before it is sent.
#[derive(Clone)]
struct Call<'a> {
    op: &'static str,
    method: Method,
    key: &'a str,
    query: Vec<(&'a str, String)>,
    headers: Vec<(HeaderName, String)>,
    /// Bytes in the body, for the request's time limit.
    body_len: u64,
    /// Bytes the server assembles before its answer ends, for the request's time limit.
    assembled_len: u64,
}

impl<'a> Call<'a> {
    fn new(op: &'static str, method: Method, key: &'a str) -> Self {
        Call {
            op,
            method,
            key,
            query: Vec::new(),
            headers: Vec::new(),
            body_len: 0,
            assembled_len: 0,
        }
    }

    fn body_len(mut self, len: u64) -> Self {
        self.body_len = len;
        self
    }

    fn assembled_len(mut self, len: u64) -> Self {
        self.assembled_len = len;
        self
    }

    /// How long this request may take, answer included: `timeout`, plus the body's time at
    /// [`MIN_RATE`], plus the server's assembly at [`MIN_ASSEMBLY_RATE`].
    fn limit(&self, timeout: Duration) -> Duration {
        timeout
            .saturating_add(Duration::from_secs(self.body_len / MIN_RATE))
            .saturating_add(Duration::from_secs(self.assembled_len / MIN_ASSEMBLY_RATE))
    }

    fn query(mut self, name: &'a str, value: impl Into<String>) -> Self {
        self.query.push((name, value.into()));
        self
    }

    fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

impl S3Store {
    /// A store for `settings`, signing with `creds`.
    ///
    /// # Errors
    /// [`S3Error::Config`] for an endpoint that is not `http(s)://host[:port]`, an empty bucket
    /// or region, or a bucket name that cannot be a host name with virtual-hosted URLs.
    pub fn new(settings: S3Settings, creds: S3Credentials) -> Result<Self, S3Error> {
        let endpoint = url::Url::parse(&settings.endpoint)
            .map_err(|e| S3Error::Config(format!("endpoint {:?}: {e}", settings.endpoint)))?;
        if settings.bucket.is_empty() || settings.region.is_empty() {
            return Err(S3Error::Config(
                "bucket and region must not be empty".into(),
            ));
        }
        let style = if settings.path_style {
            rusty_s3::UrlStyle::Path
        } else {
            rusty_s3::UrlStyle::VirtualHost
        };
        let bucket = rusty_s3::Bucket::new(
            endpoint,
            style,
            settings.bucket.clone(),
            settings.region.clone(),
        )
        .map_err(|e| {
            S3Error::Config(format!(
                "endpoint {:?}, bucket {:?}: {e}",
                settings.endpoint, settings.bucket
            ))
        })?;
        let http = client::http_client(MAX_UPLOAD_PARALLELISM)?;
        Ok(S3Store {
            inner: Arc::new(Inner {
                settings,
                creds,
                bucket,
                http,
                timeout: DEFAULT_REQUEST_TIMEOUT,
            }),
        })
    }

    /// Sets how long a request may go unanswered (plus its body's time at 100 KiB/s) before it
    /// counts as a transient failure and is sent again: a stalled server cannot hang an upload.
    /// Default [`DEFAULT_REQUEST_TIMEOUT`].
    pub fn with_request_timeout(self, timeout: Duration) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.timeout = timeout;
        S3Store {
            inner: Arc::new(inner),
        }
    }

    /// The settings this store was made with.
    pub fn settings(&self) -> &S3Settings {
        &self.inner.settings
    }

    /// Key of the manifest object: `{prefix}{transfer id hex}.manifest`.
    pub fn manifest_key(&self, transfer_id: Id128) -> String {
        format!(
            "{}{}.manifest",
            self.inner.settings.prefix,
            transfer_id.to_hex()
        )
    }

    /// Key of the sealed payload object: `{prefix}{transfer id hex}.sealed`.
    pub fn payload_key(&self, transfer_id: Id128) -> String {
        format!(
            "{}{}.sealed",
            self.inner.settings.prefix,
            transfer_id.to_hex()
        )
    }

    /// Until when URLs presigned now for `expires_at` stay valid: `expires_at`, capped at
    /// `now` + [`MAX_PRESIGN_SECS`] (S3 refuses longer presigned URLs). A ticket pointing at
    /// them should not outlive this.
    pub fn presigned_until(expires_at: u64, now: u64) -> u64 {
        expires_at.min(now.saturating_add(MAX_PRESIGN_SECS))
    }

    /// Presigned GET URLs for both objects of `transfer_id`, valid from `now` until
    /// `expires_at` (unix seconds) but **at most 7 days** ([`MAX_PRESIGN_SECS`]): SigV4 allows
    /// no more, so a longer-lived ticket must be re-issued with fresh URLs (see
    /// [`S3Store::presigned_until`]). With temporary credentials (a session token) the URLs also
    /// stop working when the token expires. The URLs carry no secret: only a signature over
    /// the method, the key and the expiry; the range header is not signed, so any range can be
    /// asked for.
    ///
    /// # Errors
    /// [`S3Error::Config`] when `expires_at` is not after `now`, or `now` is not a valid time.
    pub fn presign(
        &self,
        transfer_id: Id128,
        expires_at: u64,
        now: u64,
    ) -> Result<Location, S3Error> {
        if expires_at <= now {
            return Err(S3Error::Config(format!(
                "presigned URLs must expire after now ({expires_at} <= {now})"
            )));
        }
        let secs = Self::presigned_until(expires_at, now) - now;
        let date = i64::try_from(now)
            .ok()
            .and_then(|n| jiff::Timestamp::from_second(n).ok())
            .ok_or_else(|| S3Error::Config(format!("time {now} is out of range")))?;
        let url = |key: &str| {
            self.sign_url(&date, rusty_s3::Method::Get, key, &[], secs)
                .to_string()
        };
        Ok(Location::Presigned {
            manifest_url: url(&self.manifest_key(transfer_id)),
            payload_url: url(&self.payload_key(transfer_id)),
        })
    }

    /// Revocation: aborts every open multipart upload of the transfer and deletes both objects.
    /// Objects already gone are not an error, so this can be repeated. Presigned URLs then answer
    /// 404.
    ///
    /// # Errors
    /// [`S3Error`] from listing, aborting or deleting.
    pub async fn delete(&self, transfer_id: Id128) -> Result<(), S3Error> {
        let key = self.payload_key(transfer_id);
        for upload_id in self.open_uploads(&key).await? {
            self.abort(&key, &upload_id).await?;
        }
        for key in [key, self.manifest_key(transfer_id)] {
            let key = key.as_str();
            let r = self
                .retrying(|| async move {
                    self.send(Call::new("DeleteObject", Method::DELETE, key), full(""))
                        .await
                })
                .await;
            match r {
                Ok(_) => {}
                Err(S3Error::Http { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn sign_url(
        &self,
        date: &jiff::Timestamp,
        method: rusty_s3::Method,
        key: &str,
        query: &[(&str, String)],
        expires_secs: u64,
    ) -> url::Url {
        let mut query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // SigV4 signs the query sorted by name, then value.
        query.sort_unstable();
        let c = &self.inner.creds;
        rusty_s3::signing::sign(
            date,
            method,
            self.inner.bucket.object_url(key),
            &c.access_key_id,
            &c.secret_access_key,
            c.session_token.as_deref(),
            self.inner.bucket.region(),
            expires_secs,
            query.into_iter(),
            std::iter::empty(),
        )
    }

    /// Signs and sends one request; a non-2xx answer becomes [`S3Error::Http`].
    async fn send(
        &self,
        call: Call<'_>,
        body: ReqBody,
    ) -> Result<http::Response<Incoming>, S3Error> {
        let method = match call.method {
            Method::GET => rusty_s3::Method::Get,
            Method::HEAD => rusty_s3::Method::Head,
            Method::PUT => rusty_s3::Method::Put,
            Method::POST => rusty_s3::Method::Post,
            _ => rusty_s3::Method::Delete,
        };
        let url = self.sign_url(
            &jiff::Timestamp::now(),
            method,
            call.key,
            &call.query,
            REQUEST_SIGNATURE_SECS,
        );
        let limit = call.limit(self.inner.timeout);
        let protocol = |message: String| S3Error::Protocol {
            op: call.op,
            key: call.key.to_owned(),
            message,
        };
        let mut req = Request::builder()
            .method(call.method.clone())
            .uri(url.as_str())
            .body(body)
            .map_err(|e| protocol(format!("building the request: {e}")))?;
        for (name, value) in call.headers {
            let value =
                HeaderValue::from_str(&value).map_err(|e| protocol(format!("header: {e}")))?;
            req.headers_mut().insert(name, value);
        }
        let transport = |message: String| S3Error::Transport {
            op: call.op,
            key: call.key.to_owned(),
            message,
        };
        let resp = tokio::time::timeout(limit, self.inner.http.request(req))
            .await
            .map_err(|_| transport(format!("no answer within {limit:?}")))?
            .map_err(|e| transport(error_chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // HEAD answers carry no body; others carry an XML error document.
        let body = if call.method == Method::HEAD {
            Vec::new()
        } else {
            read_body(resp.into_body(), MAX_ERROR_LEN)
                .await
                .unwrap_or_default()
        };
        let (code, message) = s3_error_of(&body).unwrap_or_else(|| {
            (
                String::new(),
                status.canonical_reason().unwrap_or("").to_owned(),
            )
        });
        Err(S3Error::Http {
            op: call.op,
            key: call.key.to_owned(),
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or [`MAX_ATTEMPTS`] transient failures.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, S3Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, S3Error>>,
    {
        let mut delay = RETRY_DELAY;
        let mut n = 1;
        loop {
            match attempt().await {
                Err(e) if e.is_transient() && n < MAX_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt = n, "S3 request failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    n += 1;
                }
                r => return r,
            }
        }
    }

    /// An XML answer as text.
    async fn send_xml(&self, call: Call<'_>, body: ReqBody) -> Result<String, S3Error> {
        let (op, key) = (call.op, call.key.to_owned());
        let limit = call.limit(self.inner.timeout);
        let resp = self.send(call, body).await?;
        let bytes = tokio::time::timeout(limit, read_body(resp.into_body(), client::MAX_XML_LEN))
            .await
            .unwrap_or_else(|_| Err(format!("answer not read within {limit:?}")))
            .map_err(|message| S3Error::Transport {
                op,
                key: key.clone(),
                message,
            })?;
        // S3 may answer 200 and still report an error in the body (CompleteMultipartUpload).
        if let Some((code, message)) = s3_error_of(&bytes) {
            return Err(S3Error::Http {
                op,
                key,
                status: 500,
                code,
                message,
            });
        }
        String::from_utf8(bytes).map_err(|_| S3Error::Protocol {
            op,
            key,
            message: "answer is not UTF-8".into(),
        })
    }

    /// The object's size, or `None` when it does not exist.
    async fn head(&self, key: &str) -> Result<Option<u64>, S3Error> {
        let r = self
            .retrying(|| async move {
                self.send(Call::new("HeadObject", Method::HEAD, key), full(""))
                    .await
            })
            .await;
        match r {
            Ok(resp) => Ok(resp
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())),
            Err(S3Error::Http { status: 404, .. }) => Ok(None),
            // S3 answers 403 instead of 404 for a missing key when the caller may not list the
            // bucket (a key allowed only to put and get). Wrong keys are reported by the next
            // request, whose answer has a body saying why (a HEAD answer has none).
            Err(S3Error::Http { status: 403, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Upload ids of the open multipart uploads of exactly `key`, oldest first as listed.
    async fn open_uploads(&self, key: &str) -> Result<Vec<String>, S3Error> {
        let mut ids = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        // Bounded: a prefix of one full key matches only that key and longer ones.
        for _ in 0..100 {
            let mut call = Call::new("ListMultipartUploads", Method::GET, "")
                .query("uploads", "")
                .query("prefix", key);
            if let (Some(k), Some(u)) = (&key_marker, &id_marker) {
                call = call
                    .query("key-marker", k.clone())
                    .query("upload-id-marker", u.clone());
            }
            let call = &call;
            let xml = match self
                .retrying(|| async move { self.send_xml(call.clone(), full("")).await })
                .await
            {
                Ok(x) => x,
                // A server without the listing, or a key without the permission
                // (s3:ListBucketMultipartUploads), cannot resume; a fresh upload still works.
                Err(S3Error::Http {
                    status: status @ (501 | 403),
                    ..
                }) => {
                    tracing::warn!(
                        key,
                        status,
                        "cannot list multipart uploads (not implemented, or not permitted); an \
                         interrupted upload starts over"
                    );
                    return Ok(ids);
                }
                Err(e) => return Err(e),
            };
            for u in xml_blocks(&xml, "Upload") {
                if xml_text(u, "Key").as_deref() == Some(key) {
                    if let Some(id) = xml_text(u, "UploadId") {
                        ids.push(id);
                    }
                }
            }
            if xml_text(&xml, "IsTruncated").as_deref() != Some("true") {
                return Ok(ids);
            }
            key_marker = xml_text(&xml, "NextKeyMarker");
            id_marker = xml_text(&xml, "NextUploadIdMarker");
            if key_marker.is_none() || id_marker.is_none() {
                return Ok(ids);
            }
        }
        Ok(ids)
    }

    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let r = self
            .retrying(|| async move {
                let call = Call::new("AbortMultipartUpload", Method::DELETE, key)
                    .query("uploadId", upload_id);
                self.send(call, full("")).await
            })
            .await;
        match r {
            Ok(_) | Err(S3Error::Http { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// An error with its causes, for messages ("client error (Connect): tcp connect error: …").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Whether `status` is one a presigned GET may be retried after.
fn transient_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}
