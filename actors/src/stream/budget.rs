//! Per-peer budgets on what a peer can make this node hold for the application (payload bytes of
//! its messages in the inbox, incoming streams of its waiting to be taken), and on the session
//! headers of its that this node refuses ([`RefusalRate`]).
//!
//! Charged by the stream layer when it hands an item to the application's queue, released when
//! the application takes the item out ([`PeerBudget::release`], called by the queue's consumer),
//! so the budget covers exactly what waits in the queue.

use hermes_proto::Hotkey;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Refused session headers per peer within [`REFUSAL_WINDOW`] after which its new message
/// substreams are dropped unread. Each refused header cost a signature check and a seen-set
/// lookup; an honest peer has one refused now and then (a clock off, a rotation race).
pub const MAX_REFUSALS_PER_WINDOW: u32 = 12;
/// The window of [`MAX_REFUSALS_PER_WINDOW`].
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// Refused session headers per peer in the current window.
#[derive(Debug, Default)]
pub struct RefusalRate {
    peers: Mutex<HashMap<Hotkey, (Instant, u32)>>,
}

impl RefusalRate {
    /// Counts one refused header of `peer`; returns whether the peer is now over the limit.
    pub fn note(&self, peer: Hotkey) -> bool {
        let Ok(mut m) = self.peers.lock() else {
            return false;
        };
        let now = Instant::now();
        if m.len() >= 4096 {
            // Bounded: forget peers whose window has passed.
            m.retain(|_, (since, _)| now.duration_since(*since) < REFUSAL_WINDOW);
        }
        let e = m.entry(peer).or_insert((now, 0));
        if now.duration_since(e.0) >= REFUSAL_WINDOW {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
        e.1 >= MAX_REFUSALS_PER_WINDOW
    }

    /// Whether `peer` is over the limit in the current window.
    pub fn over(&self, peer: &Hotkey) -> bool {
        self.peers.lock().is_ok_and(|m| {
            m.get(peer).is_some_and(|(since, n)| {
                *n >= MAX_REFUSALS_PER_WINDOW && since.elapsed() < REFUSAL_WINDOW
            })
        })
    }
}

/// A per-peer budget of `max` units (bytes or items).
#[derive(Debug)]
pub struct PeerBudget {
    max: u64,
    held: Mutex<HashMap<Hotkey, u64>>,
    freed: Notify,
}

impl PeerBudget {
    /// A budget of `max` units per peer.
    pub fn new(max: u64) -> Self {
        PeerBudget {
            max,
            held: Mutex::new(HashMap::new()),
            freed: Notify::new(),
        }
    }

    /// Units `peer` holds now.
    pub fn held(&self, peer: &Hotkey) -> u64 {
        self.held
            .lock()
            .map(|h| h.get(peer).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Charges `n` units to `peer` unconditionally (a message already read is delivered; the
    /// reader waits before the next one instead, see [`Self::wait_room`]).
    pub fn charge(&self, peer: Hotkey, n: u64) {
        if let Ok(mut h) = self.held.lock() {
            let v = h.entry(peer).or_insert(0);
            *v = v.saturating_add(n);
        }
    }

    /// Charges `n` units to `peer` if that keeps it within the budget; returns whether it did.
    pub fn try_charge(&self, peer: Hotkey, n: u64) -> bool {
        let Ok(mut h) = self.held.lock() else {
            return true;
        };
        let v = h.entry(peer).or_insert(0);
        if v.saturating_add(n) > self.max {
            return false;
        }
        *v += n;
        true
    }

    /// Gives `n` units of `peer` back (the application took the item).
    pub fn release(&self, peer: &Hotkey, n: u64) {
        if let Ok(mut h) = self.held.lock() {
            if let Some(v) = h.get_mut(peer) {
                *v = v.saturating_sub(n);
                if *v == 0 {
                    h.remove(peer);
                }
            }
        }
        self.freed.notify_waiters();
    }

    /// Waits until `peer` holds less than the budget.
    pub async fn wait_room(&self, peer: &Hotkey) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            // Registered before the check, so a release between the check and the wait wakes us.
            freed.as_mut().enable();
            if self.held(peer) < self.max {
                return;
            }
            freed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_over_budget_waits_until_the_application_takes_its_items() {
        let b = std::sync::Arc::new(PeerBudget::new(10));
        let (p, q) = (Hotkey([1; 32]), Hotkey([2; 32]));
        b.charge(p, 12);
        assert!(!b.try_charge(p, 1));
        assert!(b.try_charge(q, 10));
        // Another peer is not held up by p.
        b.wait_room(&Hotkey([3; 32])).await;
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.wait_room(&p).await });
        b.release(&p, 2);
        b.release(&p, 1);
        waiter.await.unwrap();
        assert_eq!(b.held(&p), 9);
    }
}
