//! The chain's view of subnet nodes, as the firewall and consensus read it.
//!
//! A [`Registry`] is an immutable snapshot of every registered node: subnet, hotkey, peer id, stake
//! and class. Backends (dev chain, static file, later an RPC client) produce snapshots; the
//! firewall looks peers up in the latest one synchronously on the connection path.

use crate::hotkey::Hotkey;
use crate::peer_id::{check_peer_id, PeerIdRuleError};
use std::collections::HashMap;

/// A node's class in the Hypertensor model, in order of privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum NodeClass {
    /// Registered but not yet activated.
    Registered,
    /// Activated, waiting to be included in consensus.
    Idle,
    /// Included in consensus data.
    Included,
    /// May be elected to submit consensus data and attests.
    Validator,
}

impl NodeClass {
    /// Lower-case name, as used in JSON snapshots and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeClass::Registered => "registered",
            NodeClass::Idle => "idle",
            NodeClass::Included => "included",
            NodeClass::Validator => "validator",
        }
    }

    /// Parses [`NodeClass::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "registered" => NodeClass::Registered,
            "idle" => NodeClass::Idle,
            "included" => NodeClass::Included,
            "validator" => NodeClass::Validator,
            _ => return None,
        })
    }
}

/// One registration: a hotkey running a node with `peer_id` in subnet `netuid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    /// Subnet.
    pub netuid: u16,
    /// Wallet hotkey.
    pub hotkey: Hotkey,
    /// Peer id in its text form (`12D3KooW…`), as the chain stores it.
    pub peer_id: String,
    /// Stake bonded to this node, in the chain's smallest unit.
    pub stake: u128,
    /// Class.
    pub class: NodeClass,
}

impl NodeEntry {
    /// Checks the entry as the chain does on registration.
    ///
    /// # Errors
    /// [`PeerIdRuleError`] when the peer id would be refused by the chain.
    pub fn validate(&self) -> Result<(), PeerIdRuleError> {
        check_peer_id(self.peer_id.as_bytes())
    }
}

/// An immutable snapshot of all registrations, indexed for the connection path.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: Vec<NodeEntry>,
    by_peer: HashMap<String, Vec<usize>>,
    by_hotkey: HashMap<Hotkey, Vec<usize>>,
    /// The chain itself binds each peer id to the hotkey that registered it (Hypertensor), with
    /// accounts our binding records cannot sign for: see [`Registry::with_chain_bound_peers`].
    chain_binds_peers: bool,
}

impl Registry {
    /// Builds a snapshot. Entries whose peer id fails the chain's rule are dropped: the chain
    /// itself would never hold them. An empty peer id is kept: a chain that knows hotkeys only
    /// (Subtensor) lists such entries, found by [`Registry::by_hotkey`] and never by peer id.
    pub fn new(entries: impl IntoIterator<Item = NodeEntry>) -> Self {
        let mut r = Registry::default();
        for e in entries
            .into_iter()
            .filter(|e| e.peer_id.is_empty() || e.validate().is_ok())
        {
            let i = r.entries.len();
            if !e.peer_id.is_empty() {
                r.by_peer.entry(e.peer_id.clone()).or_default().push(i);
            }
            r.by_hotkey.entry(e.hotkey).or_default().push(i);
            r.entries.push(e);
        }
        r
    }

    /// Marks the registry as read from a chain that binds each peer id to its hotkey itself
    /// (Hypertensor, whose 20-byte ECDSA accounts cannot sign our sr25519 binding records). The
    /// firewall then admits a registered peer id whatever hotkey signed its binding: the transport
    /// handshake proves the peer id, the chain's registration proves who runs it.
    pub fn with_chain_bound_peers(mut self) -> Self {
        self.chain_binds_peers = true;
        self
    }

    /// Whether some entry has no peer id: its chain lists hotkeys only (Subtensor), so a peer is
    /// linked to such an entry by its verified binding record alone.
    pub fn lists_hotkeys_only(&self) -> bool {
        self.entries.iter().any(|e| e.peer_id.is_empty())
    }

    /// Whether [`Registry::with_chain_bound_peers`] applies.
    pub fn chain_binds_peers(&self) -> bool {
        self.chain_binds_peers
    }

    /// Every entry.
    pub fn entries(&self) -> &[NodeEntry] {
        &self.entries
    }

    /// Registrations of a peer id (text form), across subnets.
    pub fn by_peer(&self, peer_id: &str) -> impl Iterator<Item = &NodeEntry> {
        self.by_peer
            .get(peer_id)
            .into_iter()
            .flatten()
            .filter_map(|i| self.entries.get(*i))
    }

    /// Registrations of a hotkey, across subnets.
    pub fn by_hotkey(&self, hotkey: &Hotkey) -> impl Iterator<Item = &NodeEntry> {
        self.by_hotkey
            .get(hotkey)
            .into_iter()
            .flatten()
            .filter_map(|i| self.entries.get(*i))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_peer_ids_are_dropped_and_lookups_work() {
        let e = |netuid, hk: u8, peer: &str| NodeEntry {
            netuid,
            hotkey: Hotkey([hk; 32]),
            peer_id: peer.into(),
            stake: 10,
            class: NodeClass::Idle,
        };
        let p1 = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        let r = Registry::new([e(1, 1, p1), e(2, 1, p1), e(1, 2, "shortid")]);
        assert_eq!(r.len(), 2);
        assert_eq!(r.by_peer(p1).count(), 2);
        assert_eq!(r.by_hotkey(&Hotkey([1; 32])).count(), 2);
        assert_eq!(r.by_hotkey(&Hotkey([2; 32])).count(), 0);
        assert_eq!(NodeClass::parse("validator"), Some(NodeClass::Validator));
        assert_eq!(
            NodeClass::parse(NodeClass::Idle.as_str()),
            Some(NodeClass::Idle)
        );
        assert_eq!(NodeClass::parse("boss"), None);
    }

    #[test]
    fn hotkey_only_entries_are_kept_but_never_found_by_peer_id() {
        let e = NodeEntry {
            netuid: 1,
            hotkey: Hotkey([3; 32]),
            peer_id: String::new(),
            stake: 1,
            class: NodeClass::Registered,
        };
        let r = Registry::new([e]);
        assert_eq!(r.len(), 1);
        assert_eq!(r.by_hotkey(&Hotkey([3; 32])).count(), 1);
        assert_eq!(r.by_peer("").count(), 0);
    }
}
