//! `firewall` section: admission rules and per-address connection limits.

use super::{Check, ConfigError, HumanDuration};
use serde::{Deserialize, Serialize};

/// `firewall` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    default,
    deny_unknown_fields,
    expecting = "a JSON object with the fields enabled, require_stake, min_stake, max_connections, \
                 max_conns_per_ip, conn_rate_per_ip, conn_burst_per_ip, ban_after_failures, \
                 ban_duration, binding_timeout, handshake_timeout, accept_thread"
)]
pub struct FirewallConfig {
    /// Enforce the ACL, registration, scope and stake rules. Address limits apply even when
    /// false.
    pub enabled: bool,
    /// Require `min_stake` from peers.
    pub require_stake: bool,
    /// Minimum stake in the chain's smallest unit.
    #[serde(with = "super::values::amount")]
    pub min_stake: u128,
    /// Cap on simultaneous connections. At least 1.
    pub max_connections: u32,
    /// Cap on simultaneous connections from one IP. At least 1.
    pub max_conns_per_ip: u32,
    /// New connections per second allowed from one IP. At least 1.
    pub conn_rate_per_ip: u32,
    /// Burst of new connections allowed from one IP. At least 1.
    pub conn_burst_per_ip: u32,
    /// Failed identity exchanges from one IP before it is banned. At least 1.
    pub ban_after_failures: u32,
    /// Ban length.
    pub ban_duration: HumanDuration,
    /// Time a new peer has to present a valid binding. At least 100ms.
    pub binding_timeout: HumanDuration,
    /// Time a new connection has to finish its transport handshake (TCP: multistream, noise,
    /// yamux; QUIC: TLS). Until then it holds one of `max_connections` and of `max_conns_per_ip`.
    /// 100ms..=60s.
    pub handshake_timeout: HumanDuration,
    /// Accept TCP connections and refuse banned or over-rate addresses on a dedicated thread
    /// (true), instead of on the network thread through libp2p's listener (false).
    pub accept_thread: bool,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            // On: admitting only registered, staked peers is what the node is for.
            enabled: true,
            // On: membership is proof-of-stake gated.
            require_stake: true,
            // 1, any stake at all: the subnet's own rules decide how much matters.
            min_stake: 1,
            // 1024: far above a subnet's size, low enough to bound memory under a flood.
            max_connections: 1024,
            // 8: a few nodes may share an address (NAT, one host running several), a flood may not.
            max_conns_per_ip: 8,
            // 20/s with a burst of 40: a restarting node redials its peers at once; a flood is
            // cut to a trickle.
            conn_rate_per_ip: 20,
            conn_burst_per_ip: 40,
            // 3: an honest peer rarely fails the identity exchange (a binding that expired on the
            // way), a prober fails every time; three failures tell them apart quickly.
            ban_after_failures: 3,
            // 10m: long enough to make probing slow, short enough that a misconfigured honest
            // node is not locked out for long once fixed.
            ban_duration: HumanDuration::secs(600),
            // 10s: an honest peer presents its binding within a round trip or two, even on a
            // slow link.
            binding_timeout: HumanDuration::secs(10),
            // 5s: an honest handshake takes two or three round trips (well under a second even
            // across the world); a silent socket holds a connection slot this long, so half of
            // libp2p's 10s halves what holding every slot costs an attacker in sockets per second.
            handshake_timeout: HumanDuration::secs(5),
            // On: under a connection flood, refusals then cost admitted peers' traffic a
            // fraction of what they cost on the network thread (docs/BENCHMARKS.md).
            accept_thread: true,
        }
    }
}

impl FirewallConfig {
    pub(super) fn validate(&self, check: &Check<'_>) -> Result<(), ConfigError> {
        for (name, v) in [
            ("firewall.max_connections", self.max_connections),
            ("firewall.max_conns_per_ip", self.max_conns_per_ip),
            ("firewall.conn_rate_per_ip", self.conn_rate_per_ip),
            ("firewall.conn_burst_per_ip", self.conn_burst_per_ip),
            ("firewall.ban_after_failures", self.ban_after_failures),
        ] {
            if v == 0 {
                return Err(check.err(name, "must be at least 1"));
            }
        }
        if self.binding_timeout.0 < std::time::Duration::from_millis(100) {
            return Err(check.err("firewall.binding_timeout", "must be at least 100ms"));
        }
        let h = self.handshake_timeout.0;
        if h < std::time::Duration::from_millis(100) || h > std::time::Duration::from_secs(60) {
            return Err(check.err(
                "firewall.handshake_timeout",
                "must be between 100ms and 60s",
            ));
        }
        Ok(())
    }
}
