//! What the SyncActor keeps in sled so that offers keep being served and downloads resume after
//! a restart: one record per offer and per download (JSON: small, rare, and readable when
//! debugging a data dir), and the manifests beside them (binary, up to 32 MiB).

use crate::storage::{Store, StoreError};
use hermes_proto::sync::Manifest;
use hermes_proto::{Hotkey, Id128};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Tree of offer records, by transfer id.
pub const TREE_OFFERS: &str = "sync_offers";
/// Tree of download records, by transfer id.
pub const TREE_DOWNLOADS: &str = "sync_downloads";
/// Tree of manifests: `o` or `d` (offer, download) followed by the transfer id.
pub const TREE_MANIFESTS: &str = "sync_manifests";

/// Where an offer's chunks are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Served by this node over `/hermes/sync/1`, from the source file.
    Embedded,
    /// Uploaded to an S3-compatible store; the receiver gets presigned URLs.
    S3,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Embedded => "embedded",
            Backend::S3 => "s3",
        })
    }
}

/// Where a transfer stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum State {
    /// Offer: sealing and hashing the source (or uploading it).
    Preparing,
    /// Offer: chunks are available to the receiver.
    Serving,
    /// Download: fetching chunks.
    Fetching,
    /// Download: complete and renamed into place.
    Done,
    /// Stopped by the user; a download resumes when fetched again.
    Cancelled,
    /// Offer: revoked by the sender.
    Revoked,
    /// Offer: past its ticket's expiry.
    Expired,
    /// Stopped by an error (the text says which); a download keeps its partial file.
    Failed(String),
}

impl State {
    /// Whether the transfer is over (nothing runs for it any more).
    pub fn is_final(&self) -> bool {
        !matches!(self, State::Preparing | State::Serving | State::Fetching)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Preparing => f.write_str("preparing"),
            State::Serving => f.write_str("serving"),
            State::Fetching => f.write_str("fetching"),
            State::Done => f.write_str("done"),
            State::Cancelled => f.write_str("cancelled"),
            State::Revoked => f.write_str("revoked"),
            State::Expired => f.write_str("expired"),
            State::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// An offer as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferRecord {
    /// Transfer id (hex).
    pub transfer_id: String,
    /// The source file.
    pub path: PathBuf,
    /// Receiver's hotkey (hex).
    pub receiver: String,
    /// Subnet.
    pub netuid: u16,
    /// When offered (unix seconds).
    pub created_at: u64,
    /// Ticket expiry (unix seconds).
    pub expires_at: u64,
    /// Payload size.
    pub size: u64,
    /// Chunk size.
    pub chunk_size: u32,
    /// Content key (hex). The data dir already holds the node's keys; the content key is what
    /// lets the node serve the offer again after a restart.
    pub key: String,
    /// Source size at offer time.
    pub stamp_size: u64,
    /// Source mtime at offer time, nanoseconds since the epoch.
    pub stamp_mtime_ns: u128,
    /// Store.
    pub backend: Backend,
    /// State.
    pub state: State,
    /// The ticket, in its string form.
    pub ticket: String,
}

/// A download as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadRecord {
    /// Transfer id (hex).
    pub transfer_id: String,
    /// The ticket, in its string form.
    pub ticket: String,
    /// Destination file.
    pub dest: PathBuf,
    /// Content key (hex), unwrapped once: the prekey it was sealed to may be erased before the
    /// download ends.
    pub key: String,
    /// When the download was started (unix seconds).
    pub created_at: u64,
    /// Payload size.
    pub size: u64,
    /// Bytes in place at the last update.
    pub done_bytes: u64,
    /// State.
    pub state: State,
}

/// The three trees.
#[derive(Debug, Clone)]
pub struct Records {
    offers: sled::Tree,
    downloads: sled::Tree,
    manifests: sled::Tree,
    store: Store,
}

fn manifest_key(kind: u8, id: &Id128) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = kind;
    k[1..].copy_from_slice(&id.0);
    k
}

impl Records {
    /// Opens the trees.
    ///
    /// # Errors
    /// [`StoreError`] when the database cannot be opened.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Records {
            offers: store.tree(TREE_OFFERS)?,
            downloads: store.tree(TREE_DOWNLOADS)?,
            manifests: store.tree(TREE_MANIFESTS)?,
            store: store.clone(),
        })
    }

    fn put<T: Serialize>(&self, tree: &sled::Tree, id: &Id128, v: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(v).unwrap_or_default();
        tree.insert(id.0, bytes).map_err(|e| self.store.db_err(e))?;
        Ok(())
    }

    /// Writes an offer record (and its manifest, once) and flushes.
    ///
    /// # Errors
    /// [`StoreError`] when it cannot be written.
    pub async fn save_offer(
        &self,
        id: &Id128,
        r: &OfferRecord,
        manifest: Option<&Manifest>,
    ) -> Result<(), StoreError> {
        if let Some(m) = manifest {
            self.manifests
                .insert(manifest_key(b'o', id), m.encode())
                .map_err(|e| self.store.db_err(e))?;
        }
        self.put(&self.offers, id, r)?;
        self.flush().await
    }

    /// Writes a download record (and its manifest, once) and flushes.
    ///
    /// # Errors
    /// [`StoreError`] when it cannot be written.
    pub async fn save_download(
        &self,
        id: &Id128,
        r: &DownloadRecord,
        manifest: Option<&Manifest>,
    ) -> Result<(), StoreError> {
        if let Some(m) = manifest {
            self.manifests
                .insert(manifest_key(b'd', id), m.encode())
                .map_err(|e| self.store.db_err(e))?;
        }
        self.put(&self.downloads, id, r)?;
        self.flush().await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.offers
            .flush_async()
            .await
            .map_err(|e| self.store.db_err(e))?;
        Ok(())
    }

    /// The stored manifest of an offer (`b'o'`) or a download (`b'd'`), if it decodes.
    pub fn manifest(&self, kind: u8, id: &Id128) -> Option<Manifest> {
        let bytes = self.manifests.get(manifest_key(kind, id)).ok()??;
        Manifest::decode(&bytes).ok()
    }

    /// Every offer record (undecodable ones are skipped with a warning).
    pub fn offers(&self) -> Vec<(Id128, OfferRecord)> {
        scan(&self.offers)
    }

    /// Every download record.
    pub fn downloads(&self) -> Vec<(Id128, DownloadRecord)> {
        scan(&self.downloads)
    }

    /// One offer record.
    pub fn offer(&self, id: &Id128) -> Option<OfferRecord> {
        let v = self.offers.get(id.0).ok()??;
        serde_json::from_slice(&v).ok()
    }

    /// One download record.
    pub fn download(&self, id: &Id128) -> Option<DownloadRecord> {
        let v = self.downloads.get(id.0).ok()??;
        serde_json::from_slice(&v).ok()
    }
}

fn scan<T: for<'de> Deserialize<'de>>(tree: &sled::Tree) -> Vec<(Id128, T)> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let Ok((k, v)) = item else { continue };
        let Ok(id) = <[u8; 16]>::try_from(&k[..]) else {
            continue;
        };
        match serde_json::from_slice(&v) {
            Ok(r) => out.push((Id128(id), r)),
            Err(e) => {
                tracing::warn!(transfer = %Id128(id), error = %e, "skipping an unreadable transfer record");
            }
        }
    }
    out
}

/// Hex of a hotkey, as stored.
pub fn hotkey_hex(h: &Hotkey) -> String {
    hex::encode(h.0)
}

/// A stored hotkey.
pub fn hotkey_from_hex(s: &str) -> Option<Hotkey> {
    let b = hex::decode(s).ok()?;
    Some(Hotkey(<[u8; 32]>::try_from(b.as_slice()).ok()?))
}
