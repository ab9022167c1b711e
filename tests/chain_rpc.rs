//! Real nodes over loopback with the subtensor backend, reading the in-process JSON-RPC node of
//! hermes-actors' tests: registered, staked hotkeys are admitted by their verified bindings, an
//! unregistered or under-staked one is not, and a block lowering a connected peer's stake below
//! the minimum drops it.

#[path = "../actors/tests/chain_rpc_support/mod.rs"]
mod chain_rpc_support;
mod common;

use chain_rpc_support::metadata::{self as meta, Drift};
use chain_rpc_support::storage::{st_register, st_stake_key};
use chain_rpc_support::Node;
use common::{addr, denied, eventually, sees, start, NodeDir};
use hermes::config::{ChainKind, HumanDuration, SubnetMode};
use hermes::proto::firewall::DenyReason;
use hermes::proto::Hotkey;
use parity_scale_codec::Encode;
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const NETUID: u16 = 3;

fn account(n: &NodeDir) -> [u8; 32] {
    Hotkey::from_ss58(&n.ss58).unwrap().0 .0
}

fn config(n: &NodeDir, url: &str) -> hermes::Config {
    let mut c = n.config().with_subnets(SubnetMode::Whitelist, vec![NETUID]);
    c.chain.kind = ChainKind::Subtensor;
    c.chain.url = url.to_string();
    c.chain.poll_interval = HumanDuration(Duration::from_millis(100));
    c.firewall.min_stake = 100;
    c.firewall.max_conns_per_ip = 64;
    c.firewall.binding_timeout = HumanDuration(Duration::from_secs(5));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subtensor_admits_registered_staked_hotkeys_and_drops_on_a_stake_change() {
    let (na, nb, nc, nd) = (
        NodeDir::new(),
        NodeDir::new(),
        NodeDir::new(),
        NodeDir::new(),
    );
    // A and B staked, C registered under the minimum, D not registered.
    let mut storage = BTreeMap::new();
    for (uid, n, stake) in [(0u16, &na, 1000u64), (1, &nb, 1000), (2, &nc, 5)] {
        st_register(&mut storage, NETUID, uid, account(n), stake);
    }
    let rpc = Node::start(meta::subtensor(Drift::None), storage).await;
    let url = rpc.url();

    let a = start(config(&na, &url)).await;
    let boot = addr(&a).await;
    let b = start(config(&nb, &url).with_bootstrap(vec![boot.clone()])).await;
    assert!(sees(&a, &nb.ss58).await, "b was never admitted");
    let c = start(config(&nc, &url).with_bootstrap(vec![boot.clone()])).await;
    let d = start(config(&nd, &url).with_bootstrap(vec![boot.clone()])).await;
    assert!(
        eventually(WAIT, || async {
            denied(&a, DenyReason::InsufficientStake).await > 0
                && denied(&a, DenyReason::Unregistered).await > 0
        })
        .await,
        "c and d were not refused"
    );
    let peers = a.peers().await.unwrap();
    assert!(
        !peers.iter().any(|p| p.ss58 == nc.ss58 || p.ss58 == nd.ss58),
        "{peers:?}"
    );

    // A block takes B's stake below the minimum: A drops it.
    rpc.new_block(|s| {
        s.insert(
            st_stake_key(account(&nb), NETUID),
            meta::AlphaCurrency(1).encode(),
        );
    });
    assert!(
        eventually(WAIT, || async {
            !a.peers().await.unwrap().iter().any(|p| p.ss58 == nb.ss58)
        })
        .await,
        "b stayed connected below the minimum stake"
    );
    for rt in [a, b, c, d] {
        rt.shutdown().await.unwrap();
    }
}
