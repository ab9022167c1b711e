//! The node's persistent state: one sled database per data directory.
//!
//! Opening takes an exclusive OS lock on `DATA_DIR/LOCK` before sled is touched, so a second
//! runtime (in this or another process) pointed at the same directory fails at once with
//! [`StoreError::InUse`] instead of blocking or corrupting state. The lock is released when the
//! last clone of the [`Store`] is dropped, after sled has been flushed.
//!
//! Trees (one per concern, see the design notes): `kad_records`, `kad_providers`, `outbox`,
//! `seen_ids`, and later `sync_*`, `epochs`, `attestations`. (`prekeys` held the prekey seed in
//! early versions; prekeys now live in their own file, see `identity::prekeys`. Opening a database
//! that still holds one moves the seed out and rewrites the database without it, see
//! [`Store::take_legacy_prekey`].)

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use zeroize::Zeroizing;

/// Tree in which early versions held the X25519 prekey seed (key `current`); read only to migrate.
pub const TREE_PREKEYS: &str = "prekeys";
/// Where the database is copied while a legacy prekey seed is migrated out of it.
const REWRITE_DIR: &str = "db.rewrite";
/// Present once that copy is complete and durable: from then on the copy replaces the original.
const REWRITE_DONE: &str = "db.rewrite.done";

/// A prekey seed taken out of a legacy database, in zeroized heap memory.
pub type LegacySeed = Box<Zeroizing<[u8; 32]>>;
/// Kademlia value records.
pub const TREE_KAD_RECORDS: &str = "kad_records";
/// Kademlia provider records.
pub const TREE_KAD_PROVIDERS: &str = "kad_providers";
/// Outgoing messages not yet acknowledged.
pub const TREE_OUTBOX: &str = "outbox";
/// Received message ids and session ids, for de-duplication and replay protection.
pub const TREE_SEEN: &str = "seen_ids";

/// Errors opening or using the store.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another runtime holds this data directory.
    #[error("data dir in use: {0} is locked by another Hermes runtime (stop it, or use another data_dir)")]
    InUse(PathBuf),
    /// The directory or lock file could not be created or opened.
    #[error("cannot open data dir {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// sled reported an error (I/O or corruption).
    #[error("database error in {path}: {source}")]
    Db {
        /// The database directory.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
}

#[derive(Debug)]
struct Inner {
    db: sled::Db,
    path: PathBuf,
    legacy_prekey: Mutex<Option<LegacySeed>>,
    // Held for its lock; released on drop, after `db` (fields drop in declaration order).
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.db.flush() {
            tracing::error!(path = %self.path.display(), error = %e, "flushing the database on close failed");
        }
    }
}

/// Tuning for [`Store::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled page-cache size in bytes.
    pub cache_capacity: u64,
    /// Background flush interval.
    pub flush_every: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity: 64 << 20,
            flush_every: std::time::Duration::from_millis(500),
        }
    }
}

/// A cheaply clonable handle to the node's database.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir`.
    ///
    /// # Errors
    /// [`StoreError::InUse`] if another runtime holds the directory; [`StoreError::Io`] or
    /// [`StoreError::Db`] otherwise.
    pub fn open(data_dir: &Path, opts: &StoreOptions) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: data_dir.to_path_buf(),
            source,
        };
        create_private_dir(data_dir).map_err(io)?;
        let lock_path = data_dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::InUse(data_dir.to_path_buf()))
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let db_path = data_dir.join("db");
        let open = |path: &Path| {
            sled::Config::new()
                .path(path)
                .cache_capacity(opts.cache_capacity)
                .flush_every_ms(Some(
                    u64::try_from(opts.flush_every.as_millis())
                        .unwrap_or(u64::MAX)
                        .max(1),
                ))
                .open()
                .map_err(|source| StoreError::Db {
                    path: path.to_path_buf(),
                    source,
                })
        };
        finish_rewrite(data_dir, &db_path).map_err(io)?;
        let mut db = open(&db_path)?;
        let (legacy, legacy_prekey) = take_legacy_seed(&db).map_err(|source| StoreError::Db {
            path: db_path.clone(),
            source,
        })?;
        if legacy {
            rewrite_without_legacy(db, data_dir, &db_path, &open)?;
            tracing::info!(
                "rewrote the database without the legacy prekey tree and erased its old files"
            );
            db = open(&db_path)?;
        }
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                path: db_path,
                legacy_prekey: Mutex::new(legacy_prekey),
                _lock: lock,
            }),
        })
    }

    /// The prekey seed an early version kept in the database, if this open found one (once:
    /// the caller imports it into the prekey file). The database no longer holds it: it was
    /// rewritten without it and its old files were overwritten with zeros, because sled is
    /// log-structured and a removed value stays in its log until sled happens to reuse the
    /// space. A crash before the import loses the seed: only sessions sealed to it are affected,
    /// and their senders recover through a stale-prekey refusal.
    pub fn take_legacy_prekey(&self) -> Option<LegacySeed> {
        self.inner
            .legacy_prekey
            .lock()
            .map(|mut g| g.take())
            .unwrap_or(None)
    }

    /// Opens a named tree.
    ///
    /// # Errors
    /// [`StoreError::Db`] on sled failure.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.inner.db.open_tree(name).map_err(|e| self.db_err(e))
    }

    /// Flushes every dirty page to disk.
    ///
    /// # Errors
    /// [`StoreError::Db`] on sled failure.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner
            .db
            .flush()
            .map(|_| ())
            .map_err(|e| self.db_err(e))
    }

    /// Flushes in the background; the future resolves once everything written before the call
    /// is durable. Does not block the calling thread.
    pub fn flush_async(
        &self,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + 'static {
        let inner = self.inner.clone();
        async move {
            inner
                .db
                .flush_async()
                .await
                .map(|_| ())
                .map_err(|source| StoreError::Db {
                    path: inner.path.clone(),
                    source,
                })
        }
    }

    /// A number larger than any returned before, also across restarts (sled reserves ranges
    /// durably, so a crash skips numbers but never repeats one).
    ///
    /// # Errors
    /// [`StoreError::Db`] on sled failure.
    pub fn generate_id(&self) -> Result<u64, StoreError> {
        self.inner.db.generate_id().map_err(|e| self.db_err(e))
    }

    /// Wraps a sled error with this store's path.
    pub fn db_err(&self, source: sled::Error) -> StoreError {
        StoreError::Db {
            path: self.inner.path.clone(),
            source,
        }
    }
}

/// Whether the database has the legacy [`TREE_PREKEYS`] tree at all, and the seed under its
/// key `current` (copied into zeroized heap memory) if it holds one. An empty tree still counts:
/// versions that migrated the seed out with a plain `remove` left it in sled's log.
fn take_legacy_seed(db: &sled::Db) -> sled::Result<(bool, Option<LegacySeed>)> {
    if !db
        .tree_names()
        .iter()
        .any(|n| n.as_ref() == TREE_PREKEYS.as_bytes())
    {
        return Ok((false, None));
    }
    let seed = db
        .open_tree(TREE_PREKEYS)?
        .get(b"current")?
        .filter(|v| v.len() == 32)
        .map(|v| {
            let mut seed = Box::new(Zeroizing::new([0u8; 32]));
            seed.copy_from_slice(&v);
            seed
        });
    Ok((true, seed))
}

/// Copies every tree but [`TREE_PREKEYS`] into [`REWRITE_DIR`], advances the copy's id
/// generator past the original's (outbox keys are ordered by it and must never repeat), marks
/// the copy complete, then erases the original and puts the copy in its place.
fn rewrite_without_legacy(
    db: sled::Db,
    data_dir: &Path,
    db_path: &Path,
    open: &dyn Fn(&Path) -> Result<sled::Db, StoreError>,
) -> Result<(), StoreError> {
    let copy_path = data_dir.join(REWRITE_DIR);
    let dberr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Db {
            path: path.clone(),
            source,
        }
    };
    let io = |source| StoreError::Io {
        path: data_dir.to_path_buf(),
        source,
    };
    if copy_path.exists() {
        fs::remove_dir_all(&copy_path).map_err(io)?;
    }
    let copy = open(&copy_path)?;
    for name in db.tree_names() {
        if name.as_ref() == TREE_PREKEYS.as_bytes() {
            continue;
        }
        let src = db.open_tree(&name).map_err(dberr(db_path))?;
        let dst = copy.open_tree(&name).map_err(dberr(&copy_path))?;
        let mut batch = sled::Batch::default();
        for item in src.iter() {
            let (k, v) = item.map_err(dberr(db_path))?;
            batch.insert(k, v);
        }
        dst.apply_batch(batch).map_err(dberr(&copy_path))?;
    }
    let next = db.generate_id().map_err(dberr(db_path))?;
    while copy.generate_id().map_err(dberr(&copy_path))? < next {}
    copy.flush().map_err(dberr(&copy_path))?;
    drop(copy);
    drop(db);
    File::create(data_dir.join(REWRITE_DONE))
        .and_then(|f| f.sync_all())
        .and_then(|()| File::open(data_dir).and_then(|d| d.sync_all()))
        .map_err(io)?;
    finish_rewrite(data_dir, db_path).map_err(io)
}

/// Completes a rewrite whose copy is marked complete (also after a crash): the original is
/// overwritten with zeros and removed, and the copy takes its place. A copy not marked complete
/// is an interrupted one and is dropped (the original is still whole).
fn finish_rewrite(data_dir: &Path, db_path: &Path) -> std::io::Result<()> {
    let copy_path = data_dir.join(REWRITE_DIR);
    let done = data_dir.join(REWRITE_DONE);
    if !done.exists() {
        if copy_path.exists() {
            fs::remove_dir_all(&copy_path)?;
        }
        return Ok(());
    }
    if db_path.exists() {
        scrub_tree(db_path)?;
        fs::remove_dir_all(db_path)?;
    }
    if copy_path.exists() {
        fs::rename(&copy_path, db_path)?;
    }
    File::open(data_dir)?.sync_all()?;
    fs::remove_file(&done)?;
    File::open(data_dir)?.sync_all()
}

/// Overwrites every file under `dir` with zeros, durably.
fn scrub_tree(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            scrub_tree(&path)?;
            continue;
        }
        let file = OpenOptions::new().write(true).open(&path)?;
        let len = file.metadata()?.len();
        let zeros = vec![0u8; 1 << 16];
        let mut at = 0u64;
        while at < len {
            let n = usize::try_from(len - at).map_or(zeros.len(), |r| r.min(zeros.len()));
            file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        file.sync_all()?;
    }
    Ok(())
}

/// Creates `dir` (and parents) readable only by the owner: it holds private keys.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `bytes` to `path` atomically (temp file + rename) with mode 0600.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_open_is_refused_until_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let t = a.tree("t").unwrap();
        t.insert(b"k", b"v").unwrap();
        assert!(matches!(
            Store::open(dir.path(), &StoreOptions::default()),
            Err(StoreError::InUse(_))
        ));
        drop(t);
        drop(a);
        let b = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert_eq!(b.tree("t").unwrap().get(b"k").unwrap().unwrap(), &b"v"[..]);
    }

    #[test]
    fn an_interrupted_rewrite_is_dropped_and_the_original_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let a = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            a.tree("t").unwrap().insert(b"k", b"v").unwrap();
            a.flush().unwrap();
        }
        // A copy without its completion mark: a rewrite that crashed midway.
        fs::create_dir_all(dir.path().join(REWRITE_DIR).join("blobs")).unwrap();
        fs::write(dir.path().join(REWRITE_DIR).join("db"), b"partial").unwrap();
        let b = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert_eq!(b.tree("t").unwrap().get(b"k").unwrap().unwrap(), &b"v"[..]);
        assert!(!dir.path().join(REWRITE_DIR).exists());
        // A database without the legacy tree is opened as it is.
        assert!(!b
            .inner
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == TREE_PREKEYS.as_bytes()));
    }

    #[test]
    fn private_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_private_file(&p, b"secret").unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&p).unwrap(), b"secret");
    }
}
