//! The QUIC transport: libp2p's QUIC wire format (QUIC v1, TLS 1.3, ALPN `libp2p`, a self-signed
//! certificate carrying the node's libp2p key in the libp2p extension), so any libp2p node can
//! connect, with two differences from `libp2p-quic` that matter to Hermes:
//!
//! - **AES-GCM is preferred.** libp2p's TLS configuration lists ChaCha20-Poly1305 first; the
//!   client's order decides, so two libp2p nodes always agree on ChaCha20. On CPUs with AES
//!   instructions AES-GCM moves ~20–35 % more bytes per core (`docs/BENCHMARKS.md`). ChaCha20 stays
//!   offered, so peers that prefer it still connect.
//! - **Source addresses are validated first.** An Initial without a valid token is answered with a
//!   stateless Retry (one extra round trip per inbound connection); only a client that received it,
//!   so owns its address, comes back. Spoofed Initials therefore never reach the per-IP rate limits,
//!   caps and bans (shared with TCP) and never hold a pending slot.
//! - **Refusals cost nothing.** An incoming connection is handed to the swarm before its handshake;
//!   the handshake starts only when the upgrade future is first polled. The firewall's address
//!   filter drops refused ones unpolled, which makes quinn refuse them without any TLS work.
//!
//! Certificates are generated and parsed by `libp2p-tls` (`certificate::generate` / `parse`, which
//! checks the certificate's self-signature and the signature of the libp2p extension).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, FutureExt};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// ALPN of libp2p over QUIC.
const ALPN: &[u8] = b"libp2p";
/// Server name sent by the client; libp2p authenticates by certificate, not by name.
const SERVER_NAME: &str = "l";
/// Signature schemes the libp2p certificate key may use (libp2p-tls generates ECDSA P-256).
const SCHEMES: [SignatureScheme; 9] = [
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA512,
];

/// Socket buffer size asked for on every UDP socket (the kernel caps it at `net.core.rmem_max` /
/// `wmem_max`). The default (~208 KiB on Linux) overflows at a few hundred MiB/s and every drop
/// is a loss to congestion control.
const SOCKET_BUFFER: usize = 4 << 20;

/// A UDP socket bound to `addr` with [`SOCKET_BUFFER`]-sized buffers.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: a smaller buffer is slower, not wrong.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn endpoint(addr: SocketAddr, server: Option<quinn::ServerConfig>) -> io::Result<quinn::Endpoint> {
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        bind_udp(addr)?,
        Arc::new(quinn::TokioRuntime),
    )
}

/// Why a QUIC listener, dial or connection failed.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// The UDP socket could not be opened or used.
    #[error("udp socket: {0}")]
    Io(#[from] io::Error),
    /// quinn refused to start the connection (bad address, no endpoint, ...).
    #[error("quic connect: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The connection failed or was closed.
    #[error("quic connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The handshake did not complete in time.
    #[error("quic handshake did not complete within {0:?}")]
    HandshakeTimeout(Duration),
    /// The peer's certificate is not a valid libp2p certificate.
    #[error("peer certificate: {0}")]
    Certificate(String),
    /// The peer is not the one the dial address names.
    #[error("dialled {expected} but reached {actual}")]
    WrongPeer {
        /// Peer id in the dial address.
        expected: Box<PeerId>,
        /// Peer id proven by the handshake.
        actual: Box<PeerId>,
    },
    /// The TLS configuration could not be built from the node's key.
    #[error("tls configuration: {0}")]
    Tls(String),
}

/// Tunables of the transport.
#[derive(Debug, Clone)]
pub struct QuicConfig {
    /// How long a handshake may take.
    pub handshake_timeout: Duration,
    /// Idle time after which a connection is dropped.
    pub idle_timeout: Duration,
    /// Keep-alive period (below the peer's idle timeout).
    pub keep_alive: Duration,
    /// Concurrent bidirectional streams a peer may open.
    pub max_streams: u32,
    /// Flow-control window per stream, bytes.
    pub stream_window: u32,
    /// Flow-control window per connection, bytes.
    pub connection_window: u32,
}

impl Default for QuicConfig {
    fn default() -> Self {
        QuicConfig {
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(5),
            max_streams: 256,
            stream_window: 10_000_000,
            connection_window: 15_000_000,
        }
    }
}

/// Accepts any certificate that is a valid libp2p certificate (identity is checked after the
/// handshake, against the dial address and then against the node's binding record).
#[derive(Debug)]
struct Libp2pCert;

fn check_certificate(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<(), rustls::Error> {
    if !intermediates.is_empty() {
        return Err(rustls::Error::General(
            "libp2p expects exactly one certificate".into(),
        ));
    }
    libp2p_tls::certificate::parse(end_entity)
        .map(|_| ())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))
}

fn check_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    let cert = libp2p_tls::certificate::parse(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    cert.verify_signature(dss.scheme, message, dss.signature())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadSignature))?;
    Ok(HandshakeSignatureValid::assertion())
}

fn tls12_refused() -> rustls::Error {
    rustls::Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered)
}

impl ServerCertVerifier for Libp2pCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_certificate(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

impl ClientCertVerifier for Libp2pCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_certificate(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        check_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        SCHEMES.to_vec()
    }
}

/// TLS 1.3 only, AES-GCM before ChaCha20-Poly1305.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(p)
}

/// Always presents the node's libp2p certificate. (rustls' `with_single_cert` would run the
/// certificate through webpki, which refuses libp2p's critical extension.)
#[derive(Debug)]
struct OwnCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for OwnCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl rustls::client::ResolvesClientCert for OwnCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// quinn's transport parameters for `cfg` (public so that benchmarks can tune a plain quinn
/// baseline the same way).
pub fn transport_config(cfg: &QuicConfig) -> Result<quinn::TransportConfig, QuicError> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(0u32.into())
        .max_concurrent_bidi_streams(cfg.max_streams.into())
        .datagram_receive_buffer_size(None)
        .allow_spin(false)
        .keep_alive_interval(Some(cfg.keep_alive))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(cfg.idle_timeout)
                .map_err(|e| QuicError::Tls(e.to_string()))?,
        ))
        .stream_receive_window(cfg.stream_window.into())
        .receive_window(cfg.connection_window.into())
        .send_window(u64::from(cfg.connection_window));
    Ok(t)
}

fn quinn_configs(
    keypair: &libp2p::identity::Keypair,
    cfg: &QuicConfig,
) -> Result<(quinn::ClientConfig, quinn::ServerConfig), QuicError> {
    let tls = |e: &dyn std::fmt::Display| QuicError::Tls(e.to_string());
    let (cert, key) = libp2p_tls::certificate::generate(keypair).map_err(|e| tls(&e))?;
    let provider = provider();
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| tls(&e))?;
    let own = Arc::new(OwnCert(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert],
        signer,
    ))));
    let verifier = Arc::new(Libp2pCert);

    let mut client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls(&e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_client_cert_resolver(own.clone());
    client.alpn_protocols = vec![ALPN.to_vec()];
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(own);
    server.alpn_protocols = vec![ALPN.to_vec()];

    let transport = Arc::new(transport_config(cfg)?);

    let mut client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(|e| tls(&e))?,
    ));
    client.transport_config(transport.clone());
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(|e| tls(&e))?,
    ));
    server.transport_config(transport).migration(false);
    Ok((client, server))
}

/// `/ip4|ip6/<ip>/udp/<port>/quic-v1[/p2p/<id>]` → socket address and optional peer id.
fn parse_addr(addr: &Multiaddr) -> Option<(SocketAddr, Option<PeerId>)> {
    let mut it = addr.iter();
    let ip = match it.next()? {
        Protocol::Ip4(a) => IpAddr::V4(a),
        Protocol::Ip6(a) => IpAddr::V6(a),
        _ => return None,
    };
    let Protocol::Udp(port) = it.next()? else {
        return None;
    };
    let Protocol::QuicV1 = it.next()? else {
        return None;
    };
    let peer = match it.next() {
        None => None,
        Some(Protocol::P2p(p)) => Some(p),
        Some(_) => return None,
    };
    if it.next().is_some() {
        return None;
    }
    Some((SocketAddr::new(ip, port), peer))
}

fn to_multiaddr(addr: SocketAddr) -> Multiaddr {
    let ip = match addr.ip().to_canonical() {
        IpAddr::V4(a) => Protocol::Ip4(a),
        IpAddr::V6(a) => Protocol::Ip6(a),
    };
    Multiaddr::empty()
        .with(ip)
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::QuicV1)
}

/// Peer id proven by the handshake's certificate.
fn remote_peer(conn: &quinn::Connection) -> Result<PeerId, QuicError> {
    let certs = conn
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| QuicError::Certificate("no peer certificate".into()))?;
    let [cert] = certs.as_slice() else {
        return Err(QuicError::Certificate(format!(
            "{} certificates, expected one",
            certs.len()
        )));
    };
    libp2p_tls::certificate::parse(cert)
        .map(|c| c.peer_id())
        .map_err(|e| QuicError::Certificate(e.to_string()))
}

async fn establish(
    connecting: Result<quinn::Connecting, QuicError>,
    expected: Option<PeerId>,
    timeout: Duration,
) -> Result<(PeerId, Connection), QuicError> {
    let conn = tokio::time::timeout(timeout, connecting?)
        .await
        .map_err(|_| QuicError::HandshakeTimeout(timeout))??;
    let peer = match remote_peer(&conn) {
        Ok(p) => p,
        Err(e) => {
            conn.close(1u32.into(), b"certificate");
            return Err(e);
        }
    };
    if let Some(expected) = expected.filter(|e| *e != peer) {
        conn.close(1u32.into(), b"wrong peer");
        return Err(QuicError::WrongPeer {
            expected: Box::new(expected),
            actual: Box::new(peer),
        });
    }
    Ok((peer, Connection::new(conn)))
}

struct Listener {
    id: ListenerId,
    endpoint: quinn::Endpoint,
    local: SocketAddr,
    /// Interface watcher when bound to an unspecified address; otherwise the one address is
    /// reported once.
    interfaces: Option<if_watch::tokio::IfWatcher>,
    reported: bool,
    accept: Option<BoxFuture<'static, Option<quinn::Incoming>>>,
    closed: bool,
    /// Unvalidated Initials answered with a Retry.
    retried: u64,
}

/// Retries answered per `poll` before yielding.
const RETRY_BUDGET: u64 = 256;

type Event = TransportEvent<BoxFuture<'static, Result<(PeerId, Connection), QuicError>>, QuicError>;

impl Listener {
    fn poll(&mut self, cx: &mut Context<'_>, timeout: Duration) -> Poll<Event> {
        let listener_id = self.id;
        if self.closed {
            return Poll::Ready(TransportEvent::ListenerClosed {
                listener_id,
                reason: Ok(()),
            });
        }
        match &mut self.interfaces {
            None if !self.reported => {
                self.reported = true;
                return Poll::Ready(TransportEvent::NewAddress {
                    listener_id,
                    listen_addr: to_multiaddr(self.local),
                });
            }
            None => {}
            Some(w) => {
                while let Poll::Ready(ev) = w.poll_if_event(cx) {
                    let (up, net) = match ev {
                        Ok(if_watch::IfEvent::Up(n)) => (true, n),
                        Ok(if_watch::IfEvent::Down(n)) => (false, n),
                        Err(error) => {
                            return Poll::Ready(TransportEvent::ListenerError {
                                listener_id,
                                error: error.into(),
                            })
                        }
                    };
                    if net.addr().is_ipv4() != self.local.is_ipv4() {
                        continue;
                    }
                    let addr = to_multiaddr(SocketAddr::new(net.addr(), self.local.port()));
                    return Poll::Ready(if up {
                        TransportEvent::NewAddress {
                            listener_id,
                            listen_addr: addr,
                        }
                    } else {
                        TransportEvent::AddressExpired {
                            listener_id,
                            listen_addr: addr,
                        }
                    });
                }
            }
        }
        let incoming = loop {
            let endpoint = &self.endpoint;
            let accept = self.accept.get_or_insert_with(|| {
                let ep = endpoint.clone();
                async move { ep.accept().await }.boxed()
            });
            let Poll::Ready(incoming) = accept.poll_unpin(cx) else {
                return Poll::Pending;
            };
            self.accept = None;
            let Some(incoming) = incoming else {
                self.closed = true;
                return Poll::Ready(TransportEvent::ListenerClosed {
                    listener_id,
                    reason: Ok(()),
                });
            };
            if incoming.remote_address_validated() {
                break incoming;
            }
            // The source address is not proven yet: answer with a stateless Retry. Only a
            // client that receives it (so owns the address) comes back with its token, so
            // spoofed Initials never reach the per-IP rate limits, caps and bans, and never
            // hold a pending slot.
            if incoming.may_retry() {
                let _ = incoming.retry();
            } else {
                incoming.ignore();
            }
            self.retried += 1;
            if self.retried.is_multiple_of(RETRY_BUDGET) {
                // Yield to the rest of the swarm under a flood of Initials.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        };
        let send_back_addr = to_multiaddr(incoming.remote_address());
        // Lazy: the handshake starts on first poll; dropped unpolled, quinn refuses the
        // connection without any cryptographic work.
        let upgrade = async move {
            establish(incoming.accept().map_err(QuicError::from), None, timeout).await
        }
        .boxed();
        Poll::Ready(TransportEvent::Incoming {
            listener_id,
            upgrade,
            local_addr: to_multiaddr(self.local),
            send_back_addr,
        })
    }
}

/// libp2p transport over quinn; see the module documentation.
pub struct QuicTransport {
    client: quinn::ClientConfig,
    server: quinn::ServerConfig,
    timeout: Duration,
    listeners: Vec<Listener>,
    /// Client-only endpoints for dials that cannot reuse a listener's socket, per IP family.
    dialers: HashMap<bool, quinn::Endpoint>,
    waker: Option<Waker>,
}

impl std::fmt::Debug for QuicTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicTransport")
            .field("listeners", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl QuicTransport {
    /// A transport authenticating as `keypair`.
    pub fn new(keypair: &libp2p::identity::Keypair, cfg: QuicConfig) -> Result<Self, QuicError> {
        let (client, server) = quinn_configs(keypair, &cfg)?;
        Ok(QuicTransport {
            client,
            server,
            timeout: cfg.handshake_timeout,
            listeners: Vec::new(),
            dialers: HashMap::new(),
            waker: None,
        })
    }

    /// The socket to dial `remote` from: a listener's (so the peer sees our listening port and
    /// one socket serves both directions) when one can reach it, otherwise a client endpoint.
    fn endpoint_for(
        &mut self,
        remote: SocketAddr,
        reuse: bool,
    ) -> Result<quinn::Endpoint, QuicError> {
        if reuse {
            let usable = |l: &&Listener| {
                !l.closed
                    && l.local.is_ipv4() == remote.is_ipv4()
                    && (l.local.ip().is_unspecified()
                        || l.local.ip().is_loopback() == remote.ip().is_loopback())
            };
            if let Some(l) = self.listeners.iter().find(usable) {
                return Ok(l.endpoint.clone());
            }
        }
        let v4 = remote.is_ipv4();
        if let Some(ep) = self.dialers.get(&v4) {
            return Ok(ep.clone());
        }
        let any = if v4 {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        };
        let ep = endpoint(SocketAddr::new(any, 0), None)?;
        self.dialers.insert(v4, ep.clone());
        Ok(ep)
    }
}

impl libp2p::core::Transport for QuicTransport {
    type Output = (PeerId, Connection);
    type Error = QuicError;
    type ListenerUpgrade = BoxFuture<'static, Result<(PeerId, Connection), QuicError>>;
    type Dial = BoxFuture<'static, Result<(PeerId, Connection), QuicError>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let Some((local, None)) = parse_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let endpoint = endpoint(local, Some(self.server.clone()))
            .map_err(|e| TransportError::Other(e.into()))?;
        let local = endpoint
            .local_addr()
            .map_err(|e| TransportError::Other(e.into()))?;
        let interfaces = if local.ip().is_unspecified() {
            Some(if_watch::tokio::IfWatcher::new().map_err(|e| TransportError::Other(e.into()))?)
        } else {
            None
        };
        self.listeners.push(Listener {
            id,
            endpoint,
            local,
            interfaces,
            reported: false,
            accept: None,
            closed: false,
            retried: 0,
        });
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        Ok(())
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let Some(l) = self.listeners.iter_mut().find(|l| l.id == id) else {
            return false;
        };
        l.endpoint.close(0u32.into(), b"listener removed");
        l.closed = true;
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        true
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some((remote, expected)) = parse_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        if remote.port() == 0 || remote.ip().is_unspecified() {
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        let endpoint = self
            .endpoint_for(remote, opts.port_use == PortUse::Reuse)
            .map_err(TransportError::Other)?;
        let connecting = endpoint
            .connect_with(self.client.clone(), remote, SERVER_NAME)
            .map_err(QuicError::from);
        Ok(establish(connecting, expected, self.timeout).boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = self.get_mut();
        let timeout = this.timeout;
        for i in 0..this.listeners.len() {
            if let Poll::Ready(ev) = this.listeners[i].poll(cx, timeout) {
                if matches!(ev, TransportEvent::ListenerClosed { .. }) {
                    this.listeners.swap_remove(i);
                }
                return Poll::Ready(ev);
            }
        }
        this.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

type OpenFuture =
    BoxFuture<'static, Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>>;

/// An established QUIC connection, multiplexing libp2p substreams onto QUIC streams.
pub struct Connection {
    conn: quinn::Connection,
    inbound: Option<OpenFuture>,
    outbound: Option<OpenFuture>,
    closing: Option<BoxFuture<'static, quinn::ConnectionError>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("remote", &self.conn.remote_address())
            .finish_non_exhaustive()
    }
}

impl Connection {
    fn new(conn: quinn::Connection) -> Self {
        Connection {
            conn,
            inbound: None,
            outbound: None,
            closing: None,
        }
    }

    /// Polls the open/accept future in `slot`, creating it with `make` when empty.
    fn poll_open(
        conn: &quinn::Connection,
        slot: &mut Option<OpenFuture>,
        make: fn(quinn::Connection) -> OpenFuture,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Stream, QuicError>> {
        let fut = slot.get_or_insert_with(|| make(conn.clone()));
        let result = futures::ready!(fut.poll_unpin(cx));
        *slot = None;
        let (send, recv) = result?;
        Poll::Ready(Ok(Stream {
            send,
            recv,
            finished: false,
        }))
    }
}

impl StreamMuxer for Connection {
    type Substream = Stream;
    type Error = QuicError;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        Self::poll_open(
            &this.conn,
            &mut this.inbound,
            |c| async move { c.accept_bi().await }.boxed(),
            cx,
        )
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        Self::poll_open(
            &this.conn,
            &mut this.outbound,
            |c| async move { c.open_bi().await }.boxed(),
            cx,
        )
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let this = self.get_mut();
        let conn = &this.conn;
        let closing = this.closing.get_or_insert_with(|| {
            conn.close(0u32.into(), b"");
            let c = conn.clone();
            async move { c.closed().await }.boxed()
        });
        match futures::ready!(closing.poll_unpin(cx)) {
            quinn::ConnectionError::LocallyClosed => Poll::Ready(Ok(())),
            e => Poll::Ready(Err(e.into())),
        }
    }

    fn poll(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        // QUIC handles address changes itself; a closed connection surfaces through
        // `poll_inbound`.
        Poll::Pending
    }
}

/// One libp2p substream: a bidirectional QUIC stream.
pub struct Stream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    finished: bool,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.send.id())
            .finish()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.get_mut().send), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // quinn sends as soon as congestion and flow control allow; nothing is held back.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.finished {
            this.finished = true;
            // Fails only when the stream is already finished or reset: nothing left to close.
            let _ = this.send.finish();
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::poll_fn;
    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::core::muxing::{StreamMuxerBox, StreamMuxerExt};
    use libp2p::core::Transport;

    type Accepted = Result<(PeerId, StreamMuxerBox), String>;

    /// Runs `t` listening on loopback in its own task; returns its address and what it accepts.
    /// With `refuse`, every incoming connection is dropped unpolled, as the firewall does.
    async fn serve<T, C>(
        mut t: T,
        refuse: bool,
    ) -> (Multiaddr, tokio::sync::mpsc::UnboundedReceiver<Accepted>)
    where
        T: Transport<Output = (PeerId, C)> + Unpin + Send + 'static,
        T::ListenerUpgrade: Send + 'static,
        T::Error: Send,
        C: StreamMuxer + Send + 'static,
        C::Substream: Send + 'static,
        C::Error: std::error::Error + Send + Sync + 'static,
    {
        t.listen_on(
            ListenerId::next(),
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        )
        .unwrap();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            loop {
                match poll_fn(|cx| Pin::new(&mut t).poll(cx)).await {
                    TransportEvent::NewAddress { listen_addr, .. } => {
                        if let Some(a) = addr_tx.take() {
                            let _ = a.send(listen_addr);
                        }
                    }
                    TransportEvent::Incoming { upgrade, .. } if refuse => drop(upgrade),
                    TransportEvent::Incoming { upgrade, .. } => {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            let r = upgrade
                                .await
                                .map(|(p, c)| (p, StreamMuxerBox::new(c)))
                                .map_err(|e| e.to_string());
                            let _ = tx.send(r);
                        });
                    }
                    _ => {}
                }
            }
        });
        (addr_rx.await.unwrap(), rx)
    }

    fn opts() -> DialOpts {
        DialOpts {
            role: libp2p::core::Endpoint::Dialer,
            port_use: PortUse::New,
        }
    }

    /// Sends `msg` on a new substream from `from`; `to` accepts it and reads it to the end.
    async fn exchange(from: &mut StreamMuxerBox, to: &mut StreamMuxerBox, msg: &[u8]) -> Vec<u8> {
        let mut out = poll_fn(|cx| from.poll_outbound_unpin(cx)).await.unwrap();
        out.write_all(msg).await.unwrap();
        out.close().await.unwrap();
        let mut inb = poll_fn(|cx| to.poll_inbound_unpin(cx)).await.unwrap();
        let mut got = Vec::new();
        inb.read_to_end(&mut got).await.unwrap();
        got
    }

    fn ours(k: &libp2p::identity::Keypair) -> QuicTransport {
        QuicTransport::new(k, QuicConfig::default()).unwrap()
    }

    fn stock(k: &libp2p::identity::Keypair) -> libp2p_quic::tokio::Transport {
        libp2p_quic::tokio::Transport::new(libp2p_quic::Config::new(k))
    }

    #[tokio::test]
    async fn connects_both_ways_with_libp2p_quic_and_itself() {
        let (ka, kb) = (
            libp2p::identity::Keypair::generate_ed25519(),
            libp2p::identity::Keypair::generate_ed25519(),
        );
        // Dialer ours / listener stock, dialer stock / listener ours, ours / ours.
        for (case, dial_ours, listen_ours) in [
            ("ours->stock", true, false),
            ("stock->ours", false, true),
            ("ours->ours", true, true),
        ] {
            let (addr, mut accepted) = if listen_ours {
                serve(ours(&kb), false).await
            } else {
                serve(stock(&kb), false).await
            };
            let dial = addr.clone().with(Protocol::P2p(kb.public().to_peer_id()));
            let (peer, mut conn) = if dial_ours {
                let (p, c) = ours(&ka).dial(dial, opts()).unwrap().await.unwrap();
                (p, StreamMuxerBox::new(c))
            } else {
                let (p, c) = stock(&ka).dial(dial, opts()).unwrap().await.unwrap();
                (p, StreamMuxerBox::new(c))
            };
            assert_eq!(peer, kb.public().to_peer_id(), "{case}");
            let (their_view, mut theirs) = accepted.recv().await.unwrap().unwrap();
            assert_eq!(their_view, ka.public().to_peer_id(), "{case}");
            assert_eq!(
                exchange(&mut conn, &mut theirs, b"ping").await,
                b"ping",
                "{case}"
            );
            assert_eq!(
                exchange(&mut theirs, &mut conn, b"pong").await,
                b"pong",
                "{case}"
            );
        }
    }

    #[tokio::test]
    async fn wrong_peer_and_refused_connections_fail_clearly() {
        let (ka, kb) = (
            libp2p::identity::Keypair::generate_ed25519(),
            libp2p::identity::Keypair::generate_ed25519(),
        );
        let (addr, _accepted) = serve(ours(&kb), false).await;
        let impostor = PeerId::random();
        let r = ours(&ka)
            .dial(addr.with(Protocol::P2p(impostor)), opts())
            .unwrap()
            .await;
        assert!(
            matches!(&r, Err(QuicError::WrongPeer { expected, actual }) if **expected == impostor && **actual == kb.public().to_peer_id()),
            "{r:?}"
        );

        // A refused connection ends with quinn's refusal, not with the handshake timeout.
        let (addr, _accepted) = serve(ours(&kb), true).await;
        let r = ours(&ka).dial(addr, opts()).unwrap().await;
        assert!(matches!(r, Err(QuicError::Connection(_))), "{r:?}");

        let mut t = ours(&ka);
        for bad in [
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/0.0.0.0/udp/1/quic-v1",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ] {
            assert!(
                matches!(
                    t.dial(bad.parse().unwrap(), opts()),
                    Err(TransportError::MultiaddrNotSupported(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn aes_gcm_is_preferred() {
        let suites: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            suites,
            [
                rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
                rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            ]
        );
    }

    #[test]
    fn addresses_parse_and_print() {
        let p = PeerId::random();
        let a: Multiaddr = format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{p}")
            .parse()
            .unwrap();
        assert_eq!(
            parse_addr(&a),
            Some(("127.0.0.1:4001".parse().unwrap(), Some(p)))
        );
        let b: Multiaddr = "/ip6/::1/udp/9/quic-v1".parse().unwrap();
        assert_eq!(parse_addr(&b), Some(("[::1]:9".parse().unwrap(), None)));
        assert_eq!(to_multiaddr("[::1]:9".parse().unwrap()), b);
        // Mapped addresses print as IPv4.
        assert_eq!(
            to_multiaddr("[::ffff:127.0.0.1]:4001".parse().unwrap()).to_string(),
            "/ip4/127.0.0.1/udp/4001/quic-v1"
        );
        for bad in [
            "/ip4/127.0.0.1/tcp/4001",
            "/ip4/127.0.0.1/udp/4001/quic",
            "/ip4/127.0.0.1/udp/4001/quic-v1/tcp/1",
            "/dns4/example.org/udp/4001/quic-v1",
        ] {
            assert_eq!(parse_addr(&bad.parse().unwrap()), None, "{bad}");
        }
    }
}
