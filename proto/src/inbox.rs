//! Receiver-side de-duplication: each message id reaches the application once.
//!
//! The seen-set is persisted, so exactly-once holds across restarts of the receiver. Three rules
//! keep it correct and small:
//!
//! 1. **Durable once the application has it.** [`Dedup::offer`] marks a new `sender ‖ message id`
//!    as being delivered, in memory only; once the application acknowledged the message,
//!    [`Dedup::commit`] puts the id in the store, and the caller acknowledges to the sender only
//!    after the store is durable. A retried copy (its acknowledgement was lost) finds the id and
//!    is acknowledged without being delivered again; a copy of a message still with the
//!    application is neither. A crash before the commit loses only the mark, so the message is
//!    delivered again rather than lost ([`Dedup::claim`] claims at once, for callers that need
//!    no acknowledgement from their application).
//! 2. **One current session per sender.** A sender runs one message session to a receiver at a
//!    time; [`Dedup::make_current`] makes the newest one current, and [`Dedup::is_current`] lets
//!    the caller refuse frames still arriving on an older substream. Without this, a copy
//!    buffered on a dying substream could arrive after the id was released (rule 3) and be
//!    delivered twice.
//! 3. **Release after acknowledgement.** Once the sender has the acknowledgement it drops the
//!    message and tells the receiver (`Release`), which forgets the id ([`Dedup::release`]). Ids
//!    whose release never comes (the sender crashed) are swept once the message's own expiry has
//!    passed ([`Dedup::sweep`]): after that the message is refused as expired anyway. The expiry
//!    is the sender's choice, so the receiver keeps an id at most its own retention (its
//!    `messages.ttl`, [`Dedup::with_retention`]) after first seeing it: a peer cannot make it keep
//!    ids for years. The price is bounded and stated: a copy retried *later* than that after the
//!    first one arrived (its acknowledgement lost all that time) is delivered again.
//!
//! Session ids are kept the same way until their header leaves the replay window, so a replayed
//! session header is refused even within the window.
//!
//! Keys: `'m' ‖ sender hotkey ‖ message id` and `'s' ‖ session id`; values: expiry as `u64`
//! little-endian unix seconds.

use crate::envelope::{Id128, ID_LEN};
use crate::hotkey::Hotkey;
use std::collections::{BTreeMap, HashMap};

/// Length of a message key.
pub const MSG_KEY_LEN: usize = 1 + 32 + ID_LEN;
/// Length of a session key.
pub const SESSION_KEY_LEN: usize = 1 + ID_LEN;

/// Persistence behind the seen-set.
pub trait SeenStore {
    /// The store's error.
    type Error: std::fmt::Display;
    /// Inserts `key → expires_at` unless `key` is present; returns whether it inserted.
    ///
    /// # Errors
    /// The store's error.
    fn insert_if_absent(&mut self, key: &[u8], expires_at: u64) -> Result<bool, Self::Error>;
    /// Whether `key` is held.
    ///
    /// # Errors
    /// The store's error.
    fn contains(&self, key: &[u8]) -> Result<bool, Self::Error>;
    /// Deletes a key (absent keys are fine).
    ///
    /// # Errors
    /// The store's error.
    fn remove(&mut self, key: &[u8]) -> Result<(), Self::Error>;
    /// Deletes every key whose expiry is at or before `now`; returns how many. Persistent stores
    /// index keys by expiry, so that a sweep costs what it removes, not what the set holds.
    ///
    /// # Errors
    /// The store's error.
    fn remove_expired(&mut self, now: u64) -> Result<usize, Self::Error>;
    /// Number of keys held.
    fn len(&self) -> usize;
    /// Whether no key is held.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn msg_key(sender: &Hotkey, id: &Id128) -> [u8; MSG_KEY_LEN] {
    let mut k = [0u8; MSG_KEY_LEN];
    k[0] = b'm';
    k[1..33].copy_from_slice(&sender.0);
    k[33..].copy_from_slice(&id.0);
    k
}

fn session_key(id: &Id128) -> [u8; SESSION_KEY_LEN] {
    let mut k = [0u8; SESSION_KEY_LEN];
    k[0] = b's';
    k[1..].copy_from_slice(&id.0);
    k
}

/// What [`Dedup::offer`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Never seen: hand it to the application, and [`Dedup::commit`] it once the application
    /// acknowledged it.
    New,
    /// The application acknowledged it before: acknowledge it to the sender, do not deliver.
    Duplicate,
    /// Handed to the application, not yet acknowledged by it: neither deliver nor acknowledge
    /// (the sender retries later).
    Delivering,
}

/// The de-duplicating seen-set of one node.
#[derive(Debug)]
pub struct Dedup<S> {
    store: S,
    current: HashMap<Hotkey, Id128>,
    /// Handed to the application and not acknowledged by it yet, with how long to keep each id
    /// once committed. Memory only: after a crash these are delivered again, which is what
    /// keeps an unacknowledged message from being lost.
    delivering: HashMap<[u8; MSG_KEY_LEN], u64>,
    /// Longest a message id is kept after it is claimed, whatever expiry its sender chose.
    retention: u64,
}

impl<S: SeenStore> Dedup<S> {
    /// Wraps a store, keeping each message id until its message's expiry. Sessions are not
    /// persisted: after a restart every sender opens a new one.
    pub fn new(store: S) -> Self {
        Self::with_retention(store, u64::MAX)
    }

    /// Wraps a store, keeping each message id until its message's expiry but at most
    /// `retention` seconds after it is claimed.
    pub fn with_retention(store: S, retention: u64) -> Self {
        Dedup {
            store,
            current: HashMap::new(),
            delivering: HashMap::new(),
            retention,
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably (e.g. to flush a write-behind store).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Consumes the set, returning its store (a restart in tests).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Records the id of a session header that passed its checks, for `keep_until` (unix
    /// seconds). Returns `false` for a replay (the id was seen before).
    ///
    /// # Errors
    /// The store's error.
    pub fn note_session(&mut self, session: &Id128, keep_until: u64) -> Result<bool, S::Error> {
        self.store
            .insert_if_absent(&session_key(session), keep_until)
    }

    /// Makes `session` (opened successfully) `sender`'s current session: frames of its older
    /// sessions are refused from now on.
    pub fn make_current(&mut self, sender: &Hotkey, session: &Id128) {
        self.current.insert(*sender, *session);
    }

    /// Whether `session` is `sender`'s newest session.
    pub fn is_current(&self, sender: &Hotkey, session: &Id128) -> bool {
        self.current.get(sender) == Some(session)
    }

    /// A substream closed: its session stops being current (if it still was).
    pub fn close_session(&mut self, sender: &Hotkey, session: &Id128) {
        if self.current.get(sender) == Some(session) {
            self.current.remove(sender);
        }
    }

    /// Claims a message id at `now` (unix seconds); `true` means it is new and the caller must
    /// deliver it. The id is kept until `expires_at`, or the retention after `now` if sooner.
    ///
    /// # Errors
    /// The store's error.
    pub fn claim(
        &mut self,
        sender: &Hotkey,
        id: &Id128,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, S::Error> {
        let keep_until = expires_at.min(now.saturating_add(self.retention));
        self.store
            .insert_if_absent(&msg_key(sender, id), keep_until)
    }

    /// Looks a message id up at `now` (unix seconds) without claiming it durably: a new id is
    /// marked as being delivered (in memory) until [`Dedup::commit`] or [`Dedup::abandon`].
    ///
    /// This is the receive path: an id becomes durable only once the application acknowledged
    /// its message, so a crash before that delivers the message again instead of losing it.
    ///
    /// # Errors
    /// The store's error.
    pub fn offer(
        &mut self,
        sender: &Hotkey,
        id: &Id128,
        expires_at: u64,
        now: u64,
    ) -> Result<Offer, S::Error> {
        let key = msg_key(sender, id);
        if self.delivering.contains_key(&key) {
            return Ok(Offer::Delivering);
        }
        if self.store.contains(&key)? {
            return Ok(Offer::Duplicate);
        }
        let keep_until = expires_at.min(now.saturating_add(self.retention));
        self.delivering.insert(key, keep_until);
        Ok(Offer::New)
    }

    /// The application acknowledged an offered message: its id enters the store (the caller
    /// makes the store durable before acknowledging to the sender). Returns whether the id was
    /// being delivered.
    ///
    /// # Errors
    /// The store's error (the id stays marked as being delivered).
    pub fn commit(&mut self, sender: &Hotkey, id: &Id128) -> Result<bool, S::Error> {
        let key = msg_key(sender, id);
        let Some(keep_until) = self.delivering.get(&key).copied() else {
            return Ok(false);
        };
        self.store.insert_if_absent(&key, keep_until)?;
        self.delivering.remove(&key);
        Ok(true)
    }

    /// An offered message was not handed over after all (or its receiver went away unread): a
    /// retried copy will be delivered.
    pub fn abandon(&mut self, sender: &Hotkey, id: &Id128) {
        self.delivering.remove(&msg_key(sender, id));
    }

    /// Messages handed to the application and not acknowledged by it yet.
    pub fn delivering(&self) -> usize {
        self.delivering.len()
    }

    /// The sender has its acknowledgements for `ids` and will not send them again.
    ///
    /// # Errors
    /// The store's error.
    pub fn release(&mut self, sender: &Hotkey, ids: &[Id128]) -> Result<(), S::Error> {
        for id in ids {
            self.store.remove(&msg_key(sender, id))?;
        }
        Ok(())
    }

    /// Forgets every id and session whose expiry has passed.
    ///
    /// # Errors
    /// The store's error.
    pub fn sweep(&mut self, now: u64) -> Result<usize, S::Error> {
        self.store.remove_expired(now)
    }
}

/// An in-memory [`SeenStore`] for tests and simulations.
#[derive(Debug, Default, Clone)]
pub struct MemSeenStore {
    map: BTreeMap<Vec<u8>, u64>,
}

impl SeenStore for MemSeenStore {
    type Error = std::convert::Infallible;
    fn insert_if_absent(&mut self, key: &[u8], expires_at: u64) -> Result<bool, Self::Error> {
        if self.map.contains_key(key) {
            return Ok(false);
        }
        self.map.insert(key.to_vec(), expires_at);
        Ok(true)
    }
    fn contains(&self, key: &[u8]) -> Result<bool, Self::Error> {
        Ok(self.map.contains_key(key))
    }
    fn remove(&mut self, key: &[u8]) -> Result<(), Self::Error> {
        self.map.remove(key);
        Ok(())
    }
    fn remove_expired(&mut self, now: u64) -> Result<usize, Self::Error> {
        let before = self.map.len();
        self.map.retain(|_, e| *e > now);
        Ok(before - self.map.len())
    }
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Hotkey = Hotkey([1; 32]);
    const B: Hotkey = Hotkey([2; 32]);

    #[test]
    fn claims_releases_sessions_and_sweeps() {
        let mut d = Dedup::new(MemSeenStore::default());
        let m = Id128([7; 16]);
        assert!(d.claim(&A, &m, 100, 0).unwrap());
        assert!(!d.claim(&A, &m, 100, 0).unwrap());
        // The same id from another sender is another message.
        assert!(d.claim(&B, &m, 100, 0).unwrap());
        d.release(&A, &[m]).unwrap();
        assert!(d.claim(&A, &m, 100, 0).unwrap());

        let s1 = Id128([1; 16]);
        let s2 = Id128([2; 16]);
        assert!(d.note_session(&s1, 50).unwrap());
        assert!(!d.is_current(&A, &s1));
        d.make_current(&A, &s1);
        assert!(d.is_current(&A, &s1));
        assert!(!d.note_session(&s1, 50).unwrap(), "replayed header");
        assert!(d.note_session(&s2, 50).unwrap());
        d.make_current(&A, &s2);
        assert!(!d.is_current(&A, &s1));
        d.close_session(&A, &s1);
        assert!(d.is_current(&A, &s2));
        d.close_session(&A, &s2);
        assert!(!d.is_current(&A, &s2));

        // Sessions expire at 50, messages at 100.
        let before = d.store().len();
        assert_eq!(d.sweep(50).unwrap(), 2);
        assert_eq!(d.sweep(100).unwrap(), before - 2);
        assert!(d.store().is_empty());
    }

    #[test]
    fn an_offered_id_is_durable_only_once_committed() {
        let mut d = Dedup::with_retention(MemSeenStore::default(), 60);
        let m = Id128([3; 16]);
        assert_eq!(d.offer(&A, &m, 500, 1000).unwrap(), Offer::New);
        // Handed over, not acknowledged by the application: nothing in the store, and a
        // retried copy is neither delivered nor acknowledged.
        assert!(d.store().is_empty());
        assert_eq!(d.offer(&A, &m, 500, 1000).unwrap(), Offer::Delivering);
        assert!(d.commit(&A, &m).unwrap());
        assert_eq!(d.store().len(), 1);
        assert_eq!(d.offer(&A, &m, 500, 1000).unwrap(), Offer::Duplicate);
        assert!(!d.commit(&A, &m).unwrap(), "committed once");

        // Abandoned (or lost with a crash, which loses `delivering`): delivered again.
        let n = Id128([4; 16]);
        assert_eq!(d.offer(&A, &n, 2000, 1000).unwrap(), Offer::New);
        d.abandon(&A, &n);
        assert_eq!(d.offer(&A, &n, 2000, 1000).unwrap(), Offer::New);
        let store = d.into_store();
        let mut d = Dedup::with_retention(store, 60);
        assert_eq!(d.offer(&A, &n, 2000, 1000).unwrap(), Offer::New);
        // The retention caps how long a committed id is kept.
        assert!(d.commit(&A, &n).unwrap());
        assert_eq!(d.sweep(1059).unwrap(), 1, "m, at its own expiry (500)");
        assert_eq!(d.sweep(1060).unwrap(), 1);
    }

    #[test]
    fn ids_are_kept_at_most_the_receivers_retention() {
        let mut d = Dedup::with_retention(MemSeenStore::default(), 60);
        // A sender asking for an expiry centuries away gets the receiver's 60 s.
        assert!(d.claim(&A, &Id128([1; 16]), u64::MAX, 1000).unwrap());
        // A shorter expiry is kept as it is.
        assert!(d.claim(&A, &Id128([2; 16]), 1010, 1000).unwrap());
        assert_eq!(d.sweep(1009).unwrap(), 0);
        assert_eq!(d.sweep(1010).unwrap(), 1);
        assert_eq!(d.sweep(1059).unwrap(), 0);
        assert!(!d.claim(&A, &Id128([1; 16]), u64::MAX, 1059).unwrap());
        assert_eq!(d.sweep(1060).unwrap(), 1);
        assert!(d.store().is_empty());
    }
}
