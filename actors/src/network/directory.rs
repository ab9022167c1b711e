//! The directory of verified peers: who is connected, under which wallet hotkey, with which
//! binding (and so which prekey).
//!
//! The network task is its only writer: it adds a peer when its binding verifies, updates it when
//! the peer presents a re-issued binding (e.g. after a prekey rotation), and removes it when the
//! last connection closes or the peer is refused. The stream layer reads it without a round trip
//! through the network task, and can wait for a peer to become verified (a peer may open a
//! substream a moment before its own binding exchange with us has finished).

use super::PeerInfo;
use hermes_proto::Hotkey;
use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Default)]
struct Inner {
    by_peer: HashMap<PeerId, Arc<PeerInfo>>,
    by_hotkey: HashMap<Hotkey, PeerId>,
}

/// Shared, read-mostly view of verified peers.
#[derive(Debug)]
pub struct PeerDirectory {
    inner: RwLock<Inner>,
    version: watch::Sender<u64>,
}

impl Default for PeerDirectory {
    fn default() -> Self {
        PeerDirectory {
            inner: RwLock::new(Inner::default()),
            version: watch::channel(0).0,
        }
    }
}

impl PeerDirectory {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Adds or replaces a verified peer.
    pub fn upsert(&self, info: PeerInfo) {
        {
            let mut g = self.write();
            if let Some(old) = g.by_peer.get(&info.peer_id) {
                if old.hotkey != info.hotkey {
                    let old_key = old.hotkey;
                    g.by_hotkey.remove(&old_key);
                }
            }
            g.by_hotkey.insert(info.hotkey, info.peer_id);
            g.by_peer.insert(info.peer_id, Arc::new(info));
        }
        self.bump();
    }

    /// Removes a peer (disconnected or refused).
    pub fn remove(&self, peer: &PeerId) {
        let removed = {
            let mut g = self.write();
            let removed = g.by_peer.remove(peer);
            if let Some(info) = &removed {
                if g.by_hotkey.get(&info.hotkey) == Some(peer) {
                    g.by_hotkey.remove(&info.hotkey);
                }
            }
            removed
        };
        if removed.is_some() {
            self.bump();
        }
    }

    /// A verified peer by peer id.
    pub fn get(&self, peer: &PeerId) -> Option<Arc<PeerInfo>> {
        self.read().by_peer.get(peer).cloned()
    }

    /// A verified peer by wallet hotkey.
    pub fn by_hotkey(&self, hotkey: &Hotkey) -> Option<Arc<PeerInfo>> {
        let g = self.read();
        g.by_hotkey
            .get(hotkey)
            .and_then(|p| g.by_peer.get(p))
            .cloned()
    }

    /// Number of verified peers.
    pub fn len(&self) -> usize {
        self.read().by_peer.len()
    }

    /// Whether no peer is verified.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until `find` returns a peer or `timeout` passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        find: impl Fn(&Self) -> Option<Arc<PeerInfo>>,
    ) -> Option<Arc<PeerInfo>> {
        let mut rx = self.version.subscribe();
        let wait = async {
            loop {
                // Mark the current version seen before looking, so no change is missed.
                rx.borrow_and_update();
                if let Some(p) = find(self) {
                    return Some(p);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_proto::{BindingRecord, SignedBinding};

    fn info(peer: PeerId, hk: u8) -> PeerInfo {
        PeerInfo {
            peer_id: peer,
            ss58: String::new(),
            hotkey: Hotkey([hk; 32]),
            addresses: vec![],
            netuids: vec![],
            binding: SignedBinding {
                record: BindingRecord {
                    hotkey: Hotkey([hk; 32]),
                    ss58_prefix: 42,
                    peer_id: peer.to_bytes(),
                    netuids: vec![],
                    prekey: [0; 32],
                    issued_at: 0,
                    expires_at: 1,
                },
                signature: [0; 64],
            },
        }
    }

    #[test]
    fn lookups_follow_updates_and_waiters_wake() {
        let dir = Arc::new(PeerDirectory::default());
        let p = PeerId::random();
        assert!(dir.get(&p).is_none());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let d2 = dir.clone();
            let waiter = tokio::spawn(async move {
                d2.wait_for(Duration::from_secs(5), |d| d.by_hotkey(&Hotkey([1; 32])))
                    .await
            });
            tokio::task::yield_now().await;
            dir.upsert(info(p, 1));
            assert_eq!(waiter.await.unwrap().unwrap().peer_id, p);
            // The same peer id re-keyed to another hotkey: the old hotkey no longer finds it.
            dir.upsert(info(p, 2));
            assert!(dir.by_hotkey(&Hotkey([1; 32])).is_none());
            assert_eq!(dir.by_hotkey(&Hotkey([2; 32])).unwrap().peer_id, p);
            dir.remove(&p);
            assert!(dir.is_empty());
            assert!(dir
                .wait_for(Duration::from_millis(20), |d| d.get(&p))
                .await
                .is_none());
        });
    }
}
