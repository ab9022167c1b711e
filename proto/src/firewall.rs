//! Admission policy: who may hold a connection to this node, decided without I/O.
//!
//! Two decision points, both synchronous and allocation-free on the hot path:
//!
//! 1. **By address**, before the handshake ([`ConnLimiter::admit_address`]): cap on total
//!    connections, per-IP connection cap, per-IP token-bucket rate limit, temporary bans.
//! 2. **By peer**: once the transport has authenticated the peer id, [`Policy::admit_connection`]
//!    refuses peer ids that no hotkey could get admitted; once the peer's binding record has
//!    verified, [`Policy::admit_signed`] decides for the hotkey that signed it: ACL on peer id and
//!    SS58, registration on the chain, subnet scope, stake gate.
//!
//! Only the registrations of the peer id *by the signing hotkey* count. Anyone can register any
//! peer id under their own hotkey (the chain checks the peer id's form, not its ownership), so a
//! registration by another hotkey must not refuse the owner, nor lend it stake or subnets.
//!
//! The rules for a peer id and its signer, in order (the first that applies decides):
//! - a denied peer id or hotkey is refused (deny always wins);
//! - a peer id on the allow list is admitted even if unregistered (explicit operator trust);
//! - a peer id the signer did not register is refused (`unregistered`);
//! - if an allow list is set, a peer on neither allow list is refused;
//! - a peer with no registration by the signer in scope (`single`/`whitelist`) is refused;
//! - with `require_stake`, a peer whose best in-scope stake (of the signer's registrations) is
//!   below `min_stake` is refused.

use crate::chain::Registry;
use crate::hotkey::Hotkey;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;

/// Why a connection was refused. Stable names for counters via [`DenyReason::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DenyReason {
    /// Total connection cap reached.
    TooManyConnections,
    /// Per-IP connection cap reached.
    TooManyFromIp,
    /// Per-IP connection rate exceeded.
    RateLimited,
    /// The address or peer is temporarily banned after repeated failures.
    Banned,
    /// Peer id on the deny list.
    AclPeerId,
    /// Hotkey on the deny list.
    AclSs58,
    /// An allow list is set and the peer is not on it.
    NotAllowListed,
    /// No registration on the chain for this peer id.
    Unregistered,
    /// Registered, but not in any subnet this node admits.
    OutOfScope,
    /// Registered in scope, but with less stake than required.
    InsufficientStake,
    /// The identity exchange failed: no binding, or it did not verify.
    BadBinding,
    /// The binding verified but names another hotkey than the chain registered for the peer id.
    Impersonation,
    /// The binding has expired.
    ExpiredBinding,
    /// The chain registry could not be read for longer than `chain.max_staleness` (or not at all
    /// since start): no new peer is admitted on a registry that may be out of date.
    ChainStale,
    /// An inbound connection's transport handshake failed on bytes that are not a valid
    /// handshake (a port scan, another protocol, a broken client), or on a connection closed
    /// without a byte.
    Garbage,
    /// An inbound connection broke (reset by the remote, or cut inside a frame) before its
    /// transport handshake completed.
    Reset,
}

impl DenyReason {
    /// Every reason, for listing counters.
    pub const ALL: [DenyReason; 16] = [
        DenyReason::TooManyConnections,
        DenyReason::TooManyFromIp,
        DenyReason::RateLimited,
        DenyReason::Banned,
        DenyReason::AclPeerId,
        DenyReason::AclSs58,
        DenyReason::NotAllowListed,
        DenyReason::Unregistered,
        DenyReason::OutOfScope,
        DenyReason::InsufficientStake,
        DenyReason::BadBinding,
        DenyReason::Impersonation,
        DenyReason::ExpiredBinding,
        DenyReason::ChainStale,
        DenyReason::Garbage,
        DenyReason::Reset,
    ];

    /// A stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::TooManyConnections => "too_many_connections",
            DenyReason::TooManyFromIp => "too_many_from_ip",
            DenyReason::RateLimited => "rate_limited",
            DenyReason::Banned => "banned",
            DenyReason::AclPeerId => "acl_peer_id",
            DenyReason::AclSs58 => "acl_ss58",
            DenyReason::NotAllowListed => "not_allow_listed",
            DenyReason::Unregistered => "unregistered",
            DenyReason::OutOfScope => "out_of_scope",
            DenyReason::InsufficientStake => "insufficient_stake",
            DenyReason::BadBinding => "bad_binding",
            DenyReason::Impersonation => "impersonation",
            DenyReason::ExpiredBinding => "expired_binding",
            DenyReason::ChainStale => "chain_stale",
            DenyReason::Garbage => "garbage",
            DenyReason::Reset => "reset",
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which subnets' members are admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Members of exactly this subnet.
    Single(u16),
    /// Members of any of these subnets.
    Whitelist(BTreeSet<u16>),
    /// Any registered node (relay mode).
    Open,
}

impl Scope {
    /// Whether a registration in `netuid` is in scope.
    pub fn contains(&self, netuid: u16) -> bool {
        match self {
            Scope::Single(n) => *n == netuid,
            Scope::Whitelist(set) => set.contains(&netuid),
            Scope::Open => true,
        }
    }
}

/// Allow and deny lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// Hotkeys always admitted (subject to deny).
    pub allow_ss58: HashSet<Hotkey>,
    /// Hotkeys always refused.
    pub deny_ss58: HashSet<Hotkey>,
    /// Peer ids (text form) always admitted, even unregistered.
    pub allow_peers: HashSet<String>,
    /// Peer ids (text form) always refused.
    pub deny_peers: HashSet<String>,
}

impl Acl {
    fn has_allow_list(&self) -> bool {
        !self.allow_ss58.is_empty() || !self.allow_peers.is_empty()
    }
}

/// The admission policy published by the FirewallActor.
#[derive(Debug, Clone)]
pub struct Policy {
    /// When false every authenticated peer is admitted (address limits still apply).
    pub enabled: bool,
    /// Allow/deny lists.
    pub acl: Acl,
    /// Subnet scope.
    pub scope: Scope,
    /// Whether a minimum stake is required.
    pub require_stake: bool,
    /// The minimum stake, in the chain's smallest unit.
    pub min_stake: u128,
    /// The chain registry this policy decides against (shared: it can be large).
    pub registry: std::sync::Arc<Registry>,
    /// The registry is older than the configured staleness limit (the chain backend keeps
    /// failing), or was never read: new peers are refused ([`DenyReason::ChainStale`]) until it
    /// reads again. Connections admitted before keep being checked against the last registry.
    pub chain_stale: bool,
}

/// What the policy knows about an admitted peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The hotkey that signed the peer's binding.
    pub hotkey: Hotkey,
    /// In-scope subnets in which that hotkey registered the peer id.
    pub netuids: Vec<u16>,
}

impl Policy {
    /// Decides whether the authenticated `peer_id` (text form), whose binding verified under
    /// `signer`, may keep its connection.
    ///
    /// Only the registrations of `peer_id` made by `signer` count: anyone can register any peer
    /// id under their own hotkey (in another subnet, or while denied), and such a registration
    /// must neither refuse the node that owns the peer id nor lend it stake or subnets. A
    /// registration without a peer id (a chain that lists hotkeys only) counts when it is
    /// `signer`'s: the verified binding links `signer` to `peer_id`. A
    /// registry whose chain binds peer ids itself ([`Registry::chain_binds_peers`]) counts every
    /// registration of `peer_id`: there the hotkey that signed the binding is not a chain account.
    ///
    /// # Errors
    /// The [`DenyReason`] of the first rule that refuses it.
    pub fn admit_signed(&self, peer_id: &str, signer: &Hotkey) -> Result<Admission, DenyReason> {
        self.decide(peer_id, signer, true)
    }

    /// Decides whether an already admitted peer may stay (re-checks after a policy change, a
    /// re-issued binding). Same rules as [`Policy::admit_signed`] except that a stale registry
    /// refuses only newcomers: dropping every peer because the chain is unreachable would turn
    /// a chain outage into a network outage, while the last registry still decides who stays.
    ///
    /// # Errors
    /// The [`DenyReason`] of the first rule that refuses it.
    pub fn readmit_signed(&self, peer_id: &str, signer: &Hotkey) -> Result<Admission, DenyReason> {
        self.decide(peer_id, signer, false)
    }

    fn decide(&self, peer_id: &str, signer: &Hotkey, new: bool) -> Result<Admission, DenyReason> {
        let own = || {
            // On a chain that binds peer ids to hotkeys itself, its record is the binding.
            let chain_bound = self.registry.chain_binds_peers();
            let by_peer = self
                .registry
                .by_peer(peer_id)
                .filter(move |e| chain_bound || e.hotkey == *signer);
            // On a chain that lists hotkeys only, the verified binding (signed by `signer` for
            // this peer id) is the link: the signer's registrations count.
            let by_hotkey = self
                .registry
                .by_hotkey(signer)
                .filter(|e| e.peer_id.is_empty());
            by_peer.chain(by_hotkey)
        };
        if !self.enabled {
            return Ok(Admission {
                hotkey: *signer,
                netuids: sorted(own().map(|e| e.netuid)),
            });
        }
        if self.acl.deny_peers.contains(peer_id) {
            return Err(DenyReason::AclPeerId);
        }
        if self.acl.deny_ss58.contains(signer) {
            return Err(DenyReason::AclSs58);
        }
        if self.acl.allow_peers.contains(peer_id) {
            return Ok(Admission {
                hotkey: *signer,
                netuids: sorted(
                    own()
                        .filter(|e| self.scope.contains(e.netuid))
                        .map(|e| e.netuid),
                ),
            });
        }
        // Everything below trusts the registry, which may be out of date by now.
        if new && self.chain_stale {
            return Err(DenyReason::ChainStale);
        }
        if own().next().is_none() {
            return Err(DenyReason::Unregistered);
        }
        if self.acl.has_allow_list() && !self.acl.allow_ss58.contains(signer) {
            return Err(DenyReason::NotAllowListed);
        }
        let in_scope = || own().filter(|e| self.scope.contains(e.netuid));
        if in_scope().next().is_none() {
            return Err(DenyReason::OutOfScope);
        }
        if self.require_stake {
            let best = in_scope().map(|e| e.stake).max().unwrap_or(0);
            if best < self.min_stake {
                return Err(DenyReason::InsufficientStake);
            }
        }
        Ok(Admission {
            hotkey: *signer,
            netuids: sorted(in_scope().map(|e| e.netuid)),
        })
    }

    /// Decides, before the peer has presented its binding, whether `peer_id` (text form) could be
    /// admitted at all: whether [`Policy::admit_signed`] would admit it for at least one hotkey
    /// that registered it (or for any hotkey, when the peer id is allow-listed or the policy is
    /// off). The binding exchange then decides for the hotkey that actually signs.
    ///
    /// # Errors
    /// When no hotkey would be admitted: the reason of the rule that went furthest down the list
    /// for any of them (e.g. `insufficient_stake` rather than `acl_ss58` when one registration is
    /// denied and another is short of stake), so counters name the closest miss.
    pub fn admit_connection(&self, peer_id: &str) -> Result<(), DenyReason> {
        if !self.enabled {
            return Ok(());
        }
        if self.acl.deny_peers.contains(peer_id) {
            return Err(DenyReason::AclPeerId);
        }
        if self.acl.allow_peers.contains(peer_id) {
            return Ok(());
        }
        // An out-of-date registry cannot say that a newcomer is unregistered either.
        if self.chain_stale {
            return Err(DenyReason::ChainStale);
        }
        // A chain that lists hotkeys only cannot tell from a peer id: the connection may present
        // its binding (within the binding timeout, and nothing else until it verifies), and
        // `admit_signed` decides for the hotkey that signed it.
        if self
            .registry
            .entries()
            .iter()
            .any(|e| e.peer_id.is_empty() && self.scope.contains(e.netuid))
        {
            return Ok(());
        }
        let mut closest = DenyReason::Unregistered;
        let mut tried = HashSet::new();
        for e in self.registry.by_peer(peer_id) {
            if !tried.insert(e.hotkey) {
                continue;
            }
            match self.admit_signed(peer_id, &e.hotkey) {
                Ok(_) => return Ok(()),
                Err(r) if tried.len() == 1 || rank(r) > rank(closest) => closest = r,
                Err(_) => {}
            }
        }
        Err(closest)
    }
}

/// How far down the rules of [`Policy::admit_signed`] a refusal happened.
fn rank(r: DenyReason) -> u8 {
    match r {
        DenyReason::AclPeerId => 0,
        DenyReason::AclSs58 => 1,
        DenyReason::Unregistered => 2,
        DenyReason::NotAllowListed => 3,
        DenyReason::OutOfScope => 4,
        DenyReason::InsufficientStake => 5,
        _ => 0,
    }
}

fn sorted(netuids: impl Iterator<Item = u16>) -> Vec<u16> {
    let mut v: Vec<u16> = netuids.collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Address limits, applied in two places: [`RateLimiter`] (rate and bans) as connections are
/// accepted, and [`ConnCounter`] (simultaneous connections) while they are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum simultaneous connections (pending + established).
    pub max_connections: u32,
    /// Maximum simultaneous connections from one IP.
    pub max_per_ip: u32,
    /// New connections per second allowed from one IP (token bucket refill rate).
    pub rate_per_ip: u32,
    /// Burst of new connections allowed from one IP.
    pub burst_per_ip: u32,
    /// How long a ban lasts, in milliseconds.
    pub ban_ms: u64,
}

/// Upper bound on IPs tracked by the rate limiter (older entries are evicted beyond it), so a
/// flood from many addresses cannot grow the table without limit.
pub const MAX_TRACKED_IPS: usize = 65_536;

/// Per-IP token-bucket rate limit and temporary bans. Time is milliseconds on any monotonic clock.
///
/// This is the cheapest check and runs first, as the transport accepts a socket: it alone turns
/// away a connection flood, before any handshake or swarm bookkeeping.
#[derive(Debug)]
pub struct RateLimiter {
    limits: Limits,
    per_ip: HashMap<IpAddr, Bucket>,
    /// The keys of `per_ip`, oldest first (eviction order).
    order: VecDeque<IpAddr>,
}

/// Entries looked at to find one to evict when the table is full.
const EVICT_SCAN: usize = 8;

#[derive(Debug, Default)]
struct Bucket {
    tokens_milli: u64,
    last_ms: u64,
    banned_until_ms: u64,
    failures: u32,
}

impl RateLimiter {
    /// A limiter with full buckets.
    pub fn new(limits: Limits) -> Self {
        RateLimiter {
            limits,
            per_ip: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Decides on a new connection from `ip` at `now_ms`.
    ///
    /// # Errors
    /// [`DenyReason::Banned`] or [`DenyReason::RateLimited`].
    pub fn check(&mut self, ip: IpAddr, now_ms: u64) -> Result<(), DenyReason> {
        let burst_milli = u64::from(self.limits.burst_per_ip.max(1)) * 1000;
        let rate = u64::from(self.limits.rate_per_ip);
        let b = self.entry(ip, now_ms, || Bucket {
            tokens_milli: burst_milli,
            last_ms: now_ms,
            ..Bucket::default()
        });
        if b.banned_until_ms > now_ms {
            return Err(DenyReason::Banned);
        }
        let elapsed = now_ms.saturating_sub(b.last_ms);
        b.last_ms = now_ms;
        b.tokens_milli = b
            .tokens_milli
            .saturating_add(elapsed.saturating_mul(rate))
            .min(burst_milli);
        if b.tokens_milli < 1000 {
            return Err(DenyReason::RateLimited);
        }
        b.tokens_milli -= 1000;
        Ok(())
    }

    /// Records a failed identity exchange from `ip`; after `threshold` failures the IP is banned
    /// for the configured time. Returns whether it is now banned.
    pub fn record_failure(&mut self, ip: IpAddr, threshold: u32, now_ms: u64) -> bool {
        let ban_ms = self.limits.ban_ms;
        let b = self.entry(ip, now_ms, Bucket::default);
        b.failures += 1;
        if b.failures >= threshold {
            b.failures = 0;
            b.banned_until_ms = now_ms.saturating_add(ban_ms);
            return true;
        }
        false
    }

    /// `ip`'s bucket, created with `new` if absent. At [`MAX_TRACKED_IPS`] an older entry makes
    /// room first, in bounded time: the table never grows past the cap, and a flood from many
    /// addresses costs a few map operations per new address, not a scan of the table.
    fn entry(&mut self, ip: IpAddr, now_ms: u64, new: impl FnOnce() -> Bucket) -> &mut Bucket {
        if !self.per_ip.contains_key(&ip) {
            if self.per_ip.len() >= MAX_TRACKED_IPS {
                self.evict_one(now_ms);
            }
            self.order.push_back(ip);
        }
        self.per_ip.entry(ip).or_insert_with(new)
    }

    /// Drops one entry, oldest first; a banned one gets a second chance (moved to the back) for
    /// up to [`EVICT_SCAN`] entries. Dropping an entry only forgets limits (a reset bucket, a
    /// lifted ban): it can favour the address dropped, never refuse anyone.
    fn evict_one(&mut self, now_ms: u64) {
        for _ in 0..EVICT_SCAN {
            let Some(ip) = self.order.pop_front() else {
                return;
            };
            match self.per_ip.get(&ip) {
                Some(b) if b.banned_until_ms > now_ms => self.order.push_back(ip),
                Some(_) => {
                    self.per_ip.remove(&ip);
                    return;
                }
                None => {}
            }
        }
        // Everything looked at is banned: drop the oldest anyway.
        if let Some(ip) = self.order.pop_front() {
            self.per_ip.remove(&ip);
        }
    }
}

/// Counts open connections, in total and per IP.
#[derive(Debug)]
pub struct ConnCounter {
    max_total: u32,
    max_per_ip: u32,
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
}

impl ConnCounter {
    /// A counter with the given caps.
    pub fn new(limits: Limits) -> Self {
        ConnCounter {
            max_total: limits.max_connections,
            max_per_ip: limits.max_per_ip,
            total: 0,
            per_ip: HashMap::new(),
        }
    }

    /// Counts a new connection from `ip` unless a cap is reached; it must later be released.
    ///
    /// # Errors
    /// [`DenyReason::TooManyConnections`] or [`DenyReason::TooManyFromIp`].
    pub fn admit(&mut self, ip: IpAddr) -> Result<(), DenyReason> {
        if self.total >= self.max_total {
            return Err(DenyReason::TooManyConnections);
        }
        let n = self.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(DenyReason::TooManyFromIp);
        }
        *n += 1;
        self.total += 1;
        Ok(())
    }

    /// Releases a connection counted by [`ConnCounter::admit`]; releasing more than was admitted
    /// is harmless.
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            self.total = self.total.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Connections currently counted.
    pub fn total(&self) -> u32 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{NodeClass, NodeEntry};

    const P1: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    const P2: &str = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N";
    const P3: &str = "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo";

    fn policy(scope: Scope) -> Policy {
        let e = |netuid, hk: u8, peer: &str, stake| NodeEntry {
            netuid,
            hotkey: Hotkey([hk; 32]),
            peer_id: peer.into(),
            stake,
            class: NodeClass::Idle,
        };
        Policy {
            enabled: true,
            acl: Acl::default(),
            scope,
            require_stake: true,
            min_stake: 100,
            registry: std::sync::Arc::new(Registry::new([e(1, 1, P1, 500), e(2, 2, P2, 50)])),
            chain_stale: false,
        }
    }

    const K1: Hotkey = Hotkey([1; 32]);
    const K2: Hotkey = Hotkey([2; 32]);
    const K3: Hotkey = Hotkey([3; 32]);

    #[test]
    fn a_chain_bound_registry_admits_the_peer_id_whatever_signed() {
        let mut p = policy(Scope::Open);
        assert_eq!(p.admit_signed(P1, &K3), Err(DenyReason::Unregistered));
        p.registry = std::sync::Arc::new((*p.registry).clone().with_chain_bound_peers());
        let a = p.admit_signed(P1, &K3).unwrap();
        assert_eq!((a.hotkey, a.netuids), (K3, vec![1]));
        // Stake still counts: P2's registration is short.
        assert_eq!(p.admit_signed(P2, &K3), Err(DenyReason::InsufficientStake));
        assert_eq!(p.admit_signed(P3, &K3), Err(DenyReason::Unregistered));
    }

    #[test]
    fn hotkey_only_registrations_admit_by_the_signer_of_the_binding() {
        let mut p = policy(Scope::Single(3));
        let e = |hk: u8, stake| NodeEntry {
            netuid: 3,
            hotkey: Hotkey([hk; 32]),
            peer_id: String::new(),
            stake,
            class: NodeClass::Registered,
        };
        assert_eq!(p.admit_connection(P3), Err(DenyReason::Unregistered));
        p.registry = std::sync::Arc::new(Registry::new([e(1, 500), e(2, 5)]));
        // Any peer id may present its binding; the signer decides.
        assert_eq!(p.admit_connection(P3), Ok(()));
        assert_eq!(p.admit_signed(P3, &K1).unwrap().netuids, vec![3]);
        assert_eq!(p.admit_signed(P1, &K1).unwrap().netuids, vec![3]);
        assert_eq!(p.admit_signed(P3, &K2), Err(DenyReason::InsufficientStake));
        assert_eq!(p.admit_signed(P3, &K3), Err(DenyReason::Unregistered));
        // Out of scope: nothing to present a binding for.
        p.scope = Scope::Single(4);
        assert_eq!(p.admit_connection(P3), Err(DenyReason::Unregistered));
        assert_eq!(p.admit_signed(P3, &K1), Err(DenyReason::OutOfScope));
        // Stale: newcomers refused before anything else.
        p.scope = Scope::Single(3);
        p.chain_stale = true;
        assert_eq!(p.admit_connection(P3), Err(DenyReason::ChainStale));
        assert!(p.readmit_signed(P3, &K1).is_ok());
    }

    #[test]
    fn a_stale_registry_refuses_newcomers_only() {
        let mut p = policy(Scope::Open);
        p.chain_stale = true;
        assert_eq!(p.admit_signed(P1, &K1), Err(DenyReason::ChainStale));
        assert_eq!(p.admit_connection(P1), Err(DenyReason::ChainStale));
        assert_eq!(p.admit_signed(P3, &K3), Err(DenyReason::ChainStale));
        assert_eq!(p.admit_connection(P3), Err(DenyReason::ChainStale));
        // A peer admitted before stays, judged by the last registry.
        assert!(p.readmit_signed(P1, &K1).is_ok());
        assert_eq!(p.readmit_signed(P3, &K3), Err(DenyReason::Unregistered));
        // The ACL does not depend on the chain: deny still wins, an allowed peer id still enters.
        p.acl.allow_peers.insert(P3.into());
        assert!(p.admit_signed(P3, &K3).is_ok());
        assert_eq!(p.admit_connection(P3), Ok(()));
        p.acl.deny_peers.insert(P3.into());
        assert_eq!(p.admit_signed(P3, &K3), Err(DenyReason::AclPeerId));
        let p = policy(Scope::Open);
        assert!(!p.chain_stale);
        assert!(p.admit_signed(P1, &K1).is_ok());
    }

    #[test]
    fn rules_in_order() {
        let p = policy(Scope::Whitelist([1, 2].into()));
        assert_eq!(p.admit_signed(P1, &K1).map(|a| a.netuids), Ok(vec![1]));
        assert_eq!(p.admit_connection(P1), Ok(()));
        assert_eq!(p.admit_signed(P3, &K1), Err(DenyReason::Unregistered));
        assert_eq!(p.admit_connection(P3), Err(DenyReason::Unregistered));
        assert_eq!(p.admit_signed(P2, &K2), Err(DenyReason::InsufficientStake));
        assert_eq!(p.admit_connection(P2), Err(DenyReason::InsufficientStake));
        assert_eq!(
            policy(Scope::Single(2)).admit_signed(P1, &K1),
            Err(DenyReason::OutOfScope)
        );
        assert!(policy(Scope::Open).admit_signed(P1, &K1).is_ok());

        let mut p = policy(Scope::Open);
        p.acl.deny_peers.insert(P1.into());
        assert_eq!(p.admit_signed(P1, &K1), Err(DenyReason::AclPeerId));
        assert_eq!(p.admit_connection(P1), Err(DenyReason::AclPeerId));
        let mut p = policy(Scope::Open);
        p.acl.deny_ss58.insert(K1);
        assert_eq!(p.admit_signed(P1, &K1), Err(DenyReason::AclSs58));
        assert_eq!(p.admit_connection(P1), Err(DenyReason::AclSs58));
        let mut p = policy(Scope::Open);
        p.acl.allow_peers.insert(P3.into());
        assert!(
            p.admit_signed(P3, &K2).is_ok(),
            "allow-listed peer id needs no registration"
        );
        assert_eq!(p.admit_connection(P3), Ok(()));
        assert_eq!(p.admit_signed(P1, &K1), Err(DenyReason::NotAllowListed));
        p.acl.allow_ss58.insert(K1);
        assert!(p.admit_signed(P1, &K1).is_ok());
        // Deny wins over allow.
        p.acl.deny_peers.insert(P3.into());
        assert_eq!(p.admit_signed(P3, &K2), Err(DenyReason::AclPeerId));

        let mut p = policy(Scope::Single(9));
        p.enabled = false;
        assert!(p.admit_signed(P3, &K1).is_ok());
        assert_eq!(p.admit_connection(P3), Ok(()));
    }

    #[test]
    fn only_the_signers_registrations_count() {
        let e = |netuid, hk: u8, stake| NodeEntry {
            netuid,
            hotkey: Hotkey([hk; 32]),
            peer_id: P1.into(),
            stake,
            class: NodeClass::Idle,
        };
        // The owner (K1) registered P1 in subnet 3 with little stake; an attacker (K2, denied)
        // registered the same peer id first, in subnets 1 (in scope, much stake) and 2 (out of
        // scope).
        let mut p = policy(Scope::Whitelist([1, 3].into()));
        p.registry = std::sync::Arc::new(Registry::new([
            e(1, 2, 10_000),
            e(2, 2, 10_000),
            e(3, 1, 500),
        ]));
        p.acl.deny_ss58.insert(K2);
        assert_eq!(
            p.admit_signed(P1, &K1),
            Ok(Admission {
                hotkey: K1,
                netuids: vec![3]
            })
        );
        assert_eq!(p.admit_connection(P1), Ok(()));
        assert_eq!(p.admit_signed(P1, &K2), Err(DenyReason::AclSs58));
        // A third hotkey that registered nothing for P1 is simply unregistered for it.
        assert_eq!(
            p.admit_signed(P1, &Hotkey([3; 32])),
            Err(DenyReason::Unregistered)
        );
        // The attacker's stake is not lent to the owner.
        p.min_stake = 1_000;
        assert_eq!(p.admit_signed(P1, &K1), Err(DenyReason::InsufficientStake));
        // Before the binding, the closest miss is reported.
        assert_eq!(p.admit_connection(P1), Err(DenyReason::InsufficientStake));
    }

    #[test]
    fn limiter_caps_rates_and_bans() {
        let limits = Limits {
            max_connections: 3,
            max_per_ip: 2,
            rate_per_ip: 10,
            burst_per_ip: 2,
            ban_ms: 1000,
        };
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut c = ConnCounter::new(limits);
        assert_eq!(c.admit(a), Ok(()));
        assert_eq!(c.admit(a), Ok(()));
        assert_eq!(c.admit(a), Err(DenyReason::TooManyFromIp));
        assert_eq!(c.admit(b), Ok(()));
        assert_eq!(c.admit(b), Err(DenyReason::TooManyConnections));
        c.release(b);
        c.release(b); // double release is harmless
        assert_eq!(c.total(), 2);
        assert_eq!(c.admit(b), Ok(()));

        let mut r = RateLimiter::new(limits);
        assert_eq!(r.check(a, 0), Ok(()));
        assert_eq!(r.check(a, 0), Ok(()));
        // Burst of 2 used up at t=0; the bucket refills at 10/s.
        assert_eq!(r.check(a, 0), Err(DenyReason::RateLimited));
        assert_eq!(r.check(a, 100), Ok(()));
        assert_eq!(r.check(b, 100), Ok(()));
        assert!(!r.record_failure(b, 2, 5000));
        assert!(r.record_failure(b, 2, 5000));
        assert_eq!(r.check(b, 5500), Err(DenyReason::Banned));
        assert_eq!(r.check(b, 6001), Ok(()));
    }

    #[test]
    fn rate_limiter_table_stays_bounded() {
        let limits = Limits {
            max_connections: 10,
            max_per_ip: 10,
            rate_per_ip: 1000,
            burst_per_ip: 1,
            ban_ms: 10,
        };
        let mut r = RateLimiter::new(limits);
        for i in 0..(MAX_TRACKED_IPS as u32 + 10) {
            let ip = IpAddr::from(i.to_be_bytes());
            let _ = r.check(ip, u64::from(i / 1000) * 10);
        }
        assert!(r.per_ip.len() <= MAX_TRACKED_IPS);
    }

    /// Addresses that are all still rate-limited (each just used a token, nothing refilled) used
    /// to be kept by the prune, so the table grew past its cap, scanning all of it per address.
    #[test]
    fn rate_limiter_table_stays_bounded_when_every_entry_is_active() {
        let limits = Limits {
            max_connections: 10,
            max_per_ip: 10,
            rate_per_ip: 20,
            burst_per_ip: 40,
            ban_ms: 60_000,
        };
        let mut r = RateLimiter::new(limits);
        let banned = IpAddr::from([10, 0, 0, 1]);
        assert!(r.record_failure(banned, 1, 0));
        for i in 0..(MAX_TRACKED_IPS as u32 + 1000) {
            let ip = IpAddr::from((0x2000_0000 + i).to_be_bytes());
            assert_eq!(r.check(ip, 0), Ok(()));
            assert!(r.per_ip.len() <= MAX_TRACKED_IPS);
            assert_eq!(r.per_ip.len(), r.order.len());
        }
        // The ban survived the churn (second chance), and the table stays consistent.
        assert_eq!(r.check(banned, 1), Err(DenyReason::Banned));
        for i in 0..1000u32 {
            assert!(!r.record_failure(IpAddr::from((0x3000_0000 + i).to_be_bytes()), 5, 1));
        }
        assert!(r.per_ip.len() <= MAX_TRACKED_IPS);
    }
}
