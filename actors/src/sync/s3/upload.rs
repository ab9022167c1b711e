//! The multipart upload of a sealed payload: resumable from the server's own listing, parts
//! streamed chunk by chunk from the source file.

use super::client::{escape, full, xml_blocks, xml_text, BoxError};
use super::{Call, S3Error, S3Store, SealedSource, SourceError, MAX_UPLOAD_PARALLELISM};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use hermes_proto::sync::plan::Part;
use hermes_proto::sync::{Layout, PartPlan};
use http::Method;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// What one [`S3Store::upload`] run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadSummary {
    /// Parts in the plan.
    pub parts_total: u32,
    /// Parts found on the server with the right size (uploaded by an earlier run), not re-sent.
    pub parts_resumed: u32,
    /// Parts sent by this run (retries of one part count once).
    pub parts_uploaded: u32,
    /// Sealed bytes in the parts this run sent.
    pub bytes_uploaded: u64,
    /// An open multipart upload of an earlier run was continued.
    pub resumed_upload: bool,
    /// The payload object was already complete: nothing was sent.
    pub already_complete: bool,
}

/// Bytes handed to the connection so far, shared by the part bodies and the upload loop.
struct Sent {
    bytes: AtomicU64,
    wake: Notify,
}

impl S3Store {
    /// Uploads a transfer: the manifest object `{prefix}{transfer id hex}.manifest`, then the
    /// sealed payload as one object `{prefix}{transfer id hex}.sealed` by multipart upload
    /// along [`PartPlan`], `parallelism` parts in flight (1..=[`MAX_UPLOAD_PARALLELISM`]), each
    /// part's body streamed from [`SealedSource::read_chunk`] (memory: about two sealed chunks
    /// per part in flight, whatever the part size).
    ///
    /// Resumable with no local state: an open multipart upload for the key is found through
    /// ListMultipartUploads, the parts ListParts reports with their planned size are skipped,
    /// and the upload is completed. An object already complete (HEAD with the sealed size) is
    /// left as it is. `progress(bytes_done, bytes_total)` counts sealed bytes (resumed parts
    /// included); `cancel` reading `true` stops with [`S3Error::Cancelled`], keeping the parts.
    ///
    /// # Errors
    /// [`S3Error::Plan`] for a payload too large for S3; [`S3Error::Source`] when the source
    /// changed or cannot be read; [`S3Error::Http`] (e.g. 403 for wrong credentials),
    /// [`S3Error::Transport`] after [`super::MAX_ATTEMPTS`] tries; [`S3Error::Cancelled`].
    pub async fn upload(
        &self,
        source: Arc<SealedSource>,
        parallelism: usize,
        progress: impl Fn(u64, u64) + Send + Sync,
        mut cancel: watch::Receiver<bool>,
    ) -> Result<UploadSummary, S3Error> {
        if !(1..=MAX_UPLOAD_PARALLELISM).contains(&parallelism) {
            return Err(S3Error::Config(format!(
                "upload parallelism {parallelism} (1..={MAX_UPLOAD_PARALLELISM})"
            )));
        }
        if *cancel.borrow() {
            return Err(S3Error::Cancelled);
        }
        let cancelled = async {
            // A dropped sender can no longer cancel: wait forever then.
            if cancel.wait_for(|c| *c).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            biased;
            () = cancelled => Err(S3Error::Cancelled),
            r = self.upload_inner(source, parallelism, &progress) => r,
        }
    }

    async fn upload_inner(
        &self,
        source: Arc<SealedSource>,
        parallelism: usize,
        progress: &(impl Fn(u64, u64) + Send + Sync),
    ) -> Result<UploadSummary, S3Error> {
        let layout = *source.manifest().layout();
        let plan = PartPlan::new(layout)?;
        let total = layout.sealed_size();
        let tid = source.transfer_id();
        let key = self.payload_key(tid);
        let mut summary = UploadSummary {
            parts_total: plan.part_count(),
            ..Default::default()
        };

        // 1. The manifest: small next to the payload, but up to 32 MiB; not sent twice.
        let manifest = Bytes::from(source.manifest().encode());
        let mkey = self.manifest_key(tid);
        if self.head(&mkey).await? != Some(manifest.len() as u64) {
            let (mkey, manifest) = (mkey.as_str(), &manifest);
            self.retrying(|| async move {
                let call = Call::new("PutObject", Method::PUT, mkey)
                    .header(http::header::CONTENT_LENGTH, manifest.len().to_string())
                    .body_len(manifest.len() as u64);
                self.send(call, full(manifest.clone())).await
            })
            .await?;
        }

        // 2. Already complete?
        if self.head(&key).await? == Some(total) {
            summary.already_complete = true;
            summary.parts_resumed = summary.parts_total;
            progress(total, total);
            return Ok(summary);
        }

        // 3. The open upload, if an earlier run left one.
        let mut open = self.open_uploads(&key).await?;
        let upload_id = match open.pop() {
            Some(id) => {
                // Older ones (a crash between two creations) would only cost storage.
                for stale in &open {
                    if let Err(e) = self.abort(&key, stale).await {
                        tracing::warn!(key, upload_id = stale, error = %e, "abort failed");
                    }
                }
                summary.resumed_upload = true;
                id
            }
            None => self.create_upload(&key).await?,
        };

        // 4. Parts already there with their planned size are kept.
        let listed = if summary.resumed_upload {
            self.list_parts(&key, &upload_id).await?
        } else {
            HashMap::new()
        };
        let mut etags: Vec<Option<String>> = vec![None; plan.part_count() as usize];
        let mut todo = Vec::new();
        let mut done_bytes = 0u64;
        for part in plan.parts() {
            match listed.get(&part.number) {
                Some((size, etag)) if *size == part.len && !etag.is_empty() => {
                    etags[part.number as usize - 1] = Some(etag.clone());
                    summary.parts_resumed += 1;
                    done_bytes += part.len;
                }
                _ => todo.push(part),
            }
        }
        let sent = Arc::new(Sent {
            bytes: AtomicU64::new(done_bytes),
            wake: Notify::new(),
        });
        progress(done_bytes, total);

        // 5. The missing parts, `parallelism` at a time.
        let mut todo = todo.into_iter();
        let mut in_flight = FuturesUnordered::new();
        loop {
            while in_flight.len() < parallelism {
                let Some(part) = todo.next() else { break };
                let (source, sent, key, upload_id) = (&source, &sent, &key, &upload_id);
                in_flight.push(async move {
                    let r = self
                        .put_part_retrying(key, upload_id, part, layout, source, sent)
                        .await;
                    (part, r)
                });
            }
            if in_flight.is_empty() {
                break;
            }
            tokio::select! {
                done = in_flight.next() => {
                    let Some((part, r)) = done else { break };
                    etags[part.number as usize - 1] = Some(r?);
                    summary.parts_uploaded += 1;
                    summary.bytes_uploaded += part.len;
                }
                () = sent.wake.notified() => {}
            }
            progress(sent.bytes.load(Ordering::Relaxed).min(total), total);
        }

        // 6. Complete, then check what S3 made of it.
        let parts: Vec<(u32, String)> = etags
            .into_iter()
            .enumerate()
            .map(|(i, e)| (i as u32 + 1, e.unwrap_or_default()))
            .collect();
        let completed = self.complete(&key, &upload_id, &parts, total).await;
        let size = self.head(&key).await;
        if let Err(e) = completed {
            // An attempt whose answer was lost may have completed the upload: the retry is then
            // refused (NoSuchUpload), yet the object is there.
            if !matches!(size, Ok(Some(n)) if n == total) {
                return Err(e);
            }
            tracing::debug!(key, error = %e, "the upload was completed by an earlier attempt");
        }
        match size? {
            Some(n) if n == total => {}
            other => {
                return Err(S3Error::Protocol {
                    op: "CompleteMultipartUpload",
                    key: key.clone(),
                    message: format!("the object has {other:?} bytes, expected {total}"),
                })
            }
        }
        progress(total, total);
        Ok(summary)
    }

    async fn create_upload(&self, key: &str) -> Result<String, S3Error> {
        let xml = self
            .retrying(|| async move {
                let call =
                    Call::new("CreateMultipartUpload", Method::POST, key).query("uploads", "");
                self.send_xml(call, full("")).await
            })
            .await?;
        xml_text(&xml, "UploadId")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| S3Error::Protocol {
                op: "CreateMultipartUpload",
                key: key.to_owned(),
                message: "no UploadId in the answer".into(),
            })
    }

    /// Part number → (size, ETag) of the parts the server holds for `upload_id`.
    async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<HashMap<u32, (u64, String)>, S3Error> {
        let mut parts = HashMap::new();
        let mut marker: Option<String> = None;
        // At most 10,000 parts, 1,000 per page.
        for _ in 0..=10 {
            let marker_ref = &marker;
            let xml = self
                .retrying(|| async move {
                    let mut call =
                        Call::new("ListParts", Method::GET, key).query("uploadId", upload_id);
                    if let Some(m) = marker_ref {
                        call = call.query("part-number-marker", m.clone());
                    }
                    self.send_xml(call, full("")).await
                })
                .await?;
            for p in xml_blocks(&xml, "Part") {
                let number = xml_text(p, "PartNumber").and_then(|n| n.parse().ok());
                let size = xml_text(p, "Size").and_then(|n| n.parse().ok());
                if let (Some(number), Some(size)) = (number, size) {
                    parts.insert(number, (size, xml_text(p, "ETag").unwrap_or_default()));
                }
            }
            if xml_text(&xml, "IsTruncated").as_deref() != Some("true") {
                break;
            }
            marker = xml_text(&xml, "NextPartNumberMarker");
            if marker.is_none() {
                break;
            }
        }
        Ok(parts)
    }

    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u32, String)],
        total: u64,
    ) -> Result<(), S3Error> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (number, etag) in parts {
            xml.push_str(&format!(
                "<Part><PartNumber>{number}</PartNumber><ETag>{}</ETag></Part>",
                escape(etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let xml = Bytes::from(xml);
        let xml = &xml;
        self.retrying(|| async move {
            let call = Call::new("CompleteMultipartUpload", Method::POST, key)
                .query("uploadId", upload_id)
                .header(http::header::CONTENT_LENGTH, xml.len().to_string())
                .assembled_len(total);
            self.send_xml(call, full(xml.clone())).await
        })
        .await
        .map(|_| ())
    }

    /// Uploads one part, retrying transient failures; a changed source fails at once.
    async fn put_part_retrying(
        &self,
        key: &str,
        upload_id: &str,
        part: Part,
        layout: Layout,
        source: &Arc<SealedSource>,
        sent: &Arc<Sent>,
    ) -> Result<String, S3Error> {
        self.retrying(|| async move {
            let attempt = Arc::new(Attempt {
                live: AtomicBool::new(true),
                bytes: AtomicU64::new(0),
                failure: Mutex::new(None),
                sent: Arc::clone(sent),
            });
            let body = PartBody {
                source: Arc::clone(source),
                layout,
                next: part.first_chunk,
                end: part.first_chunk + part.chunks,
                remaining: part.len,
                reading: None,
                attempt: Arc::clone(&attempt),
            };
            let call = Call::new("UploadPart", Method::PUT, key)
                .query("partNumber", part.number.to_string())
                .query("uploadId", upload_id)
                .header(http::header::CONTENT_LENGTH, part.len.to_string())
                .body_len(part.len);
            let r = self.send(call, body.boxed_unsync()).await;
            if r.is_err() {
                // This attempt's bytes will be sent again: take them back from the progress.
                attempt.live.store(false, Ordering::SeqCst);
                let n = attempt.bytes.load(Ordering::SeqCst);
                let _ = sent
                    .bytes
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                        Some(b.saturating_sub(n))
                    });
            }
            // A source error behind a broken request is the real cause, and final.
            let failure = attempt.failure.lock().ok().and_then(|mut f| f.take());
            if let Some(e) = failure {
                return Err(S3Error::Source(e));
            }
            let resp = r?;
            resp.headers()
                .get(http::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| S3Error::Protocol {
                    op: "UploadPart",
                    key: key.to_owned(),
                    message: format!("no ETag for part {}", part.number),
                })
        })
        .await
    }
}

/// One attempt at sending a part: its bytes so far, and why its body failed, if it did.
struct Attempt {
    live: AtomicBool,
    bytes: AtomicU64,
    failure: Mutex<Option<SourceError>>,
    sent: Arc<Sent>,
}

/// A part's body: its chunks read and sealed one at a time on the blocking pool, the next one
/// while the previous one is being sent.
struct PartBody {
    source: Arc<SealedSource>,
    layout: Layout,
    /// Next chunk to hand out.
    next: u64,
    /// One past the part's last chunk.
    end: u64,
    /// Bytes not handed out yet.
    remaining: u64,
    /// The read of chunk `next`, if started.
    reading: Option<JoinHandle<Result<Bytes, SourceError>>>,
    attempt: Arc<Attempt>,
}

impl PartBody {
    fn start_read(&mut self) {
        let (source, index) = (Arc::clone(&self.source), self.next);
        let len = self.layout.sealed_len(index) as usize;
        self.reading = Some(tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            source
                .read_chunk(index, &mut buf)
                .map(|()| Bytes::from(buf))
        }));
    }
}

impl Body for PartBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.reading.is_none() {
            if this.next >= this.end {
                return Poll::Ready(None);
            }
            this.start_read();
        }
        let Some(reading) = this.reading.as_mut() else {
            return Poll::Ready(None);
        };
        let r = match Pin::new(reading).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        this.reading = None;
        match r {
            Ok(Ok(bytes)) => {
                this.next += 1;
                if this.next < this.end {
                    this.start_read();
                }
                let n = bytes.len() as u64;
                this.remaining = this.remaining.saturating_sub(n);
                let a = &this.attempt;
                if a.live.load(Ordering::SeqCst) {
                    a.bytes.fetch_add(n, Ordering::SeqCst);
                    a.sent.bytes.fetch_add(n, Ordering::SeqCst);
                    a.sent.wake.notify_one();
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Ok(Err(e)) => {
                let msg = e.to_string();
                if let Ok(mut f) = this.attempt.failure.lock() {
                    *f = Some(e);
                }
                this.next = this.end;
                Poll::Ready(Some(Err(msg.into())))
            }
            Err(join) => {
                this.next = this.end;
                Poll::Ready(Some(Err(Box::new(join))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
