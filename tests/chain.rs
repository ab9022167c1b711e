//! Admission when the chain backend fails: real nodes over loopback whose static snapshot file is
//! removed under them, or whose dev chain cannot be opened.
//!
//! A registry that cannot be refreshed is kept for `chain.max_staleness`; after that (or from the
//! start, when the chain never read) new peers are refused as `chain_stale`, peers admitted before
//! stay, and admissions resume as soon as the chain reads again.

mod common;

use common::{addr, eventually, sees, start, DevChainDir, NodeDir};
use hermes::config::{ChainKind, HumanDuration, SubnetMode};
use hermes::proto::firewall::DenyReason;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// A snapshot registering `nodes` in subnet 3.
fn snapshot(nodes: &[&NodeDir]) -> String {
    let nodes: Vec<serde_json::Value> = nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "netuid": 3,
                "hotkey": n.ss58,
                "peer_id": n.peer_id().to_base58(),
                "stake": 1000,
            })
        })
        .collect();
    serde_json::json!({ "nodes": nodes }).to_string()
}

/// A node reading the snapshot `snap`, polling fast, stale after 300 ms of failures.
fn config(n: &NodeDir, snap: &Path) -> hermes::Config {
    let mut c = n
        .config()
        .with_chain(ChainKind::Static, snap)
        .with_subnets(SubnetMode::Whitelist, vec![3]);
    c.chain.poll_interval = HumanDuration(Duration::from_millis(100));
    c.chain.max_staleness = HumanDuration(Duration::from_millis(300));
    c.firewall.min_stake = 100;
    c.firewall.max_conns_per_ip = 64;
    c.firewall.binding_timeout = HumanDuration(Duration::from_secs(5));
    c
}

async fn stale(rt: &hermes::RuntimeHandle) -> bool {
    rt.firewall_stats().await.unwrap().chain_stale
}

async fn refused_as_stale(rt: &hermes::RuntimeHandle) -> u64 {
    rt.firewall_stats()
        .await
        .unwrap()
        .denied(DenyReason::ChainStale)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_that_stops_reading_refuses_newcomers_until_it_reads_again() {
    let (na, nb, nc) = (NodeDir::new(), NodeDir::new(), NodeDir::new());
    let dir = tempfile::tempdir().unwrap();
    let (own, good) = (dir.path().join("a.json"), dir.path().join("good.json"));
    let all = snapshot(&[&na, &nb, &nc]);
    std::fs::write(&own, &all).unwrap();
    std::fs::write(&good, &all).unwrap();

    let a = start(config(&na, &own)).await;
    let boot = addr(&a).await;
    let b = start(config(&nb, &good).with_bootstrap(vec![boot.clone()])).await;
    assert!(sees(&a, &nb.ss58).await, "b was never admitted");
    assert!(!stale(&a).await);

    // A's chain goes away: after max_staleness the registry is stale.
    std::fs::remove_file(&own).unwrap();
    assert!(
        eventually(WAIT, || stale(&a)).await,
        "the registry never became stale"
    );
    // A newcomer registered in the last registry read is refused...
    let c = start(config(&nc, &good).with_bootstrap(vec![boot.clone()])).await;
    assert!(
        eventually(WAIT, || async { refused_as_stale(&a).await > 0 }).await,
        "the newcomer was not refused as chain_stale"
    );
    let peers = a.peers().await.unwrap();
    assert!(!peers.iter().any(|p| p.ss58 == nc.ss58), "{peers:?}");
    // ...while the peer admitted before stays (the re-check after the change kept it).
    assert!(peers.iter().any(|p| p.ss58 == nb.ss58), "{peers:?}");
    assert!(b.peers().await.unwrap().iter().any(|p| p.ss58 == na.ss58));

    // The chain reads again: the newcomer (which keeps redialing) gets in.
    std::fs::write(&own, &all).unwrap();
    assert!(sees(&a, &nc.ss58).await, "admissions did not resume");
    assert!(!stale(&a).await);
    for rt in [a, b, c] {
        rt.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_unreadable_at_start_fails_closed_then_recovers() {
    let (na, nb) = (NodeDir::new(), NodeDir::new());
    // A's dev chain cannot be opened: a directory stands where sled keeps its log file.
    let broken = DevChainDir::new();
    std::fs::create_dir_all(broken.path().join("db")).unwrap();
    let good = DevChainDir::new();
    good.register(3, &na, 1000);
    good.register(3, &nb, 1000);
    let cfg = |n: &NodeDir, chain: &DevChainDir| {
        let mut c = n.cluster_config(chain, vec![3]);
        c.chain.max_staleness = HumanDuration(Duration::from_millis(300));
        c
    };

    // The node starts (the chain may come back) but admits nobody meanwhile.
    let a = start(cfg(&na, &broken)).await;
    assert!(stale(&a).await);
    let boot = addr(&a).await;
    let b = start(cfg(&nb, &good).with_bootstrap(vec![boot])).await;
    assert!(
        eventually(WAIT, || async { refused_as_stale(&a).await > 0 }).await,
        "a peer was not refused as chain_stale"
    );
    assert!(a.peers().await.unwrap().is_empty());

    // The chain is repaired and the nodes register on it: admissions resume.
    std::fs::remove_dir(broken.path().join("db")).unwrap();
    broken.register(3, &na, 1000);
    broken.register(3, &nb, 1000);
    assert!(sees(&a, &nb.ss58).await, "admissions did not resume");
    assert!(!stale(&a).await);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
