//! The sender's side of the SyncActor: making offers, serving them again after a restart,
//! sweeping expired ones.

use super::actor::{from_mtime_ns, key_from_hex, mtime_ns, random_key, Engine, Offer, SyncError};
use super::records::{hotkey_from_hex, hotkey_hex, Backend, OfferRecord, State};
use super::s3::S3Store;
use super::serve::ServedOffer;
use super::source::{SealedSource, SourceError, SourceStamp};
use crate::identity::IssueTicket;
use crate::network::reach::reach;
use crate::network::Command;
use hermes_proto::sync::ticket::MAX_ADDRS;
use hermes_proto::sync::{Cipher, ContentKey, Location, Ticket, TicketRequest};
use hermes_proto::{Hotkey, Id128};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// How long an offer waits to learn the receiver's current prekey.
const FIND_RECEIVER_TIMEOUT: Duration = Duration::from_secs(20);

impl Engine {
    pub(super) async fn offer(&self, o: Offer) -> Result<Ticket, SyncError> {
        let cfg = &self.cfg;
        if o.to == cfg.me {
            return Err(SyncError::Invalid(
                "the receiver is this node's own hotkey".into(),
            ));
        }
        let s3 = match o.backend {
            Backend::S3 => Some(self.s3_store()?),
            Backend::Embedded => None,
        };
        let ttl = o.ttl.unwrap_or(cfg.ticket_ttl);
        let ttl_secs = ttl.as_secs();
        if ttl_secs == 0 || ttl_secs > hermes_proto::sync::ticket::MAX_TICKET_LIFETIME_SECS {
            return Err(SyncError::Invalid(format!(
                "a ticket lives 1 s to 30 days; {} s was asked",
                ttl.as_secs_f64()
            )));
        }
        let path = std::fs::canonicalize(&o.path).map_err(|source| SourceError::Io {
            path: o.path.clone(),
            source,
        })?;
        if !path.is_file() {
            return Err(SyncError::Invalid(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let file_name = match &o.file_name {
            Some(n) => Some(n.clone()),
            None => path
                .file_name()
                .and_then(|n| n.to_str())
                .map(|n| n.chars().take(255).collect()),
        };
        // The receiver's current prekey, from its verified binding: a connected peer's, else
        // the one it published in the DHT, else by connecting to it.
        let n = &self.net;
        let prekey = match self.published_prekey(&o.to).await {
            Some(p) => p,
            None => {
                reach(
                    &n.commands,
                    &n.directory,
                    &o.to,
                    n.ss58_prefix,
                    FIND_RECEIVER_TIMEOUT,
                )
                .await
                .map_err(|e| SyncError::Unreachable(e.to_string()))?
                .binding
                .record
                .prekey
            }
        };
        // An S3 upload of the same file to the same receiver that was interrupted (the node
        // killed mid-upload) resumes under its transfer id and key: the parts already in the
        // bucket are not sent again, and nothing is re-hashed.
        let resumed = s3
            .as_ref()
            .and_then(|_| self.interrupted_upload(&path, &o.to, o.netuid));
        let (transfer_id, key, source) = match resumed {
            Some(r) => r,
            None => {
                let (transfer_id, key) = random_key();
                let chunk_size = o.chunk_size.unwrap_or(cfg.chunk_size);
                let sealing_key = ContentKey::from_bytes(*key.expose());
                let p = path.clone();
                let source = tokio::task::spawn_blocking(move || {
                    SealedSource::offer(&p, transfer_id, sealing_key, chunk_size, |_, _| {})
                })
                .await
                .map_err(|_| SyncError::Stopped)??;
                (transfer_id, key, source)
            }
        };
        let source = Arc::new(source);
        let manifest = source.manifest().clone();
        let layout = *manifest.layout();
        let stamp = source.stamp();
        let now = crate::unix_now();
        let mut record = OfferRecord {
            transfer_id: transfer_id.to_hex(),
            path,
            receiver: hotkey_hex(&o.to),
            netuid: o.netuid,
            created_at: now,
            expires_at: now.saturating_add(ttl_secs),
            size: layout.size(),
            chunk_size: layout.chunk_size(),
            key: hex::encode(key.expose()),
            stamp_size: stamp.size,
            stamp_mtime_ns: mtime_ns(stamp.modified),
            backend: o.backend,
            state: State::Preparing,
            ticket: String::new(),
        };
        let mut locations = Vec::new();
        if let Some(store) = &s3 {
            // Recorded before the upload, so that the same share after a crash resumes it.
            self.records
                .save_offer(&transfer_id, &record, Some(&manifest))
                .await?;
            let (_keep, cancel) = tokio::sync::watch::channel(false);
            let summary = store
                .upload(source.clone(), cfg.fetch.parallelism, |_, _| {}, cancel)
                .await
                .map_err(|e| SyncError::Store(e.to_string()))?;
            tracing::info!(transfer = %transfer_id, parts = summary.parts_total, resumed = summary.parts_resumed, "uploaded to S3");
            // Presigned URLs live at most 7 days; the ticket does not outlive them.
            record.expires_at = S3Store::presigned_until(record.expires_at, now);
            locations.push(
                store
                    .presign(transfer_id, record.expires_at, now)
                    .map_err(|e| SyncError::Store(e.to_string()))?,
            );
        }
        // This node serves the same sealed bytes as long as it runs: the only location of an
        // embedded offer, the fallback of an S3 one.
        locations.push(Location::Peer {
            peer_id: cfg.peer_id.to_bytes(),
            addrs: self.listen_addrs().await,
        });
        let request = TicketRequest {
            transfer_id,
            receiver: o.to,
            receiver_prekey: prekey,
            netuid: o.netuid,
            expires_at: record.expires_at,
            layout,
            cipher: Cipher::Aes256Gcm,
            root: manifest.root(),
            file_name,
            locations,
        };
        let ticket = self
            .identity
            .send(IssueTicket {
                request,
                key: ContentKey::from_bytes(*key.expose()),
            })
            .await
            .map_err(|_| SyncError::Stopped)??;
        record.expires_at = ticket.body.expires_at;
        record.state = State::Serving;
        record.ticket = ticket.to_string();
        self.records
            .save_offer(&transfer_id, &record, Some(&manifest))
            .await?;
        self.offers.insert(Arc::new(ServedOffer::new(
            source,
            o.to,
            ticket.body.expires_at,
        )));
        tracing::info!(transfer = %transfer_id, size = layout.size(), to = %o.to.to_ss58(cfg.ss58_prefix), "offer ready");
        Ok(ticket)
    }

    /// The S3 store, or why there is none.
    fn s3_store(&self) -> Result<S3Store, SyncError> {
        match &self.cfg.s3 {
            Some(Ok(store)) => Ok(store.clone()),
            Some(Err(why)) => Err(SyncError::Store(why.clone())),
            None => Err(SyncError::Invalid(
                "the S3 backend is not configured on this node: set sync.s3 (endpoint, bucket) in \
                 the config"
                    .into(),
            )),
        }
    }

    /// An S3 offer of `path` to `to` that was recorded but never finished its upload, reopened
    /// (its source unchanged) with its transfer id and key.
    fn interrupted_upload(
        &self,
        path: &std::path::Path,
        to: &Hotkey,
        netuid: u16,
    ) -> Option<(Id128, ContentKey, SealedSource)> {
        let to = hotkey_hex(to);
        self.records.offers().into_iter().find_map(|(id, r)| {
            if r.state != State::Preparing
                || r.backend != Backend::S3
                || r.path != path
                || r.receiver != to
                || r.netuid != netuid
            {
                return None;
            }
            let key = key_from_hex(&r.key)?;
            let manifest = self.records.manifest(b'o', &id)?;
            let stamp = SourceStamp {
                size: r.stamp_size,
                modified: from_mtime_ns(r.stamp_mtime_ns),
            };
            let sealing_key = ContentKey::from_bytes(*key.expose());
            let source = SealedSource::reopen(path, id, sealing_key, manifest, stamp).ok()?;
            tracing::info!(transfer = %id, "resuming an interrupted S3 upload");
            Some((id, key, source))
        })
    }

    /// The prekey of `to`'s current binding when it is connected, or published in the DHT
    /// (verified there by the network before it is returned).
    async fn published_prekey(&self, to: &Hotkey) -> Option<[u8; 32]> {
        if let Some(p) = self.net.directory.by_hotkey(to) {
            return Some(p.binding.record.prekey);
        }
        let (tx, rx) = oneshot::channel();
        self.net.commands.send(Command::Find(*to, tx)).await.ok()?;
        let b = tokio::time::timeout(FIND_RECEIVER_TIMEOUT, rx)
            .await
            .ok()?
            .ok()?
            .ok()?;
        (b.record.expires_at > crate::unix_now()).then_some(b.record.prekey)
    }

    /// This node's listen addresses, binary, for the ticket (at most [`MAX_ADDRS`]).
    async fn listen_addrs(&self) -> Vec<Vec<u8>> {
        let (tx, rx) = oneshot::channel();
        if self
            .net
            .commands
            .send(Command::ListenAddrs(tx))
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await
            .unwrap_or_default()
            .into_iter()
            .take(MAX_ADDRS)
            .map(|a| a.to_vec())
            .collect()
    }

    /// Serves the stored offers again (each source reopened and checked).
    pub(super) fn restore_offers(&self) {
        let now = crate::unix_now();
        for (id, mut r) in self.records.offers() {
            if r.state != State::Serving {
                continue;
            }
            if now >= r.expires_at {
                r.state = State::Expired;
                self.save_later(id, r);
                continue;
            }
            let (Some(key), Some(manifest), Some(receiver)) = (
                key_from_hex(&r.key),
                self.records.manifest(b'o', &id),
                hotkey_from_hex(&r.receiver),
            ) else {
                r.state = State::Failed("the stored offer is damaged".into());
                self.save_later(id, r);
                continue;
            };
            let stamp = SourceStamp {
                size: r.stamp_size,
                modified: from_mtime_ns(r.stamp_mtime_ns),
            };
            match SealedSource::reopen(&r.path, id, key, manifest, stamp) {
                Ok(s) => {
                    self.offers.insert(Arc::new(ServedOffer::new(
                        Arc::new(s),
                        receiver,
                        r.expires_at,
                    )));
                    tracing::info!(transfer = %id, "offer served again");
                }
                Err(e) => {
                    tracing::warn!(transfer = %id, error = %e, "offer can no longer be served");
                    r.state = State::Failed(e.to_string());
                    self.save_later(id, r);
                }
            }
        }
    }

    /// Writes an offer record from a synchronous context.
    fn save_later(&self, id: Id128, r: OfferRecord) {
        let records = self.records.clone();
        actix::spawn(async move {
            if let Err(e) = records.save_offer(&id, &r, None).await {
                tracing::error!(transfer = %id, error = %e, "cannot update the offer's record");
            }
        });
    }

    /// Drops expired offers (revoked ones included) from the table; a serving one is marked
    /// expired in its record.
    pub(super) fn sweep(&self) {
        let now = crate::unix_now();
        for id in self.offers.expired(now) {
            let Some(mut r) = self.records.offer(&id) else {
                continue;
            };
            if r.state == State::Serving {
                r.state = State::Expired;
                self.save_later(id, r);
            }
        }
    }
}
