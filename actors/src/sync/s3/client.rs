//! The HTTP side of the S3 backend: one pooled HTTPS client, SigV4 query signing, response
//! bodies read under a bound, and the few XML fields S3 answers with.
//!
//! Every request is signed in the query string (`X-Amz-Signature`, payload `UNSIGNED-PAYLOAD`)
//! by `rusty_s3::signing::sign`, the same form as the presigned GET URLs handed to receivers.
//! Part bodies are therefore streamed without hashing them first (a second pass over up to
//! 528 MiB per part); their integrity rests on TCP/TLS and, end to end, on the receiver's check
//! of every sealed chunk against the manifest.

use super::S3Error;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Errors a request body may fail with (a chunk that can no longer be read or sealed).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Request bodies: a small buffer, or a part streamed chunk by chunk.
pub(crate) type ReqBody = UnsyncBoxBody<Bytes, BoxError>;
/// The pooled HTTP/1.1 client over plain TCP or rustls.
pub(crate) type HttpClient = crate::https::PooledClient<ReqBody>;

/// How long to wait for a TCP connection to the endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle connections are kept this long for reuse (S3 closes idle ones after about 20 s).
const POOL_IDLE: Duration = Duration::from_secs(15);
/// Largest XML answer read (ListParts of 1,000 parts is about 250 KiB).
pub(crate) const MAX_XML_LEN: usize = 4 << 20;

/// A client with a keep-alive pool, TLS through rustls (aws-lc-rs, the tree's provider) with
/// Mozilla's roots plus the system's, HTTP/1.1 (S3 speaks nothing else everywhere).
pub(crate) fn http_client(max_idle_per_host: usize) -> Result<HttpClient, S3Error> {
    crate::https::pooled_client(crate::https::PoolOptions {
        roots: Arc::clone(roots()),
        connect_timeout: CONNECT_TIMEOUT,
        idle: POOL_IDLE,
        max_idle_per_host,
    })
    .map_err(S3Error::Config)
}

/// Mozilla's roots plus the system's, read once per process (the system store is a few hundred
/// files).
fn roots() -> &'static Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // System roots are optional extras: a machine without a store still has Mozilla's.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        Arc::new(roots)
    })
}

/// An empty or small request body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Reads a response body of at most `max` bytes.
pub(crate) async fn read_body(mut body: Incoming, max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the answer: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > max {
                return Err(format!("answer longer than {max} bytes"));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// The text of the first `<tag>…</tag>` in `xml`, entities decoded.
pub(crate) fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(unescape(&xml[start..end]))
}

/// The inner text of every `<tag>…</tag>` block in `xml`, in order.
pub(crate) fn xml_blocks<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(s) = rest.find(&open) {
        let body = &rest[s + open.len()..];
        let Some(e) = body.find(&close) else { break };
        out.push(&body[..e]);
        rest = &body[e + close.len()..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#34;", "\"")
        .replace("&amp;", "&")
}

/// Escapes text for an XML element.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `(code, message)` of an S3 `<Error>` answer, if the body is one.
pub(crate) fn s3_error_of(body: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.contains("<Error>") {
        return None;
    }
    Some((
        xml_text(text, "Code").unwrap_or_default(),
        xml_text(text, "Message").unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_fields() {
        let x = "<R><Part><PartNumber>1</PartNumber><ETag>&quot;ab&quot;</ETag></Part>\
                 <Part><PartNumber>2</PartNumber></Part><IsTruncated>false</IsTruncated></R>";
        let parts = xml_blocks(x, "Part");
        assert_eq!(parts.len(), 2);
        assert_eq!(xml_text(parts[0], "ETag").as_deref(), Some("\"ab\""));
        assert_eq!(xml_text(parts[1], "ETag"), None);
        assert_eq!(xml_text(x, "IsTruncated").as_deref(), Some("false"));
        let e = b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>a &amp; b\
                  </Message></Error>";
        assert_eq!(
            s3_error_of(e),
            Some(("AccessDenied".into(), "a & b".into()))
        );
        assert_eq!(s3_error_of(b"<CompleteMultipartUploadResult/>"), None);
        assert_eq!(escape("\"a&b\""), "&quot;a&amp;b&quot;");
    }
}
