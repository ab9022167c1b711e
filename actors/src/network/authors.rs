//! Bindings of gossip authors this node is not directly connected to.
//!
//! Gossip reaches a node through a chain of relays, so the author of a message is often not a
//! peer whose binding was exchanged on a connection. Its binding is then read from the DHT (each
//! node publishes it under `/hermes/peer/<peer id>` as well as under its hotkey), verified for
//! the author's peer id exactly like a direct peer's (signature, peer id, expiry) and judged by
//! the policy under the hotkey that signed it. This module keeps what such lookups found:
//!
//! - verified bindings, used until they expire (the policy is asked again for every message, so
//!   an ACL or registry change applies at once);
//! - authors whose lookup found nothing valid, refused without a new lookup for a while;
//! - messages waiting for a lookup in flight, bounded in number so that a relay inventing
//!   authors cannot make this node hold unbounded state or run unbounded DHT queries.
//!
//! Every table is bounded; a full table of found bindings or failures is cleared (they are only a
//! cache: the worst outcome is one more DHT lookup).

use hermes_proto::SignedBinding;
use libp2p::gossipsub::MessageId;
use libp2p::PeerId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most verified author bindings kept.
pub const MAX_KNOWN: usize = 4096;
/// Most authors remembered as unverifiable.
pub const MAX_FAILED: usize = 4096;
/// How long an author whose lookup failed is refused without a new lookup. Short: a new node's
/// binding takes a moment to reach the DHT, and its first messages may arrive before it.
pub const FAILED_FOR: Duration = Duration::from_secs(5);
/// Most authors being looked up at once.
pub const MAX_LOOKUPS: usize = 64;
/// Most messages waiting for lookups, over all authors.
pub const MAX_WAITING: usize = 1024;

/// A message held until its author's binding is known.
#[derive(Debug, Clone)]
pub struct Waiting {
    /// Gossipsub's id of the message.
    pub id: MessageId,
    /// The verified peer that relayed it to us.
    pub source: PeerId,
    /// Subnet of its topic, if the topic is one of ours.
    pub netuid: Option<u16>,
    /// Payload.
    pub data: Vec<u8>,
}

/// What is known about a relayed message's author.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A verified binding (not expired).
    Known(&'a SignedBinding),
    /// A recent lookup found nothing valid.
    Failed,
    /// Nothing yet.
    Unknown,
}

/// What to do with a message whose author is unknown.
#[derive(Debug)]
pub enum Queued {
    /// Held; a DHT lookup for the author must be started.
    StartLookup,
    /// Held behind a lookup already in flight.
    Behind,
    /// Not held (given back): too many messages or lookups are waiting.
    Full(Waiting),
}

/// The tables (see the module documentation).
#[derive(Debug, Default)]
pub struct Authors {
    known: HashMap<PeerId, SignedBinding>,
    failed: HashMap<PeerId, Instant>,
    waiting: HashMap<PeerId, Vec<Waiting>>,
    waiting_count: usize,
}

impl Authors {
    /// What is known about `author` at `now` (unix seconds).
    pub fn lookup(&mut self, author: &PeerId, now: u64) -> Lookup<'_> {
        if let Some(b) = self.known.get(author) {
            if b.record.expires_at <= now {
                self.known.remove(author);
            } else {
                // Re-borrow: the entry is still there.
                return self
                    .known
                    .get(author)
                    .map_or(Lookup::Unknown, Lookup::Known);
            }
        }
        match self.failed.get(author) {
            Some(t) if t.elapsed() < FAILED_FOR => Lookup::Failed,
            Some(_) => {
                self.failed.remove(author);
                Lookup::Unknown
            }
            None => Lookup::Unknown,
        }
    }

    /// Holds `msg` until `author`'s lookup ends.
    pub fn hold(&mut self, author: PeerId, msg: Waiting) -> Queued {
        if self.waiting_count >= MAX_WAITING {
            return Queued::Full(msg);
        }
        let first = !self.waiting.contains_key(&author);
        if first && self.waiting.len() >= MAX_LOOKUPS {
            return Queued::Full(msg);
        }
        self.waiting.entry(author).or_default().push(msg);
        self.waiting_count += 1;
        if first {
            Queued::StartLookup
        } else {
            Queued::Behind
        }
    }

    /// Records a verified binding for `author` and returns the messages that waited for it.
    pub fn found(&mut self, author: PeerId, binding: SignedBinding) -> Vec<Waiting> {
        if self.known.len() >= MAX_KNOWN && !self.known.contains_key(&author) {
            self.known.clear();
        }
        self.failed.remove(&author);
        self.known.insert(author, binding);
        self.release(&author)
    }

    /// Records that nothing valid was found for `author` and returns the messages that waited.
    pub fn not_found(&mut self, author: PeerId) -> Vec<Waiting> {
        if self.failed.len() >= MAX_FAILED && !self.failed.contains_key(&author) {
            self.failed.clear();
        }
        self.failed.insert(author, Instant::now());
        self.release(&author)
    }

    fn release(&mut self, author: &PeerId) -> Vec<Waiting> {
        let v = self.waiting.remove(author).unwrap_or_default();
        self.waiting_count = self.waiting_count.saturating_sub(v.len());
        v
    }

    /// Messages held, over all authors.
    pub fn waiting(&self) -> usize {
        self.waiting_count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_proto::{BindingRecord, Hotkey};

    fn binding(expires_at: u64) -> SignedBinding {
        SignedBinding {
            record: BindingRecord {
                hotkey: Hotkey([1; 32]),
                ss58_prefix: 42,
                peer_id: vec![],
                netuids: vec![],
                prekey: [0; 32],
                issued_at: 1,
                expires_at,
            },
            signature: [0; 64],
        }
    }

    fn msg(n: u8) -> Waiting {
        Waiting {
            id: MessageId::new(&[n]),
            source: PeerId::random(),
            netuid: Some(3),
            data: vec![n],
        }
    }

    #[test]
    fn waits_behind_one_lookup_per_author_and_releases_on_the_answer() {
        let mut a = Authors::default();
        let (x, y) = (PeerId::random(), PeerId::random());
        assert!(matches!(a.lookup(&x, 10), Lookup::Unknown));
        assert!(matches!(a.hold(x, msg(1)), Queued::StartLookup));
        assert!(matches!(a.hold(x, msg(2)), Queued::Behind));
        assert!(matches!(a.hold(y, msg(3)), Queued::StartLookup));
        assert_eq!(a.waiting(), 3);
        let released = a.found(x, binding(100));
        assert_eq!(released.len(), 2);
        assert!(matches!(a.lookup(&x, 10), Lookup::Known(_)));
        assert!(
            matches!(a.lookup(&x, 100), Lookup::Unknown),
            "an expired binding is not used"
        );
        assert_eq!(a.not_found(y).len(), 1);
        assert!(matches!(a.lookup(&y, 10), Lookup::Failed));
        assert_eq!(a.waiting(), 0);
    }

    #[test]
    fn held_messages_and_lookups_are_bounded() {
        let mut a = Authors::default();
        let authors: Vec<PeerId> = (0..MAX_LOOKUPS).map(|_| PeerId::random()).collect();
        for p in &authors {
            assert!(matches!(a.hold(*p, msg(0)), Queued::StartLookup));
        }
        assert!(matches!(a.hold(PeerId::random(), msg(0)), Queued::Full(_)));
        let mut n = MAX_LOOKUPS;
        while n < MAX_WAITING {
            assert!(matches!(a.hold(authors[0], msg(0)), Queued::Behind));
            n += 1;
        }
        assert!(matches!(a.hold(authors[1], msg(0)), Queued::Full(_)));
        assert_eq!(a.waiting(), MAX_WAITING);
    }
}
