//! The admission gate: a `NetworkBehaviour` that refuses connections before anything is allocated
//! for them.
//!
//! 1. `handle_pending_inbound_connection` runs when a socket is accepted, before the security
//!    handshake: the connection caps (total, per IP) decide. Rate limits and bans were already
//!    applied even earlier, in the transport ([`super::filter`]).
//! 2. `handle_established_inbound_connection` / `..._outbound_...` run once noise/TLS has
//!    authenticated the peer id and before any connection handler or substream exists: the policy
//!    (ACL, registration, subnet scope, stake) refuses peer ids that no registered hotkey could
//!    get admitted. The hotkey that signs the peer's binding is checked later, by the network
//!    task, once the binding arrives.
//!
//! The gate is the first behaviour of the swarm, so a denial here means no other behaviour has
//! created a handler either. It reads the FirewallActor's policy through an `ArcSwap` snapshot:
//! one atomic load, never an await. Every denial is counted per reason and logged at debug.

use hermes_proto::firewall::{ConnCounter, DenyReason, Limits, Policy};
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// The shared, swappable policy snapshot.
pub type SharedPolicy = Arc<arc_swap::ArcSwap<Policy>>;

/// Denial counters, one per [`DenyReason`], shared between the gate, the network task and the API.
#[derive(Debug, Default)]
pub struct DenyCounters {
    counts: [AtomicU64; DenyReason::ALL.len()],
}

impl DenyCounters {
    /// Adds one denial.
    pub fn inc(&self, reason: DenyReason) {
        if let Some(i) = DenyReason::ALL.iter().position(|r| *r == reason) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Current count for a reason.
    pub fn get(&self, reason: DenyReason) -> u64 {
        DenyReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map(|i| self.counts[i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Every reason with its count.
    pub fn snapshot(&self) -> Vec<(DenyReason, u64)> {
        DenyReason::ALL.iter().map(|r| (*r, self.get(*r))).collect()
    }
}

/// Why the gate refused, carried inside `ConnectionDenied`.
#[derive(Debug, thiserror::Error)]
#[error("connection refused by the firewall: {0}")]
pub struct Denied(pub DenyReason);

/// The gate behaviour.
#[derive(Debug)]
pub struct Gate {
    policy: SharedPolicy,
    counters: Arc<DenyCounters>,
    conns: ConnCounter,
    counted: HashMap<ConnectionId, IpAddr>,
    announced: HashSet<String>,
}

/// How many refused peers are remembered for the once-per-peer info log.
const MAX_ANNOUNCED: usize = 1024;

/// The IP of a multiaddr, if it has one.
pub fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl Gate {
    /// A gate reading `policy` and counting into `counters`.
    pub fn new(policy: SharedPolicy, counters: Arc<DenyCounters>, limits: Limits) -> Self {
        Gate {
            policy,
            counters,
            conns: ConnCounter::new(limits),
            counted: HashMap::new(),
            announced: HashSet::new(),
        }
    }

    fn deny(&mut self, reason: DenyReason, who: &dyn std::fmt::Display) -> ConnectionDenied {
        self.counters.inc(reason);
        tracing::debug!(%reason, peer = %who, "connection denied");
        // Operators see each refused peer once (at info) without a flood turning into a log flood.
        let who = who.to_string();
        if self.announced.len() >= MAX_ANNOUNCED {
            self.announced.clear();
        }
        if self.announced.insert(who.clone()) {
            tracing::info!(%reason, peer = %who, "refused a connection (further refusals of this peer are logged at debug)");
        }
        ConnectionDenied::new(Denied(reason))
    }

    fn check_peer(&mut self, peer: &PeerId) -> Result<(), ConnectionDenied> {
        // The binding is not known yet: refuse only peer ids that no hotkey could get admitted.
        // The hotkey that signs the binding is checked once it arrives.
        match self.policy.load().admit_connection(&peer.to_base58()) {
            Ok(()) => Ok(()),
            Err(reason) => Err(self.deny(reason, peer)),
        }
    }

    /// Connections currently counted.
    pub fn counted(&self) -> u32 {
        self.conns.total()
    }
}

impl NetworkBehaviour for Gate {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote_addr) else {
            return Ok(());
        };
        match self.conns.admit(ip) {
            Ok(()) => {
                self.counted.insert(connection_id, ip);
                Ok(())
            }
            Err(reason) => Err(self.deny(reason, &ip)),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check_peer(&peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        // Dialing a known peer id we would refuse is pointless; refuse early.
        if let Some(peer) = maybe_peer {
            self.check_peer(&peer)?;
        }
        Ok(vec![])
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check_peer(&peer)?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        let id = match event {
            FromSwarm::ConnectionClosed(c) => c.connection_id,
            FromSwarm::ListenFailure(f) => f.connection_id,
            _ => return,
        };
        if let Some(ip) = self.counted.remove(&id) {
            self.conns.release(ip);
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}
