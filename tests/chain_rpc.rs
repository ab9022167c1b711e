//! Real nodes over loopback with the subtensor and hypertensor backends, reading the in-process
//! JSON-RPC node of hermes-actors' tests.
//! - Subtensor: registered, staked hotkeys are admitted by their verified bindings, an
//!   unregistered or under-staked one is not.
//! - Hypertensor: peer ids listed on chain under 20-byte accounts are admitted whatever sr25519
//!   hotkey signed their bindings, and exchange messages; an unlisted or under-staked one is not.
//!
//! On both, a block lowering a connected peer's stake below the minimum drops it.
//!
//! And `hermes chain check` against the same node: the registration, and how new blocks are
//! followed (the subscription tried once on a `ws://` URL, polling on `http://`).

#[path = "../actors/tests/chain_rpc_support/mod.rs"]
mod chain_rpc_support;
mod common;

use chain_rpc_support::metadata::SubnetNodeClass;
use chain_rpc_support::metadata::{self as meta, Drift};
use chain_rpc_support::storage::{
    ht_epoch_key, ht_register, ht_slot_key, ht_stake_key, recorded_hypertensor_metadata,
    st_register, st_stake_key,
};
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

fn config(n: &NodeDir, kind: ChainKind, url: &str) -> hermes::Config {
    let mut c = n.config().with_subnets(SubnetMode::Whitelist, vec![NETUID]);
    c.chain.kind = kind;
    c.chain.url = url.to_string();
    c.chain.poll_interval = HumanDuration(Duration::from_millis(100));
    c.firewall.min_stake = 100;
    c.firewall.max_conns_per_ip = 64;
    c.firewall.binding_timeout = HumanDuration(Duration::from_secs(5));
    c
}

/// `a` refuses `low` (registered under the minimum stake) and `unlisted` (not registered), and
/// neither is among its peers.
async fn refuses_understaked_and_unregistered(
    a: &hermes::RuntimeHandle,
    low: &NodeDir,
    unlisted: &NodeDir,
) {
    assert!(
        eventually(WAIT, || async {
            denied(a, DenyReason::InsufficientStake).await > 0
                && denied(a, DenyReason::Unregistered).await > 0
        })
        .await,
        "the under-staked and the unregistered node were not refused"
    );
    let peers = a.peers().await.unwrap();
    assert!(
        !peers
            .iter()
            .any(|p| p.ss58 == low.ss58 || p.ss58 == unlisted.ss58),
        "{peers:?}"
    );
}

/// `a` drops `n` (whose stake a new block took below the minimum) within [`WAIT`].
async fn drops(a: &hermes::RuntimeHandle, n: &NodeDir) {
    assert!(
        eventually(WAIT, || async {
            !a.peers().await.unwrap().iter().any(|p| p.ss58 == n.ss58)
        })
        .await,
        "{} stayed connected below the minimum stake",
        n.ss58
    );
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

    let config = |n: &NodeDir| config(n, ChainKind::Subtensor, &url);
    let a = start(config(&na)).await;
    let boot = addr(&a).await;
    let b = start(config(&nb).with_bootstrap(vec![boot.clone()])).await;
    assert!(sees(&a, &nb.ss58).await, "b was never admitted");
    let c = start(config(&nc).with_bootstrap(vec![boot.clone()])).await;
    let d = start(config(&nd).with_bootstrap(vec![boot.clone()])).await;
    refuses_understaked_and_unregistered(&a, &nc, &nd).await;

    // A block takes B's stake below the minimum: A drops it.
    rpc.new_block(|s| {
        s.insert(
            st_stake_key(account(&nb), NETUID),
            meta::AlphaCurrency(1).encode(),
        );
    });
    drops(&a, &nb).await;
    for rt in [a, b, c, d] {
        rt.shutdown().await.unwrap();
    }
}

/// A Hypertensor account: 20 bytes, unrelated to any node's sr25519 hotkey.
fn account20(i: u8) -> [u8; 20] {
    [0xe0 | i; 20]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypertensor_admits_listed_peer_ids_whatever_hotkey_signed_and_drops_on_a_stake_change() {
    let (na, nb, nc, nd) = (
        NodeDir::new(),
        NodeDir::new(),
        NodeDir::new(),
        NodeDir::new(),
    );
    // A and B listed and staked, C listed under the minimum, D not listed. The chain binds each
    // peer id to a 20-byte account of its own: none of the nodes' sr25519 hotkeys (which sign
    // their bindings) appears on it.
    let mut storage = BTreeMap::new();
    for (id, n, class, stake) in [
        (1u8, &na, SubnetNodeClass::Validator, 1000u128),
        (2, &nb, SubnetNodeClass::Included, 1000),
        (3, &nc, SubnetNodeClass::Idle, 5),
    ] {
        let peer = n.peer_id().to_base58();
        let subnet = u32::from(NETUID);
        ht_register(
            &mut storage,
            subnet,
            id.into(),
            account20(id),
            &peer,
            class,
            stake,
        );
    }
    // The metadata of the real Hypertensor runtime: the backend checks and reads through it.
    let rpc = Node::start(recorded_hypertensor_metadata(), storage).await;
    let url = rpc.url();
    let config = |n: &NodeDir| config(n, ChainKind::Hypertensor, &url);

    let a = start(config(&na)).await;
    let boot = addr(&a).await;
    let b = start(config(&nb).with_bootstrap(vec![boot.clone()])).await;
    assert!(sees(&a, &nb.ss58).await, "b was never admitted");
    assert!(sees(&b, &na.ss58).await, "b never admitted a");
    // Admitted by its on-chain peer id, known by the hotkey that signed its binding, in the
    // subnet the chain lists it in.
    let peer = a.peers().await.unwrap();
    let pb = peer.iter().find(|p| p.ss58 == nb.ss58).unwrap();
    assert_eq!(pb.peer_id, nb.peer_id());
    assert_eq!(pb.netuids, vec![NETUID]);
    for n in [&na, &nb] {
        let hotkey = Hotkey::from_ss58(&n.ss58).unwrap().0;
        assert_ne!(&hotkey.0[..20], &account20(1)[..]);
        assert_ne!(&hotkey.0[..20], &account20(2)[..]);
    }

    // The chain has epochs, but its rounds are its own: consensus stays off and says why.
    let why = a.consensus_off().unwrap_or_default().to_string();
    assert!(
        why.contains("hypertensor chain at") && why.contains("Hypertensor elects"),
        "{why}"
    );

    // Messages flow both ways, addressed by those hotkeys.
    let mut inbox_b = b.subscribe().unwrap();
    let id = a
        .send(&nb.ss58, NETUID, b"over hypertensor".to_vec())
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, inbox_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.id, got.from.as_str(), got.netuid),
        (id, na.ss58.as_str(), NETUID)
    );
    assert_eq!(got.bytes, b"over hypertensor");
    got.ack();
    let mut inbox_a = a.subscribe().unwrap();
    b.send(&na.ss58, NETUID, b"and back".to_vec())
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, inbox_a.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.bytes, b"and back");
    got.ack();

    // C is listed with too little stake, D not at all: refused by their peer ids.
    let c = start(config(&nc).with_bootstrap(vec![boot.clone()])).await;
    let d = start(config(&nd).with_bootstrap(vec![boot.clone()])).await;
    refuses_understaked_and_unregistered(&a, &nc, &nd).await;

    // A block takes B's account's stake below the minimum: A drops it.
    rpc.new_block(|s| {
        s.insert(ht_stake_key(account20(2), NETUID.into()), 1u128.encode());
    });
    drops(&a, &nb).await;
    for rt in [a, b, c, d] {
        rt.shutdown().await.unwrap();
    }
}

/// Runs `hermes chain check` on `cfg`, written into `n`'s directory.
async fn chain_check(n: &NodeDir, cfg: hermes::Config) -> (bool, String, String) {
    let path = n.path().join("check.json");
    std::fs::write(&path, cfg.to_pretty_json()).unwrap();
    let o = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hermes"))
            .args(["chain", "check", "-c"])
            .arg(&path)
            .env_remove("HERMES_HOTKEY_URI")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (o.status.success(), text(o.stdout), text(o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_check_shows_the_registration_and_how_new_blocks_are_followed() {
    let (n, other) = (NodeDir::new(), NodeDir::new());
    let peer = n.peer_id().to_base58();
    let mut storage = BTreeMap::new();
    let subnet = u32::from(NETUID);
    let validator = SubnetNodeClass::Validator;
    ht_register(
        &mut storage,
        subnet,
        1,
        account20(1),
        &peer,
        validator,
        1000,
    );
    let other_peer = other.peer_id().to_base58();
    let idle = SubnetNodeClass::Idle;
    ht_register(&mut storage, subnet, 2, account20(2), &other_peer, idle, 7);
    // The subnet's epochs start at block 1; this node is elected in its epoch 0.
    storage.insert(ht_slot_key(subnet), 1u32.encode());
    storage.insert(
        ht_epoch_key("SubnetElectedValidator", subnet, 0),
        1u32.encode(),
    );
    let rpc = Node::start(meta::hypertensor(Drift::None), storage).await;
    let ws = rpc.url();
    let http = format!("http://{}", rpc.addr);

    // ws://: the subscription is tried once and works.
    let (ok, out, err) = chain_check(&n, config(&n, ChainKind::Hypertensor, &ws)).await;
    assert!(ok, "{out}{err}");
    for line in [
        "block: 1 (finalized, 0x".to_string(),
        format!("subnet {NETUID}: 2 node(s)"),
        format!("  registered: yes, stake 1000, class validator, peer id {peer}"),
        "new blocks: subscription (ws), polling every 100ms as the fallback".to_string(),
        "  subscription: works (first finalized head: block 1, after ".to_string(),
        "epoch: 0 (4 blocks per epoch)".to_string(),
        format!(
            "subnet {NETUID} consensus: subnet epoch 0 (slot 1), elected validator node 1, peer id \
             {peer} (this node), proposal submitted: no"
        ),
    ] {
        assert!(out.contains(&line), "{line:?} not in:\n{out}");
    }
    assert_eq!(rpc.subscriptions(), 1);

    // http://: polled only, nothing subscribes.
    let (ok, out, err) = chain_check(&n, config(&n, ChainKind::Hypertensor, &http)).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("new blocks: polling every 100ms (chain.url is not ws:// or wss://"),
        "{out}"
    );
    assert!(!out.contains("subscription:"), "{out}");
    assert_eq!(rpc.subscriptions(), 1);

    // ws:// to an endpoint that refuses WebSocket (reads over HTTP still work): the check
    // shows the registry, says the subscription does not work and fails.
    rpc.set_websocket(false);
    let (ok, out, err) = chain_check(&n, config(&n, ChainKind::Hypertensor, &ws)).await;
    assert!(!ok, "{out}{err}");
    assert!(out.contains("registered: yes, stake 1000"), "{out}");
    assert!(out.contains("  subscription: does not work: "), "{out}");
    assert!(
        err.contains(&format!(
            "the subscription to new heads at {ws} does not work"
        )) && err.contains("only every 100ms (chain.poll_interval)"),
        "{err}"
    );
    assert_eq!(rpc.subscriptions(), 1);
}
