//! An in-process JSON-RPC node for the chain RPC tests: real HTTP on loopback, storage built with
//! the real SCALE codec and key hashing (`storage.rs`), the runtime metadata of `metadata.rs` or a
//! recorded one, and a count of every HTTP request (one request = one round trip) and of the bytes
//! on the wire each way. A request to upgrade to WebSocket (on the same port, as Substrate nodes
//! serve it) gets a session that answers the same calls and `chain_subscribeFinalizedHeads`:
//! the current head at once, then every new block's; the tests can also push garbage to the
//! subscribers or drop their connections.

#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod metadata;
pub mod storage;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// What the test has a WebSocket session send.
#[derive(Debug, Clone)]
pub enum Push {
    /// The notification of block `n` as the new finalized head.
    Head(u64),
    /// This text message.
    Text(String),
    /// This binary message.
    Binary(Vec<u8>),
    /// Nothing: the connection is dropped without a close frame.
    Drop,
}

/// How the node answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Correctly.
    Up,
    /// Closes every connection without an answer.
    Down,
    /// With this HTTP body for every request.
    Raw(Vec<u8>),
}

/// One block's state.
#[derive(Debug, Clone, Default)]
pub struct Block {
    /// Number.
    pub number: u64,
    /// Storage.
    pub storage: BTreeMap<Vec<u8>, Vec<u8>>,
}

#[derive(Debug)]
struct State {
    metadata: Vec<u8>,
    spec_version: u64,
    blocks: Vec<Block>,
    mode: Mode,
    /// Whether WebSocket upgrades are accepted (false: answered 404, as by a proxy that does
    /// not forward them).
    websocket: bool,
    /// The WebSocket sessions that subscribed to finalized heads.
    subscribers: Vec<mpsc::UnboundedSender<Push>>,
}

/// The test node.
#[derive(Debug, Clone)]
pub struct Node {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    requests: Arc<AtomicUsize>,
    /// Bytes received on every connection (requests, HTTP headers included).
    bytes_in: Arc<AtomicU64>,
    /// Bytes sent on every connection (answers, HTTP headers included).
    bytes_out: Arc<AtomicU64>,
    /// Subscriptions to finalized heads made so far.
    subscriptions: Arc<watch::Sender<usize>>,
}

/// A connection counting the bytes read and written.
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.read.fetch_add(n as u64, Ordering::SeqCst);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.written.fetch_add(*n as u64, Ordering::SeqCst);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn block_hash(number: u64) -> [u8; 32] {
    let mut h = [0xab; 32];
    h[..8].copy_from_slice(&number.to_le_bytes());
    h
}

fn hex(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap_or("").trim_start_matches("0x")).unwrap_or_default()
}

impl Node {
    /// Starts a node with `metadata` and one block of `storage`.
    pub async fn start(metadata: Vec<u8>, storage: BTreeMap<Vec<u8>, Vec<u8>>) -> Node {
        Self::start_with(metadata, storage, None).await
    }

    /// Starts a node serving HTTPS and WSS only, with a self-signed certificate for `localhost`
    /// (returned, for the client to trust).
    pub async fn start_tls(
        metadata: Vec<u8>,
        storage: BTreeMap<Vec<u8>, Vec<u8>>,
    ) -> (Node, rustls::pki_types::CertificateDer<'static>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let node = Self::start_with(metadata, storage, Some(acceptor)).await;
        (node, cert.cert.der().clone())
    }

    /// `wss://` URL of a node started with [`Node::start_tls`].
    pub fn tls_url(&self) -> String {
        format!("wss://localhost:{}", self.addr.port())
    }

    async fn start_with(
        metadata: Vec<u8>,
        storage: BTreeMap<Vec<u8>, Vec<u8>>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Node {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let node = Node {
            addr,
            state: Arc::new(Mutex::new(State {
                metadata,
                spec_version: 100,
                blocks: vec![Block { number: 1, storage }],
                mode: Mode::Up,
                websocket: true,
                subscribers: Vec::new(),
            })),
            requests: Arc::default(),
            bytes_in: Arc::default(),
            bytes_out: Arc::default(),
            subscriptions: Arc::new(watch::channel(0).0),
        };
        let n = node.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                if n.state.lock().unwrap().mode == Mode::Down {
                    drop(stream);
                    continue;
                }
                let n = n.clone();
                let stream = Counted {
                    inner: stream,
                    read: n.bytes_in.clone(),
                    written: n.bytes_out.clone(),
                };
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        None => n.connection(stream).await,
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                n.connection(stream).await;
                            }
                        }
                    }
                });
            }
        });
        node
    }

    async fn connection<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let n = self.clone();
        let svc = service_fn(move |req| {
            let n = n.clone();
            async move { n.serve(req).await }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades()
            .await;
    }

    /// `ws://` URL of the node.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// HTTP requests served so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Bytes received so far, all connections (what the clients sent).
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::SeqCst)
    }

    /// Bytes sent so far, all connections (what the clients read).
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::SeqCst)
    }

    /// Sets how it answers.
    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Whether WebSocket upgrades are accepted; HTTP calls are answered either way.
    pub fn set_websocket(&self, on: bool) {
        self.state.lock().unwrap().websocket = on;
    }

    /// A runtime upgrade: new metadata under the next spec version.
    pub fn upgrade(&self, metadata: Vec<u8>) {
        let mut s = self.state.lock().unwrap();
        s.metadata = metadata;
        s.spec_version += 1;
    }

    /// Finalizes a new block whose storage is the last one changed by `f`.
    pub fn new_block(&self, f: impl FnOnce(&mut BTreeMap<Vec<u8>, Vec<u8>>)) {
        let mut s = self.state.lock().unwrap();
        let mut b = s.blocks.last().cloned().unwrap_or_default();
        b.number += 1;
        f(&mut b.storage);
        let number = b.number;
        s.blocks.push(b);
        s.subscribers
            .retain(|tx| tx.send(Push::Head(number)).is_ok());
    }

    /// Has every subscribed session send `p`.
    pub fn push(&self, p: Push) {
        let mut s = self.state.lock().unwrap();
        s.subscribers.retain(|tx| tx.send(p.clone()).is_ok());
    }

    /// Subscriptions to finalized heads made so far.
    pub fn subscriptions(&self) -> usize {
        *self.subscriptions.borrow()
    }

    /// Waits (at most 20 s) until `n` subscriptions have been made; whether they were.
    pub async fn wait_subscriptions(&self, n: usize) -> bool {
        let mut rx = self.subscriptions.subscribe();
        tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|k| *k >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn websocket(&self, mut req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let accept = req
            .headers()
            .get("sec-websocket-key")
            .map(|k| derive_accept_key(k.as_bytes()))
            .unwrap_or_default();
        let upgraded = hyper::upgrade::on(&mut req);
        let n = self.clone();
        tokio::spawn(async move {
            let Ok(io) = upgraded.await else {
                return;
            };
            let ws = WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
            n.session(ws).await;
        });
        Response::builder()
            .status(101)
            .header(hyper::header::CONNECTION, "upgrade")
            .header(hyper::header::UPGRADE, "websocket")
            .header("sec-websocket-accept", accept)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    /// One WebSocket connection: calls answered as over HTTP, plus one subscription to heads.
    async fn session<S>(&self, ws: WebSocketStream<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        use futures::{SinkExt, StreamExt};
        let (mut out, mut incoming) = ws.split();
        let (tx, mut pushed) = mpsc::unbounded_channel();
        let mut sub_id = String::new();
        let notification = |sub: &str, n: u64| {
            json!({"jsonrpc": "2.0", "method": "chain_finalizedHead", "params": {
                "subscription": sub,
                "result": {"number": format!("0x{n:x}"), "parentHash": hex(&block_hash(n.saturating_sub(1))),
                    "stateRoot": hex(&[0; 32]), "extrinsicsRoot": hex(&[0; 32]), "digest": {"logs": []}}}})
            .to_string()
        };
        loop {
            tokio::select! {
                m = incoming.next() => {
                    let Some(Ok(m)) = m else { return };
                    let Message::Text(t) = m else { continue };
                    let Ok(call) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                    if call["method"] == "chain_subscribeFinalizedHeads" {
                        let head = {
                            let mut s = self.state.lock().unwrap();
                            s.subscribers.push(tx.clone());
                            sub_id = format!("sub{}", *self.subscriptions.borrow() + 1);
                            s.blocks.last().map_or(0, |b| b.number)
                        };
                        let answer = json!({"jsonrpc": "2.0", "id": call["id"], "result": sub_id});
                        if out.send(Message::text(answer.to_string())).await.is_err()
                            || out.send(Message::text(notification(&sub_id, head))).await.is_err()
                        {
                            return;
                        }
                        self.subscriptions.send_modify(|k| *k += 1);
                    } else {
                        let answer = self.answer(&call).to_string();
                        if out.send(Message::text(answer)).await.is_err() {
                            return;
                        }
                    }
                }
                p = pushed.recv() => {
                    let m = match p {
                        Some(Push::Head(n)) => Message::text(notification(&sub_id, n)),
                        Some(Push::Text(t)) => Message::text(t),
                        Some(Push::Binary(b)) => Message::binary(b),
                        Some(Push::Drop) | None => return,
                    };
                    if out.send(m).await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn serve(
        &self,
        req: Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::io::Error> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let mode = self.state.lock().unwrap().mode.clone();
        match mode {
            Mode::Down => return Err(std::io::Error::other("down")),
            Mode::Raw(body) => return Ok(Response::new(Full::new(Bytes::from(body)))),
            Mode::Up => {}
        }
        let websocket = req
            .headers()
            .get(hyper::header::UPGRADE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
        if websocket {
            if !self.state.lock().unwrap().websocket {
                let mut not_found = Response::new(Full::new(Bytes::from_static(b"not found")));
                *not_found.status_mut() = hyper::StatusCode::NOT_FOUND;
                return Ok(not_found);
            }
            return Ok(self.websocket(req));
        }
        let body = req
            .into_body()
            .collect()
            .await
            .map_err(std::io::Error::other)?;
        let v: Value = serde_json::from_slice(&body.to_bytes()).map_err(std::io::Error::other)?;
        let answer = match v {
            Value::Array(calls) => Value::Array(calls.iter().map(|c| self.answer(c)).collect()),
            single => self.answer(&single),
        };
        Ok(Response::new(Full::new(Bytes::from(
            serde_json::to_vec(&answer).unwrap(),
        ))))
    }

    fn answer(&self, call: &Value) -> Value {
        let s = self.state.lock().unwrap();
        let id = call["id"].clone();
        let p = &call["params"];
        let head = s.blocks.last().unwrap();
        let at = |v: &Value| -> &Block {
            if v.is_null() {
                return head;
            }
            let want = unhex(v);
            s.blocks
                .iter()
                .find(|b| block_hash(b.number).as_slice() == want.as_slice())
                .unwrap_or(head)
        };
        let result = match call["method"].as_str().unwrap_or("") {
            "state_getMetadata" => json!(hex(&s.metadata)),
            "state_getRuntimeVersion" => json!({"specName": "test", "specVersion": s.spec_version}),
            "chain_getFinalizedHead" => json!(hex(&block_hash(head.number))),
            "chain_getHeader" => {
                let b = at(&p[0]);
                json!({"number": format!("0x{:x}", b.number), "parentHash": hex(&block_hash(b.number - 1))})
            }
            "state_getKeysPaged" => {
                let prefix = unhex(&p[0]);
                let count = p[1].as_u64().unwrap_or(0) as usize;
                let start = unhex(&p[2]);
                let b = at(&p[3]);
                let keys: Vec<Value> = b
                    .storage
                    .keys()
                    .filter(|k| k.starts_with(&prefix) && **k > start)
                    .take(count)
                    .map(|k| json!(hex(k)))
                    .collect();
                Value::Array(keys)
            }
            "state_queryStorageAt" => {
                let b = at(&p[1]);
                let changes: Vec<Value> = p[0]
                    .as_array()
                    .map(|a| a.as_slice())
                    .unwrap_or(&[])
                    .iter()
                    .map(|k| {
                        let v = b.storage.get(&unhex(k)).map(|v| json!(hex(v)));
                        json!([k, v.unwrap_or(Value::Null)])
                    })
                    .collect();
                json!([{"block": hex(&block_hash(b.number)), "changes": changes}])
            }
            other => {
                return json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("no method {other}")}})
            }
        };
        json!({"jsonrpc": "2.0", "id": id, "result": result})
    }
}
