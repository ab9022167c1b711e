//! Test servers for the S3 backend: a real S3-protocol server (s3s with SigV4 authentication
//! over s3s-fs's file-system store) on a loopback port, and a tiny hand-written HTTP server
//! that misbehaves on purpose (500s, stalls, short and long bodies), and a loopback HTTPS server
//! with a self-signed certificate.
//!
//! s3s-fs implements neither ListMultipartUploads nor ETags in ListParts; the [`Store`] wrapper
//! adds both from what it saw (upload ids and part ETags), and delegates everything else. It
//! also has a gate that holds part uploads past a count, so a test can kill an uploader while
//! its parts are in flight, and can delay one completion's answer past the client's limit.

#![allow(dead_code)] // Each test binary uses a part of it.

use async_trait::async_trait;
use hyper_util::rt::TokioIo;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, S3};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

pub(crate) const ACCESS_KEY: &str = "HERMESTESTKEY";
pub(crate) const SECRET_KEY: &str = "hermes-test-secret-key";
pub(crate) const BUCKET: &str = "transfers";
pub(crate) const REGION: &str = "us-east-1";

/// What the wrapper keeps beside s3s-fs.
#[derive(Default)]
pub(crate) struct State {
    /// Open multipart uploads: upload id → key.
    uploads: Mutex<HashMap<String, String>>,
    /// (upload id, part number) → ETag.
    etags: Mutex<HashMap<(String, i32), ETag>>,
    /// Parts stored so far (all uploads).
    pub(crate) parts_stored: AtomicU64,
    /// Part uploads held at the gate.
    pub(crate) parts_held: AtomicU64,
    /// Part uploads admitted past the gate.
    admitted: AtomicU64,
    /// Part uploads beyond this many admitted ones are held forever.
    pub(crate) hold_after: AtomicU64,
    /// Signalled at every part stored or held.
    pub(crate) changed: Notify,
    /// The next successful CompleteMultipartUpload answers this many milliseconds after the
    /// object is complete (an answer the client may give up on); taken once.
    pub(crate) complete_answer_delay_ms: AtomicU64,
}

impl State {
    /// Waits (bounded) until `cond` holds.
    pub(crate) async fn wait_until(&self, what: &str, cond: impl Fn(&State) -> bool) {
        let wait = async {
            loop {
                let changed = self.changed.notified();
                if cond(self) {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
    }
}

struct Store {
    fs: s3s_fs::FileSystem,
    state: Arc<State>,
}

#[async_trait]
impl S3 for Store {
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.fs.put_object(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.fs.get_object(req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.fs.head_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let key = req.input.key.clone();
        let r = self.fs.create_multipart_upload(req).await?;
        if let Some(id) = &r.output.upload_id {
            self.state.uploads.lock().unwrap().insert(id.clone(), key);
        }
        Ok(r)
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let (id, number) = (req.input.upload_id.clone(), req.input.part_number);
        if self.state.admitted.fetch_add(1, Ordering::SeqCst)
            >= self.state.hold_after.load(Ordering::SeqCst)
        {
            self.state.parts_held.fetch_add(1, Ordering::SeqCst);
            self.state.changed.notify_waiters();
            std::future::pending::<()>().await;
        }
        let r = self.fs.upload_part(req).await?;
        if let Some(etag) = &r.output.e_tag {
            self.state
                .etags
                .lock()
                .unwrap()
                .insert((id, number), etag.clone());
        }
        self.state.parts_stored.fetch_add(1, Ordering::SeqCst);
        self.state.changed.notify_waiters();
        Ok(r)
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let id = req.input.upload_id.clone();
        let mut r = self.fs.list_parts(req).await?;
        let etags = self.state.etags.lock().unwrap();
        for p in r.output.parts.iter_mut().flatten() {
            if let Some(n) = p.part_number {
                p.e_tag = etags.get(&(id.clone(), n)).cloned();
            }
        }
        Ok(r)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let id = req.input.upload_id.clone();
        let r = self.fs.complete_multipart_upload(req).await?;
        self.state.uploads.lock().unwrap().remove(&id);
        let delay = self
            .state
            .complete_answer_delay_ms
            .swap(0, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Ok(r)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let id = req.input.upload_id.clone();
        let r = self.fs.abort_multipart_upload(req).await?;
        self.state.uploads.lock().unwrap().remove(&id);
        Ok(r)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let prefix = req.input.prefix.clone().unwrap_or_default();
        let uploads: Vec<MultipartUpload> = self
            .state
            .uploads
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, key)| key.starts_with(&prefix))
            .map(|(id, key)| MultipartUpload {
                key: Some(key.clone()),
                upload_id: Some(id.clone()),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(req.input.bucket),
            prefix: Some(prefix),
            is_truncated: Some(false),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}

/// A running S3 server on a loopback port.
pub(crate) struct S3Server {
    pub(crate) endpoint: String,
    pub(crate) state: Arc<State>,
    root: PathBuf,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts the server on the current tokio runtime, its store in a temporary directory.
    pub(crate) async fn start() -> S3Server {
        S3Server::start_in(&std::env::temp_dir()).await
    }

    /// Starts the server on the current tokio runtime, its store in a new directory under
    /// `parent` (removed when the server is dropped).
    pub(crate) async fn start_in(parent: &std::path::Path) -> S3Server {
        let dir = tempfile::tempdir_in(parent).unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir(root.join(BUCKET)).unwrap();
        let state = Arc::new(State {
            hold_after: AtomicU64::new(u64::MAX),
            ..Default::default()
        });
        let store = Store {
            fs: s3s_fs::FileSystem::new(&root).unwrap(),
            state: state.clone(),
        };
        let mut b = s3s::service::S3ServiceBuilder::new(store);
        b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = b.build();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), service)
                        .await;
                });
            }
        });
        S3Server {
            endpoint: format!("http://{addr}"),
            state,
            root,
            _dir: dir,
        }
    }

    /// The file s3s-fs keeps object `key` in.
    pub(crate) fn object_path(&self, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(key)
    }

    /// Part files of open multipart uploads on disk.
    pub(crate) fn part_files(&self) -> usize {
        std::fs::read_dir(&self.root)
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.starts_with(".upload_id-") && name.contains(".part-")
            })
            .count()
    }
}

/// How the misbehaving server answers every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Misbehave {
    /// `500 Internal Server Error`.
    Status500,
    /// Reads the request and never answers.
    Stall,
    /// Promises `len` bytes, sends half, closes.
    Short,
    /// Sends `len + 10` bytes as the range.
    Long,
}

/// A loopback HTTP/1.1 server answering every request in one bad way; counts requests.
pub(crate) struct BadServer {
    pub(crate) addr: SocketAddr,
    pub(crate) requests: Arc<AtomicU64>,
}

impl BadServer {
    /// Starts it on the current runtime; `len` is the body length a good answer would have.
    pub(crate) async fn start(mode: Misbehave, len: usize) -> BadServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let count = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // One request: headers only (GETs have no body).
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut b = [0u8; 4096];
                            match sock.read(&mut b).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&b[..n]),
                            }
                        }
                        buf.clear();
                        count.fetch_add(1, Ordering::SeqCst);
                        let answer = match mode {
                            Misbehave::Status500 => {
                                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
                                    .to_vec()
                            }
                            Misbehave::Stall => {
                                std::future::pending::<()>().await;
                                return;
                            }
                            Misbehave::Short => {
                                let mut a = format!(
                                    "HTTP/1.1 206 Partial Content\r\ncontent-length: {len}\r\n\r\n"
                                )
                                .into_bytes();
                                a.extend(std::iter::repeat_n(0u8, len / 2));
                                let _ = sock.write_all(&a).await;
                                return;
                            }
                            Misbehave::Long => {
                                let mut a = format!(
                                    "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\n\r\n",
                                    len + 10
                                )
                                .into_bytes();
                                a.extend(std::iter::repeat_n(0u8, len + 10));
                                a
                            }
                        };
                        if sock.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        BadServer { addr, requests }
    }

    /// A URL on this server (any path is answered the same way).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }
}

/// A loopback HTTPS server answering every GET with `body`, its certificate for 127.0.0.1
/// self-signed; returns its address and the certificate in PEM (a trust anchor for clients).
pub(crate) async fn start_tls_server(body: &'static [u8]) -> (SocketAddr, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut buf = Vec::new();
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut b = [0u8; 4096];
                    match tls.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&b[..n]),
                    }
                }
                let mut answer =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len())
                        .into_bytes();
                answer.extend_from_slice(body);
                let _ = tls.write_all(&answer).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, pem)
}
