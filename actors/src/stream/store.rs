//! sled behind the outbox and the seen-set, written behind.
//!
//! Most messages live for less than a millisecond: accepted, sent, acknowledged, released. Writing
//! each to sled and deleting it again a moment later cost more than everything else a message
//! does (measured: sled's node copies and log writes dominated a profile of the message
//! benchmark). So both stores keep new entries in memory first and [`SledOutbox::persist`] /
//! [`SledSeen::persist`] write those still alive in one batch: on the StreamActor's 100 ms tick,
//! when [`PERSIST_AFTER`] entries are waiting, and when the actor stops. An entry removed before
//! that never touches the disk.
//!
//! Nothing is fsynced per message either (that would cap a node at a few hundred messages per
//! second); sled's flusher makes batches durable within `storage.flush_every`, and a clean
//! shutdown writes and flushes everything. A crash can therefore lose what arrived in the last
//! tick plus `flush_every`, with bounded and safe effects: an outbox entry not yet on disk is a
//! message `send` accepted but never stored, and a seen id not yet on disk can let one retried
//! message through a second time.

use crate::storage::{Store, StoreError, TREE_OUTBOX, TREE_SEEN};
use hermes_proto::inbox::SeenStore;
use hermes_proto::outbox::{OutboxStore, ScannedEntry, ENTRY_HEADER_LEN, KEY_LEN};
use std::collections::{HashMap, HashSet};

/// Entries waiting in memory before they are written without waiting for the tick.
pub const PERSIST_AFTER: usize = 4096;

/// The outbox tree, written behind.
#[derive(Debug)]
pub struct SledOutbox {
    tree: sled::Tree,
    store: Store,
    /// Written to memory, not yet to sled.
    pending: HashMap<[u8; KEY_LEN], Vec<u8>>,
    /// Removed in memory, still in sled.
    removed: HashSet<[u8; KEY_LEN]>,
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
            pending: HashMap::new(),
            removed: HashSet::new(),
        })
    }

    /// Writes every insertion and removal still in memory to sled in one batch; returns how
    /// many. They are durable once sled flushes ([`Store::flush_async`]).
    ///
    /// # Errors
    /// [`StoreError`] on sled failure (the entries stay in memory for the next attempt).
    pub fn persist(&mut self) -> Result<usize, StoreError> {
        if self.pending.is_empty() && self.removed.is_empty() {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        for (k, v) in &self.pending {
            batch.insert(&k[..], &v[..]);
        }
        for k in &self.removed {
            batch.remove(&k[..]);
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.store.db_err(e))?;
        let n = self.pending.len() + self.removed.len();
        self.pending.clear();
        self.removed.clear();
        Ok(n)
    }
}

impl OutboxStore for SledOutbox {
    type Error = StoreError;

    fn insert(&mut self, key: &[u8; KEY_LEN], value: &[u8]) -> Result<(), StoreError> {
        self.pending.insert(*key, value.to_vec());
        if self.pending.len() >= PERSIST_AFTER {
            self.persist()?;
        }
        Ok(())
    }

    fn get(&self, key: &[u8; KEY_LEN]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.pending.get(key) {
            return Ok(Some(v.clone()));
        }
        if self.removed.contains(key) {
            return Ok(None);
        }
        self.tree
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.store.db_err(e))
    }

    fn remove(&mut self, key: &[u8; KEY_LEN]) -> Result<bool, StoreError> {
        if self.pending.remove(key).is_some() {
            // Never written: nothing on disk can bring it back.
            return Ok(false);
        }
        self.removed.insert(*key);
        if self.removed.len() >= PERSIST_AFTER {
            self.persist()?;
        }
        Ok(true)
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
            if !self.pending.contains_key(&key) && !self.removed.contains(&key) {
                out.push((key, v[..v.len().min(ENTRY_HEADER_LEN)].to_vec(), v.len()));
            }
        }
        for (key, v) in &self.pending {
            out.push((*key, v[..v.len().min(ENTRY_HEADER_LEN)].to_vec(), v.len()));
        }
        out.sort_by_key(|e| e.0);
        Ok(out)
    }

    fn next_seq(&mut self) -> Result<u64, StoreError> {
        self.store.generate_id()
    }
}

/// The seen-set tree, written behind.
#[derive(Debug)]
pub struct SledSeen {
    tree: sled::Tree,
    store: Store,
    /// Written to memory, not yet to sled.
    pending: HashMap<Vec<u8>, u64>,
    /// Removed in memory, still in sled.
    removed: HashSet<Vec<u8>>,
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
            pending: HashMap::new(),
            removed: HashSet::new(),
        })
    }

    /// Writes every entry still in memory to sled in one batch.
    ///
    /// # Errors
    /// [`StoreError`] on sled failure (the entries stay in memory for the next attempt).
    pub fn persist(&mut self) -> Result<usize, StoreError> {
        if self.pending.is_empty() && self.removed.is_empty() {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        for (k, v) in &self.pending {
            batch.insert(&k[..], &v.to_le_bytes()[..]);
        }
        for k in &self.removed {
            batch.remove(&k[..]);
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.store.db_err(e))?;
        let n = self.pending.len() + self.removed.len();
        self.pending.clear();
        self.removed.clear();
        Ok(n)
    }
}

impl SeenStore for SledSeen {
    type Error = StoreError;

    fn insert_if_absent(&mut self, key: &[u8], expires_at: u64) -> Result<bool, StoreError> {
        if self.pending.contains_key(key) {
            return Ok(false);
        }
        if !self.removed.remove(key)
            && self
                .tree
                .contains_key(key)
                .map_err(|e| self.store.db_err(e))?
        {
            return Ok(false);
        }
        self.pending.insert(key.to_vec(), expires_at);
        if self.pending.len() >= PERSIST_AFTER {
            self.persist()?;
        }
        Ok(true)
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        if self.pending.remove(key).is_none() {
            self.removed.insert(key.to_vec());
            if self.removed.len() >= PERSIST_AFTER {
                self.persist()?;
            }
        }
        Ok(())
    }

    fn remove_expired(&mut self, now: u64) -> Result<usize, StoreError> {
        let before = self.pending.len();
        self.pending.retain(|_, e| *e > now);
        let mut n = before - self.pending.len();
        self.persist()?;
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
        (self.tree.len() + self.pending.len()).saturating_sub(self.removed.len())
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
            assert!(
                o.take_unflushed().is_empty(),
                "never written, so released at once"
            );
            let mut d = Dedup::new(SledSeen::open(&store).unwrap());
            assert!(d.claim(&bob, &Id128([9; 16]), 500).unwrap());
            // Written behind: nothing reaches sled until persisted.
            assert_eq!(
                o.store_mut().persist().unwrap(),
                1,
                "the acknowledged one never does"
            );
            assert_eq!(d.store_mut().persist().unwrap(), 1);
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
        // Deleting an entry that is on disk is not durable until persisted and flushed.
        o.acked(&[id]).unwrap();
        assert_eq!(o.take_unflushed(), vec![id]);
        o.store_mut().persist().unwrap();
        store.flush().unwrap();
        let (o2, _) =
            Outbox::load(SledOutbox::open(&store).unwrap(), OutboxLimits::default()).unwrap();
        assert_eq!(
            o2.pending().iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![c.id]
        );
        let mut d = Dedup::new(SledSeen::open(&store).unwrap());
        assert!(!d.claim(&bob, &Id128([9; 16]), 500).unwrap());
        assert_eq!(d.sweep(499).unwrap(), 0);
        assert_eq!(d.sweep(500).unwrap(), 1);
        assert!(d.claim(&bob, &Id128([9; 16]), 500).unwrap());
    }
}
