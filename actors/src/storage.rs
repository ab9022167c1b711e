//! The node's persistent state: one sled database per data directory.
//!
//! Opening takes an exclusive OS lock on `DATA_DIR/LOCK` before sled is touched, so a second
//! runtime (in this or another process) pointed at the same directory fails at once with
//! [`StoreError::InUse`] instead of blocking or corrupting state. The lock is released when the
//! last clone of the [`Store`] is dropped, after sled has been flushed.
//!
//! Trees (one per concern, see the design notes): `kad_records`, `kad_providers`, `outbox`,
//! `seen_ids`, and later `sync_*`, `epochs`, `attestations`. (`prekeys` held the prekey seed in
//! early versions; prekeys now live in their own file, see `identity::prekeys`.)

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// Tree holding the X25519 prekey seeds.
pub const TREE_PREKEYS: &str = "prekeys";
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
        let db = sled::Config::new()
            .path(&db_path)
            .cache_capacity(opts.cache_capacity)
            .flush_every_ms(Some(
                u64::try_from(opts.flush_every.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            ))
            .open()
            .map_err(|source| StoreError::Db {
                path: db_path.clone(),
                source,
            })?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                path: db_path,
                _lock: lock,
            }),
        })
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
