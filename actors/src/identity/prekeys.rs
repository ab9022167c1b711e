//! The prekey file: the node's rotating X25519 keys, stored in fixed slots that are overwritten in
//! place (see [`hermes_proto::prekey`] for the format and why it is not in sled).
//!
//! Every change is written slot by slot with `pwrite` and made durable with `fdatasync` before the
//! new state is used, so a crash never leaves the node advertising a prekey it cannot open.

use crate::storage::Store;
use hermes_proto::envelope::Prekey;
use hermes_proto::prekey::{PrekeyRing, SlotWrite, FILE_LEN, SLOT_LEN};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

/// File name of the prekey file inside the data dir.
pub const PREKEY_FILE: &str = "prekeys";

/// Errors reading or writing the prekey file.
#[derive(Debug, Error)]
#[error("prekey file {path}: {reason}")]
pub struct PrekeyFileError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    pub reason: String,
}

/// The prekey ring and the open file behind it.
pub struct PrekeyFile {
    path: PathBuf,
    file: File,
    ring: PrekeyRing,
    /// Derived key pairs, current first (deriving costs a scalar multiplication, so it is done
    /// once per change, not per session).
    keys: Vec<Prekey>,
}

impl std::fmt::Debug for PrekeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrekeyFile")
            .field("path", &self.path)
            .field("ring", &self.ring)
            .finish_non_exhaustive()
    }
}

/// A fresh seed, generated in place in zeroized heap memory.
fn random_seed() -> Box<Zeroizing<[u8; 32]>> {
    let mut seed = Box::new(Zeroizing::new([0u8; 32]));
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed[..]);
    seed
}

/// Overwrites the whole of `path` with zeros and makes that durable, so that the seeds it held
/// are gone from the file system's view of it (see the erasure limits in `docs/SECURITY.md`).
fn scrub(path: &Path) -> std::io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
    let zeros = [0u8; 4096];
    let mut at = 0usize;
    while at < len {
        let n = zeros.len().min(len - at);
        file.write_all_at(&zeros[..n], at as u64)?;
        at += n;
    }
    file.sync_data()
}

/// Where versions before in-place scrubbing set an unreadable prekey file aside.
const CORRUPT_FILE: &str = "prekeys.corrupt";

impl PrekeyFile {
    /// Opens (creating if needed) `data_dir/prekeys`. A seed kept in the `prekeys` sled tree by
    /// an older version (taken out of the database by [`Store::open`]) is imported as the
    /// current key. An unreadable file
    /// is overwritten with zeros in place and replaced by a fresh ring: only sessions sealed to
    /// the lost keys are affected, and their senders recover through a stale-prekey refusal.
    /// (Keeping it aside would keep its seeds forever, defeating erasure; a `prekeys.corrupt`
    /// left by an older version is scrubbed and removed the same way.)
    ///
    /// # Errors
    /// [`PrekeyFileError`] when the file cannot be created, read or written.
    pub fn open(data_dir: &Path, store: &Store, now: u64) -> Result<Self, PrekeyFileError> {
        let path = data_dir.join(PREKEY_FILE);
        let err = |reason: String| PrekeyFileError {
            path: path.clone(),
            reason,
        };
        let aside = data_dir.join(CORRUPT_FILE);
        if aside.exists() {
            scrub(&aside)
                .and_then(|()| std::fs::remove_file(&aside))
                .map_err(|e| err(format!("cannot erase {}: {e}", aside.display())))?;
            tracing::info!(path = %aside.display(), "erased a prekey file set aside by an older version");
        }
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| err(e.to_string()))?;
        let len = file.metadata().map_err(|e| err(e.to_string()))?.len();
        let mut ring = if existed && len > 0 {
            let mut buf = Zeroizing::new(vec![
                0u8;
                FILE_LEN.min(
                    usize::try_from(len).unwrap_or(FILE_LEN) + 1
                )
            ]);
            let n = file.read_at(&mut buf, 0).map_err(|e| err(e.to_string()))?;
            match PrekeyRing::decode(&buf[..n]) {
                Ok((ring, report)) => {
                    if report.damaged > 0 {
                        tracing::warn!(path = %path.display(), damaged = report.damaged, "prekey slots failed their check and were dropped");
                    }
                    ring
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "prekey file is unreadable; erasing it and starting a new ring");
                    scrub(&path).map_err(|e| err(format!("cannot erase: {e}")))?;
                    PrekeyRing::default()
                }
            }
        } else {
            PrekeyRing::default()
        };
        if len != FILE_LEN as u64 {
            file.set_len(FILE_LEN as u64)
                .map_err(|e| err(e.to_string()))?;
        }
        let mut writes = Vec::new();
        // Migration: earlier versions kept one seed in sled; the store took it out at open.
        if let Some(seed) = store.take_legacy_prekey() {
            if ring.current().is_none() {
                writes.extend(ring.import_current(&seed, now));
            }
        }
        if ring.current().is_none() {
            writes.extend(ring.rotate(&random_seed(), now));
        }
        let mut me = PrekeyFile {
            path,
            file,
            ring,
            keys: Vec::new(),
        };
        // Write the full file once so every slot is in its final form.
        me.write_all()?;
        drop(writes);
        me.refresh_keys();
        Ok(me)
    }

    fn write_all(&self) -> Result<(), PrekeyFileError> {
        let bytes = self.ring.encode();
        self.file
            .write_all_at(&bytes, 0)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| PrekeyFileError {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    fn apply(&mut self, writes: Vec<SlotWrite>) -> Result<(), PrekeyFileError> {
        if writes.is_empty() {
            return Ok(());
        }
        for w in &writes {
            let offset = (w.index * SLOT_LEN) as u64;
            self.file
                .write_all_at(&w.bytes[..], offset)
                .map_err(|e| PrekeyFileError {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
        }
        self.file.sync_data().map_err(|e| PrekeyFileError {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        self.refresh_keys();
        Ok(())
    }

    fn refresh_keys(&mut self) {
        self.keys = self.ring.entries().iter().map(|e| e.keypair()).collect();
    }

    /// The current prekey's public key.
    pub fn current_public(&self) -> [u8; 32] {
        self.keys.first().map(Prekey::public).unwrap_or([0; 32])
    }

    /// The key pair with public key `public`, if this node still holds it.
    pub fn find(&self, public: &[u8; 32]) -> Option<&Prekey> {
        self.keys.iter().find(|k| k.public() == *public)
    }

    /// Number of prekeys held (current and retired).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no prekey is held (never the case after `open`).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Rotates now: a new current key; the old one is retired (and erased at once if `grace` is
    /// zero). Durable before it returns.
    ///
    /// # Errors
    /// [`PrekeyFileError`] when the file cannot be written.
    pub fn rotate(&mut self, now: u64, grace: u64) -> Result<(), PrekeyFileError> {
        let mut writes = self.ring.rotate(&random_seed(), now);
        writes.extend(self.ring.erase_expired(now, grace));
        self.apply(writes)
    }

    /// Rotates if due and erases retired keys past their grace period. Returns whether the
    /// current key changed.
    ///
    /// # Errors
    /// [`PrekeyFileError`] when the file cannot be written.
    pub fn maintain(&mut self, now: u64, period: u64, grace: u64) -> Result<bool, PrekeyFileError> {
        let rotated = self.ring.rotation_due(now, period);
        let mut writes = if rotated {
            self.ring.rotate(&random_seed(), now)
        } else {
            Vec::new()
        };
        writes.extend(self.ring.erase_expired(now, grace));
        self.apply(writes)?;
        Ok(rotated)
    }

    /// Erases every retired key now, whatever its grace period.
    ///
    /// # Errors
    /// [`PrekeyFileError`] when the file cannot be written.
    pub fn erase_retired(&mut self) -> Result<usize, PrekeyFileError> {
        let writes = self.ring.erase_expired(u64::MAX, 0);
        let n = writes.len();
        self.apply(writes)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StoreOptions;

    #[test]
    fn rotation_persists_and_erasure_removes_the_seed_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let mut pf = PrekeyFile::open(dir.path(), &store, 1000).unwrap();
        let first = pf.current_public();
        assert_eq!(pf.len(), 1);
        pf.rotate(2000, 3600).unwrap();
        let second = pf.current_public();
        assert_ne!(first, second);
        assert!(
            pf.find(&first).is_some(),
            "retired key still opens during its grace"
        );
        drop(pf);
        // Reopened: same keys.
        let mut pf = PrekeyFile::open(dir.path(), &store, 2001).unwrap();
        assert_eq!(pf.current_public(), second);
        assert!(pf.find(&first).is_some());
        // Grace over: the retired key is erased and its slot is zero on disk.
        assert!(!pf.maintain(2000 + 3599, 1 << 30, 3600).unwrap());
        assert!(pf.find(&first).is_some());
        assert!(!pf.maintain(2000 + 3600, 1 << 30, 3600).unwrap());
        assert!(pf.find(&first).is_none());
        let bytes = std::fs::read(dir.path().join(PREKEY_FILE)).unwrap();
        assert_eq!(bytes.len(), FILE_LEN);
        let (ring, _) = PrekeyRing::decode(&bytes).unwrap();
        assert_eq!(ring.entries().len(), 1);
        assert!(ring.entries().iter().all(|e| e.keypair().public() != first));
    }

    /// Every file under `dir` (recursively) except the prekey file, with its contents.
    fn files_but_prekeys(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                files_but_prekeys(&path, out);
            } else if entry.file_name() != PREKEY_FILE {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }

    #[test]
    fn a_seed_from_sled_is_imported_and_erased_from_every_database_file() {
        use crate::storage::TREE_PREKEYS;
        let dir = tempfile::tempdir().unwrap();
        // What an early version left: the seed in sled, next to other data.
        let seed = [0x3cu8; 32];
        {
            let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            store
                .tree(TREE_PREKEYS)
                .unwrap()
                .insert(b"current", &seed)
                .unwrap();
            store.tree("outbox").unwrap().insert(b"k", b"v").unwrap();
            store.generate_id().unwrap();
            store.flush().unwrap();
        }
        let mut before = Vec::new();
        files_but_prekeys(dir.path(), &mut before);
        assert!(
            before.iter().any(|(_, c)| c.windows(32).any(|w| w == seed)),
            "the test needs the seed on disk to begin with"
        );
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let last_id = store.generate_id().unwrap();
        let pf = PrekeyFile::open(dir.path(), &store, 10).unwrap();
        assert_eq!(pf.current_public(), Prekey::from_seed(&seed).public());
        store.flush().unwrap();
        let mut after = Vec::new();
        files_but_prekeys(dir.path(), &mut after);
        for (path, content) in &after {
            assert!(
                !content.windows(32).any(|w| w == seed),
                "the migrated seed survives in {}",
                path.display()
            );
        }
        // Everything else is still there, and ids keep increasing.
        assert_eq!(
            store.tree("outbox").unwrap().get(b"k").unwrap().unwrap(),
            &b"v"[..]
        );
        assert!(!store
            .tree(TREE_PREKEYS)
            .unwrap()
            .contains_key(b"current")
            .unwrap());
        drop(pf);
        drop(store);
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        assert!(store.generate_id().unwrap() > last_id);
        assert!(store.take_legacy_prekey().is_none());
    }

    #[test]
    fn a_corrupt_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let pf = PrekeyFile::open(dir.path(), &store, 10).unwrap();
        drop(pf);
        std::fs::write(dir.path().join(PREKEY_FILE), [0xffu8; FILE_LEN]).unwrap();
        let pf = PrekeyFile::open(dir.path(), &store, 20).unwrap();
        assert_eq!(pf.len(), 1);
    }

    /// A prekey file that does not decode still holds seeds (only its structure is broken): it
    /// is erased in place, never kept aside, and one an older version kept aside is erased too.
    #[test]
    fn an_unreadable_prekey_file_is_erased_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let mut ring = PrekeyRing::default();
        ring.rotate(&[0x5a; 32], 10);
        ring.rotate(&[0xa5; 32], 20);
        let mut bytes = ring.encode().to_vec();
        // A reserved byte set: structurally invalid, every seed still readable.
        bytes[1] = 1;
        std::fs::write(dir.path().join(PREKEY_FILE), &bytes).unwrap();
        assert!(PrekeyRing::decode(&bytes).is_err());
        std::fs::write(dir.path().join(CORRUPT_FILE), &bytes).unwrap();

        let pf = PrekeyFile::open(dir.path(), &store, 30).unwrap();
        assert_eq!(pf.len(), 1);
        assert!(pf.find(&Prekey::from_seed(&[0x5a; 32]).public()).is_none());
        drop(pf);
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            names.push(entry.file_name().to_string_lossy().to_string());
            if entry.file_type().unwrap().is_file() {
                let content = std::fs::read(entry.path()).unwrap();
                for seed in [[0x5au8; 32], [0xa5; 32]] {
                    assert!(
                        !content.windows(32).any(|w| w == seed),
                        "a seed of the unreadable file survives in {:?}",
                        entry.file_name()
                    );
                }
            }
        }
        assert!(!names.iter().any(|n| n.contains("corrupt")), "{names:?}");
    }
}
