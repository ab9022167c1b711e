//! [`DevChain`]: the embedded development chain in a sled directory, opened per operation.

use super::dev_state::State;
use super::{Chain, ChainError, ChainHead, EpochView, NodeStanding};
use futures::future::BoxFuture;
use hermes_proto::chain::{NodeEntry, Registry};
use hermes_proto::consensus::{Accepted, Refusal, SignedAttestation, SignedProposal};
use std::path::PathBuf;
use std::time::Duration;

pub use super::dev_state::DevParams;

/// The embedded development chain.
///
/// Blocks advance on a timer (`block_time`) or only when stepped ([`DevChain::step`]); at each
/// epoch boundary every subnet's round is closed with [`hermes_proto::consensus`]'s rules
/// (classes, penalties or reputation, removals) and the next one opened with its election.
/// Nothing runs in the background: each operation first advances the chain to the block the
/// clock implies, so any process touching the directory keeps it current.
#[derive(Debug, Clone)]
pub struct DevChain {
    path: PathBuf,
}

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

    /// Opens the database, retrying while another process holds it, loads the state, brings it
    /// to the current block, runs `f` and writes what changed.
    fn with_state<R>(
        &self,
        f: impl Fn(&mut State) -> Result<R, ChainError>,
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
                    let mut state = State::load(&db, &self.path)?;
                    state.catch_up().map_err(|e| self.err(e))?;
                    // Committed whatever `f` answers: a refused record may still leave evidence
                    // (an equivocation), and blocks may have advanced.
                    let out = f(&mut state);
                    state.commit().map_err(|e| self.err(e))?;
                    db.flush().map_err(|e| self.err(e))?;
                    return out;
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
        self.with_state(|s| Ok(Registry::new(s.nodes.values().map(|n| n.entry.clone()))))
    }

    /// Registers synchronously (for the CLI). A peer id may be used by one hotkey per subnet; the
    /// same hotkey re-registering updates its entry (and starts a fresh standing when it names
    /// another class).
    ///
    /// # Errors
    /// [`ChainError::BadPeerId`] or [`ChainError::Refused`] when the chain's rules refuse it.
    pub fn register_sync(&self, entry: NodeEntry) -> Result<(), ChainError> {
        entry.validate()?;
        self.with_state(|s| {
            if let Some(other) = s.nodes.values().find(|o| {
                o.entry.netuid == entry.netuid
                    && o.entry.peer_id == entry.peer_id
                    && o.entry.hotkey != entry.hotkey
            }) {
                return Err(ChainError::Refused(format!(
                    "peer id {} is already registered in subnet {} by {}",
                    entry.peer_id,
                    entry.netuid,
                    other.entry.hotkey.to_ss58(42)
                )));
            }
            s.register(entry.clone());
            Ok(())
        })
    }

    /// Sets the chain's parameters (creating it if needed), keeping its blocks, nodes and
    /// epochs. Changing the epoch length renumbers epochs: do it before nodes run.
    ///
    /// # Errors
    /// [`ChainError::Refused`] for 0 blocks per epoch; storage errors.
    pub fn init(&self, params: DevParams) -> Result<ChainHead, ChainError> {
        self.with_state(|s| {
            s.set_params(params).map_err(ChainError::Refused)?;
            Ok(s.head())
        })
    }

    /// The parameters.
    ///
    /// # Errors
    /// Storage or format errors.
    pub fn params(&self) -> Result<DevParams, ChainError> {
        self.with_state(|s| Ok(s.params))
    }

    /// The latest block, synchronously.
    ///
    /// # Errors
    /// Storage or format errors.
    pub fn head_sync(&self) -> Result<ChainHead, ChainError> {
        // Reading never creates the chain (as `load`): a node following a dev chain that nobody
        // has set up yet must not make an empty one where the operator will look for a mistake.
        if !self.path.exists() {
            let params = DevParams::default();
            return Ok(ChainHead {
                block: 0,
                epoch: 0,
                blocks_per_epoch: params.blocks_per_epoch,
                block_hash: [0; 32],
                block_time: params.block_time,
            });
        }
        self.with_state(|s| Ok(s.head()))
    }

    /// Advances `blocks` blocks now, closing and opening epochs on the way.
    ///
    /// # Errors
    /// Storage or format errors.
    pub fn step(&self, blocks: u64) -> Result<ChainHead, ChainError> {
        self.with_state(|s| {
            s.step(blocks).map_err(|e| self.err(e))?;
            Ok(s.head())
        })
    }

    /// Epoch `epoch` (default: the current one) of subnet `netuid`, synchronously.
    ///
    /// # Errors
    /// Storage or format errors.
    pub fn epoch_sync(
        &self,
        netuid: u16,
        epoch: Option<u64>,
    ) -> Result<Option<EpochView>, ChainError> {
        if !self.path.exists() {
            return Ok(None);
        }
        self.with_state(|s| {
            let e = epoch.unwrap_or(s.head().epoch);
            Ok(s.epoch_mut(netuid, e).map_err(|e| self.err(e))?.cloned())
        })
    }

    /// Submits a proposal for the current epoch, synchronously.
    ///
    /// # Errors
    /// [`ChainError::NoRound`] when the subnet has no round now; [`ChainError::Rejected`] with
    /// the round's [`hermes_proto::consensus::Refusal`].
    pub fn submit_sync(&self, proposal: &SignedProposal) -> Result<Accepted, ChainError> {
        let netuid = proposal.proposal.netuid;
        self.with_state(|s| {
            let epoch = s.head().epoch;
            let view = s
                .epoch_mut(netuid, epoch)
                .map_err(|e| self.err(e))?
                .ok_or(ChainError::NoRound { netuid, epoch })?;
            let res = view.round.submit(proposal);
            // An equivocation is evidence worth keeping: the round now holds both copies.
            if matches!(res, Ok(Accepted::New) | Err(Refusal::Equivocation)) {
                s.touch_epoch(netuid, epoch);
            }
            Ok(res?)
        })
    }

    /// Submits an attestation of the current epoch's proposal, synchronously.
    ///
    /// # Errors
    /// As [`DevChain::submit_sync`].
    pub fn attest_sync(&self, attestation: &SignedAttestation) -> Result<Accepted, ChainError> {
        let netuid = attestation.attestation.netuid;
        self.with_state(|s| {
            let epoch = s.head().epoch;
            let view = s
                .epoch_mut(netuid, epoch)
                .map_err(|e| self.err(e))?
                .ok_or(ChainError::NoRound { netuid, epoch })?;
            let res = view.round.attest(attestation);
            if res == Ok(Accepted::New) {
                s.touch_epoch(netuid, epoch);
            }
            Ok(res?)
        })
    }

    /// Every node of subnet `netuid` with its standing, synchronously.
    ///
    /// # Errors
    /// Storage or format errors.
    pub fn standings_sync(&self, netuid: u16) -> Result<Vec<NodeStanding>, ChainError> {
        if !self.path.exists() {
            return Ok(vec![]);
        }
        self.with_state(|s| {
            Ok(s.nodes
                .values()
                .filter(|n| n.entry.netuid == netuid)
                .cloned()
                .collect())
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

    fn head(&self) -> BoxFuture<'_, Result<ChainHead, ChainError>> {
        Box::pin(async move { self.head_sync() })
    }

    fn epoch(
        &self,
        netuid: u16,
        epoch: Option<u64>,
    ) -> BoxFuture<'_, Result<Option<EpochView>, ChainError>> {
        Box::pin(async move { self.epoch_sync(netuid, epoch) })
    }

    fn submit_proposal(
        &self,
        proposal: SignedProposal,
    ) -> BoxFuture<'_, Result<Accepted, ChainError>> {
        Box::pin(async move { self.submit_sync(&proposal) })
    }

    fn attest(
        &self,
        attestation: SignedAttestation,
    ) -> BoxFuture<'_, Result<Accepted, ChainError>> {
        Box::pin(async move { self.attest_sync(&attestation) })
    }

    fn standings(&self, netuid: u16) -> BoxFuture<'_, Result<Vec<NodeStanding>, ChainError>> {
        Box::pin(async move { self.standings_sync(netuid) })
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
