//! Multi-node tests: real libp2p connections over loopback, a real dev chain and real sled
//! databases in temp dirs.

mod common;

use common::{
    addr, denied, eventually, linked_pair, listen_socket, raw_peer, start, DevChainDir, NodeDir,
    TCP,
};
use hermes::proto::firewall::{Acl, DenyReason, Scope};
use hermes::proto::{BindingRecord, Hotkey};
use hermes::{Config, Runtime, RuntimeHandle};
use libp2p::Multiaddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn sees(rt: &RuntimeHandle, ss58: &str) -> bool {
    rt.peers().await.unwrap().iter().any(|p| p.ss58 == ss58)
}

/// Asserts that `rt` cuts `node` off (no longer verified nor connected; `what` otherwise), counts
/// `reason` for it, and keeps it out of its routing table.
async fn assert_cut_off(rt: &RuntimeHandle, node: &NodeDir, reason: DenyReason, what: &str) {
    let id = node.peer_id();
    assert!(
        eventually(WAIT, || async {
            !sees(rt, &node.ss58).await && !rt.connected_peers().await.unwrap().contains(&id)
        })
        .await,
        "{what}"
    );
    assert!(denied(rt, reason).await >= 1);
    assert!(!rt.routing_table().await.unwrap().contains(&id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_discover_each_other_and_share_the_dht() {
    let chain = DevChainDir::new();
    let nodes: Vec<NodeDir> = (0..3).map(|_| NodeDir::new()).collect();
    for n in &nodes {
        chain.register(3, n, 1_000);
    }
    let a = start(nodes[0].cluster_config(&chain, vec![3])).await;
    let boot = addr(&a).await;
    let b = start(
        nodes[1]
            .cluster_config(&chain, vec![3])
            .with_bootstrap(vec![boot.clone()]),
    )
    .await;
    let c = start(
        nodes[2]
            .cluster_config(&chain, vec![3])
            .with_bootstrap(vec![boot]),
    )
    .await;

    // B and C only know A, yet all three end up verified peers of each other (via the DHT).
    for (rt, me) in [(&a, 0), (&b, 1), (&c, 2)] {
        for (other, n) in nodes.iter().enumerate() {
            if other != me {
                assert!(
                    eventually(WAIT, || sees(rt, &n.ss58)).await,
                    "node {me} never saw node {other}: {:?}",
                    rt.peers().await
                );
            }
        }
    }
    // Honest nodes never count each other as identity failures (e.g. when a simultaneous dial
    // closes the connection that carried the binding request).
    for rt in [&a, &b, &c] {
        let s = rt.firewall_stats().await.unwrap();
        for r in [
            DenyReason::BadBinding,
            DenyReason::Impersonation,
            DenyReason::Banned,
        ] {
            assert_eq!(s.denied(r), 0, "{r} among honest nodes: {:?}", s.denied);
        }
    }
    let pa = a.peers().await.unwrap();
    let info_b = pa.iter().find(|p| p.ss58 == nodes[1].ss58).unwrap();
    assert_eq!(info_b.peer_id, nodes[1].peer_id());
    assert_eq!(info_b.netuids, vec![3]);
    assert!(!info_b.addresses.is_empty());

    // A finds C by wallet address alone, through the DHT, and the binding is C's.
    let found = a.find(&nodes[2].ss58).await.unwrap();
    assert_eq!(found.record.peer_id, nodes[2].peer_id().to_bytes());
    assert!(a
        .find("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY")
        .await
        .is_err());

    // A record written by C is read by B.
    c.dht_put(b"/app/model-hash", b"blake3:abc".to_vec())
        .await
        .unwrap();
    assert!(
        eventually(WAIT, || async {
            b.dht_get(b"/app/model-hash").await.is_ok()
        })
        .await
    );
    assert_eq!(b.dht_get(b"/app/model-hash").await.unwrap(), b"blake3:abc");

    // It survives a restart of the writer: C, alone after restart, still serves it from sled.
    c.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let c2 = start(nodes[2].cluster_config(&chain, vec![3])).await;
    assert_eq!(c2.dht_get(b"/app/model-hash").await.unwrap(), b"blake3:abc");
    c2.shutdown().await.unwrap();
}

/// An attacker's config: it admits anyone itself (open scope), so every refusal measured is the
/// target's.
fn attacker(node: &NodeDir, chain: &DevChainDir, netuids: Vec<u16>) -> Config {
    let mut c = node.cluster_config(chain, netuids);
    c.subnets.mode = hermes::config::SubnetMode::Open;
    c
}

/// Starts `x` as an attacker that presents `binding` instead of its real binding record.
async fn attacker_presenting(x: &NodeDir, chain: &DevChainDir, binding: Vec<u8>) -> RuntimeHandle {
    Runtime::builder(attacker(x, chain, vec![3]))
        .with_binding_override(binding)
        .start()
        .await
        .unwrap()
}

/// Starts a target node and returns it with its address.
async fn target(
    chain: &DevChainDir,
    node: &NodeDir,
    scope_netuids: Vec<u16>,
) -> (RuntimeHandle, Multiaddr) {
    chain.register(3, node, 1_000);
    let mut cfg = node.cluster_config(chain, scope_netuids);
    // Every attacker below comes from 127.0.0.1; without this the third failure would ban it
    // and later cases would be counted as `banned` instead of their own reason.
    cfg.firewall.ban_after_failures = 1000;
    let rt = start(cfg).await;
    let a = addr(&rt).await;
    (rt, a)
}

/// Starts `node` as an attacker that dials `to` and checks that `target` counts `reason` and
/// never admits it.
async fn expect_denied(
    target_rt: &RuntimeHandle,
    to: &Multiaddr,
    attacker: RuntimeHandle,
    ss58: &str,
    reason: DenyReason,
) {
    let before = denied(target_rt, reason).await;
    let id = attacker.identity().await.unwrap().peer_id;
    attacker.dial(to.clone()).await.unwrap();
    assert!(
        eventually(WAIT, || async { denied(target_rt, reason).await > before }).await,
        "{reason} was never counted: {:?}",
        target_rt.firewall_stats().await.unwrap().denied
    );
    assert!(!sees(target_rt, ss58).await, "{reason}: attacker admitted");
    // By peer id too: a successful impersonation would show the victim's SS58, not the
    // attacker's.
    assert!(
        !target_rt
            .peers()
            .await
            .unwrap()
            .iter()
            .any(|p| p.peer_id == id),
        "{reason}: attacker admitted under another name"
    );
    assert!(!target_rt.routing_table().await.unwrap().contains(&id));
    attacker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_peers_are_denied_with_the_right_reason() {
    let chain = DevChainDir::new();
    let t = NodeDir::new();
    let (trt, taddr) = target(&chain, &t, vec![3]).await;

    // Unregistered.
    let x = NodeDir::new();
    let xrt = start(attacker(&x, &chain, vec![3])).await;
    expect_denied(&trt, &taddr, xrt, &x.ss58, DenyReason::Unregistered).await;

    // Stake below the minimum (100).
    let x = NodeDir::new();
    chain.register(3, &x, 5);
    trt.refresh_chain().await.unwrap();
    let xrt = start(attacker(&x, &chain, vec![3])).await;
    expect_denied(&trt, &taddr, xrt, &x.ss58, DenyReason::InsufficientStake).await;

    // Registered in another subnet than the whitelist admits...
    let x = NodeDir::new();
    chain.register(5, &x, 1_000);
    trt.refresh_chain().await.unwrap();
    let xrt = start(attacker(&x, &chain, vec![5])).await;
    expect_denied(&trt, &taddr, xrt, &x.ss58, DenyReason::OutOfScope).await;
    // ...and under `single` for another subnet...
    trt.set_subnet_scope(Scope::Single(3)).await.unwrap();
    let xrt = start(attacker(&x, &chain, vec![5])).await;
    expect_denied(&trt, &taddr, xrt, &x.ss58, DenyReason::OutOfScope).await;
    // ...but admitted in open relay mode.
    trt.set_subnet_scope(Scope::Open).await.unwrap();
    let xrt = start(attacker(&x, &chain, vec![5])).await;
    xrt.dial(taddr.clone()).await.unwrap();
    assert!(
        eventually(WAIT, || sees(&trt, &x.ss58)).await,
        "open mode must admit"
    );
    xrt.shutdown().await.unwrap();
    trt.set_subnet_scope(Scope::Whitelist([3].into()))
        .await
        .unwrap();

    // Denied by ACL: by SS58, then by peer id.
    let x = NodeDir::new();
    chain.register(3, &x, 1_000);
    trt.refresh_chain().await.unwrap();
    let (hk, _) = Hotkey::from_ss58(&x.ss58).unwrap();
    let mut acl = Acl::default();
    acl.deny_ss58.insert(hk);
    trt.update_acl(acl).await.unwrap();
    let xrt = start(attacker(&x, &chain, vec![3])).await;
    expect_denied(&trt, &taddr, xrt, &x.ss58, DenyReason::AclSs58).await;
    let mut acl = Acl::default();
    acl.deny_peers.insert(x.peer_id().to_base58());
    trt.update_acl(acl).await.unwrap();
    let xrt = start(attacker(&x, &chain, vec![3])).await;
    expect_denied(&trt, &taddr, xrt, &x.ss58, DenyReason::AclPeerId).await;
    trt.update_acl(Acl::default()).await.unwrap();

    // Impersonation: a registered node presents the valid binding of another hotkey (the
    // victim's record, copied from the DHT or the wire).
    let victim = NodeDir::new();
    chain.register(3, &victim, 1_000);
    let vrt = Runtime::builder(victim.cluster_config(&chain, vec![3]))
        .with_network(false)
        .start()
        .await
        .unwrap();
    let victim_binding = vrt.identity().await.unwrap().binding.encode();
    vrt.shutdown().await.unwrap();
    let x = NodeDir::new();
    chain.register(3, &x, 1_000);
    trt.refresh_chain().await.unwrap();
    let xrt = attacker_presenting(&x, &chain, victim_binding).await;
    expect_denied(&trt, &taddr, xrt, &x.ss58, DenyReason::Impersonation).await;

    // Its own binding, but expired.
    let mut rec = own_record(&x);
    rec.issued_at -= 7200;
    rec.expires_at = rec.issued_at + 3600;
    let expired = rec.sign(x.hotkey().pair()).unwrap().encode();
    let xrt = attacker_presenting(&x, &chain, expired).await;
    expect_denied(&trt, &taddr, xrt, &x.ss58, DenyReason::ExpiredBinding).await;

    // Its own binding with a forged signature.
    let mut forged = x.signed_binding(x.peer_id());
    forged.signature[7] ^= 0x10;
    let xrt = attacker_presenting(&x, &chain, forged.encode()).await;
    expect_denied(&trt, &taddr, xrt, &x.ss58, DenyReason::BadBinding).await;

    trt.shutdown().await.unwrap();
}

/// `node`'s own binding record, unsigned, to be altered before signing.
fn own_record(node: &NodeDir) -> BindingRecord {
    node.binding_record(node.peer_id())
}

/// A registered peer that speaks gossipsub and accepts the binding exchange but never presents a
/// binding: it stays connected, unverified, until `binding_timeout`. Returns a way to make it
/// publish on subnet 3's topic (answered with whether gossipsub sent the message).
fn silent_gossiper(
    key: libp2p::identity::Keypair,
    target: Multiaddr,
) -> tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<bool>> {
    use futures::StreamExt;
    use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
    use libp2p::{gossipsub, request_response};

    #[derive(NetworkBehaviour)]
    struct Rogue {
        gossipsub: gossipsub::Behaviour,
        identity: request_response::Behaviour<hermes_actors::network::identity_proto::BindingCodec>,
    }
    let topic = hermes_actors::network::topic(3);
    let mut swarm = raw_peer::swarm(key, |key| Rogue {
        gossipsub: raw_peer::gossipsub(key.clone()),
        identity: raw_peer::binding_exchange(),
    });
    swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    swarm.dial(target).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<tokio::sync::oneshot::Sender<bool>>(4);
    tokio::spawn(async move {
        // The target's binding requests are held unanswered, so it waits for the timeout.
        let mut held = Vec::new();
        loop {
            tokio::select! {
                ev = swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(RogueEvent::Identity(ev)) = ev {
                        held.extend(raw_peer::binding_request(ev));
                    }
                }
                reply = rx.recv() => match reply {
                    Some(reply) => {
                        let sent = swarm
                            .behaviour_mut()
                            .gossipsub
                            .publish(topic.clone(), b"from the attacker".to_vec())
                            .is_ok();
                        let _ = reply.send(sent);
                    }
                    None => break,
                },
            }
        }
    });
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_peer_stays_out_of_routing_table_and_mesh_and_its_gossip_is_dropped() {
    let chain = DevChainDir::new();
    let (t, h, x) = (NodeDir::new(), NodeDir::new(), NodeDir::new());
    for n in [&t, &h] {
        chain.register(3, n, 1_000);
    }
    // X is registered (so the gate lets it in) but never presents a binding.
    let xkey = libp2p::identity::Keypair::generate_ed25519();
    let xid = xkey.public().to_peer_id();
    chain.register_foreign(3, &x, xid);
    let mut cfg = t.cluster_config(&chain, vec![3]);
    cfg.firewall.binding_timeout = hermes::config::HumanDuration(Duration::from_secs(15));
    let trt = start(cfg).await;
    let taddr = addr(&trt).await;
    let mut inbox = trt.subscribe_gossip().unwrap();
    let hrt = start(
        h.cluster_config(&chain, vec![3])
            .with_bootstrap(vec![taddr.clone()]),
    )
    .await;
    assert!(eventually(WAIT, || sees(&trt, &h.ss58)).await);

    // X connects and publishes until the target has received (and dropped) its gossip.
    let x_publish = silent_gossiper(xkey, taddr.clone());
    let dropped_before = denied(&trt, DenyReason::Unregistered).await;
    assert!(
        eventually(WAIT, || async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            x_publish.send(tx).await.unwrap();
            rx.await.unwrap() && denied(&trt, DenyReason::Unregistered).await > dropped_before
        })
        .await,
        "the attacker's gossip never reached the target"
    );
    // While X is still connected: not verified, not in the routing table, not in the mesh.
    assert!(trt.connected_peers().await.unwrap().contains(&xid));
    assert!(!trt.peers().await.unwrap().iter().any(|p| p.peer_id == xid));
    assert!(!trt.routing_table().await.unwrap().contains(&xid));
    assert!(!trt.mesh_peers().await.unwrap().contains(&xid));
    assert!(
        trt.connected_peers().await.unwrap().contains(&xid),
        "the checks above ran after the attacker was gone"
    );

    // The honest peer's gossip gets through (positive control)...
    assert!(
        eventually(WAIT, || async {
            hrt.publish(3, b"from the honest peer".to_vec())
                .await
                .is_ok()
        })
        .await,
        "honest peer could not publish"
    );
    let msg = tokio::time::timeout(WAIT, async {
        loop {
            match inbox.recv().await {
                Ok(m) => return m,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("gossip channel closed: {e}"),
            }
        }
    })
    .await
    .expect("honest gossip delivered");
    // ...and it is the first and only thing delivered: nothing from X ever came before it.
    assert_eq!(msg.data, b"from the honest peer");
    assert_eq!(msg.from, h.ss58);
    while let Ok(m) = inbox.try_recv() {
        assert_ne!(m.data, b"from the attacker", "attacker gossip delivered");
    }
    assert!(trt.routing_table().await.unwrap().contains(&h.peer_id()));
    assert!(trt.mesh_peers().await.unwrap().contains(&h.peer_id()));

    // Without a binding, X is cut off at the binding timeout.
    assert!(
        eventually(WAIT, || async {
            !trt.connected_peers().await.unwrap().contains(&xid)
        })
        .await
    );
    assert!(denied(&trt, DenyReason::BadBinding).await >= 1);
    for rt in [hrt, trt] {
        rt.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_acl_change_disconnects_a_connected_peer() {
    let (_chain, a, b, art, brt) = linked_pair(TCP, |_| {}).await;
    assert!(eventually(WAIT, || sees(&art, &b.ss58)).await);
    assert!(eventually(WAIT, || sees(&brt, &a.ss58)).await);

    let (hk, _) = Hotkey::from_ss58(&b.ss58).unwrap();
    let mut acl = Acl::default();
    acl.deny_ss58.insert(hk);
    art.update_acl(acl).await.unwrap();
    assert_cut_off(&art, &b, DenyReason::AclSs58, "denied peer still connected").await;
    art.shutdown().await.unwrap();
    brt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_identity_failures_ban_the_address() {
    let chain = DevChainDir::new();
    let (t, x) = (NodeDir::new(), NodeDir::new());
    chain.register(3, &t, 1_000);
    chain.register(3, &x, 1_000);
    let mut cfg = t.cluster_config(&chain, vec![3]);
    cfg.firewall.ban_after_failures = 2;
    let trt = start(cfg).await;
    let taddr = addr(&trt).await;
    let mut forged = x.signed_binding(x.peer_id());
    forged.signature[3] ^= 1;
    for n in 1..=2u64 {
        let xrt = attacker_presenting(&x, &chain, forged.encode()).await;
        xrt.dial(taddr.clone()).await.unwrap();
        assert!(
            eventually(WAIT, || async {
                denied(&trt, DenyReason::BadBinding).await >= n
            })
            .await
        );
        xrt.shutdown().await.unwrap();
    }
    // Now even an honest node from the same address is refused until the ban ends.
    let h = NodeDir::new();
    chain.register(3, &h, 1_000);
    trt.refresh_chain().await.unwrap();
    let hrt = start(h.cluster_config(&chain, vec![3])).await;
    hrt.dial(taddr).await.unwrap();
    assert!(
        eventually(WAIT, || async {
            denied(&trt, DenyReason::Banned).await >= 1
        })
        .await
    );
    assert!(!sees(&trt, &h.ss58).await);
    hrt.shutdown().await.unwrap();
    trt.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_connect_over_quic() {
    let (_chain, a, b, art, brt) = linked_pair("/ip4/127.0.0.1/udp/0/quic-v1", |_| {}).await;
    let aaddr = addr(&art).await;
    assert!(aaddr.to_string().contains("/quic-v1"), "{aaddr}");
    assert!(eventually(WAIT, || sees(&art, &b.ss58)).await);
    assert!(eventually(WAIT, || sees(&brt, &a.ss58)).await);
    art.shutdown().await.unwrap();
    brt.shutdown().await.unwrap();
}

/// A plain libp2p node (ping only, no Hermes identity) may connect when the firewall is off
/// ("open mode") and stays connected past the binding timeout; with the firewall on it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_libp2p_peer_is_tolerated_only_in_open_mode() {
    use futures::StreamExt;
    use libp2p::ping;
    use libp2p::swarm::SwarmEvent;

    let chain = DevChainDir::new();
    let (open, closed) = (NodeDir::new(), NodeDir::new());
    let mut cfg = open.cluster_config(&chain, vec![3]);
    cfg.firewall.enabled = false;
    cfg.firewall.binding_timeout = hermes::config::HumanDuration(Duration::from_millis(300));
    let open_rt = start(cfg).await;
    let open_addr = addr(&open_rt).await;
    let (closed_rt, closed_addr) = target(&chain, &closed, vec![3]).await;

    let mut swarm = raw_peer::swarm(libp2p::identity::Keypair::generate_ed25519(), |_| {
        ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(100)))
    });
    let me = *swarm.local_peer_id();

    // Open mode: ten successful pings (about a second, over three binding timeouts) on one
    // connection that is never closed.
    swarm.dial(open_addr).unwrap();
    let mut pings = 0;
    tokio::time::timeout(WAIT, async {
        while pings < 10 {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(ping::Event { result: Ok(_), .. }) => pings += 1,
                SwarmEvent::ConnectionClosed { cause, .. } => {
                    panic!("open node closed the connection: {cause:?}")
                }
                _ => {}
            }
        }
    })
    .await
    .expect("pings in open mode");
    assert!(open_rt.connected_peers().await.unwrap().contains(&me));
    assert!(
        open_rt.peers().await.unwrap().is_empty(),
        "a peer without a binding is never verified"
    );
    assert!(!open_rt.routing_table().await.unwrap().contains(&me));

    // Firewall on: refused at connection time as unregistered.
    swarm.dial(closed_addr).unwrap();
    let closed_ok = tokio::time::timeout(WAIT, async {
        loop {
            swarm.select_next_some().await;
            if denied(&closed_rt, DenyReason::Unregistered).await > 0 {
                break;
            }
        }
    })
    .await;
    assert!(
        closed_ok.is_ok(),
        "closed node never refused the plain peer"
    );
    assert!(!closed_rt.connected_peers().await.unwrap().contains(&me));
    open_rt.shutdown().await.unwrap();
    closed_rt.shutdown().await.unwrap();
}

/// Two nodes reading a read-only JSON registry snapshot admit each other; a node missing from the
/// snapshot is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_snapshot_chain_gates_admission() {
    let (a, b, x) = (NodeDir::new(), NodeDir::new(), NodeDir::new());
    let snap_dir = tempfile::tempdir().unwrap();
    let snap = snap_dir.path().join("registry.json");
    let node = |n: &NodeDir| serde_json::json!({"netuid": 3, "hotkey": n.ss58, "peer_id": n.peer_id().to_base58(), "stake": 500, "class": "validator"});
    std::fs::write(
        &snap,
        serde_json::json!({"nodes": [node(&a), node(&b)]}).to_string(),
    )
    .unwrap();
    let chain = DevChainDir::new(); // unused by these configs; keeps the helper's shape
    let cfg = |n: &NodeDir| {
        n.cluster_config(&chain, vec![3])
            .with_chain(hermes::config::ChainKind::Static, &snap)
    };
    let art = start(cfg(&a)).await;
    let aaddr = addr(&art).await;
    let brt = start(cfg(&b).with_bootstrap(vec![aaddr.clone()])).await;
    assert!(eventually(WAIT, || sees(&art, &b.ss58)).await);
    let mut xc = cfg(&x);
    xc.subnets.mode = hermes::config::SubnetMode::Open;
    let xrt = start(xc).await;
    expect_denied(&art, &aaddr, xrt, &x.ss58, DenyReason::Unregistered).await;
    art.shutdown().await.unwrap();
    brt.shutdown().await.unwrap();
}

/// An attacker registers the victim's peer id under its own hotkey, in subnets that sort before
/// the victim's (so its entries come first in the registry), in and out of the target's scope,
/// and is on the target's deny list. None of that may turn against the victim: it is
/// admitted under its own hotkey, never counted as an impersonator nor banned, and stays
/// connected when the attacker registers it once more while the victim is connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_registration_of_a_peer_id_does_not_lock_its_owner_out() {
    let chain = DevChainDir::new();
    let (t, v, w, x) = (
        NodeDir::new(),
        NodeDir::new(),
        NodeDir::new(),
        NodeDir::new(),
    );
    for n in [&t, &v, &w] {
        chain.register(3, n, 1_000);
    }
    chain.register_foreign(1, &x, v.peer_id());
    let trt = start(t.cluster_config(&chain, vec![1, 3])).await;
    let taddr = addr(&trt).await;
    let mut acl = Acl::default();
    acl.deny_ss58.insert(Hotkey::from_ss58(&x.ss58).unwrap().0);
    trt.update_acl(acl.clone()).await.unwrap();

    let vrt = start(
        v.cluster_config(&chain, vec![3])
            .with_bootstrap(vec![taddr.clone()]),
    )
    .await;
    let wrt = start(
        w.cluster_config(&chain, vec![3])
            .with_bootstrap(vec![taddr]),
    )
    .await;
    assert!(
        eventually(WAIT, || sees(&trt, &v.ss58)).await,
        "the victim was refused: {:?}",
        trt.firewall_stats().await.unwrap().denied
    );
    assert!(eventually(WAIT, || sees(&trt, &w.ss58)).await);
    let info = trt
        .peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.peer_id == v.peer_id())
        .unwrap();
    assert_eq!(info.ss58, v.ss58, "admitted under its own hotkey");
    assert_eq!(
        info.netuids,
        vec![3],
        "the attacker's subnet is not the victim's"
    );

    // The attacker registers the victim's peer id once more, in a subnet before 3 that the
    // target admits too. The same re-check that drops W (now denied) must keep V.
    chain.register_foreign(2, &x, v.peer_id());
    trt.refresh_chain().await.unwrap();
    trt.set_subnet_scope(Scope::Whitelist([1, 2, 3].into()))
        .await
        .unwrap();
    acl.deny_ss58.insert(Hotkey::from_ss58(&w.ss58).unwrap().0);
    trt.update_acl(acl).await.unwrap();
    let wid = w.peer_id();
    assert!(
        eventually(WAIT, || async {
            !trt.connected_peers().await.unwrap().contains(&wid)
        })
        .await,
        "the re-check never ran"
    );
    assert!(
        sees(&trt, &v.ss58).await,
        "the victim was dropped on re-check"
    );
    assert!(trt.connected_peers().await.unwrap().contains(&v.peer_id()));
    let s = trt.firewall_stats().await.unwrap();
    for r in [
        DenyReason::Impersonation,
        DenyReason::Banned,
        DenyReason::BadBinding,
    ] {
        assert_eq!(s.denied(r), 0, "{r}: {:?}", s.denied);
    }
    for rt in [vrt, wrt, trt] {
        rt.shutdown().await.unwrap();
    }
}

/// A peer that presents a binding about to expire, and never renews it, is dropped once it
/// expires instead of staying verified for the life of its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binding_that_expires_after_admission_ends_the_connection() {
    let chain = DevChainDir::new();
    let (t, x) = (NodeDir::new(), NodeDir::new());
    chain.register(3, &x, 1_000);
    let (trt, taddr) = target(&chain, &t, vec![3]).await;
    let mut rec = own_record(&x);
    rec.expires_at = rec.issued_at + 6;
    let short = rec.sign(x.hotkey().pair()).unwrap().encode();
    let xrt = attacker_presenting(&x, &chain, short).await;
    xrt.dial(taddr).await.unwrap();
    assert!(
        eventually(WAIT, || sees(&trt, &x.ss58)).await,
        "admitted while its binding is valid"
    );
    let why = "still connected with an expired binding";
    assert_cut_off(&trt, &x, DenyReason::ExpiredBinding, why).await;
    xrt.shutdown().await.unwrap();
    trt.shutdown().await.unwrap();
}

/// Connections that fail before the transport handshake completes are counted (and so shown by
/// `hermes stats`): one that sends bytes which are not a handshake (`garbage`), one that resets
/// the connection in the middle of it (`reset`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_reset_connections_are_counted() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let chain = DevChainDir::new();
    let t = NodeDir::new();
    let (trt, _) = target(&chain, &t, vec![3]).await;
    let sock = listen_socket(&trt).await;
    assert_eq!(denied(&trt, DenyReason::Garbage).await, 0);
    assert_eq!(denied(&trt, DenyReason::Reset).await, 0);

    // Length-prefixed frames that are not protocol negotiation lines; the node hangs up.
    let mut s = tokio::net::TcpStream::connect(sock).await.unwrap();
    s.write_all(&[0x05; 64]).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut sink)).await;
    assert!(
        eventually(WAIT, || async {
            denied(&trt, DenyReason::Garbage).await >= 1
        })
        .await,
        "garbage not counted: {:?}",
        trt.firewall_stats().await.unwrap().denied
    );

    // Connected, began the handshake, then reset the connection (SO_LINGER 0: a RST, not a FIN).
    let mut s = tokio::net::TcpStream::connect(sock).await.unwrap();
    s.write_all(b"\x13/multistream/1.0.0\n").await.unwrap();
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await.unwrap();
    // Deprecated because a lingering close can block; with a zero timeout it never does.
    #[allow(deprecated)]
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
    assert!(
        eventually(WAIT, || async {
            denied(&trt, DenyReason::Reset).await >= 1
        })
        .await,
        "reset not counted: {:?}",
        trt.firewall_stats().await.unwrap().denied
    );
    trt.shutdown().await.unwrap();
}
