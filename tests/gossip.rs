//! Gossip beyond one hop and DHT answers that lie: real Hermes nodes and a hand-built libp2p
//! peer over loopback, a real dev chain.

mod common;

use common::{addr, denied, eventually, raw_peer, start, DevChainDir, NodeDir};
use hermes::config::AclEntry;
use hermes::proto::firewall::DenyReason;
use hermes::proto::Hotkey;
use hermes::RuntimeHandle;
use hermes_actors::network::GossipMessage;
use libp2p::{Multiaddr, PeerId};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn sees(rt: &RuntimeHandle, ss58: &str) -> bool {
    rt.peers().await.unwrap().iter().any(|p| p.ss58 == ss58)
}

/// Everything `rt` delivers to the application, collected in the background.
fn collect(rt: &RuntimeHandle) -> Arc<Mutex<Vec<GossipMessage>>> {
    let mut inbox = rt.subscribe_gossip().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        loop {
            match inbox.recv().await {
                Ok(m) => g.lock().unwrap().push(m),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    });
    got
}

/// A-B-C-D, each linked only to its neighbours (A refuses C and D, B refuses D: only the node
/// that lists a peer refuses it, so C and D still admit A's gossip). A message A publishes
/// reaches D, three hops away, under A's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_crosses_a_line_of_four_nodes() {
    let chain = DevChainDir::new();
    let n: Vec<NodeDir> = (0..4).map(|_| NodeDir::new()).collect();
    for x in &n {
        chain.register(3, x, 1_000);
    }
    let config = |i: usize, boot: Vec<Multiaddr>, refuse: &[usize]| {
        let mut c = n[i].cluster_config(&chain, vec![3]).with_bootstrap(boot);
        c.acl.deny = refuse
            .iter()
            .map(|j| AclEntry::Peer(n[*j].peer_id()))
            .collect();
        c
    };
    let a = start(config(0, vec![], &[2, 3])).await;
    let b = start(config(1, vec![addr(&a).await], &[3])).await;
    let c = start(config(2, vec![addr(&b).await], &[])).await;
    let d = start(config(3, vec![addr(&c).await], &[])).await;
    for (rt, i, j) in [(&a, 0, 1), (&b, 1, 2), (&c, 2, 3)] {
        assert!(
            eventually(WAIT, || sees(rt, &n[j].ss58)).await,
            "node {i} never saw node {j}"
        );
    }
    let at_d = collect(&d);
    let from_a = |m: &GossipMessage| m.data.starts_with(b"from A");
    let mut sent = 0u32;
    assert!(
        eventually(WAIT, || {
            sent += 1;
            let msg = format!("from A #{sent}").into_bytes();
            let a = &a;
            let at_d = &at_d;
            async move {
                let _ = a.publish(3, msg).await;
                at_d.lock().unwrap().iter().any(from_a)
            }
        })
        .await,
        "A's gossip never reached D; D saw {:?}",
        at_d.lock().unwrap()
    );
    let got = at_d.lock().unwrap().iter().find(|m| from_a(m)).cloned();
    let got = got.unwrap();
    assert_eq!(got.from, n[0].ss58);
    assert_eq!(got.peer_id, n[0].peer_id());
    assert_eq!(got.netuid, 3);
    // It was relayed: D's only verified peer is C, and A never admitted D.
    let d_peers: Vec<String> = d
        .peers()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.ss58)
        .collect();
    assert_eq!(d_peers, vec![n[2].ss58.clone()]);
    assert!(!a.connected_peers().await.unwrap().contains(&n[3].peer_id()));
    for rt in [a, b, c, d] {
        rt.shutdown().await.unwrap();
    }
}

enum RogueCmd {
    /// Publish on subnet 3's topic; answered with whether gossipsub sent it.
    Publish(Vec<u8>, tokio::sync::oneshot::Sender<bool>),
    /// Add a peer to the rogue's routing table (so that it names it in its DHT answers);
    /// answered once done.
    Learn(PeerId, Multiaddr, tokio::sync::oneshot::Sender<()>),
    /// Announce these addresses and push them over identify to every connected peer.
    Announce(Vec<Multiaddr>),
}

/// A registered, verified peer built from libp2p parts that lies: its gossip is authored by
/// `author` (another key) and its DHT store holds `records`, which it serves and never replaces.
/// Returns its listen address and its command queue.
async fn rogue(
    key: libp2p::identity::Keypair,
    binding: Vec<u8>,
    author: libp2p::identity::Keypair,
    records: Vec<(libp2p::kad::RecordKey, Vec<u8>)>,
) -> (Multiaddr, tokio::sync::mpsc::Sender<RogueCmd>) {
    use futures::StreamExt;
    use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
    use libp2p::{gossipsub, identify, kad, request_response};

    #[derive(NetworkBehaviour)]
    struct Rogue {
        gossipsub: gossipsub::Behaviour,
        identity: request_response::Behaviour<hermes_actors::network::identity_proto::BindingCodec>,
        kad: kad::Behaviour<kad::store::MemoryStore>,
        identify: identify::Behaviour,
    }
    let topic = hermes_actors::network::topic(3);
    let me = key.public().to_peer_id();
    let mut swarm = raw_peer::swarm(key, |key| {
        let mut kcfg = kad::Config::new(hermes_actors::network::KAD_PROTOCOL);
        kcfg.set_record_filtering(kad::StoreInserts::FilterBoth);
        kcfg.set_periodic_bootstrap_interval(None);
        let mut store = kad::store::MemoryStore::new(me);
        for (k, v) in records {
            kad::store::RecordStore::put(&mut store, kad::Record::new(k, v)).unwrap();
        }
        let mut kad = kad::Behaviour::with_config(me, store, kcfg);
        kad.set_mode(Some(kad::Mode::Server));
        Rogue {
            gossipsub: raw_peer::gossipsub(author),
            identity: raw_peer::binding_exchange(),
            kad,
            identify: identify::Behaviour::new(identify::Config::new(
                "/hermes/id/1".into(),
                key.public(),
            )),
        }
    });
    swarm.behaviour_mut().gossipsub.subscribe(&topic).unwrap();
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let listen = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<RogueCmd>(4);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(RogueEvent::Identity(ev)) = ev {
                        if let Some(channel) = raw_peer::binding_request(ev) {
                            let _ = swarm
                                .behaviour_mut()
                                .identity
                                .send_response(channel, binding.clone());
                        }
                    }
                }
                cmd = rx.recv() => match cmd {
                    Some(RogueCmd::Publish(data, reply)) => {
                        let sent = swarm
                            .behaviour_mut()
                            .gossipsub
                            .publish(topic.clone(), data)
                            .is_ok();
                        let _ = reply.send(sent);
                    }
                    Some(RogueCmd::Learn(peer, addr, done)) => {
                        swarm.behaviour_mut().kad.add_address(&peer, addr);
                        let _ = done.send(());
                    }
                    Some(RogueCmd::Announce(addrs)) => {
                        let old: Vec<Multiaddr> = swarm.external_addresses().cloned().collect();
                        for a in old {
                            swarm.remove_external_address(&a);
                        }
                        for a in addrs {
                            swarm.add_external_address(a);
                        }
                        let peers: Vec<PeerId> = swarm.connected_peers().copied().collect();
                        swarm.behaviour_mut().identify.push(peers);
                    }
                    None => break,
                },
            }
        }
    });
    (listen, tx)
}

/// A verified peer relays gossip under an author that is registered (by Y) but whose binding in
/// the DHT is signed by another hotkey (X): it is refused, as the same binding would be on a
/// direct connection. The same peer answers a `find` first with a forged binding: the lookup
/// goes on and returns the genuine one from the node it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_gossip_authors_and_bad_dht_answers_are_refused() {
    let chain = DevChainDir::new();
    let (q, t, x, y) = (
        NodeDir::new(),
        NodeDir::new(),
        NodeDir::new(),
        NodeDir::new(),
    );
    chain.register(3, &q, 1_000);
    chain.register(3, &t, 1_000);
    // The rogue's transport key is registered by X (so it is admitted); the author key of its
    // gossip is registered by Y, but its binding in the DHT is X's.
    let rkey = libp2p::identity::Keypair::generate_ed25519();
    let rid = rkey.public().to_peer_id();
    chain.register_foreign(3, &x, rid);
    let author = libp2p::identity::Keypair::generate_ed25519();
    let author_id = author.public().to_peer_id();
    chain.register_foreign(3, &y, author_id);

    let trt = start(t.cluster_config(&chain, vec![3])).await;
    let taddr = addr(&trt).await;
    let mut bad = t.signed_binding(t.peer_id());
    bad.signature[5] ^= 0x01;
    let t_hotkey = Hotkey::from_ss58(&t.ss58).unwrap().0;
    let records = vec![
        (hermes_actors::network::binding_key(&t_hotkey), bad.encode()),
        (
            hermes_actors::network::peer_binding_key(&author_id),
            x.signed_binding(author_id).encode(),
        ),
    ];
    let (raddr, rogue) = rogue(rkey, x.signed_binding(rid).encode(), author, records).await;
    let qrt = start(
        q.cluster_config(&chain, vec![3])
            .with_bootstrap(vec![raddr]),
    )
    .await;
    assert!(
        eventually(WAIT, || sees(&qrt, &x.ss58)).await,
        "the rogue was not admitted"
    );
    let at_q = collect(&qrt);

    // Forged author: relayed by a verified peer, refused under the signer's hotkey.
    let before = denied(&qrt, DenyReason::Unregistered).await;
    assert!(
        eventually(WAIT, || async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            rogue
                .send(RogueCmd::Publish(b"forged".to_vec(), tx))
                .await
                .unwrap();
            rx.await.unwrap() && denied(&qrt, DenyReason::Unregistered).await > before
        })
        .await,
        "the forged gossip never reached Q"
    );
    assert!(
        !at_q.lock().unwrap().iter().any(|m| m.data == b"forged"),
        "gossip under a forged author was delivered"
    );
    assert!(
        qrt.connected_peers().await.unwrap().contains(&rid),
        "the rogue was gone before its gossip was judged"
    );

    // A bad answer first (the rogue's forged binding of T), then T itself, named by the rogue.
    assert!(!qrt.connected_peers().await.unwrap().contains(&t.peer_id()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    rogue
        .send(RogueCmd::Learn(t.peer_id(), taddr, tx))
        .await
        .unwrap();
    rx.await.unwrap();
    let found = qrt.find(&t.ss58).await.expect("find despite a bad answer");
    assert_eq!(found.record.peer_id, t.peer_id().to_bytes());
    assert_eq!(found.record.hotkey.0, t_hotkey.0);

    for rt in [qrt, trt] {
        rt.shutdown().await.unwrap();
    }
}

/// `count` addresses a node could dial (`/ip4/10.<batch>.x.y/tcp/4001`) interleaved with as many
/// it could not (unspecified or multicast IPs, port 0, DNS, relay circuits, another peer's id).
fn announced(batch: u8, count: u16) -> Vec<Multiaddr> {
    let mut v = Vec::new();
    for i in 0..count {
        let [hi, lo] = i.to_be_bytes();
        v.push(
            format!("/ip4/10.{batch}.{hi}.{lo}/tcp/4001")
                .parse()
                .unwrap(),
        );
        let junk = match i % 5 {
            0 => "/ip4/0.0.0.0/tcp/4001".to_string(),
            1 => format!("/ip4/224.0.{hi}.{lo}/tcp/4001"),
            2 => format!("/ip4/10.{batch}.{hi}.{lo}/tcp/0"),
            3 => format!("/dns4/h{i}.example/tcp/4001"),
            _ => format!(
                "/ip4/10.{batch}.{hi}.{lo}/tcp/4001/p2p/{}",
                PeerId::random()
            ),
        };
        v.push(junk.parse().unwrap());
    }
    v
}

/// A verified peer pushes hundreds of addresses over identify, twice: the node keeps a few
/// dialable ones, and the second push replaces the first instead of adding to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_pushes_cannot_grow_a_peers_address_list() {
    let chain = DevChainDir::new();
    let (q, x) = (NodeDir::new(), NodeDir::new());
    chain.register(3, &q, 1_000);
    let rkey = libp2p::identity::Keypair::generate_ed25519();
    let rid = rkey.public().to_peer_id();
    chain.register_foreign(3, &x, rid);
    let author = libp2p::identity::Keypair::generate_ed25519();
    let (raddr, rogue) = rogue(rkey, x.signed_binding(rid).encode(), author, vec![]).await;
    let qrt = start(
        q.cluster_config(&chain, vec![3])
            .with_bootstrap(vec![raddr.clone()]),
    )
    .await;
    assert!(
        eventually(WAIT, || sees(&qrt, &x.ss58)).await,
        "the rogue was not admitted"
    );
    let addrs_of = |rt: &RuntimeHandle| {
        let rt = rt.clone();
        async move {
            rt.peers()
                .await
                .unwrap()
                .into_iter()
                .find(|p| p.peer_id == rid)
                .map(|p| p.addresses)
                .unwrap_or_default()
        }
    };
    let limit = hermes_actors::network::MAX_PEER_ADDRS + 1; // plus the address Q dialled
    let dialable = |a: &Multiaddr, batch: u8| {
        let s = a.to_string();
        s.starts_with(&format!("/ip4/10.{batch}.")) && s.ends_with("/tcp/4001")
    };
    for batch in [1u8, 2] {
        rogue
            .send(RogueCmd::Announce(announced(batch, 200)))
            .await
            .unwrap();
        assert!(
            eventually(WAIT, || async {
                addrs_of(&qrt).await.iter().any(|a| dialable(a, batch))
            })
            .await,
            "push {batch} never arrived"
        );
        let kept = addrs_of(&qrt).await;
        assert!(
            kept.len() <= limit,
            "push {batch}: {} addresses kept",
            kept.len()
        );
        for a in &kept {
            assert!(
                dialable(a, batch) || *a == raddr,
                "push {batch}: kept {a} (junk, or left over from an earlier push)"
            );
        }
    }
    qrt.shutdown().await.unwrap();
}
