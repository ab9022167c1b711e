//! The pooled HTTP(S) client shared by the backends that speak HTTP (S3 and chain JSON-RPC):
//! plain TCP or TLS through rustls (aws-lc-rs, the tree's provider), HTTP/1.1, a keep-alive pool;
//! and the TLS configuration it uses, which the chain's WebSocket subscription uses too.

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::Arc;
use std::time::Duration;

/// A client with request bodies of type `B`.
pub(crate) type PooledClient<B> = Client<hyper_rustls::HttpsConnector<HttpConnector>, B>;

/// How a [`pooled_client`] connects and pools.
pub(crate) struct PoolOptions {
    /// Certificate roots servers are checked against.
    pub roots: Arc<rustls::RootCertStore>,
    /// How long to wait for a TCP connection.
    pub connect_timeout: Duration,
    /// How long an idle connection is kept for reuse.
    pub idle: Duration,
    /// Idle connections kept per host.
    pub max_idle_per_host: usize,
}

/// The TLS client configuration of every connection we make to an HTTP(S) or WebSocket server:
/// aws-lc-rs (the tree's provider), its safe protocol versions, `roots`.
///
/// # Errors
/// The configuration's error, as text, when the provider supports no safe protocol version.
pub(crate) fn tls_config(
    roots: Arc<rustls::RootCertStore>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client for `http://` and `https://` URLs.
///
/// # Errors
/// The TLS configuration's error, as text, when the provider supports no safe protocol version.
pub(crate) fn pooled_client<B>(o: PoolOptions) -> Result<PooledClient<B>, String>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let tls = tls_config(o.roots)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(o.connect_timeout));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(o.idle)
        .pool_max_idle_per_host(o.max_idle_per_host)
        .build(https))
}
