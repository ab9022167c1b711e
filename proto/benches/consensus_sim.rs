//! One consensus epoch across N validators, simulated in process with the real state machine,
//! codecs and signatures: how long from the elected validator starting its submission until each
//! node counts ≥ 66 % attestations of it, and what each node receives and sends.
//!
//! A discrete-event simulation. Every node is a sequential processor with its own clock: a
//! message arriving at `t` is handled at `max(t, busy_until)`, and handling it (decode, signature
//! check, round update, and when it agrees: sign, encode, send its attestation) costs the CPU time
//! it really took here, measured around the real code. A message sent at `t` arrives at
//! `t + hops · link` at every other node: gossip floods a message over a mesh of degree D in about
//! `ceil(log_D N)` hops, and de-duplicates copies by message id before the application sees them,
//! so each node decodes each distinct message once. Bytes sent per node count the D copies gossip
//! forwards of every distinct message.
//!
//! Run: `cargo bench -p hermes-proto --bench consensus_sim` (env `SIM_NODES=10,50,100,200`,
//! `SIM_LINK_MS=0,5,50`, `SIM_ARGS=1024`). The loopback benchmark of real runtimes (the root
//! crate's `consensus_net`) includes this file to print the simulation's figures for its own node
//! count in the same run.

use hermes_proto::consensus::{
    Attestation, Candidate, Decision, Duties, ElectionMode, Proposal, Refusal, Round, RoundParams,
    Score, SignedAttestation, SignedProposal,
};
use hermes_proto::Hotkey;
use sp_core::{sr25519, Pair as _};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Gossip mesh degree (gossipsub's default D).
const MESH_DEGREE: f64 = 6.0;
const EPOCH: u64 = 7;
const NETUID: u16 = 1;

enum Wire {
    Proposal(Vec<u8>),
    Attestation(Vec<u8>),
}

struct Node {
    pair: sr25519::Pair,
    round: Round,
    duties: Duties,
    early: Vec<SignedAttestation>,
    busy_until: Duration,
    finalized_at: Option<Duration>,
    cpu: Duration,
    received: (u64, u64),
    sent_distinct: (u64, u64),
}

pub(crate) struct Figures {
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) max: Duration,
    pub(crate) all_finalized: bool,
    pub(crate) cpu_per_node: Duration,
    pub(crate) msgs_in: f64,
    pub(crate) bytes_in: f64,
    pub(crate) gossip_bytes_out: f64,
    pub(crate) wall: Duration,
    pub(crate) proposal_len: usize,
    pub(crate) attestation_len: usize,
}

/// The simulation's `n` validator keys.
pub(crate) fn pairs(n: usize) -> Vec<sr25519::Pair> {
    (0..n)
        .map(|i| sr25519::Pair::from_seed(&blake3::hash(format!("sim{i}").as_bytes()).into()))
        .collect()
}

fn env_list(name: &str, default: &[u64]) -> Vec<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<u64>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One epoch across `n` validators with links of `link` and `args_len` bytes of args.
pub(crate) fn run(n: usize, link: Duration, args_len: usize, pairs: &[sr25519::Pair]) -> Figures {
    let wall = Instant::now();
    let pairs = &pairs[..n];
    let params = RoundParams {
        netuid: NETUID,
        epoch: EPOCH,
        seed: [9; 32],
        election: ElectionMode::Uniform,
        validators: pairs
            .iter()
            .map(|p| Candidate {
                hotkey: Hotkey::of(p),
                stake: 1,
            })
            .collect(),
        eligible: pairs.iter().map(Hotkey::of).collect(),
    };
    let mut nodes: Vec<Node> = pairs
        .iter()
        .map(|p| Node {
            pair: p.clone(),
            round: Round::open(params.clone()),
            duties: Duties::default(),
            early: Vec::new(),
            busy_until: Duration::ZERO,
            finalized_at: None,
            cpu: Duration::ZERO,
            received: (0, 0),
            sent_distinct: (0, 0),
        })
        .collect();
    let elected = nodes[0].round.elected().expect("validators exist");
    let proposer = nodes
        .iter()
        .position(|x| Hotkey::of(&x.pair) == elected)
        .expect("the elected validator is a node");
    let hops = ((n as f64).ln() / MESH_DEGREE.ln()).ceil().max(1.0) as u32;
    let delay = link * hops;

    // (arrival, sequence, to, message index); messages kept once, delivered to all.
    let mut queue: BinaryHeap<Reverse<(Duration, u64, usize, usize)>> = BinaryHeap::new();
    let mut messages: Vec<Wire> = Vec::new();
    let mut seq = 0u64;
    let mut broadcast = |queue: &mut BinaryHeap<_>, from: usize, at: Duration, m: usize| {
        for to in 0..n {
            if to != from {
                seq += 1;
                queue.push(Reverse((at + delay, seq, to, m)));
            }
        }
    };

    // The elected validator signs its proposal (scores for every eligible node), submits it to
    // its own round, and publishes it: time 0 is when it starts.
    let t = Instant::now();
    let proposal = Proposal {
        epoch: EPOCH,
        netuid: NETUID,
        proposer: elected,
        scores: params
            .eligible
            .iter()
            .map(|h| Score {
                hotkey: *h,
                score: 1,
            })
            .collect(),
        args: vec![7; args_len],
    }
    .sign(&nodes[proposer].pair)
    .expect("a well-formed proposal");
    let bytes = proposal.encode();
    let p = &mut nodes[proposer];
    p.round.submit(&proposal).expect("its own proposal");
    p.duties.record_proposal(EPOCH, proposal.hash());
    p.sent_distinct.0 += 1;
    p.sent_distinct.1 += bytes.len() as u64;
    let cost = t.elapsed();
    p.cpu += cost;
    p.busy_until = cost;
    messages.push(Wire::Proposal(bytes));
    broadcast(&mut queue, proposer, cost, 0);

    while let Some(Reverse((arrival, _, to, m))) = queue.pop() {
        let node = &mut nodes[to];
        let start = arrival.max(node.busy_until);
        let t = Instant::now();
        let mut attest = None;
        match &messages[m] {
            Wire::Proposal(b) => {
                node.received.0 += 1;
                node.received.1 += b.len() as u64;
                if let Ok(sp) = SignedProposal::decode(b) {
                    if node.round.submit(&sp).is_ok() {
                        let hash = sp.hash();
                        for a in std::mem::take(&mut node.early) {
                            let _ = node.round.attest(&a);
                        }
                        if node.duties.may_attest(EPOCH, &hash) == Decision::Sign {
                            node.duties.record_attestation(EPOCH, hash);
                            let a = Attestation {
                                epoch: EPOCH,
                                netuid: NETUID,
                                proposal: hash,
                                attester: Hotkey::of(&node.pair),
                            }
                            .sign(&node.pair)
                            .expect("a well-formed attestation");
                            let _ = node.round.attest(&a);
                            attest = Some(a.encode());
                        }
                    }
                }
            }
            Wire::Attestation(b) => {
                node.received.0 += 1;
                node.received.1 += b.len() as u64;
                if let Ok(a) = SignedAttestation::decode(b) {
                    if node.round.attest(&a) == Err(Refusal::NoProposal) {
                        node.early.push(a);
                    }
                }
            }
        }
        let cost = t.elapsed();
        node.cpu += cost;
        node.busy_until = start + cost;
        if node.finalized_at.is_none() && node.round.tally().in_consensus {
            node.finalized_at = Some(node.busy_until);
        }
        if let Some(bytes) = attest {
            node.sent_distinct.0 += 1;
            node.sent_distinct.1 += bytes.len() as u64;
            let at = node.busy_until;
            messages.push(Wire::Attestation(bytes));
            broadcast(&mut queue, to, at, messages.len() - 1);
        }
    }
    // The proposer counts too: it finalizes when its own tally does.
    let mut times: Vec<Duration> = nodes.iter().filter_map(|x| x.finalized_at).collect();
    let all_finalized = times.len() == n;
    times.sort();
    let nf = n as f64;
    // Every node forwards each distinct message to D mesh peers (the originator included).
    let distinct_bytes: u64 = messages
        .iter()
        .map(|m| match m {
            Wire::Proposal(b) | Wire::Attestation(b) => b.len() as u64,
        })
        .sum();
    let len_of = |m: &Wire| match m {
        Wire::Proposal(b) | Wire::Attestation(b) => b.len(),
    };
    Figures {
        proposal_len: len_of(&messages[0]),
        attestation_len: messages.get(1).map_or(0, len_of),
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
        max: *times.last().unwrap_or(&Duration::ZERO),
        all_finalized,
        cpu_per_node: nodes.iter().map(|x| x.cpu).sum::<Duration>() / n as u32,
        msgs_in: nodes.iter().map(|x| x.received.0 as f64).sum::<f64>() / nf,
        bytes_in: nodes.iter().map(|x| x.received.1 as f64).sum::<f64>() / nf,
        gossip_bytes_out: distinct_bytes as f64 * MESH_DEGREE,
        wall: wall.elapsed(),
    }
}

fn main() {
    let sizes = env_list("SIM_NODES", &[10, 50, 100, 200]);
    let links = env_list("SIM_LINK_MS", &[0, 5, 50]);
    let args_len = env_list("SIM_ARGS", &[1024])[0] as usize;
    let most = sizes.iter().copied().max().unwrap_or(0) as usize;
    let pairs = pairs(most);
    println!(
        "one epoch, every node a validator, proposal with N scores + {args_len} B of args; gossip mesh D = {MESH_DEGREE}"
    );
    println!(
        "{:>5} {:>8} {:>5} | {:>9} {:>9} {:>9} | {:>9} {:>8} {:>10} {:>12} | {:>8}",
        "nodes",
        "link",
        "hops",
        "p50",
        "p99",
        "max",
        "cpu/node",
        "msgs in",
        "bytes in",
        "gossip out",
        "sim wall"
    );
    for &n in &sizes {
        for &l in &links {
            let link = Duration::from_millis(l);
            let n = n as usize;
            let f = run(n, link, args_len, &pairs);
            let hops = ((n as f64).ln() / MESH_DEGREE.ln()).ceil().max(1.0) as u32;
            let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
            println!(
                "{:>5} {:>8} {:>5} | {:>9} {:>9} {:>9} | {:>9} {:>8.0} {:>8.1} KB {:>9.1} KB | {:>8}{}",
                n,
                format!("{l} ms"),
                hops,
                ms(f.p50),
                ms(f.p99),
                ms(f.max),
                ms(f.cpu_per_node),
                f.msgs_in,
                f.bytes_in / 1e3,
                f.gossip_bytes_out / 1e3,
                ms(f.wall),
                if f.all_finalized {
                    String::new()
                } else {
                    "  NOT ALL FINALIZED".to_string()
                } + &format!(
                    "  (proposal {} B, attestation {} B)",
                    f.proposal_len, f.attestation_len
                )
            );
        }
    }
}
