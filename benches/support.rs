//! Helpers shared by the benchmarks: node directories with real key files on a dev chain.
#![allow(dead_code, unreachable_pub)]

use hermes::config::{ChainKind, HumanDuration, SubnetMode};
use hermes::{Config, HotkeyPair, RuntimeHandle};
use std::path::Path;
use std::time::Duration;

/// The number in environment variable `name`, or `default` when unset or not a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The median of `v` (the upper one of an even count); `v` must not be empty.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Resident set size of this process, MiB.
pub fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// A node under `dir/name` with a fresh hotkey, registered with stake in `netuid` on the dev
/// chain at `chain`, listening on `listen`. Returns its config and SS58 address.
pub fn node(dir: &Path, name: &str, chain: &Path, netuid: u16, listen: &str) -> (Config, String) {
    let d = dir.join(name);
    let hk = d.join("hotkey");
    let (key, file) = HotkeyPair::generate();
    file.write_new(&hk).expect("hotkey");
    let peer = hermes::transport_key(&d.join("data/transport.key"))
        .expect("key")
        .public()
        .to_peer_id();
    let ss58 = key.public().to_ss58(42);
    hermes_actors::chain::DevChain::new(chain)
        .register_sync(hermes::proto::chain::NodeEntry {
            netuid,
            hotkey: key.public(),
            peer_id: peer.to_base58(),
            stake: 1000,
            class: hermes::proto::chain::NodeClass::Registered,
        })
        .expect("register");
    let mut c = Config::default()
        .with_data_dir(d.join("data"))
        .with_hotkey_file(&hk)
        .with_chain(ChainKind::Dev, chain)
        .with_subnets(SubnetMode::Single, vec![netuid])
        .with_listen(vec![listen.parse().expect("addr")])
        .with_log_level("error");
    // The registry is read at start; polling the dev chain (which opens its database each time)
    // would only add noise to the measurements.
    c.chain.poll_interval = HumanDuration(Duration::from_secs(600));
    // At least the poll interval (validation); the registry is never stale during a run.
    c.chain.max_staleness = HumanDuration(Duration::from_secs(1200));
    (c, ss58)
}

/// The node's first listen address, once bound.
pub async fn listen_addr(rt: &RuntimeHandle) -> libp2p::Multiaddr {
    loop {
        if let Some(a) = rt.listen_addrs().await.expect("addrs").first().cloned() {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
