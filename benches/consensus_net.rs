//! Consensus epochs across real runtimes on loopback: N `hermes::Runtime`s in this process, all
//! Validators of one subnet on a dev chain in a temp dir that the benchmark steps by hand.
//!
//! For every measured epoch and every node: the time from the elected validator signing its
//! proposal (just before it publishes and submits it) until that node's own view of the round
//! counts ≥ 66 % of the validators ("finalized", as in the simulation), and the consensus records
//! it published and received on the subnet's gossip topic. The instants are taken by each node's
//! ConsensusActor as it acts (`ConsensusStatus::traces`), so how often the benchmark looks does
//! not change them. The same run then runs the in-process simulation
//! (`proto/benches/consensus_sim.rs`) for the same node count, so the cost of real networking,
//! the chain and the actors is visible side by side.
//!
//! Per epoch: step the chain into it; wait (bounded) until every node has signed for the epoch
//! and counts it finalized; step into the next; wait for every node's outcome event of the epoch.
//! The first epochs warm up (gossip meshes form at gossipsub's heartbeat) and are not measured.
//!
//! Two ways to start an epoch. By default every node learns the new epoch at its own next timer
//! poll, as on a real chain, and the elected validator proposes at its own; a node whose copy of
//! the round is still at the previous epoch when the proposal comes reads the chain first.
//! `CONS_PREPOLL=1`: right after stepping, the benchmark polls every other node into the new
//! epoch, then the elected one (which proposes in that poll), so the figures are the records' way
//! through gossip and the actors alone. In both, every node is polled once more before the next
//! step, so the chain holds every attestation.
//!
//! Run: `cargo bench --bench consensus_net` (env `CONS_NODES=20`, `CONS_EPOCHS=5`,
//! `CONS_WARMUP=2`, `CONS_POLL_MS=500` the consensus poll interval, `CONS_ARGS=1024` bytes of
//! args in each proposal, `CONS_PREPOLL=1`).

#[path = "support.rs"]
mod support;

#[allow(dead_code, unreachable_pub)]
#[path = "../proto/benches/consensus_sim.rs"]
mod sim;

use hermes::config::{ChainKind, HumanDuration, SubnetMode};
use hermes::proto::chain::{NodeClass, NodeEntry};
use hermes::proto::consensus::{ClassRules, Proposal, Score, Verdict};
use hermes::proto::Hotkey;
use hermes::{Config, ConsensusHook, EqualScores, HotkeyPair, Runtime, RuntimeHandle};
use hermes_actors::chain::{DevChain, DevParams};
use hermes_actors::consensus::trace::EpochTrace;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{env_u64, listen_addr, load_avg, rss_mib};

const NET: u16 = 5;
const BLOCKS_PER_EPOCH: u64 = 2;
/// Bound on every wait; a run that hits it reports the failure and stops.
const WAIT: Duration = Duration::from_secs(60);
/// How often the benchmark looks at the statuses to decide when to step (the figures come from
/// the nodes' own instants, not from this).
const LOOK: Duration = Duration::from_millis(10);

/// Scores every eligible node 1.0 like the default hook, with `args` bytes of args, so a
/// proposal has the size the simulation assumes.
#[derive(Debug)]
struct Hook {
    args: usize,
}

impl ConsensusHook for Hook {
    fn produce(&self, n: u16, e: u64, eligible: &BTreeSet<Hotkey>) -> (Vec<Score>, Vec<u8>) {
        (EqualScores.produce(n, e, eligible).0, vec![7; self.args])
    }
    fn check(&self, p: &Proposal, eligible: &BTreeSet<Hotkey>) -> bool {
        EqualScores.check(p, eligible)
    }
}

/// A Validator of subnet `NET` under `dir/name`, registered on the dev chain at `chain`, and its
/// hotkey.
fn node(
    dir: &std::path::Path,
    i: usize,
    chain: &std::path::Path,
    poll: Duration,
) -> (Config, Hotkey) {
    let d = dir.join(format!("n{i}"));
    let hk = d.join("hotkey");
    let (key, file) = HotkeyPair::generate();
    file.write_new(&hk).expect("hotkey");
    let peer = hermes::transport_key(&d.join("data/transport.key"))
        .expect("key")
        .public()
        .to_peer_id();
    let hotkey = key.public();
    DevChain::new(chain)
        .register_sync(NodeEntry {
            netuid: NET,
            hotkey,
            peer_id: peer.to_base58(),
            stake: 1000,
            class: NodeClass::Validator,
        })
        .expect("register");
    let mut c = Config::default()
        .with_data_dir(d.join("data"))
        .with_hotkey_file(&hk)
        .with_chain(ChainKind::Dev, chain)
        .with_subnets(SubnetMode::Single, vec![NET])
        .with_listen(vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")])
        .with_log_level("error");
    // Every node is registered before any starts; the registry need not be read again.
    c.chain.poll_interval = HumanDuration(Duration::from_secs(600));
    c.chain.max_staleness = HumanDuration(Duration::from_secs(1200));
    c.consensus.poll_interval = HumanDuration(poll);
    // All nodes share 127.0.0.1.
    c.firewall.max_conns_per_ip = 64;
    (c, hotkey)
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Each node's trace of `epoch` (`None` for a node that has none yet).
async fn traces(nodes: &[RuntimeHandle], epoch: u64) -> Vec<Option<EpochTrace>> {
    let mut out = Vec::new();
    for n in nodes {
        let s = n.consensus_status(NET).await.expect("status");
        out.push(s.traces.into_iter().find(|t| t.epoch == epoch));
    }
    out
}

/// Whether every node has signed for `epoch` and counts it finalized.
async fn settled(nodes: &[RuntimeHandle], epoch: u64) -> bool {
    for n in nodes {
        let s = n.consensus_status(NET).await.expect("status");
        let signed = s.duties.proposed.is_some_and(|(e, _)| e == epoch)
            || s.duties.attested.is_some_and(|(e, _)| e == epoch);
        let finalized = s
            .traces
            .iter()
            .any(|t| t.epoch == epoch && t.finalized_at.is_some());
        if !signed || !finalized {
            return false;
        }
    }
    true
}

struct EpochFigures {
    finalize: Vec<Duration>,
    proposal: Vec<Duration>,
    sent: Vec<(u64, u64)>,
    received: Vec<(u64, u64)>,
}

fn summary(label: &str, v: &mut [Duration]) -> String {
    v.sort();
    if v.is_empty() {
        return format!("{label}: none");
    }
    format!(
        "{label} p50 {:>9} p99 {:>9} max {:>9}",
        ms(sim::percentile(v, 0.5)),
        ms(sim::percentile(v, 0.99)),
        ms(*v.last().unwrap_or(&Duration::ZERO))
    )
}

/// "p50 X max Y" of `v`.
fn p50_max(v: &mut [Duration]) -> String {
    v.sort();
    format!(
        "p50 {:>9} max {:>9}",
        ms(sim::percentile(v, 0.5)),
        ms(*v.last().unwrap_or(&Duration::ZERO))
    )
}

fn mean_min_max(v: &[u64]) -> (f64, u64, u64) {
    let n = v.len().max(1) as f64;
    (
        v.iter().sum::<u64>() as f64 / n,
        v.iter().copied().min().unwrap_or(0),
        v.iter().copied().max().unwrap_or(0),
    )
}

fn main() {
    let n = env_u64("CONS_NODES", 20) as usize;
    let epochs = env_u64("CONS_EPOCHS", 5);
    let warmup = env_u64("CONS_WARMUP", 2);
    let poll = Duration::from_millis(env_u64("CONS_POLL_MS", 500));
    let args = env_u64("CONS_ARGS", 1024) as usize;
    let prepoll = env_u64("CONS_PREPOLL", 0) == 1;
    println!(
        "{n} runtimes on 127.0.0.1, every one a Validator of subnet {NET}; consensus poll {poll:?}; \
         proposal: {n} scores + {args} B of args; {warmup} warm-up + {epochs} measured epochs; {}",
        if prepoll {
            "every other node polled into each epoch before the elected one"
        } else {
            "nodes learn each epoch at their own timer poll"
        }
    );
    println!("load average at start: {}", load_avg());
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = dir.path().join("chain");
    DevChain::new(&chain)
        .init(DevParams {
            blocks_per_epoch: BLOCKS_PER_EPOCH,
            block_time: None,
            rules: ClassRules::default(),
            ..DevParams::default()
        })
        .expect("dev chain");
    let (configs, hotkeys): (Vec<Config>, Vec<Hotkey>) =
        (0..n).map(|i| node(dir.path(), i, &chain, poll)).unzip();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (fds0, threads0, rss0) = (fd_count(), threads(), rss_mib());
    rt.block_on(async {
        let hook: Arc<dyn ConsensusHook> = Arc::new(Hook { args });
        let started = Instant::now();
        let mut nodes: Vec<RuntimeHandle> = Vec::new();
        let mut first = None;
        for c in configs {
            let c = match &first {
                None => c,
                Some(a) => c.with_bootstrap(vec![libp2p::Multiaddr::clone(a)]),
            };
            let h = Runtime::builder(c)
                .with_consensus_hook(hook.clone())
                .start()
                .await
                .expect("start");
            if first.is_none() {
                first = Some(listen_addr(&h).await);
            }
            nodes.push(h);
        }
        // Every node verified by node 0, and every node has verified someone.
        let end = Instant::now() + WAIT;
        loop {
            let mut ok = nodes[0].peers().await.expect("peers").len() >= n - 1;
            for h in &nodes[1..] {
                ok &= !h.peers().await.expect("peers").is_empty();
            }
            if ok {
                break;
            }
            assert!(Instant::now() < end, "the nodes did not connect within {WAIT:?}");
            tokio::time::sleep(LOOK).await;
        }
        println!(
            "{n} nodes started and connected in {:.1} s; process: {} threads, {} fds, RSS {:.0} MiB \
             (before start: {threads0} threads, {fds0} fds, {rss0:.0} MiB)",
            started.elapsed().as_secs_f64(),
            threads(),
            fd_count(),
            rss_mib()
        );
        let mut events: Vec<_> = nodes.iter().map(|h| h.consensus_events()).collect();
        let dev = DevChain::new(&chain);
        let mut all: Vec<EpochFigures> = Vec::new();
        let mut epoch = dev.step(BLOCKS_PER_EPOCH).expect("step").epoch;
        println!(
            "{:>5} {:>7} | {:>44} | {:>27} | {:>20} | {:>20} | chain",
            "epoch", "elected", "submission → finalized at each node", "proposal reached nodes", "msgs in / out", "bytes in / out"
        );
        for round in 0..warmup + epochs {
            if prepoll {
                let view = dev.epoch_sync(NET, None).expect("chain").expect("a round");
                let elected = view.round.elected().expect("someone is elected");
                let e = hotkeys.iter().position(|h| *h == elected).expect("a node");
                for (i, h) in nodes.iter().enumerate() {
                    if i != e {
                        h.poll_consensus(NET).await.expect("poll");
                    }
                }
                nodes[e].poll_consensus(NET).await.expect("poll");
            }
            let end = Instant::now() + WAIT;
            while !settled(&nodes, epoch).await {
                assert!(
                    Instant::now() < end,
                    "epoch {epoch}: not every node signed and finalized within {WAIT:?}: {:?}",
                    traces(&nodes, epoch).await
                );
                tokio::time::sleep(LOOK).await;
            }
            // Every attestation on the chain before the epoch closes.
            for h in &nodes {
                h.poll_consensus(NET).await.expect("poll");
            }
            let next = dev.step(BLOCKS_PER_EPOCH).expect("step").epoch;
            let mut outcomes = Vec::new();
            for (i, rx) in events.iter_mut().enumerate() {
                let o = loop {
                    let o = tokio::time::timeout(WAIT, rx.recv())
                        .await
                        .unwrap_or_else(|_| panic!("node {i}: no outcome of epoch {epoch}"))
                        .expect("events");
                    if o.epoch == epoch {
                        break o;
                    }
                };
                assert_eq!(o.verdict, Verdict::InConsensus, "node {i}: {o:?}");
                outcomes.push(o);
            }
            let t = traces(&nodes, epoch).await;
            let t: Vec<EpochTrace> = t
                .into_iter()
                .enumerate()
                .map(|(i, x)| x.unwrap_or_else(|| panic!("node {i} has no trace of epoch {epoch}")))
                .collect();
            let (elected, proposed_at) = t
                .iter()
                .enumerate()
                .find_map(|(i, x)| x.proposed_at.map(|at| (i, at)))
                .expect("the elected node proposed");
            let since = |at: Option<Instant>| {
                at.map(|a| a.saturating_duration_since(proposed_at))
                    .expect("every node finalized")
            };
            let f = EpochFigures {
                finalize: t.iter().map(|x| since(x.finalized_at)).collect(),
                proposal: t.iter().map(|x| since(x.proposal_at)).collect(),
                sent: t.iter().map(|x| (x.sent.messages, x.sent.bytes)).collect(),
                received: t
                    .iter()
                    .map(|x| (x.received.messages, x.received.bytes))
                    .collect(),
            };
            let measured = round >= warmup;
            let msgs_in = mean_min_max(&f.received.iter().map(|x| x.0).collect::<Vec<_>>());
            let msgs_out = mean_min_max(&f.sent.iter().map(|x| x.0).collect::<Vec<_>>());
            let bytes_in = mean_min_max(&f.received.iter().map(|x| x.1).collect::<Vec<_>>());
            let bytes_out = mean_min_max(&f.sent.iter().map(|x| x.1).collect::<Vec<_>>());
            println!(
                "{:>5} {:>7} | {} | {} | {:>8.1} / {:>8.2} | {:>7.0} B / {:>6.0} B | {} of {} attested{}",
                epoch,
                format!("node {elected}"),
                summary("", &mut f.finalize.clone()),
                p50_max(&mut f.proposal.clone()),
                msgs_in.0,
                msgs_out.0,
                bytes_in.0,
                bytes_out.0,
                outcomes[0].attestations,
                outcomes[0].validators,
                if measured { "" } else { "  (warm-up)" }
            );
            if measured {
                all.push(f);
            }
            epoch = next;
        }
        let mut fin: Vec<Duration> = all.iter().flat_map(|f| f.finalize.clone()).collect();
        let mut prop: Vec<Duration> = all.iter().flat_map(|f| f.proposal.clone()).collect();
        let per_node = |get: &dyn Fn(&EpochFigures) -> Vec<u64>| {
            let v: Vec<u64> = all.iter().flat_map(get).collect();
            mean_min_max(&v)
        };
        let mi = per_node(&|f| f.received.iter().map(|x| x.0).collect());
        let bi = per_node(&|f| f.received.iter().map(|x| x.1).collect());
        let mo = per_node(&|f| f.sent.iter().map(|x| x.0).collect());
        let bo = per_node(&|f| f.sent.iter().map(|x| x.1).collect());
        println!("== {n} real runtimes, {} epochs × {n} nodes ==", all.len());
        println!("{}", summary("submission → finalized:", &mut fin));
        println!("{}", summary("submission → proposal held:", &mut prop));
        println!(
            "per node and epoch: received {:.1} msgs (min {}, max {}), {:.0} B (min {}, max {}); \
             published {:.2} msgs (min {}, max {}), {:.0} B (min {}, max {})",
            mi.0, mi.1, mi.2, bi.0, bi.1, bi.2, mo.0, mo.1, mo.2, bo.0, bo.1, bo.2
        );
        println!(
            "process at the end: {} threads, {} fds, RSS {:.0} MiB; load average {}",
            threads(),
            fd_count(),
            rss_mib(),
            load_avg()
        );
        for h in nodes.drain(..) {
            h.shutdown().await.expect("shutdown");
        }
    });
    // The simulation's figure for the same node count, in the same run.
    let pairs = sim::pairs(n);
    let f = sim::run(n, Duration::ZERO, args, &pairs);
    println!(
        "== simulation, {n} nodes, instant links (same run) ==\n\
         submission → finalized: p50 {} p99 {} max {}; per node: cpu {}, received {:.0} msgs, \
         {:.0} B (proposal {} B, attestation {} B){}",
        ms(f.p50),
        ms(f.p99),
        ms(f.max),
        ms(f.cpu_per_node),
        f.msgs_in,
        f.bytes_in,
        f.proposal_len,
        f.attestation_len,
        if f.all_finalized {
            ""
        } else {
            "; NOT ALL FINALIZED"
        }
    );
    println!("load average at the end: {}", load_avg());
}
