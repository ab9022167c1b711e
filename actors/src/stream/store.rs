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
//! [`WRITE_BEHIND`] plus `flush_every`, with bounded and safe effects: an outbox entry not yet on
//! disk is a message `send` accepted but never stored. Message ids are the exception: the
//! StreamActor writes and flushes the seen-set ([`SledSeen::persist`] with no delay, then a
//! flush) before it acknowledges a message, one flush per batch of acknowledgements (a group
//! commit), so that an acknowledged message is never delivered again after a crash.

use crate::storage::{Store, StoreError, TREE_OUTBOX, TREE_SEEN};
use hermes_proto::inbox::SeenStore;
use hermes_proto::outbox::{OutboxStore, ScannedEntry, ENTRY_HEADER_LEN, KEY_LEN};
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long a new entry may stay in memory only. Most messages are acknowledged (and most
/// seen ids released) well within it, so they never cost a disk write; it is also the longest a
/// crash can lose beyond sled's own flush interval.
pub const WRITE_BEHIND: Duration = Duration::from_millis(1000);
/// Payload bytes held in memory only before everything is written at once, whatever its age.
pub const MAX_PENDING_BYTES: usize = 64 << 20;
/// Entries held in memory only before everything is written at once, whatever its age.
pub const MAX_PENDING_ENTRIES: usize = 1 << 16;

/// A sled tree whose new entries wait in memory until they are [`WRITE_BEHIND`] old; entries
/// removed before that never reach the disk. Shared by the outbox and the seen-set.
#[derive(Debug)]
struct WriteBehind<K> {
    tree: sled::Tree,
    store: Store,
    /// Written to memory, not yet to sled: the value as it will be stored, and when.
    pending: HashMap<K, (Vec<u8>, Instant)>,
    /// Insertion order of `pending` (keys removed or rewritten meanwhile are skipped), so that a
    /// persist looks only at entries old enough to write.
    order: VecDeque<(Instant, K)>,
    pending_bytes: usize,
    /// Removed in memory, still in sled.
    removed: HashSet<K>,
}

impl<K: Hash + Eq + Clone + AsRef<[u8]>> WriteBehind<K> {
    fn open(store: &Store, name: &str) -> Result<Self, StoreError> {
        Ok(WriteBehind {
            tree: store.tree(name)?,
            store: store.clone(),
            pending: HashMap::new(),
            order: VecDeque::new(),
            pending_bytes: 0,
            removed: HashSet::new(),
        })
    }

    fn db_err(&self, e: sled::Error) -> StoreError {
        self.store.db_err(e)
    }

    fn insert(&mut self, key: K, value: Vec<u8>) {
        let now = Instant::now();
        self.pending_bytes += value.len();
        self.order.push_back((now, key.clone()));
        if let Some((old, _)) = self.pending.insert(key, (value, now)) {
            self.pending_bytes -= old.len();
        }
    }

    fn pending<Q>(&self, key: &Q) -> Option<&Vec<u8>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.pending.get(key).map(|(v, _)| v)
    }

    fn is_removed<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.removed.contains(key)
    }

    /// Forgets `key`; returns whether it may be on disk (a removal is then queued).
    fn remove<Q>(&mut self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some((v, _)) = self.pending.remove(key) {
            self.pending_bytes -= v.len();
            // Never written, unless an older copy's removal is still queued.
            return self.removed.contains(key);
        }
        self.removed.insert(key.to_owned());
        true
    }

    /// Drops the in-memory entries that `keep` rejects; returns how many of them `count` accepts.
    fn retain_pending(
        &mut self,
        mut keep: impl FnMut(&K, &[u8]) -> bool,
        mut count: impl FnMut(&K) -> bool,
    ) -> usize {
        let mut freed = 0;
        let mut n = 0;
        self.pending.retain(|k, (v, _)| {
            let kept = keep(k, v);
            if !kept {
                freed += v.len();
                n += usize::from(count(k));
            }
            kept
        });
        self.pending_bytes -= freed;
        n
    }

    /// Writes to sled, in one batch, every removal and every insertion older than `min_age` (all
    /// of them when more than [`MAX_PENDING_BYTES`] or [`MAX_PENDING_ENTRIES`] wait); returns
    /// how many. They are durable once sled flushes ([`Store::flush_async`]).
    ///
    /// # Errors
    /// [`StoreError`] on sled failure (the entries stay in memory for the next attempt).
    fn persist(&mut self, min_age: Duration) -> Result<usize, StoreError> {
        let min_age =
            if self.pending_bytes > MAX_PENDING_BYTES || self.pending.len() > MAX_PENDING_ENTRIES {
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
        // Removals first: a key removed and then written again ends up written (the last
        // operation on a key in a batch wins).
        let mut batch = sled::Batch::default();
        for k in &self.removed {
            batch.remove(k.as_ref());
        }
        for k in &due {
            if let Some((v, _)) = self.pending.get(k) {
                batch.insert(k.as_ref(), &v[..]);
            }
        }
        if let Err(e) = self.tree.apply_batch(batch) {
            // Put the due keys back in order so the next attempt finds them.
            for k in due.into_iter().rev() {
                if let Some((_, t)) = self.pending.get(&k) {
                    self.order.push_front((*t, k));
                }
            }
            return Err(self.db_err(e));
        }
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

/// The outbox tree, written behind.
#[derive(Debug)]
pub struct SledOutbox(WriteBehind<[u8; KEY_LEN]>);

impl SledOutbox {
    /// Opens the `outbox` tree.
    ///
    /// # Errors
    /// [`StoreError`] on sled failure.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(SledOutbox(WriteBehind::open(store, TREE_OUTBOX)?))
    }

    /// Writes to sled, in one batch, every removal and every insertion older than `min_age`
    /// (all of them when too much waits); returns how many. They are durable once sled
    /// flushes ([`Store::flush_async`]).
    ///
    /// # Errors
    /// [`StoreError`] on sled failure (the entries stay in memory for the next attempt).
    pub fn persist(&mut self, min_age: Duration) -> Result<usize, StoreError> {
        self.0.persist(min_age)
    }
}

impl OutboxStore for SledOutbox {
    type Error = StoreError;

    fn insert(&mut self, key: &[u8; KEY_LEN], value: &[u8]) -> Result<(), StoreError> {
        self.0.insert(*key, value.to_vec());
        if self.0.pending_bytes > 4 * MAX_PENDING_BYTES {
            self.0.persist(Duration::ZERO)?;
        }
        Ok(())
    }

    fn get(&self, key: &[u8; KEY_LEN]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.0.pending(key) {
            return Ok(Some(v.clone()));
        }
        if self.0.is_removed(key) {
            return Ok(None);
        }
        self.0
            .tree
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.0.db_err(e))
    }

    fn remove(&mut self, key: &[u8; KEY_LEN]) -> Result<bool, StoreError> {
        Ok(self.0.remove(key))
    }

    fn scan(&self) -> Result<Vec<ScannedEntry>, StoreError> {
        let w = &self.0;
        let mut out = Vec::new();
        for item in w.tree.iter() {
            let (k, v) = item.map_err(|e| w.db_err(e))?;
            let Ok(key) = <[u8; KEY_LEN]>::try_from(k.as_ref()) else {
                // Not ours: drop it so it cannot accumulate.
                let _ = w.tree.remove(&k);
                continue;
            };
            if w.pending(&key).is_none() && !w.is_removed(&key) {
                out.push((key, v[..v.len().min(ENTRY_HEADER_LEN)].to_vec(), v.len()));
            }
        }
        for (key, (v, _)) in &w.pending {
            out.push((*key, v[..v.len().min(ENTRY_HEADER_LEN)].to_vec(), v.len()));
        }
        out.sort_by_key(|e| e.0);
        Ok(out)
    }

    fn next_seq(&mut self) -> Result<u64, StoreError> {
        self.0.store.generate_id()
    }
}

/// The seen-set tree, written behind; values are expiry times (little-endian u64).
///
/// Each entry has a twin in an expiry index in the same tree, `'x' ‖ expiry (u64 big-endian) ‖
/// key`, written and dropped with it, so that a sweep reads only the index range up to `now`
/// instead of walking every id on the (network) thread that runs it. Seen keys start with `'m'`
/// or `'s'` ([`hermes_proto::inbox`]), so the index never mixes with them. A release of an id
/// already on disk reads its expiry to drop its index twin too (one read per release), since
/// every acknowledged id is on disk now.
#[derive(Debug)]
pub struct SledSeen(WriteBehind<Vec<u8>>);

/// Most expired ids one sweep removes, so that a backlog is worked off over several ticks
/// instead of stalling the thread in one.
pub const SWEEP_BATCH: usize = 16_384;
const INDEX: u8 = b'x';

fn expiry(v: &[u8]) -> u64 {
    <[u8; 8]>::try_from(v).map(u64::from_le_bytes).unwrap_or(0)
}

fn index_key(expires_at: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.push(INDEX);
    k.extend_from_slice(&expires_at.to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn is_index(key: &[u8]) -> bool {
    key.first() == Some(&INDEX)
}

impl SledSeen {
    /// Opens the `seen_ids` tree, indexing by expiry the entries an older version wrote without
    /// an index (one walk, once).
    ///
    /// # Errors
    /// [`StoreError`] on sled failure.
    pub fn open(store: &Store) -> Result<Self, StoreError> {
        let w = WriteBehind::open(store, TREE_SEEN)?;
        let indexed = w
            .tree
            .scan_prefix([INDEX])
            .next()
            .transpose()
            .map_err(|e| w.db_err(e))?
            .is_some();
        if !indexed {
            let mut batch = sled::Batch::default();
            let mut n = 0usize;
            for item in w.tree.iter() {
                let (k, v) = item.map_err(|e| w.db_err(e))?;
                batch.insert(index_key(expiry(&v), &k), &v[..]);
                n += 1;
            }
            if n > 0 {
                w.tree.apply_batch(batch).map_err(|e| w.db_err(e))?;
                tracing::info!(entries = n, "seen-set indexed by expiry");
            }
        }
        Ok(SledSeen(w))
    }

    /// Writes to sled every removal and every entry older than `min_age`, in one batch.
    ///
    /// # Errors
    /// [`StoreError`] on sled failure (the entries stay in memory for the next attempt).
    pub fn persist(&mut self, min_age: Duration) -> Result<usize, StoreError> {
        self.0.persist(min_age)
    }
}

impl SeenStore for SledSeen {
    type Error = StoreError;

    fn insert_if_absent(&mut self, key: &[u8], expires_at: u64) -> Result<bool, StoreError> {
        let w = &mut self.0;
        if w.pending(key).is_some() {
            return Ok(false);
        }
        if !w.is_removed(key) && w.tree.contains_key(key).map_err(|e| w.db_err(e))? {
            return Ok(false);
        }
        let value = expires_at.to_le_bytes().to_vec();
        w.insert(index_key(expires_at, key), value.clone());
        w.insert(key.to_vec(), value);
        Ok(true)
    }

    fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        let w = &self.0;
        if w.pending(key).is_some() {
            return Ok(true);
        }
        if w.is_removed(key) {
            return Ok(false);
        }
        w.tree.contains_key(key).map_err(|e| w.db_err(e))
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        // Its index twin goes with it: known when still in memory, read from disk otherwise.
        // Every acknowledged id reaches the disk (it is flushed before the acknowledgement), so
        // twins left behind would grow the tree by one entry per message until they expire.
        let value = match self.0.pending(key) {
            Some(v) => Some(v.clone()),
            None if self.0.is_removed(key) => None,
            None => {
                let w = &self.0;
                w.tree
                    .get(key)
                    .map_err(|e| w.db_err(e))?
                    .map(|v| v.to_vec())
            }
        };
        if let Some(v) = value {
            let twin = index_key(expiry(&v), key);
            self.0.remove(&twin);
        }
        self.0.remove(key);
        Ok(())
    }

    fn remove_expired(&mut self, now: u64) -> Result<usize, StoreError> {
        let mut n = self
            .0
            .retain_pending(|_, v| expiry(v) > now, |k| !is_index(k));
        let w = &self.0;
        let end = index_key(now, &[0xff; 64]);
        let mut due = Vec::new();
        for item in w.tree.range(vec![INDEX]..end).take(SWEEP_BATCH) {
            let (ik, _) = item.map_err(|e| w.db_err(e))?;
            due.push(ik);
        }
        for ik in due {
            let key = &ik[9..];
            // The id may have been released and claimed again since, with a later expiry (and
            // its own index twin): only an entry that is itself due goes.
            if let Some(v) = w.tree.get(key).map_err(|e| w.db_err(e))? {
                if expiry(&v) <= now {
                    w.tree.remove(key).map_err(|e| w.db_err(e))?;
                    n += 1;
                }
            }
            w.tree.remove(&ik).map_err(|e| w.db_err(e))?;
        }
        Ok(n)
    }

    fn len(&self) -> usize {
        let w = &self.0;
        let on_disk = w.tree.iter().keys().flatten().filter(|k| !is_index(k));
        let removed = w.removed.iter().filter(|k| !is_index(k)).count();
        let pending = w.pending.keys().filter(|k| !is_index(k)).count();
        (on_disk.count() + pending).saturating_sub(removed)
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
    fn a_key_removed_and_written_again_ends_as_last_done() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let mut seen = SledSeen::open(&store).unwrap();
        assert!(!seen.contains(b"k").unwrap());
        assert!(seen.insert_if_absent(b"k", 10).unwrap());
        assert!(seen.contains(b"k").unwrap(), "in memory");
        seen.persist(Duration::ZERO).unwrap();
        assert!(seen.contains(b"k").unwrap(), "on disk");
        // On disk; removed, written again in memory only, removed again.
        seen.remove(b"k").unwrap();
        assert!(
            !seen.contains(b"k").unwrap(),
            "removed in memory, still on disk"
        );
        assert!(seen.insert_if_absent(b"k", 20).unwrap());
        seen.remove(b"k").unwrap();
        seen.persist(Duration::ZERO).unwrap();
        assert_eq!(seen.len(), 0);
        let mut seen = SledSeen::open(&store).unwrap();
        assert_eq!(seen.len(), 0, "the copy on disk outlived its removal");

        // Removed, then written again: the new copy is what the disk keeps.
        assert!(seen.insert_if_absent(b"k", 10).unwrap());
        seen.persist(Duration::ZERO).unwrap();
        seen.remove(b"k").unwrap();
        assert!(seen.insert_if_absent(b"k", 20).unwrap());
        seen.persist(Duration::ZERO).unwrap();
        let mut seen = SledSeen::open(&store).unwrap();
        assert_eq!(seen.remove_expired(15).unwrap(), 0);
        assert_eq!(seen.len(), 1);
        assert!(!seen.insert_if_absent(b"k", 30).unwrap());
    }

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
            assert!(d.claim(&bob, &Id128([9; 16]), 500, 0).unwrap());
            // Written behind: nothing reaches sled until persisted.
            assert_eq!(
                o.store_mut().persist(Duration::ZERO).unwrap(),
                1,
                "the acknowledged one never does"
            );
            // The id and its expiry index twin.
            assert_eq!(d.store_mut().persist(Duration::ZERO).unwrap(), 2);
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
        assert!(!d.claim(&bob, &Id128([9; 16]), 500, 0).unwrap());
        assert_eq!(d.sweep(499).unwrap(), 0);
        assert_eq!(d.sweep(500).unwrap(), 1);
        assert!(d.claim(&bob, &Id128([9; 16]), 500, 0).unwrap());
    }

    /// Every key in the tree, as stored.
    fn keys(store: &Store) -> Vec<Vec<u8>> {
        let tree = store.tree(TREE_SEEN).unwrap();
        tree.iter().keys().map(|k| k.unwrap().to_vec()).collect()
    }

    #[test]
    fn the_sweep_reads_the_expiry_index_not_the_whole_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let mut seen = SledSeen::open(&store).unwrap();
        for (k, exp) in [(&b"m1"[..], 10), (b"m2", 20), (b"m3", 30), (b"s1", 20)] {
            assert!(seen.insert_if_absent(k, exp).unwrap());
        }
        seen.persist(Duration::ZERO).unwrap();
        // Released while on disk (its index twin goes with it), then claimed again with a later
        // expiry.
        seen.remove(b"m2").unwrap();
        assert!(seen.insert_if_absent(b"m2", 40).unwrap());
        seen.persist(Duration::ZERO).unwrap();
        assert!(!keys(&store).contains(&index_key(20, b"m2")));
        assert!(keys(&store).contains(&index_key(40, b"m2")));
        // Released while on disk and not claimed again: nothing of it stays on disk.
        assert!(seen.insert_if_absent(b"m5", 50).unwrap());
        seen.persist(Duration::ZERO).unwrap();
        seen.remove(b"m5").unwrap();
        seen.persist(Duration::ZERO).unwrap();
        let left = keys(&store);
        assert!(
            !left.iter().any(|k| k.ends_with(b"m5")),
            "a released id or its twin stayed: {left:?}"
        );
        // Released while still in memory: nothing of it reaches the disk.
        assert!(seen.insert_if_absent(b"m4", 15).unwrap());
        seen.remove(b"m4").unwrap();
        // An id written without an index twin is invisible to the sweep: proof that it reads
        // the index rather than walking every id.
        store
            .tree(TREE_SEEN)
            .unwrap()
            .insert(b"m0", &5u64.to_le_bytes())
            .unwrap();
        assert_eq!(seen.len(), 5);

        assert_eq!(seen.remove_expired(20).unwrap(), 2, "m1 and s1");
        let left = keys(&store);
        for gone in [&b"m1"[..], b"s1"] {
            assert!(!left.iter().any(|k| k == gone), "{left:?}");
        }
        assert!(left.iter().any(|k| k == b"m2"), "re-claimed m2 must stay");
        assert!(left.iter().any(|k| k == b"m0"), "not indexed, never swept");
        // m2's old twin (20) went with its release; its new one (40) and m3's (30) stay.
        assert_eq!(left.iter().filter(|k| is_index(k)).count(), 2, "{left:?}");
        assert_eq!(seen.remove_expired(40).unwrap(), 2);
        assert_eq!(keys(&store), vec![b"m0".to_vec()]);
    }

    #[test]
    fn ids_written_without_an_index_are_indexed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        let tree = store.tree(TREE_SEEN).unwrap();
        tree.insert(b"m1", &10u64.to_le_bytes()).unwrap();
        tree.insert(b"m2", &30u64.to_le_bytes()).unwrap();
        let mut seen = SledSeen::open(&store).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen.remove_expired(20).unwrap(), 1);
        assert!(!seen.insert_if_absent(b"m2", 50).unwrap());
        assert_eq!(seen.remove_expired(30).unwrap(), 1);
        assert_eq!(seen.len(), 0);
    }
}
