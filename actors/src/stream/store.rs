//! sled behind the outbox and the seen-set.
//!
//! Writes are not fsynced one by one (that would cap a node at a few hundred messages per
//! second); sled's background flusher makes them durable within `storage.flush_every`, and a clean
//! shutdown flushes everything. The cost of a crash in between is bounded and safe: an outbox
//! entry that was not yet on disk is a message `send` accepted but never stored, and a seen id
//! that was not yet on disk can let one retried message through a second time.

use crate::storage::{Store, StoreError, TREE_OUTBOX, TREE_SEEN};
use hermes_proto::inbox::SeenStore;
use hermes_proto::outbox::{OutboxStore, ScannedEntry, ENTRY_HEADER_LEN, KEY_LEN};

/// The outbox tree.
#[derive(Debug, Clone)]
pub struct SledOutbox {
    tree: sled::Tree,
    store: Store,
}

impl SledOutbox {
    /// Opens the `outbox` tree.
    ///
    /// # Errors
    /// [`StoreError`] on sled failure.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(SledOutbox {
            tree: store.tree(TREE_OUTBOX)?,
            store: store.clone(),
        })
    }
}

impl OutboxStore for SledOutbox {
    type Error = StoreError;

    fn insert(&mut self, key: &[u8; KEY_LEN], value: &[u8]) -> Result<(), StoreError> {
        self.tree
            .insert(key, value)
            .map(|_| ())
            .map_err(|e| self.store.db_err(e))
    }

    fn get(&self, key: &[u8; KEY_LEN]) -> Result<Option<Vec<u8>>, StoreError> {
        self.tree
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.store.db_err(e))
    }

    fn remove(&mut self, key: &[u8; KEY_LEN]) -> Result<(), StoreError> {
        self.tree
            .remove(key)
            .map(|_| ())
            .map_err(|e| self.store.db_err(e))
    }

    fn scan(&self) -> Result<Vec<ScannedEntry>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item.map_err(|e| self.store.db_err(e))?;
            let Ok(key) = <[u8; KEY_LEN]>::try_from(k.as_ref()) else {
                // Not ours: drop it so it cannot accumulate.
                let _ = self.tree.remove(&k);
                continue;
            };
            out.push((key, v[..v.len().min(ENTRY_HEADER_LEN)].to_vec(), v.len()));
        }
        Ok(out)
    }

    fn next_seq(&mut self) -> Result<u64, StoreError> {
        self.store.generate_id()
    }
}

/// The seen-set tree.
#[derive(Debug, Clone)]
pub struct SledSeen {
    tree: sled::Tree,
    store: Store,
}

impl SledSeen {
    /// Opens the `seen_ids` tree.
    ///
    /// # Errors
    /// [`StoreError`] on sled failure.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(SledSeen {
            tree: store.tree(TREE_SEEN)?,
            store: store.clone(),
        })
    }
}

impl SeenStore for SledSeen {
    type Error = StoreError;

    fn insert_if_absent(&mut self, key: &[u8], expires_at: u64) -> Result<bool, StoreError> {
        self.tree
            .compare_and_swap(key, None as Option<&[u8]>, Some(&expires_at.to_le_bytes()))
            .map(|r| r.is_ok())
            .map_err(|e| self.store.db_err(e))
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.tree
            .remove(key)
            .map(|_| ())
            .map_err(|e| self.store.db_err(e))
    }

    fn remove_expired(&mut self, now: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.tree.iter() {
            let (k, v) = item.map_err(|e| self.store.db_err(e))?;
            let expiry = <[u8; 8]>::try_from(v.as_ref())
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            if expiry <= now {
                self.tree.remove(&k).map_err(|e| self.store.db_err(e))?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn len(&self) -> usize {
        self.tree.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StoreOptions;
    use hermes_proto::inbox::Dedup;
    use hermes_proto::outbox::{Outbox, OutboxLimits};
    use hermes_proto::{Hotkey, Id128};

    #[test]
    fn outbox_and_seen_set_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let bob = Hotkey([2; 32]);
        let mut rng = hpke::rand_core::UnwrapErr(getrandom::SysRng);
        let id = {
            let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            let (mut o, _) =
                Outbox::load(SledOutbox::open(&store).unwrap(), OutboxLimits::default()).unwrap();
            let a = o.enqueue(bob, 3, b"first", 100, 60, &mut rng).unwrap();
            let b = o.enqueue(bob, 3, b"second", 100, 60, &mut rng).unwrap();
            o.acked(&[a.id]).unwrap();
            let mut d = Dedup::new(SledSeen::open(&store).unwrap());
            assert!(d.claim(&bob, &Id128([9; 16]), 500).unwrap());
            store.flush().unwrap();
            b.id
        };
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let (mut o, bad) =
            Outbox::load(SledOutbox::open(&store).unwrap(), OutboxLimits::default()).unwrap();
        assert_eq!(bad, 0);
        assert_eq!(
            o.pending().iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![id]
        );
        o.link_up(&bob);
        assert_eq!(
            o.take(&bob, 10, 1 << 20, 100).unwrap()[0].payload,
            b"second"
        );
        // Sequence numbers keep increasing across the reopen.
        let c = o.enqueue(bob, 3, b"third", 100, 60, &mut rng).unwrap();
        assert!(c.seq > o.pending()[0].seq);
        let mut d = Dedup::new(SledSeen::open(&store).unwrap());
        assert!(!d.claim(&bob, &Id128([9; 16]), 500).unwrap());
        assert_eq!(d.sweep(499).unwrap(), 0);
        assert_eq!(d.sweep(500).unwrap(), 1);
        assert!(d.claim(&bob, &Id128([9; 16]), 500).unwrap());
    }
}
