//! The epoch loop in the runtime: four real nodes over loopback, each a registered validator of
//! subnet 3 on one dev chain in a temp dir, whose epochs the test steps by hand. The nodes' own
//! ConsensusActors (started by the runtime) propose, check through the application hook, attest
//! and report every finished epoch on `consensus_events`.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use cluster::{attesters, config, hotkey, Cluster, Spec, NET, WAIT};
use common::{eventually, DevChainDir, NodeDir};
use hermes::proto::chain::NodeClass;
use hermes::proto::consensus::{Change, Proposal, Verdict};
use hermes::proto::Hotkey;
use std::collections::BTreeSet;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_finalize_every_epoch_and_every_node_sees_it() {
    let mut c = Cluster::new().await;
    let mut epoch = c.next_epoch();
    for _ in 0..2 {
        let e = c.elected();
        assert!(
            c.attested(4).await,
            "epoch {epoch}: not every validator attested: {:?}",
            c.current().round.tally()
        );
        let view = c.current();
        let (_, hash) = view.round.proposal().unwrap();
        assert_eq!(
            view.round.proposal().unwrap().0.proposal.proposer,
            hotkey(&c.dirs[e])
        );
        // Each validator once; the proposer's own submission counts as its attestation.
        let mut who = attesters(&view);
        who.sort();
        who.dedup();
        assert_eq!(who.len(), 3, "{who:?}");
        assert!(!who.contains(&hotkey(&c.dirs[e])));

        // The status of each node says what it did in this epoch.
        for (i, n) in c.nodes.iter().enumerate() {
            let s = n.consensus_status(NET).await.unwrap();
            assert_eq!(s.epoch, Some(epoch));
            assert!(s.validator);
            assert_eq!(s.elected, Some(hotkey(&c.dirs[e])));
            if i == e {
                assert_eq!(s.duties.proposed, Some((epoch, hash)), "node {i}");
            } else {
                assert_eq!(s.duties.attested, Some((epoch, hash)), "node {i}: {s:?}");
            }
        }

        let next = c.next_epoch();
        assert_eq!(next, epoch + 1);
        for (i, o) in c.outcomes(epoch).await.into_iter().enumerate() {
            assert_eq!(o.verdict, Verdict::InConsensus, "node {i}: {o:?}");
            assert_eq!((o.attestations, o.validators), (4, 4));
            assert_eq!(o.elected, Some(hotkey(&c.dirs[e])));
            assert_eq!(o.proposal, Some(hash));
            assert_eq!(o.proposed, i == e);
            assert_eq!(o.attested, i != e);
        }
        epoch = next;
    }

    // `hermes consensus status`, through node 0's control socket, then from the chain alone.
    let cfg = c.dirs[0].path().join("hermes.json");
    std::fs::write(&cfg, c.config(0).to_pretty_json()).unwrap();
    let sock = hermes::control::socket_path(&c.dirs[0].data_dir());
    let server = tokio::spawn(hermes::control::serve(c.nodes[0].clone(), sock.clone()));
    assert!(eventually(WAIT, || hermes::control::is_running(&sock)).await);
    let status = |cfg: std::path::PathBuf| async move {
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_hermes"))
                .args(["consensus", "status", "--json", "-c"])
                .arg(&cfg)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let v = status(cfg.clone()).await;
    assert_eq!(v["source"], "node", "{v}");
    let s = &v["consensus"][0];
    assert_eq!(s["netuid"], NET);
    assert_eq!(s["epoch"], epoch, "{v}");
    assert_eq!(s["class"], "validator", "{v}");
    assert_eq!(s["last_outcome"]["epoch"], epoch - 1, "{v}");
    assert_eq!(s["last_outcome"]["verdict"], "in_consensus", "{v}");
    server.abort();
    c.shutdown().await;
    let _ = std::fs::remove_file(&sock);
    let v = status(cfg).await;
    assert_eq!(v["source"], "chain", "{v}");
    let s = &v["consensus"][0];
    assert_eq!(s["epoch"], epoch, "{v}");
    assert_eq!(s["validators"], 4, "{v}");
    assert_eq!(s["last_outcome"]["verdict"], "in_consensus", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_four_disagreeing_the_epoch_fails_and_the_proposer_is_penalized() {
    let mut c = Cluster::new().await;
    // Everyone disagrees until the election is known, so nobody attests too early.
    for h in &c.hooks {
        h.set_agree(false);
    }
    let epoch = c.next_epoch();
    let e = c.elected();
    let agree = (0..4).find(|i| *i != e).unwrap();
    let disagree: Vec<usize> = (0..4).filter(|i| *i != e && *i != agree).collect();
    c.hooks[agree].set_agree(true);
    assert!(c.attested(2).await, "the agreeing validator never attested");
    // The disagreeing nodes look at the proposal (a poll now) and do not attest.
    for &i in &disagree {
        let s = c.nodes[i].poll_consensus(NET).await.unwrap();
        assert!(s.validator);
        assert_eq!(s.duties.attested, None, "node {i} signed an attestation");
        assert_eq!(s.attestations, (2, 4));
    }
    let view = c.current();
    assert_eq!(attesters(&view), vec![hotkey(&c.dirs[agree])]);
    assert!(!view.round.tally().in_consensus);

    c.next_epoch();
    let elected = hotkey(&c.dirs[e]);
    for (i, o) in c.outcomes(epoch).await.into_iter().enumerate() {
        assert_eq!(o.verdict, Verdict::NotAttested, "node {i}: {o:?}");
        assert_eq!((o.attestations, o.validators), (2, 4));
        assert_eq!(o.attested, i == agree);
        // Penalty model: the elected validator gets +1, nobody else changes.
        assert_eq!(
            o.changes,
            vec![Change::Punished {
                hotkey: elected,
                penalties: 1,
                reputation_ppm: hermes::proto::consensus::rules::FULL_REPUTATION,
            }],
            "node {i}"
        );
    }
    for n in c.dev().standings_sync(NET).unwrap() {
        let expected = u32::from(n.entry.hotkey == elected);
        assert_eq!(n.standing.penalties, expected, "{:?}", n.entry.hotkey);
        assert_eq!(n.standing.class, NodeClass::Validator);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_after_attesting_does_not_attest_again() {
    let mut c = Cluster::new().await;
    let epoch = c.next_epoch();
    let e = c.elected();
    assert!(c.attested(4).await, "not every validator attested");
    let (_, hash) = c
        .current()
        .round
        .proposal()
        .map(|(p, h)| (p.clone(), h))
        .unwrap();

    // Restart an attester in the middle of the epoch.
    let r = (0..4).find(|i| *i != e).unwrap();
    let old = c.nodes.remove(r);
    old.shutdown().await.unwrap();
    let restarted = c.start(r).await;
    // It remembers what it signed...
    let s = restarted.consensus_status(NET).await.unwrap();
    assert_eq!(s.duties.attested, Some((epoch, hash)));
    // ...and a poll of the same epoch signs nothing new.
    let s = restarted.poll_consensus(NET).await.unwrap();
    assert_eq!(s.epoch, Some(epoch));
    assert_eq!(s.duties.attested, Some((epoch, hash)));
    assert_eq!(s.last_error, None);
    let view = c.current();
    let who = attesters(&view);
    let unique: BTreeSet<Hotkey> = who.iter().copied().collect();
    assert_eq!(who.len(), 3);
    assert_eq!(unique.len(), 3);
    assert_eq!(view.round.tally().attestations, 4);
    c.nodes.insert(r, restarted);
    c.events[r] = c.nodes[r].consensus_events();

    // The epoch finalizes with one attestation per validator, and the restarted node takes part
    // in the next one.
    let next = c.next_epoch();
    for (i, o) in c.outcomes(epoch).await.into_iter().enumerate() {
        assert_eq!(o.verdict, Verdict::InConsensus, "node {i}: {o:?}");
        assert_eq!((o.attestations, o.validators), (4, 4));
        assert!(i == e || o.attested, "node {i}");
    }
    assert!(
        c.attested(4).await,
        "epoch {next} did not gather every attestation"
    );
    let s = c.nodes[r].consensus_status(NET).await.unwrap();
    assert!(
        s.duties.attested.is_some_and(|(ep, _)| ep == next)
            || s.duties.proposed.is_some_and(|(ep, _)| ep == next),
        "{s:?}"
    );
    c.shutdown().await;
}

/// The elected validator only gossips its proposal (and stores it in the DHT); the other
/// validators check it against their copy of the round, relay it to the chain and attest it.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_only_gossiped_is_relayed_checked_and_attested() {
    let mut c = Cluster::build(Spec {
        withhold: true,
        ..Spec::default()
    })
    .await;
    // Gossip travels once the nodes know each other (node 0 is everyone's bootstrap).
    let n0 = c.nodes[0].clone();
    assert!(eventually(WAIT, || async { n0.peers().await.unwrap().len() == 3 }).await);
    // A proposal for the coming epoch signed by a key that is no validator: nobody may take it
    // (nor let it displace the real one).
    let (outsider, _) = hermes::HotkeyPair::generate();
    let forged = Proposal {
        epoch: 1,
        netuid: NET,
        proposer: outsider.public(),
        scores: vec![],
        args: b"forged".to_vec(),
    }
    .sign(outsider.pair())
    .unwrap();
    let payload = hermes_actors::consensus::gossip::proposal_payload(&forged);
    assert!(
        eventually(WAIT, || async {
            n0.publish(NET, payload.clone()).await.is_ok()
        })
        .await
    );
    let epoch = c.next_epoch();
    assert_eq!(epoch, 1);
    let e = c.elected();
    assert!(
        c.attested(4).await,
        "the gossiped proposal was not relayed and attested: {:?}",
        c.current().round.tally()
    );
    let view = c.current();
    let (sp, hash) = view.round.proposal().unwrap();
    assert_eq!(sp.proposal.proposer, hotkey(&c.dirs[e]));
    assert!(sp.proposal.args.is_empty());
    let s = c.nodes[e].consensus_status(NET).await.unwrap();
    assert_eq!(s.duties.proposed, Some((epoch, hash)));
    // The proposal is in the DHT too, byte for byte the one the chain holds.
    let key = hermes_actors::consensus::gossip::dht_key(NET, epoch);
    let other = (e + 1) % 4;
    let stored = c.nodes[other].dht_get(&key).await.unwrap();
    assert_eq!(
        hermes::proto::consensus::SignedProposal::decode(&stored)
            .unwrap()
            .hash(),
        hash
    );
    c.next_epoch();
    for (i, o) in c.outcomes(epoch).await.into_iter().enumerate() {
        assert_eq!(o.verdict, Verdict::InConsensus, "node {i}: {o:?}");
        assert_eq!((o.attestations, o.validators), (4, 4));
    }
    c.shutdown().await;
}

/// A static snapshot has no epochs: the node runs without consensus and says why; so does a node
/// with consensus disabled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_consensus_on_a_chain_without_epochs_or_when_disabled() {
    let n = NodeDir::new();
    let snap = n.path().join("snapshot.json");
    let node = serde_json::json!({"nodes": [{
        "netuid": NET, "hotkey": n.ss58, "peer_id": n.peer_id().to_base58(), "stake": 1000,
        "class": "validator",
    }]});
    std::fs::write(&snap, node.to_string()).unwrap();
    let cfg = n
        .config()
        .with_chain(hermes::config::ChainKind::Static, &snap)
        .with_subnets(hermes::config::SubnetMode::Whitelist, vec![NET]);
    let rt = hermes::Runtime::builder(cfg).start().await.unwrap();
    let why = rt.consensus_off().unwrap().to_string();
    assert!(
        why.contains("static snapshot") && why.contains("epochs"),
        "{why}"
    );
    let e = rt.consensus_status(NET).await.unwrap_err();
    assert!(matches!(e, hermes::Error::NotFound(_)), "{e}");
    assert!(rt.consensus_statuses().await.unwrap().is_empty());
    rt.shutdown().await.unwrap();

    let chain = DevChainDir::new();
    let mut cfg = config(&n, &chain, Duration::from_secs(1));
    cfg.consensus.enabled = false;
    let rt = hermes::Runtime::builder(cfg).start().await.unwrap();
    assert_eq!(rt.consensus_off(), Some("consensus.enabled is false"));
    rt.shutdown().await.unwrap();
    // Following a dev chain that nobody created leaves no directory behind.
    let rt = hermes::Runtime::builder(config(&n, &chain, Duration::from_secs(1)))
        .start()
        .await
        .unwrap();
    assert_eq!(rt.consensus_off(), None);
    rt.poll_consensus(NET).await.unwrap();
    assert!(!chain.path().exists());
    rt.shutdown().await.unwrap();
}
