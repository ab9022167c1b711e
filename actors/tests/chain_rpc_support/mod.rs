//! An in-process JSON-RPC node for the chain RPC tests: real HTTP on loopback, storage built with
//! the real SCALE codec and key hashing (`storage.rs`), the runtime metadata of `metadata.rs` or a
//! recorded one, and a count of every HTTP request (one request = one round trip) and of the bytes
//! on the wire each way.

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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let node = Node {
            addr,
            state: Arc::new(Mutex::new(State {
                metadata,
                spec_version: 100,
                blocks: vec![Block { number: 1, storage }],
                mode: Mode::Up,
            })),
            requests: Arc::default(),
            bytes_in: Arc::default(),
            bytes_out: Arc::default(),
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
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let n = n.clone();
                        async move { n.serve(req).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        node
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
        s.blocks.push(b);
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
