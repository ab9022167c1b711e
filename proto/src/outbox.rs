//! The durable outbox: messages kept until their recipient acknowledges them or they expire.
//!
//! A message's life at the sender:
//!
//! 1. [`Outbox::enqueue`] writes it to the store (key `recipient ‖ sequence`, so each recipient's
//!    messages are ordered) and queues it. Only the metadata stays in memory; the payload is read
//!    back from the store when it is sent.
//! 2. When a link to the recipient is up, [`Outbox::take`] moves messages from *queued* to
//!    *in flight*, oldest first.
//! 3. [`Outbox::acked`] deletes acknowledged messages from the store. [`Outbox::rejected`] either
//!    drops a message for good (a terminal refusal) or queues it again.
//! 4. When the link fails, [`Outbox::link_lost`] puts its in-flight messages back at the front of
//!    the queue and schedules the next attempt with exponential backoff and jitter
//!    ([`Outbox::due`] tells when). A message past its expiry is dropped by [`Outbox::expire`].
//!
//! After a restart, [`Outbox::load`] rebuilds the queues from the store: everything not yet
//! acknowledged is queued again. The receiver de-duplicates by message id, so a message that was
//! delivered but whose acknowledgement was lost is not delivered twice.
//!
//! # Stored value (version 1)
//! ```text
//! u8    version = 1
//! [16]  message id
//! u16   netuid
//! u64   created_at (unix seconds)
//! u64   expires_at (unix seconds)
//! ...   payload
//! ```

use crate::codec::{DecodeError, Reader};
use crate::envelope::Id128;
use crate::hotkey::Hotkey;
use hpke::rand_core::CryptoRng;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use thiserror::Error;

/// Stored-value version.
pub const ENTRY_VERSION: u8 = 1;
/// Bytes of a stored value before the payload.
pub const ENTRY_HEADER_LEN: usize = 1 + 16 + 2 + 8 + 8;
/// Length of a store key: recipient hotkey and big-endian sequence number.
pub const KEY_LEN: usize = 32 + 8;

/// One stored entry as [`OutboxStore::scan`] returns it: key, the value's first
/// [`ENTRY_HEADER_LEN`] bytes, and the value's full length.
pub type ScannedEntry = ([u8; KEY_LEN], Vec<u8>, usize);

/// Persistence behind the outbox (sled in the node, a map in tests).
pub trait OutboxStore {
    /// The store's error.
    type Error: std::fmt::Display;
    /// Writes `value` under `key`.
    ///
    /// # Errors
    /// The store's error.
    fn insert(&mut self, key: &[u8; KEY_LEN], value: &[u8]) -> Result<(), Self::Error>;
    /// Reads a value.
    ///
    /// # Errors
    /// The store's error.
    fn get(&self, key: &[u8; KEY_LEN]) -> Result<Option<Vec<u8>>, Self::Error>;
    /// Deletes a value (absent keys are fine). Returns `true` when the deletion is not yet
    /// durable: the value had reached durable storage and its removal still has to be written
    /// (see [`Outbox::take_unflushed`]).
    ///
    /// # Errors
    /// The store's error.
    fn remove(&mut self, key: &[u8; KEY_LEN]) -> Result<bool, Self::Error>;
    /// Every key with the metadata part of its value (the first [`ENTRY_HEADER_LEN`] bytes) and
    /// the value's full length, in key order.
    ///
    /// # Errors
    /// The store's error.
    fn scan(&self) -> Result<Vec<ScannedEntry>, Self::Error>;
    /// A number larger than every number it returned before, also across restarts.
    ///
    /// # Errors
    /// The store's error.
    fn next_seq(&mut self) -> Result<u64, Self::Error>;
}

/// Errors from the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// Accepting the message would exceed the outbox's byte limit.
    #[error("outbox full: {queued} bytes queued, limit {limit}; wait for deliveries or raise messages.outbox_max_bytes")]
    Full {
        /// Bytes queued now.
        queued: u64,
        /// The limit.
        limit: u64,
    },
    /// The store failed.
    #[error("outbox storage: {0}")]
    Store(String),
}

/// Limits and retry schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Most payload bytes held at once.
    pub max_bytes: u64,
    /// First retry delay, milliseconds.
    pub retry_min_ms: u64,
    /// Longest retry delay, milliseconds.
    pub retry_max_ms: u64,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_bytes: 1 << 30,
            retry_min_ms: 500,
            retry_max_ms: 60_000,
        }
    }
}

/// What the outbox keeps in memory about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Message id.
    pub id: Id128,
    /// Recipient.
    pub to: Hotkey,
    /// Position in the recipient's queue.
    pub seq: u64,
    /// Subnet.
    pub netuid: u16,
    /// When it was accepted, unix seconds.
    pub created_at: u64,
    /// When it expires, unix seconds.
    pub expires_at: u64,
    /// Payload length.
    pub len: usize,
}

/// A message taken for sending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its metadata.
    pub meta: Meta,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// The store key of a message.
pub fn store_key(to: &Hotkey, seq: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..32].copy_from_slice(&to.0);
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Encodes a stored value.
pub fn encode_entry(
    id: &Id128,
    netuid: u16,
    created_at: u64,
    expires_at: u64,
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(ENTRY_HEADER_LEN + payload.len());
    v.push(ENTRY_VERSION);
    v.extend_from_slice(&id.0);
    v.extend_from_slice(&netuid.to_le_bytes());
    v.extend_from_slice(&created_at.to_le_bytes());
    v.extend_from_slice(&expires_at.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// Decodes a store key and the header of its value into [`Meta`]; `len` is the full value length.
///
/// # Errors
/// [`DecodeError`] for a short or unknown-version value or a key of the wrong length.
pub fn decode_meta(key: &[u8], value_head: &[u8], len: usize) -> Result<Meta, DecodeError> {
    if key.len() != KEY_LEN {
        return Err(DecodeError::invalid(
            "outbox.key",
            format!("{} bytes; expected {KEY_LEN}", key.len()),
        ));
    }
    let mut kr = Reader::new(key);
    let to = Hotkey(kr.array()?);
    let seq = u64::from_be_bytes(kr.array()?);
    let mut r = Reader::new(value_head);
    let version = r.u8()?;
    if version != ENTRY_VERSION {
        return Err(DecodeError::invalid(
            "outbox.version",
            format!("unsupported version {version}"),
        ));
    }
    let id = Id128(r.array()?);
    let netuid = r.u16()?;
    let created_at = r.u64()?;
    let expires_at = r.u64()?;
    let payload_len = len
        .checked_sub(ENTRY_HEADER_LEN)
        .ok_or_else(|| DecodeError::invalid("outbox.value", "shorter than its header"))?;
    Ok(Meta {
        id,
        to,
        seq,
        netuid,
        created_at,
        expires_at,
        len: payload_len,
    })
}

#[derive(Debug, Default)]
struct Dest {
    queued: BTreeMap<u64, Meta>,
    in_flight: BTreeMap<u64, Meta>,
    /// A link (writer) to this recipient is up.
    link: bool,
    /// Consecutive failed attempts.
    failures: u32,
    /// Earliest next attempt, unix milliseconds.
    next_attempt_ms: u64,
}

/// The outbox of one node, over all recipients.
#[derive(Debug)]
pub struct Outbox<S> {
    store: S,
    limits: OutboxLimits,
    dests: HashMap<Hotkey, Dest>,
    /// Where each message is: recipient, sequence, expiry.
    by_id: HashMap<Id128, (Hotkey, u64, u64)>,
    /// Messages by expiry, so expiring costs nothing while nothing expires.
    by_expiry: BTreeSet<(u64, Id128)>,
    bytes: u64,
    /// Deleted messages whose deletion the store has not yet made durable.
    unflushed: Vec<Id128>,
}

fn store_err(e: impl std::fmt::Display) -> OutboxError {
    OutboxError::Store(e.to_string())
}

impl<S: OutboxStore> Outbox<S> {
    /// Rebuilds the outbox from `store`. Entries that do not decode are deleted and counted in
    /// the second return value.
    ///
    /// # Errors
    /// [`OutboxError::Store`] when the store fails.
    pub fn load(mut store: S, limits: OutboxLimits) -> Result<(Self, usize), OutboxError> {
        let mut dests: HashMap<Hotkey, Dest> = HashMap::new();
        let mut by_id = HashMap::new();
        let mut by_expiry = BTreeSet::new();
        let mut bytes = 0u64;
        let mut bad = Vec::new();
        for (key, head, len) in store.scan().map_err(store_err)? {
            match decode_meta(&key, &head, len) {
                Ok(m) => {
                    bytes += m.len as u64;
                    by_id.insert(m.id, (m.to, m.seq, m.expires_at));
                    by_expiry.insert((m.expires_at, m.id));
                    dests.entry(m.to).or_default().queued.insert(m.seq, m);
                }
                Err(_) => bad.push(key),
            }
        }
        for k in &bad {
            store.remove(k).map_err(store_err)?;
        }
        Ok((
            Outbox {
                store,
                limits,
                dests,
                by_id,
                by_expiry,
                bytes,
                unflushed: Vec::new(),
            },
            bad.len(),
        ))
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The underlying store, mutably (e.g. to flush a write-behind store).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Consumes the outbox, returning its store (a restart in tests).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Stores and queues a message for `to`; returns its id.
    ///
    /// # Errors
    /// [`OutboxError::Full`] past the byte limit; [`OutboxError::Store`].
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue(
        &mut self,
        to: Hotkey,
        netuid: u16,
        payload: &[u8],
        now: u64,
        ttl_secs: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Meta, OutboxError> {
        let len = payload.len() as u64;
        if self.bytes.saturating_add(len) > self.limits.max_bytes {
            return Err(OutboxError::Full {
                queued: self.bytes,
                limit: self.limits.max_bytes,
            });
        }
        let seq = self.store.next_seq().map_err(store_err)?;
        let id = Id128::random(rng);
        let expires_at = now.saturating_add(ttl_secs.max(1));
        let value = encode_entry(&id, netuid, now, expires_at, payload);
        self.store
            .insert(&store_key(&to, seq), &value)
            .map_err(store_err)?;
        let meta = Meta {
            id,
            to,
            seq,
            netuid,
            created_at: now,
            expires_at,
            len: payload.len(),
        };
        self.bytes += len;
        self.by_id.insert(id, (to, seq, expires_at));
        self.by_expiry.insert((expires_at, id));
        self.dests
            .entry(to)
            .or_default()
            .queued
            .insert(seq, meta.clone());
        Ok(meta)
    }

    /// Takes up to `max_msgs` queued messages for `to` (stopping before `max_bytes` of payload
    /// would be exceeded, but always at least one), oldest first, and marks them in flight.
    /// Expired messages are skipped (left for [`Outbox::expire`]).
    ///
    /// # Errors
    /// [`OutboxError::Store`] if a payload cannot be read.
    pub fn take(
        &mut self,
        to: &Hotkey,
        max_msgs: usize,
        max_bytes: usize,
        now: u64,
    ) -> Result<Vec<Outgoing>, OutboxError> {
        let Some(dest) = self.dests.get_mut(to) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let seqs: Vec<u64> = dest
            .queued
            .iter()
            .filter(|(_, m)| m.expires_at > now)
            .map(|(s, _)| *s)
            .take(max_msgs)
            .collect();
        for seq in seqs {
            let Some(meta) = dest.queued.get(&seq) else {
                continue;
            };
            if !out.is_empty() && bytes.saturating_add(meta.len) > max_bytes {
                break;
            }
            let value = match self.store.get(&store_key(to, seq)).map_err(store_err)? {
                Some(v) => v,
                None => {
                    // Gone from the store (should not happen): forget it rather than stall.
                    if let Some(m) = dest.queued.remove(&seq) {
                        self.by_id.remove(&m.id);
                        self.by_expiry.remove(&(m.expires_at, m.id));
                        self.bytes = self.bytes.saturating_sub(m.len as u64);
                    }
                    continue;
                }
            };
            let Some(meta) = dest.queued.remove(&seq) else {
                continue;
            };
            bytes += meta.len;
            let payload = value.get(ENTRY_HEADER_LEN..).unwrap_or_default().to_vec();
            dest.in_flight.insert(seq, meta.clone());
            out.push(Outgoing { meta, payload });
        }
        Ok(out)
    }

    fn remove_one(&mut self, id: &Id128) -> Result<Option<Meta>, OutboxError> {
        let Some((to, seq, expires_at)) = self.by_id.get(id).copied() else {
            return Ok(None);
        };
        if self.store.remove(&store_key(&to, seq)).map_err(store_err)? {
            self.unflushed.push(*id);
        }
        self.by_id.remove(id);
        self.by_expiry.remove(&(expires_at, *id));
        let meta = self
            .dests
            .get_mut(&to)
            .and_then(|d| d.in_flight.remove(&seq).or_else(|| d.queued.remove(&seq)));
        if let Some(m) = &meta {
            self.bytes = self.bytes.saturating_sub(m.len as u64);
        }
        if self
            .dests
            .get(&to)
            .is_some_and(|d| d.queued.is_empty() && d.in_flight.is_empty() && !d.link)
        {
            self.dests.remove(&to);
        }
        Ok(meta)
    }

    /// The recipient acknowledged `ids`: they are deleted. Returns those that were held (an id
    /// acknowledged twice, or unknown, is ignored). A successful acknowledgement also resets the
    /// recipient's backoff.
    ///
    /// # Errors
    /// [`OutboxError::Store`].
    pub fn acked(&mut self, ids: &[Id128]) -> Result<Vec<Meta>, OutboxError> {
        let mut done = Vec::new();
        for id in ids {
            if let Some(m) = self.remove_one(id)? {
                if let Some(d) = self.dests.get_mut(&m.to) {
                    d.failures = 0;
                }
                done.push(m);
            }
        }
        Ok(done)
    }

    /// The recipient refused `id`. A terminal refusal deletes it (returned); otherwise it goes
    /// back to the front of the queue.
    ///
    /// # Errors
    /// [`OutboxError::Store`].
    pub fn rejected(&mut self, id: &Id128, terminal: bool) -> Result<Option<Meta>, OutboxError> {
        if terminal {
            return self.remove_one(id);
        }
        if let Some((to, seq, _)) = self.by_id.get(id).copied() {
            if let Some(d) = self.dests.get_mut(&to) {
                if let Some(m) = d.in_flight.remove(&seq) {
                    d.queued.insert(seq, m);
                }
            }
        }
        Ok(None)
    }

    /// A link to `to` is up: [`Outbox::due`] stops reporting it.
    pub fn link_up(&mut self, to: &Hotkey) {
        self.dests.entry(*to).or_default().link = true;
    }

    /// The link to `to` is gone (or could not be made): in-flight messages are queued again and
    /// the next attempt is scheduled `retry_min × 2^failures` (capped at `retry_max`) from `now_ms`,
    /// scaled by a random factor in [0.5, 1.5) so that many senders do not retry in lock-step.
    pub fn link_lost(&mut self, to: &Hotkey, now_ms: u64, rng: &mut impl CryptoRng) {
        let limits = self.limits;
        let Some(d) = self.dests.get_mut(to) else {
            return;
        };
        d.link = false;
        let in_flight = std::mem::take(&mut d.in_flight);
        d.queued.extend(in_flight);
        let exp = d.failures.min(32);
        let base = limits
            .retry_min_ms
            .saturating_mul(1u64 << exp.min(20))
            .min(limits.retry_max_ms)
            .max(1);
        let jitter = rng.next_u64() % base.max(1);
        d.next_attempt_ms = now_ms.saturating_add(base / 2).saturating_add(jitter);
        d.failures = d.failures.saturating_add(1);
        if d.queued.is_empty() {
            self.dests.remove(to);
        }
    }

    /// A new reason to try at once (e.g. the recipient just connected): clears the backoff.
    pub fn retry_now(&mut self, to: &Hotkey) {
        if let Some(d) = self.dests.get_mut(to) {
            d.next_attempt_ms = 0;
        }
    }

    /// Whether messages for `to` are waiting to be taken.
    pub fn has_queued(&self, to: &Hotkey) -> bool {
        self.dests.get(to).is_some_and(|d| !d.queued.is_empty())
    }

    /// Recipients with queued messages and no link, in backoff or not.
    pub fn waiting(&self) -> Vec<Hotkey> {
        self.dests
            .iter()
            .filter(|(_, d)| !d.link && !d.queued.is_empty())
            .map(|(k, _)| *k)
            .collect()
    }

    /// Messages held for `to`, queued or in flight.
    pub fn held_for(&self, to: &Hotkey) -> usize {
        self.dests
            .get(to)
            .map_or(0, |d| d.queued.len() + d.in_flight.len())
    }

    /// Recipients with queued messages, no link, and whose backoff has elapsed at `now_ms`.
    pub fn due(&self, now_ms: u64) -> Vec<Hotkey> {
        let mut v: Vec<Hotkey> = self
            .dests
            .iter()
            .filter(|(_, d)| !d.link && !d.queued.is_empty() && d.next_attempt_ms <= now_ms)
            .map(|(k, _)| *k)
            .collect();
        v.sort();
        v
    }

    /// The earliest time (unix milliseconds) at which [`Outbox::due`] or [`Outbox::expire`] may
    /// have work, if any.
    pub fn next_wakeup_ms(&self) -> Option<u64> {
        let retry = self
            .dests
            .values()
            .filter(|d| !d.link && !d.queued.is_empty())
            .map(|d| d.next_attempt_ms)
            .min();
        let expiry = self.by_expiry.first().map(|(e, _)| e.saturating_mul(1000));
        retry.into_iter().chain(expiry).min()
    }

    /// Deletes every message whose expiry has passed at `now` (unix seconds); returns them.
    ///
    /// # Errors
    /// [`OutboxError::Store`].
    pub fn expire(&mut self, now: u64) -> Result<Vec<Meta>, OutboxError> {
        let ids: Vec<Id128> = self
            .by_expiry
            .iter()
            .take_while(|(e, _)| *e <= now)
            .map(|(_, id)| *id)
            .collect();
        let mut out = Vec::new();
        for id in ids {
            if let Some(m) = self.remove_one(&id)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Messages deleted (acknowledged, refused or expired) since the last call whose deletion is
    /// not yet durable. Until it is, a crash could bring them back, so the sender must not yet
    /// tell the recipient to forget their ids (`Release`): a resurrected copy would then be
    /// delivered twice. Deletions not listed here (of messages that never reached durable
    /// storage) are safe to release at once.
    pub fn take_unflushed(&mut self) -> Vec<Id128> {
        std::mem::take(&mut self.unflushed)
    }

    /// Drops `id` if it is queued: it will not be sent again. A message in flight (written to
    /// a link, not yet acknowledged) may already have reached its recipient, so it is left alone.
    ///
    /// # Errors
    /// [`OutboxError::Store`].
    pub fn cancel(&mut self, id: &Id128) -> Result<Cancelled, OutboxError> {
        let Some((to, seq, _)) = self.by_id.get(id).copied() else {
            return Ok(Cancelled::Unknown);
        };
        if self
            .dests
            .get(&to)
            .is_some_and(|d| d.in_flight.contains_key(&seq))
        {
            return Ok(Cancelled::InFlight);
        }
        Ok(match self.remove_one(id)? {
            Some(m) => Cancelled::Dropped(m),
            None => Cancelled::Unknown,
        })
    }

    /// Every held message's metadata, by recipient then sequence.
    pub fn pending(&self) -> Vec<Meta> {
        let mut v: Vec<Meta> = self
            .dests
            .values()
            .flat_map(|d| d.queued.values().chain(d.in_flight.values()).cloned())
            .collect();
        v.sort_by_key(|m| (m.to, m.seq));
        v
    }
}

/// What [`Outbox::cancel`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// The message was queued and is deleted.
    Dropped(Meta),
    /// The message is in flight and was kept.
    InFlight,
    /// No such message is held.
    Unknown,
}

/// An in-memory [`OutboxStore`] for tests and simulations.
#[derive(Debug, Default, Clone)]
pub struct MemOutboxStore {
    map: BTreeMap<[u8; KEY_LEN], Vec<u8>>,
    seq: u64,
}

impl OutboxStore for MemOutboxStore {
    type Error = std::convert::Infallible;
    fn insert(&mut self, key: &[u8; KEY_LEN], value: &[u8]) -> Result<(), Self::Error> {
        self.map.insert(*key, value.to_vec());
        Ok(())
    }
    fn get(&self, key: &[u8; KEY_LEN]) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.map.get(key).cloned())
    }
    fn remove(&mut self, key: &[u8; KEY_LEN]) -> Result<bool, Self::Error> {
        // The map is the durable state in simulations: a removal is durable at once.
        self.map.remove(key);
        Ok(false)
    }
    fn scan(&self) -> Result<Vec<ScannedEntry>, Self::Error> {
        Ok(self
            .map
            .iter()
            .map(|(k, v)| (*k, v[..v.len().min(ENTRY_HEADER_LEN)].to_vec(), v.len()))
            .collect())
    }
    fn next_seq(&mut self) -> Result<u64, Self::Error> {
        self.seq += 1;
        Ok(self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::tests::TestRng;
    use proptest::prelude::*;

    const BOB: Hotkey = Hotkey([2; 32]);
    const CAROL: Hotkey = Hotkey([3; 32]);

    fn outbox() -> Outbox<MemOutboxStore> {
        Outbox::load(MemOutboxStore::default(), OutboxLimits::default())
            .unwrap()
            .0
    }

    #[test]
    fn messages_flow_in_order_and_survive_a_restart() {
        let mut rng = TestRng(3);
        let mut o = outbox();
        let a = o.enqueue(BOB, 3, b"a", 100, 60, &mut rng).unwrap();
        let b = o.enqueue(BOB, 3, b"bb", 100, 60, &mut rng).unwrap();
        let c = o.enqueue(CAROL, 7, b"ccc", 100, 60, &mut rng).unwrap();
        assert_eq!(o.len(), 3);
        assert_eq!(o.bytes(), 6);
        assert_eq!(o.due(0), vec![BOB, CAROL]);
        o.link_up(&BOB);
        assert_eq!(o.due(0), vec![CAROL]);
        let taken = o.take(&BOB, 10, 1 << 20, 100).unwrap();
        assert_eq!(
            taken.iter().map(|t| t.payload.clone()).collect::<Vec<_>>(),
            vec![b"a".to_vec(), b"bb".to_vec()]
        );
        assert!(o.take(&BOB, 10, 1 << 20, 100).unwrap().is_empty());
        // Only `a` is acknowledged before the link drops; `b` goes back to the queue.
        assert_eq!(o.acked(&[a.id, a.id]).unwrap().len(), 1);
        o.link_lost(&BOB, 1_000, &mut rng);
        assert!(o.has_queued(&BOB));
        // Restart: the store rebuilds what is left, in order.
        let store = o.into_store();
        let (mut o, bad) = Outbox::load(store, OutboxLimits::default()).unwrap();
        assert_eq!(bad, 0);
        let ids: Vec<Id128> = o.pending().iter().map(|m| m.id).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&b.id) && ids.contains(&c.id));
        o.link_up(&BOB);
        let again = o.take(&BOB, 10, 1 << 20, 100).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].meta.id, b.id);
        assert_eq!(again[0].payload, b"bb");
        assert_eq!(again[0].meta.netuid, 3);
    }

    #[test]
    fn cancel_drops_queued_messages_only() {
        let mut rng = TestRng(5);
        let mut o = outbox();
        let a = o.enqueue(BOB, 3, b"a", 100, 60, &mut rng).unwrap();
        let b = o.enqueue(BOB, 3, b"bb", 100, 60, &mut rng).unwrap();
        o.link_up(&BOB);
        // `a` is in flight: it may already have arrived, so it stays.
        assert_eq!(o.take(&BOB, 1, 1 << 20, 100).unwrap()[0].meta.id, a.id);
        assert_eq!(o.cancel(&a.id).unwrap(), Cancelled::InFlight);
        match o.cancel(&b.id).unwrap() {
            Cancelled::Dropped(m) => assert_eq!((m.id, m.len), (b.id, 2)),
            other => panic!("expected Dropped, got {other:?}"),
        }
        assert_eq!(o.cancel(&b.id).unwrap(), Cancelled::Unknown);
        assert_eq!((o.len(), o.bytes()), (1, 1));
        // The deletion is durable: a restart does not bring `b` back.
        let (o, _) = Outbox::load(o.into_store(), OutboxLimits::default()).unwrap();
        let ids: Vec<Id128> = o.pending().iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![a.id]);
    }

    #[test]
    fn limits_terminal_rejections_and_expiry() {
        let mut rng = TestRng(4);
        let mut o = Outbox::load(
            MemOutboxStore::default(),
            OutboxLimits {
                max_bytes: 10,
                ..OutboxLimits::default()
            },
        )
        .unwrap()
        .0;
        let a = o.enqueue(BOB, 1, &[0; 6], 100, 10, &mut rng).unwrap();
        assert!(matches!(
            o.enqueue(BOB, 1, &[0; 5], 100, 10, &mut rng),
            Err(OutboxError::Full {
                queued: 6,
                limit: 10
            })
        ));
        let b = o.enqueue(BOB, 1, &[0; 4], 100, 100, &mut rng).unwrap();
        o.link_up(&BOB);
        // Byte budget: the first message always goes, the second would exceed 8.
        assert_eq!(o.take(&BOB, 10, 8, 100).unwrap().len(), 1);
        assert!(o.rejected(&a.id, false).unwrap().is_none());
        assert!(o.has_queued(&BOB));
        assert_eq!(o.rejected(&a.id, true).unwrap().map(|m| m.id), Some(a.id));
        assert_eq!(o.len(), 1);
        // Expiry drops what is past its time, whether queued or in flight.
        assert_eq!(o.next_wakeup_ms(), Some(200_000));
        assert!(o.expire(199).unwrap().is_empty());
        assert_eq!(o.expire(200).unwrap()[0].id, b.id);
        assert!(o.is_empty());
        assert_eq!(o.bytes(), 0);
    }

    #[test]
    fn backoff_grows_with_jitter_and_resets_on_ack() {
        let mut rng = TestRng(5);
        let mut o = outbox();
        let m = o.enqueue(BOB, 1, b"x", 0, 3600, &mut rng).unwrap();
        let mut last = 0;
        for i in 0..12u32 {
            o.link_up(&BOB);
            o.link_lost(&BOB, 0, &mut rng);
            let at = o.next_wakeup_ms().unwrap();
            let base = (500u64 << i.min(20)).min(60_000);
            assert!(at >= base / 2 && at < base / 2 + base, "attempt {i}: {at}");
            assert!(o.due(at.saturating_sub(1)).is_empty());
            assert_eq!(o.due(at), vec![BOB]);
            last = at;
        }
        assert!(last >= 30_000);
        o.retry_now(&BOB);
        assert_eq!(o.due(0), vec![BOB]);
        o.link_up(&BOB);
        o.take(&BOB, 1, 100, 0).unwrap();
        o.acked(&[m.id]).unwrap();
        assert!(o.is_empty());
    }

    #[test]
    fn undecodable_entries_are_dropped_on_load() {
        let mut store = MemOutboxStore::default();
        store.insert(&store_key(&BOB, 1), &[9, 9]).unwrap();
        store
            .insert(
                &store_key(&BOB, 2),
                &encode_entry(&Id128([1; 16]), 1, 1, 99, b"ok"),
            )
            .unwrap();
        let (o, bad) = Outbox::load(store, OutboxLimits::default()).unwrap();
        assert_eq!(bad, 1);
        assert_eq!(o.len(), 1);
        assert_eq!(o.store().map.len(), 1);
    }

    proptest! {
        #[test]
        fn meta_decoding_never_panics(key in proptest::collection::vec(any::<u8>(), 0..50),
                                      head in proptest::collection::vec(any::<u8>(), 0..50),
                                      len in 0usize..100) {
            let _ = decode_meta(&key, &head, len);
        }

        #[test]
        fn entries_round_trip(id in any::<[u8; 16]>(), netuid in any::<u16>(), c in any::<u64>(),
                              e in any::<u64>(), payload in proptest::collection::vec(any::<u8>(), 0..64),
                              seq in any::<u64>()) {
            let v = encode_entry(&Id128(id), netuid, c, e, &payload);
            let m = decode_meta(&store_key(&BOB, seq), &v[..ENTRY_HEADER_LEN], v.len()).unwrap();
            prop_assert_eq!(m, Meta { id: Id128(id), to: BOB, seq, netuid, created_at: c, expires_at: e, len: payload.len() });
        }
    }
}
