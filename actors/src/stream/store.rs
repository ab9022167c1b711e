//! sled behind the outbox and the seen-set, written behind.
//!
//! Most messages live for less than a millisecond: accepted, sent, acknowledged, released. Writing
//! each to sled and deleting it again a moment later cost more than everything else a message
//! does (measured: sled's node copies and log writes dominated a profile of the message
//! benchmark). So both stores keep new entries in memory first and [`SledOutbox::persist`] /
//! [`SledSeen::persist`] write those still alive after [`WRITE_BEHIND`] in one batch (on the
//! StreamActor's 100 ms tick; everything at once when too much is waiting, and when the actor
//! stops). An entry removed before that never touches the disk.
//!
//! Nothing is fsynced per message either (that would cap a node at a few hundred messages per
//! second); sled's flusher makes batches durable within `storage.flush_every`, and a clean
//! shutdown writes and flushes everything. A crash can therefore lose what arrived in the last
//! [`WRITE_BEHIND`] plus `flush_every`, with bounded and safe effects: an outbox entry not yet on disk is a
//! message `send` accepted but never stored, and a seen id not yet on disk can let one retried
//! message through a second time.

use crate::storage::{Store, StoreError, TREE_OUTBOX, TREE_SEEN};
use hermes_proto::inbox::SeenStore;
use hermes_proto::outbox::{OutboxStore, ScannedEntry, ENTRY_HEADER_LEN, KEY_LEN};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// How long a new entry may stay in memory only. Most messages are acknowledged (and most
/// seen ids released) well within it, so they never cost a disk write; it is also the longest a
/// crash can lose beyond sled's own flush interval.
pub const WRITE_BEHIND: Duration = Duration::from_millis(1000);
/// Payload bytes held in memory only before everything is written at once, whatever its age.
pub const MAX_PENDING_BYTES: usize = 64 << 20;
/// Seen-set entries held in memory only before everything is written at once.
pub const MAX_PENDING_SEEN: usize = 1 << 16;

/// The outbox tree, written behind.
#[derive(Debug)]
pub struct SledOutbox {
    tree: sled::Tree,
    store: Store,
    /// Written to memory, not yet to sled, with when.
    pending: HashMap<[u8; KEY_LEN], (Vec<u8>, Instant)>,
    /// Insertion order of `pending` (keys removed meanwhile are skipped), so that a persist
    /// looks only at entries old enough to write.
    order: VecDeque<(Instant, [u8; KEY_LEN])>,
    pending_bytes: usize,
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
            order: VecDeque::new(),
            pending_bytes: 0,
            removed: HashSet::new(),
        })
    }

    /// Writes to sled, in one batch, every removal and every insertion older than `min_age`
    /// (all of them when too many bytes wait); returns how many. They are durable once sled
    /// flushes ([`Store::flush_async`]).
    ///
    /// # Errors
    /// [`StoreError`] on sled failure (the entries stay in memory for the next attempt).
    pub fn persist(&mut self, min_age: Duration) -> Result<usize, StoreError> {
        let min_age = if self.pending_bytes > MAX_PENDING_BYTES {
            Duration::ZERO
        } else {
            min_age
        };
        let mut due = Vec::new();
        while let Some((at, k)) = self.order.front() {
            if at.elapsed() < min_age {
                break;
            }
            let k = *k;
            self.order.pop_front();
            if self
                .pending
                .get(&k)
                .is_some_and(|(_, t)| t.elapsed() >= min_age)
            {
                due.push(k);
            }
        }
        if due.is_empty() && self.removed.is_empty() {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        for k in &due {
            if let Some((v, _)) = self.pending.get(k) {
                batch.insert(&k[..], &v[..]);
            }
        }
        for k in &self.removed {
            batch.remove(&k[..]);
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.store.db_err(e))?;
        let n = due.len() + self.removed.len();
        for k in &due {
            if let Some((v, _)) = self.pending.remove(k) {
                self.pending_bytes -= v.len();
            }
        }
        self.removed.clear();
        Ok(n)
    }
}

impl OutboxStore for SledOutbox {
    type Error = StoreError;

    fn insert(&mut self, key: &[u8; KEY_LEN], value: &[u8]) -> Result<(), StoreError> {
        self.pending_bytes += value.len();
        let now = Instant::now();
        self.order.push_back((now, *key));
        if let Some((old, _)) = self.pending.insert(*key, (value.to_vec(), now)) {
            self.pending_bytes -= old.len();
        }
        if self.pending_bytes > 4 * MAX_PENDING_BYTES {
            self.persist(Duration::ZERO)?;
        }
        Ok(())
    }

    fn get(&self, key: &[u8; KEY_LEN]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some((v, _)) = self.pending.get(key) {
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
        if let Some((v, _)) = self.pending.remove(key) {
            // Never written: nothing on disk can bring it back.
            self.pending_bytes -= v.len();
            return Ok(false);
        }
        self.removed.insert(*key);
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
        for (key, (v, _)) in &self.pending {
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
    /// Written to memory, not yet to sled: expiry, and when.
    pending: HashMap<Vec<u8>, (u64, Instant)>,
    /// Insertion order of `pending`, as for the outbox.
    order: VecDeque<(Instant, Vec<u8>)>,
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
            order: VecDeque::new(),
            removed: HashSet::new(),
        })
    }

    /// Writes every entry still in memory to sled in one batch.
    ///
    /// # Errors
    /// [`StoreError`] on sled failure (the entries stay in memory for the next attempt).
    pub fn persist(&mut self, min_age: Duration) -> Result<usize, StoreError> {
        let min_age = if self.pending.len() > MAX_PENDING_SEEN {
            Duration::ZERO
        } else {
            min_age
        };
        let mut due = Vec::new();
        while let Some((at, _)) = self.order.front() {
            if at.elapsed() < min_age {
                break;
            }
            if let Some((_, k)) = self.order.pop_front() {
                if self
                    .pending
                    .get(&k)
                    .is_some_and(|(_, t)| t.elapsed() >= min_age)
                {
                    due.push(k);
                }
            }
        }
        if due.is_empty() && self.removed.is_empty() {
            return Ok(0);
        }
        let mut batch = sled::Batch::default();
        for k in &due {
            if let Some((e, _)) = self.pending.remove(k) {
                batch.insert(&k[..], &e.to_le_bytes()[..]);
            }
        }
        for k in &self.removed {
            batch.remove(&k[..]);
        }
        let n = due.len() + self.removed.len();
        self.removed.clear();
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.store.db_err(e))?;
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
        let now = Instant::now();
        self.order.push_back((now, key.to_vec()));
        self.pending.insert(key.to_vec(), (expires_at, now));
        Ok(true)
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        if self.pending.remove(key).is_none() {
            self.removed.insert(key.to_vec());
        }
        Ok(())
    }

    fn remove_expired(&mut self, now: u64) -> Result<usize, StoreError> {
        let before = self.pending.len();
        self.pending.retain(|_, (e, _)| *e > now);
        let mut n = before - self.pending.len();
        self.persist(Duration::ZERO)?;
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
                o.store_mut().persist(Duration::ZERO).unwrap(),
                1,
                "the acknowledged one never does"
            );
            assert_eq!(d.store_mut().persist(Duration::ZERO).unwrap(), 1);
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
        o.store_mut().persist(Duration::ZERO).unwrap();
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
