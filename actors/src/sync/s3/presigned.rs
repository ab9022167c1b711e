//! The receiver's view of an S3 transfer: two presigned GET URLs, no credentials.

use super::client::{http_client, read_body, s3_error_of, HttpClient};
use super::{error_chain, transient_status, MAX_ERROR_LEN};
use crate::sync::fetch::{ChunkSource, ChunkSourceError, MAX_PARALLELISM};
use hermes_proto::sync::Layout;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::time::Duration;

/// Fetches a transfer's manifest and sealed chunks from presigned S3 URLs.
///
/// Chunk `i` is a ranged GET of `Layout::sealed_offset(i)`, its sealed length long, on the
/// payload URL; any number run in parallel over a pool of kept-alive connections. Answers:
/// - 206 with exactly the chunk's bytes: delivered (the Downloader checks them against the
///   manifest);
/// - 403 (the URL expired, or the signing key was revoked) and 404 (the sender deleted the
///   objects): refused, with a message telling the user to ask the sender for a new ticket;
/// - 5xx, 408, 429, 416 (an object shorter than the layout: cut short in storage), connection
///   errors, short or long bodies: unavailable, retried by the Downloader within its bound.
#[derive(Clone)]
pub struct PresignedSource {
    http: HttpClient,
    manifest_url: Uri,
    payload_url: Uri,
    layout: Layout,
    timeout: Duration,
}

/// How long a GET may go unanswered unless set otherwise ([`PresignedSource::with_timeout`]).
pub const DEFAULT_GET_TIMEOUT: Duration = Duration::from_secs(60);
/// Slowest rate the manifest body is given time for (100 KiB/s).
const MIN_RATE: u64 = 100 << 10;

impl std::fmt::Debug for PresignedSource {
    /// The URLs' signatures are bearer tokens for the objects: only the hosts are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresignedSource")
            .field("host", &self.payload_url.host())
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

fn parse_url(what: &str, url: &str) -> Result<Uri, ChunkSourceError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| ChunkSourceError::refused(format!("the ticket's {what} URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(uri),
        _ => Err(ChunkSourceError::refused(format!(
            "the ticket's {what} URL is not an http(s) URL"
        ))),
    }
}

impl PresignedSource {
    /// A source for the presigned `manifest_url` and `payload_url` of a transfer of `layout`.
    ///
    /// # Errors
    /// A refusal when a URL is not an absolute `http(s)` URL, or TLS cannot be set up.
    pub fn new(
        manifest_url: &str,
        payload_url: &str,
        layout: Layout,
    ) -> Result<Self, ChunkSourceError> {
        let http =
            http_client(MAX_PARALLELISM).map_err(|e| ChunkSourceError::refused(e.to_string()))?;
        Ok(PresignedSource {
            http,
            manifest_url: parse_url("manifest", manifest_url)?,
            payload_url: parse_url("payload", payload_url)?,
            layout,
            timeout: DEFAULT_GET_TIMEOUT,
        })
    }

    /// Sets how long a GET may go unanswered before it counts as unavailable (the manifest's
    /// body also gets its time at 100 KiB/s). Chunk fetches are bounded by the Downloader's
    /// `fetch_timeout` as well. Default [`DEFAULT_GET_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The transfer's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// GETs the manifest object, refusing bodies longer than `max_len`. The bytes are
    /// untrusted: the caller checks them against the ticket's root before decoding.
    ///
    /// # Errors
    /// Refused for 403/404 and a body over `max_len`; unavailable for transient failures.
    pub async fn fetch_manifest(&self, max_len: usize) -> Result<Vec<u8>, ChunkSourceError> {
        let resp = self.get(&self.manifest_url, None, "manifest").await?;
        let declared = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_len as u64) {
            return Err(ChunkSourceError::refused(format!(
                "the manifest object is {} bytes, more than the {max_len} this transfer allows",
                declared.unwrap_or_default()
            )));
        }
        let limit = self
            .timeout
            .saturating_add(Duration::from_secs(max_len as u64 / MIN_RATE));
        let body = tokio::time::timeout(limit, read_body(resp.into_body(), max_len))
            .await
            .unwrap_or_else(|_| Err(format!("the manifest was not read within {limit:?}")));
        body.map_err(|e| {
            if e.starts_with("answer longer") {
                ChunkSourceError::refused(format!(
                    "the manifest object is longer than the {max_len} bytes this transfer allows"
                ))
            } else {
                ChunkSourceError::unavailable(format!("manifest GET: {e}"))
            }
        })
    }

    /// A GET, optionally of a range; any answer but 200/206 becomes the matching error.
    async fn get(
        &self,
        url: &Uri,
        range: Option<&str>,
        what: &str,
    ) -> Result<http::Response<Incoming>, ChunkSourceError> {
        let mut req = Request::builder().method(Method::GET).uri(url.clone());
        if let Some(r) = range {
            req = req.header(header::RANGE, r);
        }
        let req = req
            .body(super::client::full(""))
            .map_err(|e| ChunkSourceError::refused(format!("{what} GET: {e}")))?;
        let limit = self.timeout;
        let resp = tokio::time::timeout(limit, self.http.request(req))
            .await
            .map_err(|_| {
                ChunkSourceError::unavailable(format!("{what} GET: no answer within {limit:?}"))
            })?
            .map_err(|e| {
                ChunkSourceError::unavailable(format!("{what} GET: {}", error_chain(&e)))
            })?;
        let status = resp.status();
        if status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT {
            return Ok(resp);
        }
        let body = read_body(resp.into_body(), MAX_ERROR_LEN)
            .await
            .unwrap_or_default();
        Err(status_error(what, status, &body))
    }
}

/// The error for a non-success answer to a presigned GET.
fn status_error(what: &str, status: StatusCode, body: &[u8]) -> ChunkSourceError {
    let detail = s3_error_of(body)
        .map(|(code, message)| format!(" {code}: {message}"))
        .unwrap_or_default();
    let head = format!("{what} GET: HTTP {}{detail}", status.as_u16());
    match status {
        StatusCode::FORBIDDEN => ChunkSourceError::refused(format!(
            "{head}; the presigned URL expired or was revoked; ask the sender for a new ticket"
        )),
        StatusCode::NOT_FOUND => ChunkSourceError::refused(format!(
            "{head}; the object is gone (the sender revoked or deleted the transfer); ask the \
             sender for a new ticket"
        )),
        StatusCode::RANGE_NOT_SATISFIABLE => ChunkSourceError::unavailable(format!(
            "{head}; the stored object is shorter than the transfer"
        )),
        s if transient_status(s) => ChunkSourceError::unavailable(head),
        _ => ChunkSourceError::refused(head),
    }
}

impl ChunkSource for PresignedSource {
    async fn fetch(&self, index: u64, buf: &mut [u8]) -> Result<(), ChunkSourceError> {
        let layout = self.layout;
        if !layout.contains(index) || buf.len() != layout.sealed_len(index) as usize {
            return Err(ChunkSourceError::refused(format!(
                "bad request for chunk {index} ({} bytes)",
                buf.len()
            )));
        }
        let (off, len) = (layout.sealed_offset(index), buf.len() as u64);
        let last = off + len - 1;
        let what = format!("chunk {index}");
        let resp = self
            .get(
                &self.payload_url,
                Some(&format!("bytes={off}-{last}")),
                &what,
            )
            .await?;
        if resp.status() == StatusCode::OK && off != 0 {
            // The whole object instead of the range: a server ignoring Range. Reading it to
            // the chunk would cost the whole payload per chunk.
            return Err(ChunkSourceError::refused(
                "the store ignores range requests; it cannot serve this transfer",
            ));
        }
        if resp.status() == StatusCode::PARTIAL_CONTENT {
            let want = format!("bytes {off}-{last}/");
            let got = resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok());
            if let Some(got) = got {
                if !got.starts_with(&want) {
                    return Err(ChunkSourceError::unavailable(format!(
                        "{what} GET: asked for {want}…, got {got} (the stored object is shorter \
                         than the transfer?)"
                    )));
                }
            }
        }
        let mut body = resp.into_body();
        let mut pos = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                ChunkSourceError::unavailable(format!("{what} GET: {}", error_chain(&e)))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let end = pos + data.len();
            if end > buf.len() {
                return Err(ChunkSourceError::unavailable(format!(
                    "{what} GET: more than the chunk's {len} bytes"
                )));
            }
            buf[pos..end].copy_from_slice(&data);
            pos = end;
        }
        if pos != buf.len() {
            return Err(ChunkSourceError::unavailable(format!(
                "{what} GET: {pos} of the chunk's {len} bytes"
            )));
        }
        Ok(())
    }
}
