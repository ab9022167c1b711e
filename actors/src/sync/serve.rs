//! The embedded store: the sender's node serves its offers over `/hermes/sync/1`, straight from
//! the source files, to each offer's receiver only.
//!
//! For every inbound substream: wait for the remote's binding to be verified (the directory),
//! then answer requests one at a time. A request is answered only when the offer exists, names
//! the remote's hotkey as its receiver, is not revoked and has not expired; anything else gets
//! the same `Unknown` as a transfer id that does not exist, so a peer learns nothing about
//! transfers that are not its own. Chunks are read and sealed on the blocking pool (the sealing
//! and hashing is the expensive part and runs in parallel across substreams), bounded by a
//! node-wide number of chunk reads in flight, and each re-sealed chunk is checked against the
//! manifest before it is sent (`SealedSource::read_chunk`): a changed source is refused, never
//! sent.

use super::source::{SealedSource, SourceError};
use crate::network::directory::PeerDirectory;
use crate::network::substream::InboundSubstream;
use futures::{AsyncReadExt, AsyncWriteExt};
use hermes_proto::sync::wire::{refusal_frame, AnswerHead, Refusal, Request, REQUEST_LEN};
use hermes_proto::{Hotkey, Id128};
use libp2p::{PeerId, Stream};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// Sync substreams served at once per peer: enough for the largest download parallelism.
pub const MAX_SUBSTREAMS_PER_PEER: usize = 64;
/// Chunk reads (each one chunk-sized buffer) in flight on this node, all peers together.
pub const MAX_READS_IN_FLIGHT: usize = 16;
/// A substream with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Time allowed to write one answer (a chunk of up to 64 MiB to a slow receiver).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(300);

/// One offer the node serves.
#[derive(Debug)]
pub struct ServedOffer {
    /// The transfer.
    pub transfer_id: Id128,
    /// The only hotkey it is served to.
    pub receiver: Hotkey,
    /// End of validity (unix seconds), the ticket's.
    pub expires_at: u64,
    /// The source, opened at offer time or reopened after a restart.
    pub source: Arc<SealedSource>,
    /// Set by `revoke`: every later request is refused.
    pub revoked: AtomicBool,
    /// Set when a read found the source changed: every later request is refused.
    pub changed: AtomicBool,
    /// Chunks served (fetches, repeats included).
    pub chunks_served: AtomicU64,
    /// Sealed bytes served.
    pub bytes_served: AtomicU64,
}

impl ServedOffer {
    /// An offer of `source` to `receiver` until `expires_at`.
    pub fn new(source: Arc<SealedSource>, receiver: Hotkey, expires_at: u64) -> Self {
        ServedOffer {
            transfer_id: source.transfer_id(),
            receiver,
            expires_at,
            source,
            revoked: AtomicBool::new(false),
            changed: AtomicBool::new(false),
            chunks_served: AtomicU64::new(0),
            bytes_served: AtomicU64::new(0),
        }
    }
}

/// The offers being served, by transfer id.
#[derive(Debug, Default)]
pub struct OfferTable {
    offers: RwLock<HashMap<Id128, Arc<ServedOffer>>>,
}

impl OfferTable {
    /// Serves `offer` (replacing an earlier one of the same id).
    pub fn insert(&self, offer: Arc<ServedOffer>) {
        self.write().insert(offer.transfer_id, offer);
    }

    /// Removes and returns the ids of offers that expired at `now`.
    pub fn expired(&self, now: u64) -> Vec<Id128> {
        let mut t = self.write();
        let ids: Vec<Id128> = t
            .values()
            .filter(|o| now >= o.expires_at)
            .map(|o| o.transfer_id)
            .collect();
        for id in &ids {
            t.remove(id);
        }
        ids
    }

    /// The offer of `id`.
    pub fn get(&self, id: &Id128) -> Option<Arc<ServedOffer>> {
        self.offers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Id128, Arc<ServedOffer>>> {
        self.offers.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counters of the server.
#[derive(Debug, Default)]
pub struct ServeCounters {
    /// Requests refused (any reason).
    pub refused: AtomicU64,
    /// Substreams dropped because their peer had too many open.
    pub busy: AtomicU64,
    /// Substreams closed for a malformed request.
    pub garbage: AtomicU64,
}

/// What the server needs.
#[derive(Debug, Clone)]
pub struct Server {
    /// Offers served.
    pub offers: Arc<OfferTable>,
    /// Verified peers.
    pub directory: Arc<PeerDirectory>,
    /// How long to wait for a peer's binding before dropping its substream.
    pub binding_timeout: Duration,
    /// Counters.
    pub counters: Arc<ServeCounters>,
    /// Chunk reads in flight, node-wide.
    pub reads: Arc<Semaphore>,
}

impl Server {
    /// A server of `offers` to peers verified in `directory`.
    pub fn new(
        offers: Arc<OfferTable>,
        directory: Arc<PeerDirectory>,
        binding_timeout: Duration,
    ) -> Self {
        Server {
            offers,
            directory,
            binding_timeout,
            counters: Arc::default(),
            reads: Arc::new(Semaphore::new(MAX_READS_IN_FLIGHT)),
        }
    }

    /// Serves every substream from `rx` until the queue closes, at most
    /// [`MAX_SUBSTREAMS_PER_PEER`] at once per peer, each on its own task.
    pub async fn run(self, mut rx: mpsc::Receiver<InboundSubstream>) {
        let active: Arc<Mutex<HashMap<PeerId, usize>>> = Arc::default();
        while let Some(sub) = rx.recv().await {
            {
                let mut a = active.lock().unwrap_or_else(|e| e.into_inner());
                let n = a.entry(sub.peer).or_insert(0);
                if *n >= MAX_SUBSTREAMS_PER_PEER {
                    self.counters.busy.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(peer = %sub.peer, "too many sync substreams from one peer; dropped");
                    continue;
                }
                *n += 1;
            }
            let this = self.clone();
            let active = active.clone();
            tokio::spawn(async move {
                let peer = sub.peer;
                this.serve(sub).await;
                let mut a = active.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(n) = a.get_mut(&peer) {
                    *n -= 1;
                    if *n == 0 {
                        a.remove(&peer);
                    }
                }
            });
        }
    }

    async fn serve(&self, sub: InboundSubstream) {
        let Some(peer) = self
            .directory
            .wait_for(self.binding_timeout, |d| d.get(&sub.peer))
            .await
        else {
            tracing::debug!(peer = %sub.peer, "sync substream from an unverified peer dropped");
            return;
        };
        let mut s = sub.stream;
        if let Err(e) = self.answer_all(&mut s, &peer.hotkey).await {
            tracing::debug!(peer = %sub.peer, error = %e, "sync substream ended");
        }
        let _ = s.close().await;
    }

    async fn answer_all(&self, s: &mut Stream, remote: &Hotkey) -> std::io::Result<()> {
        let mut req = [0u8; REQUEST_LEN];
        loop {
            match tokio::time::timeout(IDLE_TIMEOUT, s.read_exact(&mut req)).await {
                Err(_) => return Ok(()),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => r?,
            }
            let Ok(request) = Request::decode(&req) else {
                self.counters.garbage.fetch_add(1, Ordering::Relaxed);
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "malformed sync request",
                ));
            };
            let answer = self.answer(&request, remote).await;
            let write = async {
                match &answer {
                    Ok(body) => {
                        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
                        s.write_all(&AnswerHead::Ok { len }.encode()).await?;
                        s.write_all(body).await?;
                    }
                    Err((refusal, text)) => {
                        self.counters.refused.fetch_add(1, Ordering::Relaxed);
                        s.write_all(&refusal_frame(*refusal, text)).await?;
                    }
                }
                s.flush().await
            };
            tokio::time::timeout(WRITE_TIMEOUT, write)
                .await
                .map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out")
                })??;
            if let Ok(body) = answer {
                if let Request::Chunk { transfer_id, .. } = request {
                    if let Some(o) = self.offers.get(&transfer_id) {
                        o.chunks_served.fetch_add(1, Ordering::Relaxed);
                        o.bytes_served
                            .fetch_add(body.len() as u64, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// The body for `request` from `remote`, or why it is refused.
    async fn answer(
        &self,
        request: &Request,
        remote: &Hotkey,
    ) -> Result<Vec<u8>, (Refusal, String)> {
        let refuse = |r: Refusal| Err((r, r.describe().to_string()));
        let Some(offer) = self.offers.get(&request.transfer_id()) else {
            return refuse(Refusal::Unknown);
        };
        if offer.receiver != *remote {
            return refuse(Refusal::Unknown);
        }
        if offer.revoked.load(Ordering::Relaxed) {
            return refuse(Refusal::Revoked);
        }
        if crate::unix_now() >= offer.expires_at {
            return refuse(Refusal::Expired);
        }
        if offer.changed.load(Ordering::Relaxed) {
            return refuse(Refusal::Changed);
        }
        let index = match *request {
            Request::Manifest { .. } => return Ok(offer.source.manifest().encode()),
            Request::Chunk { index, .. } => index,
        };
        let layout = *offer.source.manifest().layout();
        if !layout.contains(index) {
            return refuse(Refusal::BadRequest);
        }
        let Ok(_permit) = self.reads.acquire().await else {
            return refuse(Refusal::Busy);
        };
        let source = offer.source.clone();
        let len = layout.sealed_len(index) as usize;
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            source.read_chunk(index, &mut buf).map(|()| buf)
        })
        .await;
        match read {
            Ok(Ok(buf)) => Ok(buf),
            Ok(Err(e @ SourceError::Changed { .. })) => {
                offer.changed.store(true, Ordering::Relaxed);
                tracing::warn!(transfer = %offer.transfer_id, error = %e, "offered source changed; the transfer can no longer be served");
                refuse(Refusal::Changed)
            }
            Ok(Err(e @ SourceError::BadRequest(_))) => Err((Refusal::BadRequest, e.to_string())),
            Ok(Err(e)) => {
                tracing::warn!(transfer = %offer.transfer_id, error = %e, "reading an offered chunk failed");
                refuse(Refusal::Failed)
            }
            Err(_) => refuse(Refusal::Failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_proto::sync::layout::MIN_CHUNK_SIZE;
    use hermes_proto::sync::ContentKey;

    fn offer_of(dir: &std::path::Path, receiver: Hotkey, expires_at: u64) -> Arc<ServedOffer> {
        let path = dir.join("src");
        std::fs::write(&path, vec![5u8; MIN_CHUNK_SIZE as usize + 10]).unwrap();
        let source = SealedSource::offer(
            &path,
            Id128([3; 16]),
            ContentKey::from_bytes([4; 32]),
            MIN_CHUNK_SIZE,
            |_, _| {},
        )
        .unwrap();
        Arc::new(ServedOffer::new(Arc::new(source), receiver, expires_at))
    }

    fn server(offer: &Arc<ServedOffer>) -> Server {
        let table = Arc::new(OfferTable::default());
        table.insert(offer.clone());
        Server::new(table, Arc::default(), Duration::from_secs(1))
    }

    /// The receiver check is the server's own: a registered, verified peer that holds the
    /// transfer id (a copied ticket, a guess) but is not the receiver gets exactly the answer a
    /// transfer id that does not exist gets.
    #[tokio::test]
    async fn only_the_receiver_is_served_and_others_learn_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (bob, eve) = (Hotkey([1; 32]), Hotkey([2; 32]));
        let offer = offer_of(dir.path(), bob, crate::unix_now() + 600);
        let s = server(&offer);
        let id = offer.transfer_id;
        let chunk = Request::Chunk {
            transfer_id: id,
            index: 1,
        };
        let manifest = Request::Manifest { transfer_id: id };
        let sealed = s.answer(&chunk, &bob).await.unwrap();
        assert!(offer.source.manifest().check_chunk(1, &sealed));
        assert_eq!(
            s.answer(&manifest, &bob).await.unwrap(),
            offer.source.manifest().encode()
        );
        for r in [chunk, manifest] {
            assert_eq!(s.answer(&r, &eve).await.unwrap_err().0, Refusal::Unknown);
        }
        let unknown = Request::Chunk {
            transfer_id: Id128([9; 16]),
            index: 0,
        };
        assert_eq!(
            s.answer(&unknown, &bob).await.unwrap_err().0,
            Refusal::Unknown
        );
        let past_end = Request::Chunk {
            transfer_id: id,
            index: 2,
        };
        assert_eq!(
            s.answer(&past_end, &bob).await.unwrap_err().0,
            Refusal::BadRequest
        );
    }

    #[tokio::test]
    async fn revoked_expired_and_changed_offers_are_refused_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let bob = Hotkey([1; 32]);
        let req = |o: &ServedOffer| Request::Chunk {
            transfer_id: o.transfer_id,
            index: 0,
        };
        let expired = offer_of(dir.path(), bob, crate::unix_now());
        let r = server(&expired).answer(&req(&expired), &bob).await;
        assert_eq!(r.unwrap_err().0, Refusal::Expired);

        let revoked = offer_of(dir.path(), bob, crate::unix_now() + 600);
        revoked.revoked.store(true, Ordering::Relaxed);
        let r = server(&revoked).answer(&req(&revoked), &bob).await;
        assert_eq!(r.unwrap_err().0, Refusal::Revoked);

        // The file changes under a live offer: the first read finds out, and from then on the
        // offer is refused as changed without reading again.
        let live = offer_of(dir.path(), bob, crate::unix_now() + 600);
        let s = server(&live);
        std::fs::write(
            dir.path().join("src"),
            vec![6u8; MIN_CHUNK_SIZE as usize + 10],
        )
        .unwrap();
        assert_eq!(
            s.answer(&req(&live), &bob).await.unwrap_err().0,
            Refusal::Changed
        );
        assert!(live.changed.load(Ordering::Relaxed));
    }
}
