//! The dev chain's epochs on real sled directories: election, submission, attestation,
//! finalization, class changes and punishments under both models, and the refusal of bad
//! records. Each operation opens the directory anew, as separate processes do.

use hermes_actors::chain::{ChainError, DevChain, DevParams, EpochView};
use hermes_proto::chain::{NodeClass, NodeEntry};
use hermes_proto::consensus::{
    Accepted, Attestation, Change, ClassRules, ElectionMode, Proposal, Removal, Score,
    SignedProposal, StandingModel, Verdict, MAX_ARGS_LEN,
};
use hermes_proto::Hotkey;
use sp_core::{sr25519, Pair as _};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const NET: u16 = 7;
const BLOCKS: u64 = 5;

struct Node {
    pair: sr25519::Pair,
    hotkey: Hotkey,
}

fn node(name: &str) -> Node {
    let pair = sr25519::Pair::from_string(&format!("//{name}"), None).unwrap();
    Node {
        hotkey: Hotkey::of(&pair),
        pair,
    }
}

fn peer_id(i: u8) -> String {
    libp2p::identity::Keypair::ed25519_from_bytes([i + 1; 32])
        .unwrap()
        .public()
        .to_peer_id()
        .to_base58()
}

fn register(chain: &DevChain, n: &Node, i: u8, class: NodeClass) {
    chain
        .register_sync(NodeEntry {
            netuid: NET,
            hotkey: n.hotkey,
            peer_id: peer_id(i),
            stake: 1000,
            class,
        })
        .unwrap();
}

fn chain_with(dir: &tempfile::TempDir, rules: ClassRules) -> DevChain {
    let chain = DevChain::new(dir.path().join("chain"));
    chain
        .init(DevParams {
            blocks_per_epoch: BLOCKS,
            block_time: None,
            election: ElectionMode::Uniform,
            rules,
        })
        .unwrap();
    chain
}

/// Steps to the first block of the next epoch.
fn next_epoch(chain: &DevChain) -> u64 {
    let head = chain.head_sync().unwrap();
    let left = BLOCKS - head.block % BLOCKS;
    let head = chain.step(left).unwrap();
    assert_eq!(head.block % BLOCKS, 0);
    head.epoch
}

fn current(chain: &DevChain) -> EpochView {
    chain
        .epoch_sync(NET, None)
        .unwrap()
        .expect("a round is open")
}

fn by_key(nodes: &[Node], hk: Hotkey) -> &Node {
    nodes.iter().find(|n| n.hotkey == hk).unwrap()
}

/// The elected validator proposes scores for `scored` (default: every eligible node).
fn propose(
    chain: &DevChain,
    nodes: &[Node],
    scored: Option<&[Hotkey]>,
    args: &[u8],
) -> SignedProposal {
    let view = current(chain);
    let elected = by_key(nodes, view.round.elected().expect("someone is elected"));
    let scores: Vec<Score> = match scored {
        Some(s) => {
            let mut s = s.to_vec();
            s.sort();
            s.into_iter()
                .map(|hotkey| Score { hotkey, score: 1 })
                .collect()
        }
        None => view
            .round
            .params()
            .eligible
            .iter()
            .map(|h| Score {
                hotkey: *h,
                score: 1,
            })
            .collect(),
    };
    Proposal {
        epoch: view.round.epoch(),
        netuid: NET,
        proposer: elected.hotkey,
        scores,
        args: args.to_vec(),
    }
    .sign(&elected.pair)
    .unwrap()
}

fn attest(chain: &DevChain, n: &Node, sp: &SignedProposal) -> Result<Accepted, ChainError> {
    let a = Attestation {
        epoch: sp.proposal.epoch,
        netuid: NET,
        proposal: sp.hash(),
        attester: n.hotkey,
    }
    .sign(&n.pair)
    .unwrap();
    chain.attest_sync(&a)
}

fn classes(chain: &DevChain) -> BTreeMap<Hotkey, NodeClass> {
    chain
        .standings_sync(NET)
        .unwrap()
        .into_iter()
        .map(|s| (s.entry.hotkey, s.standing.class))
        .collect()
}

/// Runs one full epoch: the elected validator submits, `attesters` of the validators attest,
/// then the chain moves on. Returns the finalized view.
fn run_epoch(
    chain: &DevChain,
    nodes: &[Node],
    scored: Option<&[Hotkey]>,
    attesters: usize,
) -> EpochView {
    let epoch = current(chain).round.epoch();
    let sp = propose(chain, nodes, scored, b"args");
    assert_eq!(chain.submit_sync(&sp).unwrap(), Accepted::New);
    let view = current(chain);
    let others: Vec<&Node> = nodes
        .iter()
        .filter(|n| view.round.is_validator(&n.hotkey) && n.hotkey != sp.proposal.proposer)
        .collect();
    for n in others.iter().take(attesters) {
        assert_eq!(attest(chain, n, &sp).unwrap(), Accepted::New);
    }
    next_epoch(chain);
    chain.epoch_sync(NET, Some(epoch)).unwrap().unwrap()
}

#[test]
fn a_newcomer_climbs_every_class_and_epochs_finalize() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain_with(
        &dir,
        ClassRules {
            queue_epochs: 1,
            idle_epochs: 1,
            included_epochs: 2,
            model: StandingModel::DEFAULT_PENALTY,
        },
    );
    let nodes: Vec<Node> = (0..5).map(|i| node(&format!("v{i}"))).collect();
    for (i, n) in nodes.iter().enumerate().take(4) {
        register(&chain, n, i as u8, NodeClass::Validator);
    }
    // The newcomer registers in epoch 0.
    register(&chain, &nodes[4], 4, NodeClass::Registered);
    assert_eq!(chain.epoch_sync(NET, None).unwrap().map(|_| ()), None);
    assert_eq!(next_epoch(&chain), 1);

    let mut seen = vec![];
    for _ in 0..4 {
        let view = current(&chain);
        // Every node recomputes the same election from the round's public inputs.
        let p = view.round.params();
        assert_eq!(
            hermes_proto::consensus::elect(&p.seed, p.election, &p.validators),
            view.round.elected()
        );
        // Three of four attest: 3/4 ≥ 0.66, below 7/8.
        let done = run_epoch(&chain, &nodes, None, 2);
        let fin = done.finalized.expect("finalized");
        assert_eq!(fin.verdict, Verdict::InConsensus);
        assert_eq!((fin.tally.attestations, fin.tally.validators), (3, 4));
        assert!(!fin.tally.supermajority);
        seen.push(classes(&chain)[&nodes[4].hotkey]);
    }
    use NodeClass::*;
    // End of epoch 1: a full epoch has passed since registration → Idle; epoch 2 in consensus →
    // Included; epochs 3 and 4 included with no penalties → Validator.
    assert_eq!(seen, [Idle, Included, Included, Validator]);
    // The registry the firewall reads shows the class too.
    let reg = chain.load().unwrap();
    assert_eq!(
        reg.by_hotkey(&nodes[4].hotkey).next().unwrap().class,
        Validator
    );
    // And it is now one of five validators.
    assert_eq!(current(&chain).round.params().validators.len(), 5);
}

#[test]
fn a_node_missing_from_the_data_is_penalized_then_removed() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain_with(
        &dir,
        ClassRules {
            model: StandingModel::Penalty { max_penalties: 2 },
            ..ClassRules::default()
        },
    );
    let nodes: Vec<Node> = (0..4).map(|i| node(&format!("p{i}"))).collect();
    for (i, n) in nodes.iter().enumerate().take(3) {
        register(&chain, n, i as u8, NodeClass::Validator);
    }
    register(&chain, &nodes[3], 3, NodeClass::Included);
    next_epoch(&chain);
    let validators: Vec<Hotkey> = nodes[..3].iter().map(|n| n.hotkey).collect();
    let fin = run_epoch(&chain, &nodes, Some(&validators), 2)
        .finalized
        .unwrap();
    assert!(fin.changes.iter().any(|c| matches!(c,
        Change::Punished { hotkey, penalties: 1, .. } if *hotkey == nodes[3].hotkey)));
    let st = chain.standings_sync(NET).unwrap();
    assert_eq!(
        st.iter()
            .find(|s| s.entry.hotkey == nodes[3].hotkey)
            .unwrap()
            .standing
            .penalties,
        1
    );
    let fin = run_epoch(&chain, &nodes, Some(&validators), 2)
        .finalized
        .unwrap();
    assert!(fin.changes.contains(&Change::Removed {
        hotkey: nodes[3].hotkey,
        reason: Removal::MaxPenalties
    }));
    // Gone from the registry: the firewall no longer admits it.
    assert_eq!(chain.load().unwrap().by_hotkey(&nodes[3].hotkey).count(), 0);
    assert_eq!(chain.load().unwrap().len(), 3);
}

#[test]
fn reputation_model_removes_below_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain_with(
        &dir,
        ClassRules {
            model: StandingModel::Reputation {
                decrease_ppm: 500_000,
                increase_ppm: 1_100_000,
                floor_ppm: 300_000,
            },
            ..ClassRules::default()
        },
    );
    let nodes: Vec<Node> = (0..4).map(|i| node(&format!("r{i}"))).collect();
    for (i, n) in nodes.iter().enumerate().take(3) {
        register(&chain, n, i as u8, NodeClass::Validator);
    }
    register(&chain, &nodes[3], 3, NodeClass::Included);
    next_epoch(&chain);
    let validators: Vec<Hotkey> = nodes[..3].iter().map(|n| n.hotkey).collect();
    let rep = |chain: &DevChain| {
        chain
            .standings_sync(NET)
            .unwrap()
            .iter()
            .find(|s| s.entry.hotkey == nodes[3].hotkey)
            .map(|s| s.standing.reputation_ppm)
    };
    run_epoch(&chain, &nodes, Some(&validators), 2);
    assert_eq!(rep(&chain), Some(500_000));
    run_epoch(&chain, &nodes, None, 2);
    assert_eq!(rep(&chain), Some(550_000));
    // 0.55 × 0.5 = 0.275 < 0.3.
    run_epoch(&chain, &nodes, Some(&validators), 2);
    assert_eq!(rep(&chain), None);
}

#[test]
fn failed_epochs_punish_the_elected_validator() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain_with(&dir, ClassRules::default());
    let nodes: Vec<Node> = (0..4).map(|i| node(&format!("f{i}"))).collect();
    for (i, n) in nodes.iter().enumerate() {
        register(&chain, n, i as u8, NodeClass::Validator);
    }
    next_epoch(&chain);
    // Only one other attests: 2/4 < 0.66.
    let view = run_epoch(&chain, &nodes, None, 1);
    let fin = view.finalized.unwrap();
    assert_eq!(fin.verdict, Verdict::NotAttested);
    let elected = view.round.elected().unwrap();
    assert_eq!(
        fin.changes,
        vec![Change::Punished {
            hotkey: elected,
            penalties: 1,
            reputation_ppm: 1_000_000
        }]
    );
    // Nobody submits.
    let elected = current(&chain).round.elected().unwrap();
    let e = current(&chain).round.epoch();
    next_epoch(&chain);
    let fin = chain
        .epoch_sync(NET, Some(e))
        .unwrap()
        .unwrap()
        .finalized
        .unwrap();
    assert_eq!(fin.verdict, Verdict::NoSubmission);
    assert!(matches!(fin.changes[..], [Change::Punished { hotkey, .. }] if hotkey == elected));
}

#[test]
fn bad_records_are_refused_with_their_reason_and_equivocation_refuses_both() {
    let dir = tempfile::tempdir().unwrap();
    let chain = chain_with(&dir, ClassRules::default());
    let nodes: Vec<Node> = (0..4).map(|i| node(&format!("b{i}"))).collect();
    for (i, n) in nodes.iter().enumerate().take(3) {
        register(&chain, n, i as u8, NodeClass::Validator);
    }
    // Registered, not a validator.
    register(&chain, &nodes[3], 3, NodeClass::Registered);
    let refused = |r: Result<Accepted, ChainError>| match r {
        Err(ChainError::Rejected(r)) => r.as_str(),
        other => panic!("expected a refusal, got {other:?}"),
    };
    // No round in epoch 0 (the subnet had no nodes when it started).
    let sp = Proposal {
        epoch: 0,
        netuid: NET,
        proposer: nodes[0].hotkey,
        scores: vec![],
        args: vec![],
    }
    .sign(&nodes[0].pair)
    .unwrap();
    assert!(matches!(
        chain.submit_sync(&sp),
        Err(ChainError::NoRound {
            netuid: NET,
            epoch: 0
        })
    ));
    next_epoch(&chain);
    let view = current(&chain);
    let elected = by_key(&nodes, view.round.elected().unwrap());
    let other = nodes[..3]
        .iter()
        .find(|n| n.hotkey != elected.hotkey)
        .unwrap();
    let good = propose(&chain, &nodes, None, b"a");
    // Not the elected validator.
    let mut p = good.proposal.clone();
    p.proposer = other.hotkey;
    assert_eq!(
        refused(chain.submit_sync(&p.sign(&other.pair).unwrap())),
        "not_elected"
    );
    // Wrong epoch.
    let mut p = good.proposal.clone();
    p.epoch += 1;
    assert_eq!(
        refused(chain.submit_sync(&p.sign(&elected.pair).unwrap())),
        "wrong_epoch"
    );
    // Bad signature.
    let mut bad = good.clone();
    bad.signature[10] ^= 4;
    assert_eq!(refused(chain.submit_sync(&bad)), "bad_signature");
    // Oversize args.
    let mut big = good.clone();
    big.proposal.args = vec![1; MAX_ARGS_LEN + 1];
    assert_eq!(refused(chain.submit_sync(&big)), "args_too_long");
    // Scoring a node that is not Included.
    let mut p = good.proposal.clone();
    p.scores.push(Score {
        hotkey: nodes[3].hotkey,
        score: 1,
    });
    p.scores.sort_by_key(|s| s.hotkey);
    assert_eq!(
        refused(chain.submit_sync(&p.sign(&elected.pair).unwrap())),
        "not_included"
    );
    // Attestation before the proposal.
    assert_eq!(refused(attest(&chain, other, &good)), "no_proposal");

    assert_eq!(chain.submit_sync(&good).unwrap(), Accepted::New);
    assert_eq!(chain.submit_sync(&good).unwrap(), Accepted::Duplicate);
    // A non-validator attester.
    assert_eq!(refused(attest(&chain, &nodes[3], &good)), "not_validator");
    assert_eq!(attest(&chain, other, &good).unwrap(), Accepted::New);
    assert_eq!(attest(&chain, other, &good).unwrap(), Accepted::Duplicate);
    assert!(current(&chain).round.tally().in_consensus);

    // The elected validator signs a second, different proposal: both are refused from now on.
    let conflicting = propose(&chain, &nodes, None, b"b");
    assert_eq!(refused(chain.submit_sync(&conflicting)), "equivocation");
    assert_eq!(refused(chain.submit_sync(&good)), "equivocation");
    let view = current(&chain);
    assert!(view.round.proposal().is_none());
    assert!(
        view.round.equivocation().is_some(),
        "evidence kept across reopenings"
    );
    let e = view.round.epoch();
    next_epoch(&chain);
    let fin = chain
        .epoch_sync(NET, Some(e))
        .unwrap()
        .unwrap()
        .finalized
        .unwrap();
    assert_eq!(fin.verdict, Verdict::Equivocated);
    assert!(
        matches!(fin.changes[..], [Change::Punished { hotkey, .. }, ..] if hotkey == elected.hotkey)
    );
}

#[test]
fn blocks_advance_on_the_clock_and_step_moves_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let chain = DevChain::new(dir.path().join("chain"));
    let start = chain
        .init(DevParams {
            blocks_per_epoch: 4,
            block_time: Some(Duration::from_millis(20)),
            ..DevParams::default()
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let head = DevChain::new(dir.path().join("chain")).head_sync().unwrap();
        if head.block >= start.block + 5 {
            assert!(head.epoch >= 1);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the clock did not advance blocks"
        );
        // Polling the wall clock the chain follows, bounded by the deadline.
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = chain.head_sync().unwrap().block;
    let after = chain.step(100).unwrap().block;
    assert!(after >= before + 100);
    // The clock kept the steps: it does not fall back.
    assert!(chain.head_sync().unwrap().block >= after);
    // A manual chain does not move by itself.
    let manual_dir = tempfile::tempdir().unwrap();
    let chain = chain_with(&manual_dir, ClassRules::default());
    assert_eq!(chain.head_sync().unwrap().block, 0);
    assert_eq!(chain.step(7).unwrap().block, 7);
    assert_eq!(chain.head_sync().unwrap().block, 7);
}
