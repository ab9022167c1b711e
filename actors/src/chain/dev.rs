//! [`DevChain`]: the embedded development chain in a sled directory, opened per operation.

use super::{Chain, ChainError, NodeJson};
use futures::future::BoxFuture;
use hermes_proto::chain::{NodeEntry, Registry};
use std::path::PathBuf;
use std::time::Duration;

/// The embedded development chain.
#[derive(Debug, Clone)]
pub struct DevChain {
    path: PathBuf,
}

const DEV_TREE: &str = "devchain/nodes";
/// How long an operation waits for another process to release the dev chain.
const LOCK_WAIT: Duration = Duration::from_secs(5);

impl DevChain {
    /// A dev chain stored in directory `path` (created on first write).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DevChain { path: path.into() }
    }

    fn err(&self, reason: impl std::fmt::Display) -> ChainError {
        ChainError::Storage {
            path: self.path.clone(),
            reason: reason.to_string(),
        }
    }

    /// Opens the database, retrying while another process holds it.
    fn with_db<R>(
        &self,
        f: impl Fn(&sled::Tree) -> Result<R, ChainError>,
    ) -> Result<R, ChainError> {
        let start = std::time::Instant::now();
        let mut backoff = Duration::from_millis(2);
        loop {
            match sled::Config::new()
                .path(&self.path)
                .cache_capacity(4 << 20)
                .flush_every_ms(None)
                .open()
            {
                Ok(db) => {
                    let tree = db.open_tree(DEV_TREE).map_err(|e| self.err(e))?;
                    let out = f(&tree)?;
                    db.flush().map_err(|e| self.err(e))?;
                    return Ok(out);
                }
                Err(sled::Error::Io(e)) if start.elapsed() < LOCK_WAIT => {
                    tracing::trace!(error = %e, "dev chain busy; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(self.err(format!("cannot open: {e}"))),
            }
        }
    }

    /// Every entry, synchronously (for the CLI).
    ///
    /// # Errors
    /// [`ChainError`] on storage or format failure.
    pub fn load(&self) -> Result<Registry, ChainError> {
        if !self.path.exists() {
            return Ok(Registry::default());
        }
        self.with_db(|tree| {
            let mut entries = Vec::new();
            for item in tree.iter() {
                let (_, v) = item.map_err(|e| self.err(e))?;
                let node: NodeJson =
                    serde_json::from_slice(&v).map_err(|e| ChainError::Format {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    })?;
                entries.push(node.to_entry().map_err(|reason| ChainError::Format {
                    path: self.path.clone(),
                    reason,
                })?);
            }
            Ok(Registry::new(entries))
        })
    }

    /// Registers synchronously (for the CLI). A peer id may be used by one hotkey per subnet; the
    /// same hotkey re-registering updates its entry.
    ///
    /// # Errors
    /// [`ChainError::BadPeerId`] or [`ChainError::Refused`] when the chain's rules refuse it.
    pub fn register_sync(&self, entry: NodeEntry) -> Result<(), ChainError> {
        entry.validate()?;
        self.with_db(|tree| {
            let mut key = Vec::with_capacity(34);
            key.extend_from_slice(&entry.netuid.to_be_bytes());
            key.extend_from_slice(&entry.hotkey.0);
            for item in tree.scan_prefix(entry.netuid.to_be_bytes()) {
                let (k, v) = item.map_err(|e| self.err(e))?;
                let other: NodeJson = serde_json::from_slice(&v).map_err(|e| self.err(e))?;
                if other.peer_id == entry.peer_id && k.as_ref() != key.as_slice() {
                    return Err(ChainError::Refused(format!(
                        "peer id {} is already registered in subnet {} by {}",
                        entry.peer_id, entry.netuid, other.hotkey
                    )));
                }
            }
            let json =
                serde_json::to_vec(&NodeJson::from_entry(&entry, 42)).map_err(|e| self.err(e))?;
            tree.insert(key, json).map_err(|e| self.err(e))?;
            Ok(())
        })
    }
}

impl Chain for DevChain {
    fn registry(&self) -> BoxFuture<'_, Result<Registry, ChainError>> {
        Box::pin(async move { self.load() })
    }

    fn register(&self, entry: NodeEntry) -> BoxFuture<'_, Result<(), ChainError>> {
        Box::pin(async move { self.register_sync(entry) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_proto::chain::NodeClass;
    use hermes_proto::Hotkey;

    const P1: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

    fn entry(netuid: u16, hk: u8, peer: &str) -> NodeEntry {
        NodeEntry {
            netuid,
            hotkey: Hotkey([hk; 32]),
            peer_id: peer.into(),
            stake: 1000,
            class: NodeClass::Registered,
        }
    }

    #[test]
    fn dev_chain_registers_persists_and_enforces_rules() {
        let dir = tempfile::tempdir().unwrap();
        let chain = DevChain::new(dir.path().join("chain"));
        assert!(chain.load().unwrap().is_empty());
        chain.register_sync(entry(1, 1, P1)).unwrap();
        // Another hotkey claiming the same peer id in the same subnet is refused...
        assert!(matches!(
            chain.register_sync(entry(1, 2, P1)),
            Err(ChainError::Refused(_))
        ));
        // ...but the same hotkey may update, and another subnet is fine.
        let mut e = entry(1, 1, P1);
        e.stake = 5;
        chain.register_sync(e).unwrap();
        chain.register_sync(entry(2, 2, P1)).unwrap();
        assert!(matches!(
            chain.register_sync(entry(1, 3, "not-a-peer-id")),
            Err(ChainError::BadPeerId(_))
        ));
        let reg = DevChain::new(dir.path().join("chain")).load().unwrap();
        assert_eq!(reg.len(), 2);
        assert_eq!(reg.by_peer(P1).find(|e| e.netuid == 1).unwrap().stake, 5);
    }
}
