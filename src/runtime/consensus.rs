//! Consensus in the runtime: one ConsensusActor per subnet the node takes part in, and the
//! handle's view of them.
//!
//! 1. At start, [`start_consensus`] asks the chain for its head and current round. A backend
//!    without epochs (a static snapshot, Subtensor) or without Hermes rounds (Hypertensor, which
//!    runs its own) answers `Unsupported`: consensus stays off, said once in the log and in
//!    [`RuntimeHandle::consensus_off`]. Any other failure is an outage: the actors start anyway
//!    and keep polling until the chain reads.
//! 2. The actors share one thread of their own: each poll reads the chain (the dev chain opens its
//!    database, which may wait on another process), and that must not hold up the registry
//!    refresh on the chain thread, which admission depends on.
//! 3. Proposals and attestations are also published on the subnet's gossip topic, proposals
//!    stored in the DHT; a validator whose chain lacks the elected validator's proposal takes it
//!    from there, checks it like the chain would and relays it
//!    (`hermes_actors::consensus::gossip`).
//! 4. Each actor persists what it signed in the node's `consensus` tree before sending it, and
//!    announces each finished epoch on one broadcast channel, read through
//!    [`RuntimeHandle::consensus_events`].

use super::RuntimeHandle;
use crate::config::Config;
use crate::Error;
use actix::{Addr, Arbiter, Supervisor};
use hermes_actors::chain::{Chain, ChainError};
use hermes_actors::consensus::{
    ConsensusActor, ConsensusHook, ConsensusStatus, EpochOutcome, Equivocation, GetConsensusStatus,
    Tick,
};
use hermes_actors::network::{Command, GossipMessage};
use hermes_actors::Store;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::broadcast;

/// The sled tree holding every subnet's consensus duties and epoch verdicts.
const CONSENSUS_TREE: &str = "consensus";

/// The ConsensusActors and their outcome channel.
pub(super) struct ConsensusParts {
    actors: BTreeMap<u16, Addr<ConsensusActor>>,
    events: broadcast::Sender<EpochOutcome>,
    /// Equivocation evidence recorded by any of the actors.
    evidence: broadcast::Sender<Equivocation>,
    /// Why no actor runs, when none does.
    off: Option<String>,
    /// The actors' thread, handed to the runtime's list to be stopped at shutdown.
    pub(super) arbiter: Option<Arbiter>,
}

impl ConsensusParts {
    /// No consensus, for `why`.
    pub(super) fn off(config: &Config, why: &str) -> Self {
        ConsensusParts {
            actors: BTreeMap::new(),
            events: broadcast::channel(config.consensus.events_capacity.max(1)).0,
            evidence: broadcast::channel(config.consensus.events_capacity.max(1)).0,
            off: Some(why.to_string()),
            arbiter: None,
        }
    }
}

/// What the ConsensusActors need of the network: records travel beyond the chain.
pub(super) struct ConsensusNet {
    pub(super) commands: tokio::sync::mpsc::Sender<Command>,
    pub(super) gossip: broadcast::Sender<GossipMessage>,
    /// Test hook: an elected node only gossips its proposal.
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    pub(super) withhold: bool,
}

/// Starts one ConsensusActor per subnet of `consensus.netuids` (default: `subnets.netuids`), when
/// consensus is enabled and `chain` has epochs.
///
/// # Errors
/// [`Error::Storage`] when the consensus tree cannot be opened, [`Error::Startup`] when an
/// actor's persisted duties are damaged (signing again could sign twice).
pub(super) async fn start_consensus(
    config: &Config,
    chain: Arc<dyn Chain>,
    pair: sp_core::sr25519::Pair,
    hook: Arc<dyn ConsensusHook>,
    store: &Store,
    net: ConsensusNet,
) -> Result<ConsensusParts, Error> {
    let c = &config.consensus;
    if !c.enabled {
        return Ok(ConsensusParts::off(config, "consensus.enabled is false"));
    }
    let netuids = c.effective_netuids(&config.subnets.netuids);
    if netuids.is_empty() {
        let why = "no subnet to take part in (subnets.netuids and consensus.netuids are empty)";
        tracing::info!("consensus is off: {why}");
        return Ok(ConsensusParts::off(config, why));
    }
    // A chain with blocks and epochs may still have no Hermes rounds (Hypertensor runs its own):
    // asked even when the head does not read, so that an unreachable chain of that kind does not
    // start actors that could never run.
    let probe = match chain.head().await {
        Err(e @ ChainError::Unsupported(_)) => Err(e),
        head => match netuids.first() {
            Some(n) => match chain.epoch(*n, None).await {
                Err(e @ ChainError::Unsupported(_)) => Err(e),
                _ => head.map(|_| ()),
            },
            None => head.map(|_| ()),
        },
    };
    match probe {
        Err(ChainError::Unsupported(what)) => {
            use crate::config::ChainKind;
            let c = &config.chain;
            let source = match c.kind {
                ChainKind::Dev => format!("dev chain at {}", c.path.display()),
                ChainKind::Static => format!("static snapshot {}", c.path.display()),
                ChainKind::Subtensor => format!("subtensor chain at {}", c.url),
                ChainKind::Hypertensor => format!("hypertensor chain at {}", c.url),
            };
            let why = format!("the chain backend ({source}) has no {what}");
            tracing::info!("consensus is off: {why}");
            return Ok(ConsensusParts::off(config, &why));
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the chain's head; consensus starts and retries every consensus.poll_interval");
        }
        Ok(_) => {}
    }
    let tree = store.tree(CONSENSUS_TREE)?;
    let arbiter = Arbiter::new();
    let (events, _) = broadcast::channel(c.events_capacity.max(1));
    let (evidence, _) = broadcast::channel(c.events_capacity.max(1));
    let mut actors = BTreeMap::new();
    for netuid in netuids {
        let actor = match ConsensusActor::new(
            chain.clone(),
            pair.clone(),
            netuid,
            hook.clone(),
            tree.clone(),
            c.poll_interval.0,
        ) {
            Ok(a) => {
                let a = a
                    .with_events(events.clone())
                    .with_evidence(evidence.clone())
                    .with_network(net.commands.clone(), net.gossip.clone());
                #[cfg(feature = "fault-injection")]
                let a = if net.withhold {
                    a.withhold_from_chain()
                } else {
                    a
                };
                a
            }
            Err(e) => {
                arbiter.stop();
                return Err(Error::Startup(format!(
                    "cannot read the consensus records of subnet {netuid}: {e}"
                )));
            }
        };
        let addr = Supervisor::start_in_arbiter(&arbiter.handle(), move |_| actor);
        actors.insert(netuid, addr);
    }
    tracing::info!(netuids = ?actors.keys().collect::<Vec<_>>(), "consensus started");
    Ok(ConsensusParts {
        actors,
        events,
        evidence,
        off: None,
        arbiter: Some(arbiter),
    })
}

impl RuntimeHandle {
    fn consensus_actor(&self, netuid: u16) -> Result<&Addr<ConsensusActor>, Error> {
        let c = &self.parts().consensus;
        c.actors.get(&netuid).ok_or_else(|| match &c.off {
            Some(why) => Error::NotFound(format!("no consensus for subnet {netuid}: {why}")),
            None => Error::NotFound(format!(
                "no consensus for subnet {netuid}: this node takes part in subnet(s) {:?} \
                 (consensus.netuids)",
                c.actors.keys().collect::<Vec<_>>()
            )),
        })
    }

    /// What this node knows of subnet `netuid`'s current epoch: block, epoch, elected validator,
    /// attestations so far, whether it is a validator, what it signed, the last outcome.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the node takes no part in that subnet's consensus (the text says
    /// why); [`Error::Stopped`] after shutdown.
    pub async fn consensus_status(&self, netuid: u16) -> Result<ConsensusStatus, Error> {
        Self::ask(self.consensus_actor(netuid)?, GetConsensusStatus).await
    }

    /// [`RuntimeHandle::consensus_status`] of every subnet this node takes part in, by netuid.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn consensus_statuses(&self) -> Result<Vec<ConsensusStatus>, Error> {
        let mut out = Vec::new();
        for addr in self.parts().consensus.actors.values() {
            out.push(Self::ask(addr, GetConsensusStatus).await?);
        }
        Ok(out)
    }

    /// Reads the chain and acts on subnet `netuid`'s epoch now instead of at the next poll;
    /// answers with the status after it.
    ///
    /// # Errors
    /// As [`RuntimeHandle::consensus_status`].
    pub async fn poll_consensus(&self, netuid: u16) -> Result<ConsensusStatus, Error> {
        Self::ask(self.consensus_actor(netuid)?, Tick).await
    }

    /// Every finished epoch of the subnets this node takes part in, as the chain recorded it:
    /// epoch, elected validator, attestations, validator-set size, verdict, and what it did to
    /// nodes. Bounded (`consensus.events_capacity`): a reader that falls behind gets
    /// `RecvError::Lagged` with the count it missed, then the newest outcomes.
    pub fn consensus_events(&self) -> broadcast::Receiver<EpochOutcome> {
        self.parts().consensus.events.subscribe()
    }

    /// Every equivocation of an elected validator this node recorded as evidence: two different
    /// proposals it signed for one epoch, heard in gossip (stored in the node's database, once
    /// per subnet and epoch). Bounded like [`RuntimeHandle::consensus_events`].
    pub fn consensus_evidence(&self) -> broadcast::Receiver<Equivocation> {
        self.parts().consensus.evidence.subscribe()
    }

    /// Why this node takes part in no consensus (disabled, no subnet, a chain without epochs,
    /// networking off); `None` while it does.
    pub fn consensus_off(&self) -> Option<&str> {
        self.parts().consensus.off.as_deref()
    }
}
