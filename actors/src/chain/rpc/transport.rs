//! JSON-RPC 2.0 over HTTP POST, with batches: the few calls a registry read needs go out as one
//! request, so a whole subnet costs a fixed number of round trips.
//!
//! Substrate nodes serve HTTP and WebSocket on the same port, so a `ws://` / `wss://` URL is
//! used as `http://` / `https://` for the calls, and as given for the subscription to new heads
//! (`heads`), over the same TLS configuration. Every answer is read under [`MAX_ANSWER`] bytes and must
//! answer every id of its batch exactly once; anything else is [`RpcError::Garbage`].

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Largest answer read: a runtime's metadata is under 1 MiB (2 MiB as hex), a 256-neuron subnet's
/// storage a few hundred KiB; 32 MiB leaves room for the largest chains.
pub const MAX_ANSWER: usize = 32 << 20;
/// Most calls in one batch (Substrate's default `--rpc-max-batch-request-len` is unlimited; we
/// never need more than a handful).
pub const MAX_BATCH: usize = 64;
/// How long one round trip may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an RPC round trip failed. All of them leave the registry as it was (stale after
/// `max_staleness`).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The URL is not `ws(s)://` or `http(s)://` with a host.
    #[error("bad RPC URL {url}: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// No connection, or it broke before the answer was read.
    #[error("RPC endpoint unreachable: {0}")]
    Unreachable(String),
    /// The endpoint did not answer within [`CALL_TIMEOUT`].
    #[error("RPC call timed out")]
    Timeout,
    /// The endpoint answered with an HTTP error status.
    #[error("RPC endpoint answered HTTP {0}")]
    Status(u16),
    /// The answer is larger than the limit.
    #[error("RPC answer larger than {0} bytes")]
    TooLarge(usize),
    /// The answer is not the JSON-RPC answer to what was asked, or a value does not decode.
    #[error("malformed RPC answer: {0}")]
    Garbage(String),
    /// The node answered a call with an error.
    #[error("RPC {method} failed: {code} {message}")]
    Server {
        /// The call.
        method: String,
        /// JSON-RPC error code.
        code: i64,
        /// Its message.
        message: String,
    },
}

impl RpcError {
    /// The node's JSON-RPC `error` object answering `method`, its message cut to 200 characters.
    pub(crate) fn server(method: &str, err: &Value) -> Self {
        RpcError::Server {
            method: method.to_string(),
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(200)
                .collect(),
        }
    }
}

type HttpClient = crate::https::PooledClient<Full<Bytes>>;

/// A JSON-RPC client for one endpoint.
#[derive(Clone)]
pub struct RpcClient {
    url: hyper::Uri,
    /// The `ws://` / `wss://` URL as configured, `None` for an HTTP one (no subscription).
    ws: Option<hyper::Uri>,
    tls: Arc<rustls::ClientConfig>,
    http: HttpClient,
    next_id: Arc<AtomicU64>,
    max_answer: usize,
    timeout: Duration,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient").field("url", &self.url).finish()
    }
}

/// Maps a `ws(s)://` or `http(s)://` URL to the HTTP URL the calls are posted to.
///
/// # Errors
/// [`RpcError::Url`] naming what is wrong.
pub fn http_url(url: &str) -> Result<hyper::Uri, RpcError> {
    let bad = |reason: &str| RpcError::Url {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let mapped = if let Some(rest) = url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if url.starts_with("http://") || url.starts_with("https://") {
        url.to_string()
    } else {
        return Err(bad("the scheme must be ws://, wss://, http:// or https://"));
    };
    let uri: hyper::Uri = mapped.parse().map_err(|e| bad(&format!("{e}")))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    Ok(uri)
}

impl RpcClient {
    /// A client posting to `url` (see [`http_url`]).
    ///
    /// # Errors
    /// [`RpcError::Url`].
    pub fn new(url: &str) -> Result<Self, RpcError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::with_roots(url, roots)
    }

    /// [`RpcClient::new`] trusting `roots` instead of the built-in roots, for `https://` and
    /// `wss://` alike (an endpoint behind a private CA; the tests' own).
    ///
    /// # Errors
    /// [`RpcError::Url`].
    pub fn with_roots(url: &str, roots: rustls::RootCertStore) -> Result<Self, RpcError> {
        let given = url;
        let url = http_url(given)?;
        let ws = if given.starts_with("ws://") || given.starts_with("wss://") {
            given.parse().ok()
        } else {
            None
        };
        let roots = Arc::new(roots);
        let bad = |reason| RpcError::Url {
            url: url.to_string(),
            reason,
        };
        let tls = Arc::new(crate::https::tls_config(roots.clone()).map_err(bad)?);
        let http = crate::https::pooled_client(crate::https::PoolOptions {
            roots,
            connect_timeout: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            max_idle_per_host: 1,
        })
        .map_err(bad)?;
        Ok(RpcClient {
            url,
            ws,
            tls,
            http,
            next_id: Arc::new(AtomicU64::new(1)),
            max_answer: MAX_ANSWER,
            timeout: CALL_TIMEOUT,
        })
    }

    /// The same client with another answer limit (tests use a small one).
    pub fn with_max_answer(mut self, max: usize) -> Self {
        self.max_answer = max;
        self
    }

    /// Where to subscribe to new heads: `Some` for a `ws://` or `wss://` URL, with this client's
    /// answer limit and timeout.
    pub(crate) fn subscriber(&self) -> Option<super::heads::Subscriber> {
        Some(super::heads::Subscriber {
            url: self.ws.clone()?,
            tls: self.tls.clone(),
            max_message: self.max_answer,
            timeout: self.timeout,
        })
    }

    /// The endpoint's URL as posted to.
    pub fn url(&self) -> String {
        self.url.to_string()
    }

    /// Sends `calls` (method, params) as one batch and returns their results in order.
    ///
    /// # Errors
    /// Any [`RpcError`]; a call answered with an error fails the whole batch.
    pub async fn batch(&self, calls: &[(&str, Value)]) -> Result<Vec<Value>, RpcError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        if calls.len() > MAX_BATCH {
            return Err(RpcError::Garbage(format!(
                "batch of {} calls exceeds {MAX_BATCH}",
                calls.len()
            )));
        }
        let first = self
            .next_id
            .fetch_add(calls.len() as u64, Ordering::Relaxed);
        let body: Vec<Value> = calls
            .iter()
            .zip(first..)
            .map(|((m, p), id)| json!({"jsonrpc": "2.0", "id": id, "method": m, "params": p}))
            .collect();
        let body = serde_json::to_vec(&body).map_err(|e| RpcError::Garbage(e.to_string()))?;
        let answer = tokio::time::timeout(self.timeout, self.post(body))
            .await
            .map_err(|_| RpcError::Timeout)??;
        let answers: Vec<Value> = match serde_json::from_slice(&answer) {
            Ok(Value::Array(a)) => a,
            Ok(_) => {
                return Err(RpcError::Garbage(
                    "a batch must be answered with an array".into(),
                ))
            }
            Err(e) => return Err(RpcError::Garbage(format!("not JSON: {e}"))),
        };
        let mut out: Vec<Option<Value>> = vec![None; calls.len()];
        for mut a in answers {
            let idx = a
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|id| id.checked_sub(first))
                .and_then(|i| usize::try_from(i).ok())
                .filter(|i| *i < calls.len())
                .ok_or_else(|| RpcError::Garbage("an answer with an id we did not send".into()))?;
            let slot = out
                .get_mut(idx)
                .ok_or_else(|| RpcError::Garbage("answer index out of range".into()))?;
            if slot.is_some() {
                return Err(RpcError::Garbage("two answers with the same id".into()));
            }
            if let Some(err) = a.get("error") {
                let method = calls.get(idx).map(|c| c.0).unwrap_or_default();
                return Err(RpcError::server(method, err));
            }
            match a.get_mut("result") {
                Some(r) => *slot = Some(r.take()),
                None => {
                    return Err(RpcError::Garbage(
                        "an answer with neither result nor error".into(),
                    ))
                }
            }
        }
        out.into_iter()
            .map(|v| v.ok_or_else(|| RpcError::Garbage("a call was not answered".into())))
            .collect()
    }

    /// One call.
    ///
    /// # Errors
    /// As [`RpcClient::batch`].
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let mut r = self.batch(&[(method, params)]).await?;
        r.pop()
            .ok_or_else(|| RpcError::Garbage("empty answer".into()))
    }

    async fn post(&self, body: Vec<u8>) -> Result<Bytes, RpcError> {
        let req = hyper::Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| RpcError::Garbage(e.to_string()))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| RpcError::Unreachable(error_chain(&e)))?;
        if !resp.status().is_success() {
            return Err(RpcError::Status(resp.status().as_u16()));
        }
        if let Some(len) = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len > self.max_answer as u64 {
                return Err(RpcError::TooLarge(self.max_answer));
            }
        }
        let body = Limited::new(resp.into_body(), self.max_answer);
        match body.collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(RpcError::TooLarge(self.max_answer))
            }
            Err(e) => Err(RpcError::Unreachable(e.to_string())),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Decodes a `0x…` hex string of at most `max` bytes.
///
/// # Errors
/// [`RpcError::Garbage`] when it is not a string, not hex, or too long.
pub fn hex_bytes(v: &Value, max: usize) -> Result<Vec<u8>, RpcError> {
    let s = v
        .as_str()
        .ok_or_else(|| RpcError::Garbage("expected a hex string".into()))?;
    let h = s
        .strip_prefix("0x")
        .ok_or_else(|| RpcError::Garbage("hex without 0x".into()))?;
    if h.len() / 2 > max {
        return Err(RpcError::Garbage(format!("hex value over {max} bytes")));
    }
    hex::decode(h).map_err(|e| RpcError::Garbage(format!("bad hex: {e}")))
}

/// `0x…` form of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    format!("0x{}", hex::encode(bytes))
}
