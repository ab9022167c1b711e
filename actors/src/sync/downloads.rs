//! The receiver's side of the SyncActor: starting, running and resuming downloads.

use super::actor::{key_from_hex, manifest_len, Engine, SyncError, TransferHandle};
use super::fetch::{ChunkSource, ChunkSourceError, Downloader, FetchError, Progress};
use super::peer::PeerSource;
use super::records::{DownloadRecord, State};
use super::s3::PresignedSource;
use crate::identity::OpenTicket;
use hermes_proto::sync::{ContentKey, Location, Manifest, Ticket};
use libp2p::Multiaddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

/// A location's chunk source that also serves the manifest.
trait Located: ChunkSource {
    /// The manifest's bytes (at most `max_len`; checked by the caller).
    fn manifest(
        &self,
        max_len: usize,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, ChunkSourceError>> + Send;
}

impl Located for PeerSource {
    async fn manifest(&self, max_len: usize) -> Result<Vec<u8>, ChunkSourceError> {
        self.fetch_manifest(max_len).await
    }
}

impl Located for PresignedSource {
    async fn manifest(&self, max_len: usize) -> Result<Vec<u8>, ChunkSourceError> {
        self.fetch_manifest(max_len).await
    }
}

impl Engine {
    pub(super) async fn fetch(
        &self,
        ticket: Ticket,
        dest: PathBuf,
    ) -> Result<TransferHandle, SyncError> {
        let id = ticket.body.transfer_id;
        let running = self.lock_live().get(&id).cloned();
        if let Some(h) = running.filter(|h| h.outcome.borrow().is_none()) {
            if h.dest == dest {
                return Ok(h);
            }
            return Err(SyncError::Invalid(format!(
                "this transfer is being downloaded into {} right now; wait for it or cancel it \
                 (`transfers revoke {id}`)",
                h.dest.display()
            )));
        }
        ticket.verify(crate::unix_now(), &self.cfg.me)?;
        if dest.as_os_str().is_empty() {
            return Err(SyncError::Invalid("the destination path is empty".into()));
        }
        if dest.exists() {
            return Err(SyncError::Exists(dest));
        }
        // A download of this transfer started earlier keeps its key (the prekey may be gone).
        let earlier = self.records.download(&id);
        let key = match earlier.as_ref().and_then(|r| key_from_hex(&r.key)) {
            Some(k) => k,
            None => self
                .identity
                .send(OpenTicket(Box::new(ticket.clone())))
                .await
                .map_err(|_| SyncError::Stopped)??,
        };
        let record = DownloadRecord {
            transfer_id: id.to_hex(),
            ticket: ticket.to_string(),
            dest: dest.clone(),
            key: hex::encode(key.expose()),
            created_at: earlier
                .as_ref()
                .map_or_else(crate::unix_now, |r| r.created_at),
            size: ticket.body.layout.size(),
            done_bytes: earlier.as_ref().map_or(0, |r| r.done_bytes),
            state: State::Fetching,
        };
        self.records.save_download(&id, &record, None).await?;
        Ok(self.start_download(ticket, key, record))
    }

    fn start_download(
        &self,
        ticket: Ticket,
        key: ContentKey,
        record: DownloadRecord,
    ) -> TransferHandle {
        let id = ticket.body.transfer_id;
        let (progress_tx, progress) = watch::channel(Progress {
            done_bytes: record.done_bytes,
            total_bytes: record.size,
            ..Progress::default()
        });
        let (outcome_tx, outcome) = watch::channel(None);
        let (cancel, cancel_rx) = watch::channel(false);
        let handle = TransferHandle {
            id,
            dest: record.dest.clone(),
            progress,
            outcome,
            cancel: Arc::new(cancel),
        };
        self.lock_live().insert(id, handle.clone());
        let e = self.clone();
        actix::spawn(async move {
            let result = e
                .download(&ticket, key, &record.dest, progress_tx.clone(), cancel_rx)
                .await;
            let done = progress_tx.borrow().done_bytes;
            let state = match &result {
                Ok(()) => State::Done,
                Err(FetchError::Cancelled) => State::Cancelled,
                Err(err) => State::Failed(err.to_string()),
            };
            match &state {
                State::Failed(why) => {
                    tracing::warn!(transfer = %id, error = %why, "download stopped; the partial file is kept for a resume")
                }
                s => tracing::info!(transfer = %id, state = %s, "download ended"),
            }
            let rec = DownloadRecord {
                done_bytes: done,
                state,
                ..record
            };
            if let Err(err) = e.records.save_download(&id, &rec, None).await {
                tracing::error!(transfer = %id, error = %err, "cannot record the download's end");
            }
            let _ = outcome_tx.send(Some(result.map(|_| ()).map_err(|e| e.to_string())));
        });
        handle
    }

    /// Tries the ticket's locations in order; a location that fails for good hands over to
    /// the next, which resumes from the same journal.
    async fn download(
        &self,
        ticket: &Ticket,
        key: ContentKey,
        dest: &Path,
        progress: watch::Sender<Progress>,
        cancel: watch::Receiver<bool>,
    ) -> Result<(), FetchError> {
        let b = &ticket.body;
        let mut last = None;
        for loc in &b.locations {
            let r = match loc {
                Location::Peer { addrs, .. } => {
                    let addrs = addrs
                        .iter()
                        .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
                        .collect();
                    let source =
                        PeerSource::new(self.net.clone(), b.sender, addrs, b.transfer_id, b.layout);
                    self.attempt(ticket, &key, dest, &source, &progress, &cancel)
                        .await
                }
                Location::Presigned {
                    manifest_url,
                    payload_url,
                } => match PresignedSource::new(manifest_url, payload_url, b.layout) {
                    Ok(source) => {
                        self.attempt(ticket, &key, dest, &source, &progress, &cancel)
                            .await
                    }
                    Err(e) => Err(FetchError::Manifest(e)),
                },
            };
            match r {
                Ok(()) => return Ok(()),
                Err(
                    e @ (FetchError::Cancelled
                    | FetchError::DiskFull { .. }
                    | FetchError::Busy { .. }),
                ) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(FetchError::BadOptions(
            "the ticket names no location".into(),
        )))
    }

    /// One location: the manifest through it (unless stored), then every missing chunk.
    async fn attempt<S: Located>(
        &self,
        ticket: &Ticket,
        key: &ContentKey,
        dest: &Path,
        source: &S,
        progress: &watch::Sender<Progress>,
        cancel: &watch::Receiver<bool>,
    ) -> Result<(), FetchError> {
        let m = self.manifest_via(ticket, source).await?;
        self.run_with(ticket, m, key, dest, source, progress, cancel)
            .await
    }

    /// The manifest: the stored one, or fetched through `source` and checked against the root.
    async fn manifest_via<S: Located>(
        &self,
        ticket: &Ticket,
        source: &S,
    ) -> Result<Manifest, FetchError> {
        let b = &ticket.body;
        if let Some(m) = self.records.manifest(b'd', &b.transfer_id) {
            if m.root() == b.root {
                return Ok(m);
            }
        }
        let bytes = source
            .manifest(manifest_len(ticket))
            .await
            .map_err(FetchError::Manifest)?;
        let m = Manifest::decode_verified(&bytes, &b.root, &b.layout, b.cipher)
            .map_err(|_| FetchError::RootMismatch)?;
        if let Some(rec) = self.records.download(&b.transfer_id) {
            let _ = self
                .records
                .save_download(&b.transfer_id, &rec, Some(&m))
                .await;
        }
        Ok(m)
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_with<S: ChunkSource>(
        &self,
        ticket: &Ticket,
        manifest: Manifest,
        key: &ContentKey,
        dest: &Path,
        source: &S,
        progress: &watch::Sender<Progress>,
        cancel: &watch::Receiver<bool>,
    ) -> Result<(), FetchError> {
        let b = &ticket.body;
        let d = Downloader::new(
            b.transfer_id,
            b.root,
            manifest,
            ContentKey::from_bytes(*key.expose()),
            dest.to_path_buf(),
        )?
        .with_options(self.cfg.fetch)
        .with_progress(progress.clone())
        .with_cancel(cancel.clone());
        d.run(source).await.map(|_| ())
    }

    /// Resumes the downloads that were running.
    pub(super) fn restore_downloads(&self) {
        for (id, r) in self.records.downloads() {
            if r.state != State::Fetching {
                continue;
            }
            let (Ok(ticket), Some(key)) = (Ticket::parse(&r.ticket), key_from_hex(&r.key)) else {
                continue;
            };
            tracing::info!(transfer = %id, dest = %r.dest.display(), "resuming download");
            self.start_download(ticket, key, r);
        }
    }
}
