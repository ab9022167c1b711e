//! Consensus records from peers: every record heard on a subnet's gossip topic is judged against
//! the node's copy of the round, and each refused one moves the counter of its reason in the
//! consensus status (and in `hermes consensus status`). Four real nodes on one dev chain; node 0
//! publishes forged and damaged records through its own gossip, as any connected peer could.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use cluster::{Cluster, NET, WAIT};
use common::eventually;
use hermes::proto::consensus::record::ATTESTATION_LEN;
use hermes::proto::consensus::{Attestation, Proposal, SignedProposal};
use hermes_actors::consensus::gossip::{
    attestation_payload, proposal_payload, BadRecord, BadRecords, GOSSIP_TAG,
};

/// Publishes `payload` from node 0, then waits until every other node has counted one more bad
/// record for `reason` and nothing else.
async fn expect_counted(
    c: &Cluster,
    expected: &mut [BadRecords],
    payload: Vec<u8>,
    reason: BadRecord,
) {
    let n0 = c.nodes[0].clone();
    assert!(
        eventually(WAIT, || async {
            n0.publish(NET, payload.clone()).await.is_ok()
        })
        .await,
        "node 0 could not publish"
    );
    for (i, n) in c.nodes.iter().enumerate().skip(1) {
        expected[i].add(reason);
        let want = expected[i];
        assert!(
            eventually(WAIT, || async {
                n.consensus_status(NET).await.unwrap().bad_records.total() >= want.total()
            })
            .await,
            "node {i} never counted {}",
            reason.as_str()
        );
        let got = n.consensus_status(NET).await.unwrap().bad_records;
        assert_eq!(
            got,
            want,
            "node {i} after a record refused as {}",
            reason.as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_from_a_peer_are_counted_by_reason() {
    let mut c = Cluster::new().await;
    let n0 = c.nodes[0].clone();
    assert!(eventually(WAIT, || async { n0.peers().await.unwrap().len() == 3 }).await);
    let epoch = c.next_epoch();
    let e = c.elected();
    assert!(c.attested(4).await, "not every validator attested");
    let (real, hash) = {
        let view = c.current();
        let (sp, h) = view.round.proposal().unwrap();
        (sp.clone(), h)
    };
    // Every node's copy of the round holds the proposal now.
    for n in &c.nodes {
        n.poll_consensus(NET).await.unwrap();
    }
    // Honest traffic alone counted nothing.
    for (i, n) in c.nodes.iter().enumerate() {
        let s = n.consensus_status(NET).await.unwrap();
        assert_eq!(s.bad_records, BadRecords::default(), "node {i}");
    }
    let mut expected = vec![BadRecords::default(); 4];
    let tagged = |kind: u8, body: &[u8]| {
        let mut v = GOSSIP_TAG.to_vec();
        v.push(kind);
        v.extend_from_slice(body);
        v
    };
    // Garbage with the tag; an unknown kind.
    expect_counted(
        &c,
        &mut expected,
        tagged(1, &[1, 2, 3]),
        BadRecord::Malformed,
    )
    .await;
    expect_counted(&c, &mut expected, tagged(7, &[0; 16]), BadRecord::Malformed).await;
    // Longer than any attestation.
    expect_counted(
        &c,
        &mut expected,
        tagged(2, &[0; ATTESTATION_LEN + 1]),
        BadRecord::Oversized,
    )
    .await;
    // The elected validator's proposal with someone else's signature bytes.
    let forged = SignedProposal {
        proposal: Proposal {
            args: b"forged".to_vec(),
            ..real.proposal.clone()
        },
        signature: real.signature,
    };
    expect_counted(
        &c,
        &mut expected,
        proposal_payload(&forged),
        BadRecord::BadSignature,
    )
    .await;
    // A proposal for this epoch, validly signed by a key that is not the elected validator.
    let other = (e + 1) % 4;
    let not_elected = Proposal {
        proposer: c.hotkey(other),
        ..real.proposal.clone()
    }
    .sign(c.dirs[other].hotkey().pair())
    .unwrap();
    expect_counted(
        &c,
        &mut expected,
        proposal_payload(&not_elected),
        BadRecord::NotElected,
    )
    .await;
    // Attestations: by an outsider, for the last epoch, for another subnet, of another proposal.
    let (outsider, _) = hermes::HotkeyPair::generate();
    let att = |who: &hermes::HotkeyPair, epoch: u64, netuid: u16, proposal: [u8; 32]| {
        Attestation {
            epoch,
            netuid,
            proposal,
            attester: who.public(),
        }
        .sign(who.pair())
        .unwrap()
    };
    let v = c.dirs[other].hotkey();
    let cases = [
        (att(&outsider, epoch, NET, hash), BadRecord::NotValidator),
        (att(&v, epoch - 1, NET, hash), BadRecord::WrongEpoch),
        (att(&v, epoch, NET + 1, hash), BadRecord::WrongSubnet),
        (att(&v, epoch, NET, [9; 32]), BadRecord::WrongProposal),
    ];
    for (a, reason) in cases {
        expect_counted(&c, &mut expected, attestation_payload(&a), reason).await;
    }
    // The same statement twice (two signatures, so gossip does not drop the copy), signed by the
    // proposer, whose attestation nobody has gossiped: the first is valid (the proposal counts as
    // its attestation), the second a duplicate.
    let p = c.dirs[e].hotkey();
    let first = att(&p, epoch, NET, hash);
    let n0 = c.nodes[0].clone();
    assert!(n0.publish(NET, attestation_payload(&first)).await.is_ok());
    expect_counted(
        &c,
        &mut expected,
        attestation_payload(&att(&p, epoch, NET, hash)),
        BadRecord::Duplicate,
    )
    .await;
    // The publisher heard none of its own records.
    let s = c.nodes[0].consensus_status(NET).await.unwrap();
    assert_eq!(s.bad_records.total(), 0);

    // `hermes consensus status` of node 1, through its control socket.
    let cfg = c.dirs[1].path().join("hermes.json");
    std::fs::write(&cfg, c.config(1).to_pretty_json()).unwrap();
    let sock = hermes::control::socket_path(&c.dirs[1].data_dir());
    let server = tokio::spawn(hermes::control::serve(c.nodes[1].clone(), sock.clone()));
    assert!(eventually(WAIT, || hermes::control::is_running(&sock)).await);
    let run = |json: bool| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hermes"));
            cmd.args(["consensus", "status", "-c"]).arg(&cfg);
            if json {
                cmd.arg("--json");
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        })
    };
    let v: serde_json::Value = serde_json::from_str(&run(true).await.unwrap()).unwrap();
    let bad = &v["consensus"][0]["bad_records"];
    for (reason, n) in expected[1].iter() {
        assert_eq!(bad[reason.as_str()], n, "{v}");
    }
    assert_eq!(bad["malformed"], 2, "{v}");
    let text = run(false).await.unwrap();
    assert!(
        text.contains(
            "bad records   bad_signature 1, duplicate 1, malformed 2, not_elected 1, \
             not_validator 1, oversized 1, wrong_epoch 1, wrong_proposal 1, wrong_subnet 1\n"
        ),
        "{text}"
    );
    server.abort();
    let _ = std::fs::remove_file(&sock);
    c.shutdown().await;
}

/// A second proposal signed by the elected validator for the same epoch, published by a peer:
/// every node that hears it stores the two as evidence (once), announces it, and still has it
/// after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proposals_of_the_elected_validator_are_kept_as_evidence() {
    let mut c = Cluster::new().await;
    let n0 = c.nodes[0].clone();
    assert!(eventually(WAIT, || async { n0.peers().await.unwrap().len() == 3 }).await);
    let mut evidence: Vec<_> = c.nodes.iter().map(|n| n.consensus_evidence()).collect();
    let epoch = c.next_epoch();
    let e = c.elected();
    assert!(c.attested(4).await, "not every validator attested");
    let (real, hash) = {
        let view = c.current();
        let (sp, h) = view.round.proposal().unwrap();
        (sp.clone(), h)
    };
    for n in &c.nodes {
        n.poll_consensus(NET).await.unwrap();
    }
    for (i, n) in c.nodes.iter().enumerate() {
        assert_eq!(
            n.consensus_status(NET).await.unwrap().evidence,
            0,
            "node {i}"
        );
    }
    let key = c.dirs[e].hotkey();
    let other = Proposal {
        args: b"a second opinion".to_vec(),
        ..real.proposal.clone()
    }
    .sign(key.pair())
    .unwrap();
    assert_ne!(other.hash(), hash);
    assert!(c.nodes[0]
        .publish(NET, proposal_payload(&other))
        .await
        .is_ok());
    for (i, rx) in evidence.iter_mut().enumerate().skip(1) {
        let ev = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("node {i} recorded no evidence"))
            .unwrap();
        assert_eq!(
            (ev.netuid, ev.epoch, ev.proposer),
            (NET, epoch, c.hotkey(e))
        );
        assert_eq!(ev.first.hash(), hash, "node {i}");
        assert_eq!(ev.second.hash(), other.hash(), "node {i}");
        assert_eq!(ev.from, c.dirs[0].ss58);
        let s = c.nodes[i].consensus_status(NET).await.unwrap();
        assert_eq!(s.evidence, 1, "node {i}");
    }
    // The same second statement again: counted as a bad record, no new evidence.
    let again = Proposal {
        args: b"a second opinion".to_vec(),
        ..real.proposal.clone()
    }
    .sign(key.pair())
    .unwrap();
    assert!(c.nodes[0]
        .publish(NET, proposal_payload(&again))
        .await
        .is_ok());
    for (i, n) in c.nodes.iter().enumerate().skip(1) {
        assert!(
            eventually(WAIT, || async {
                n.consensus_status(NET)
                    .await
                    .unwrap()
                    .bad_records
                    .get(BadRecord::Equivocation)
                    == 1
            })
            .await,
            "node {i}"
        );
        assert_eq!(n.consensus_status(NET).await.unwrap().evidence, 1);
        assert!(evidence[i].try_recv().is_err(), "node {i}: evidence twice");
    }
    // Stored: a restarted node still counts it.
    let r = 1;
    let old = c.nodes.remove(r);
    old.shutdown().await.unwrap();
    let restarted = c.start(r).await;
    assert_eq!(restarted.consensus_status(NET).await.unwrap().evidence, 1);
    c.nodes.insert(r, restarted);
    c.shutdown().await;
}
