//! FirewallActor: owns the admission policy and publishes it as an immutable snapshot.
//!
//! The swarm's gate must decide synchronously, so the actor never answers admission questions
//! itself: it rebuilds a [`Policy`] whenever one of its inputs changes and swaps it into the
//! shared `ArcSwap` the gate reads, then asks the network task to re-check existing connections.
//!
//! Accepts:
//! - [`RegistryUpdated`] (from the ChainActor) → new registry in the policy
//! - [`UpdateAcl`] → replaces the ACL
//! - [`SetSubnetScope`] → replaces the subnet scope
//! - [`GetStats`] → denial counters and a summary of the policy
//!
//! Emits [`Command::Recheck`] to the network task after every change; re-checks coalesce while
//! one is waiting for room in the command queue, but are never dropped.

use crate::chain::RegistryUpdated;
use crate::network::gate::{DenyCounters, SharedPolicy};
use crate::network::Command;
use actix::prelude::*;
use hermes_proto::firewall::{Acl, DenyReason, Policy, Scope};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The configurable parts of the policy (everything but the registry).
#[derive(Debug, Clone)]
pub struct PolicyBase {
    /// Whether the policy is enforced.
    pub enabled: bool,
    /// ACL.
    pub acl: Acl,
    /// Subnet scope.
    pub scope: Scope,
    /// Whether a minimum stake is required.
    pub require_stake: bool,
    /// Minimum stake.
    pub min_stake: u128,
}

/// Denial counters and the policy in force.
#[derive(Debug, Clone)]
pub struct FirewallStats {
    /// Denials per reason since start.
    pub denied: Vec<(DenyReason, u64)>,
    /// Registry entries known.
    pub registry_entries: usize,
    /// Whether the registry is stale (new peers refused as `chain_stale`).
    pub chain_stale: bool,
    /// The scope in force.
    pub scope: Scope,
    /// ACL sizes: allow, deny.
    pub acl_entries: (usize, usize),
}

impl FirewallStats {
    /// Count for one reason.
    pub fn denied(&self, reason: DenyReason) -> u64 {
        self.denied
            .iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }
}

/// The FirewallActor.
#[derive(Debug)]
pub struct FirewallActor {
    base: PolicyBase,
    shared: SharedPolicy,
    counters: Arc<DenyCounters>,
    network: Option<mpsc::Sender<Command>>,
    /// A re-check is waiting for room in the network's command queue.
    recheck_waiting: bool,
}

impl FirewallActor {
    /// An actor publishing into `shared`, with `base` and the registry already in `shared`.
    pub fn new(base: PolicyBase, shared: SharedPolicy, counters: Arc<DenyCounters>) -> Self {
        FirewallActor {
            base,
            shared,
            counters,
            network: None,
            recheck_waiting: false,
        }
    }

    /// Builds the first snapshot.
    pub fn initial_policy(
        base: &PolicyBase,
        registry: Arc<hermes_proto::chain::Registry>,
    ) -> Policy {
        Policy {
            enabled: base.enabled,
            acl: base.acl.clone(),
            scope: base.scope.clone(),
            require_stake: base.require_stake,
            min_stake: base.min_stake,
            registry,
            chain_stale: false,
        }
    }

    fn publish(&mut self, ctx: &mut Context<Self>) {
        let current = self.shared.load();
        let mut policy = Self::initial_policy(&self.base, current.registry.clone());
        policy.chain_stale = current.chain_stale;
        self.shared.store(Arc::new(policy));
        self.recheck(ctx);
    }

    /// Asks the network task to re-check its connections against the snapshot just published.
    ///
    /// Re-checks coalesce but never vanish: the network task reads the latest snapshot when it
    /// runs one, so one queued re-check covers every change made before it runs. When the
    /// command queue is full, a single send waits for room (later changes meanwhile ride on it:
    /// it is queued, and so runs, after them).
    fn recheck(&mut self, ctx: &mut Context<Self>) {
        if self.recheck_waiting {
            return;
        }
        let Some(net) = self.network.clone() else {
            return;
        };
        match net.try_send(Command::Recheck) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                self.recheck_waiting = true;
                ctx.spawn(
                    async move {
                        let _ = net.send(cmd).await;
                    }
                    .into_actor(self)
                    .map(|(), act, _| act.recheck_waiting = false),
                );
            }
        }
    }
}

impl Actor for FirewallActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(64);
    }
}

impl Supervised for FirewallActor {
    fn restarting(&mut self, ctx: &mut Self::Context) {
        // All state is in `self` (kept across a restart) and the shared snapshot; republish so a
        // half-applied change cannot survive. A send that was waiting for room died with the
        // old context: start over.
        tracing::warn!("FirewallActor restarted");
        self.recheck_waiting = false;
        self.publish(ctx);
    }
}

impl Handler<RegistryUpdated> for FirewallActor {
    type Result = ();
    fn handle(&mut self, msg: RegistryUpdated, ctx: &mut Self::Context) {
        let mut p = (**self.shared.load()).clone();
        p.registry = msg.registry;
        p.chain_stale = msg.stale;
        self.shared.store(Arc::new(p));
        self.recheck(ctx);
    }
}

/// Attach the network task's command queue (sent once the swarm is up).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AttachNetwork(pub mpsc::Sender<Command>);

impl Handler<AttachNetwork> for FirewallActor {
    type Result = ();
    fn handle(&mut self, msg: AttachNetwork, _: &mut Self::Context) {
        self.network = Some(msg.0);
    }
}

/// Replace the ACL; takes effect for new and existing connections.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct UpdateAcl(pub Acl);

impl Handler<UpdateAcl> for FirewallActor {
    type Result = ();
    fn handle(&mut self, msg: UpdateAcl, ctx: &mut Self::Context) {
        tracing::info!(
            allow = msg.0.allow_ss58.len() + msg.0.allow_peers.len(),
            deny = msg.0.deny_ss58.len() + msg.0.deny_peers.len(),
            "ACL updated"
        );
        self.base.acl = msg.0;
        self.publish(ctx);
    }
}

/// Replace the subnet scope; takes effect for new and existing connections.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetSubnetScope(pub Scope);

impl Handler<SetSubnetScope> for FirewallActor {
    type Result = ();
    fn handle(&mut self, msg: SetSubnetScope, ctx: &mut Self::Context) {
        tracing::info!(scope = ?msg.0, "subnet scope updated");
        self.base.scope = msg.0;
        self.publish(ctx);
    }
}

/// Ask for counters and a policy summary.
#[derive(Debug, Message)]
#[rtype(result = "FirewallStats")]
pub struct GetStats;

impl Handler<GetStats> for FirewallActor {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Self::Context) -> Self::Result {
        let acl = &self.base.acl;
        MessageResult(FirewallStats {
            denied: self.counters.snapshot(),
            registry_entries: self.shared.load().registry.len(),
            chain_stale: self.shared.load().chain_stale,
            scope: self.base.scope.clone(),
            acl_entries: (
                acl.allow_ss58.len() + acl.allow_peers.len(),
                acl.deny_ss58.len() + acl.deny_peers.len(),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_proto::chain::Registry;
    use std::time::Duration;

    /// A policy change made while the network's command queue is full still reaches the network
    /// task once the queue drains: the re-check is delayed, never dropped.
    #[test]
    fn a_recheck_survives_a_full_command_queue() {
        actix::System::new().block_on(async {
            let base = PolicyBase {
                enabled: true,
                acl: Acl::default(),
                scope: Scope::Open,
                require_stake: false,
                min_stake: 0,
            };
            let shared: SharedPolicy = Arc::new(arc_swap::ArcSwap::from_pointee(
                FirewallActor::initial_policy(&base, Arc::new(Registry::default())),
            ));
            let fw = FirewallActor::new(base, shared, Arc::new(DenyCounters::default())).start();
            let (tx, mut rx) = mpsc::channel(1);
            let (filler, _keep) = tokio::sync::oneshot::channel();
            tx.try_send(Command::Connected(filler)).unwrap();
            fw.send(AttachNetwork(tx)).await.unwrap();
            let mut acl = Acl::default();
            acl.deny_peers.insert("someone".into());
            fw.send(UpdateAcl(acl)).await.unwrap();
            // The network task gets to its queue: the command ahead, then the re-check.
            assert!(matches!(rx.recv().await, Some(Command::Connected(_))));
            let next = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
            assert!(
                matches!(next, Ok(Some(Command::Recheck))),
                "the re-check was dropped"
            );
        });
    }
}
