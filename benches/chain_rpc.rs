//! Chain RPC benchmark: what the subtensor backend costs, against the in-process JSON-RPC node of
//! the tests (`actors/tests/chain_rpc_support`) serving the runtime metadata recorded from a real
//! Subtensor node and a 256-neuron subnet built with the real SCALE codec and key hashing.
//!
//! 1. Registry reads through `RpcChain`: (a) the first read of a fresh backend (metadata
//!    included), (b) a poll of an unchanged finalized head, (c) one new block in which a few
//!    stakes changed. Round trips, bytes on the wire each way (HTTP headers included) and wall
//!    time (median of the runs).
//! 2. Cold start of a node to admitting peers: from `Runtime::builder(cfg).start()` until its
//!    firewall has admitted a registered peer (a second, already running node dials it once it
//!    listens), with the subtensor backend and, in the same run and interleaved round by round,
//!    with the dev chain (the baseline: a local sled directory).
//!
//! Run: `cargo bench --bench chain_rpc`. Environment: `BENCH_READS` (runs of each read, default
//! 21), `BENCH_ROUNDS` (cold starts of each backend, default 7).

#[path = "../actors/tests/chain_rpc_support/mod.rs"]
mod chain_rpc_support;
#[path = "support.rs"]
mod support;

use chain_rpc_support::metadata as meta;
use chain_rpc_support::storage::{
    recorded_subtensor_metadata, st_hotkey, st_register, st_stake_key, subtensor_storage,
};
use chain_rpc_support::Node;
use hermes::config::ChainKind;
use hermes::proto::Hotkey;
use hermes::{Runtime, RuntimeHandle};
use hermes_actors::chain::rpc::{RpcChain, RpcKind};
use parity_scale_codec::Encode;
use std::time::{Duration, Instant};
use support::{env_u64, load_avg, median, node};

const NETUID: u16 = 5;
const NEURONS: u16 = 256;
/// Stakes changed by the block of (c).
const CHANGED: u16 = 4;
const WAIT: Duration = Duration::from_secs(60);

/// What one measured operation cost on the wire.
#[derive(Default, Clone, Copy)]
struct Wire {
    round_trips: usize,
    sent: u64,
    received: u64,
}

fn wire_now(n: &Node) -> Wire {
    Wire {
        round_trips: n.requests(),
        sent: n.bytes_in(),
        received: n.bytes_out(),
    }
}

fn wire_since(n: &Node, before: Wire) -> Wire {
    let now = wire_now(n);
    Wire {
        round_trips: now.round_trips - before.round_trips,
        sent: now.sent - before.sent,
        received: now.received - before.received,
    }
}

fn row(label: &str, w: Wire, ms: &[f64]) {
    println!(
        "{label:<44} {:>3} {:>10} {:>10} {:>9.2} ms  (min {:.2}, max {:.2}, n={})",
        w.round_trips,
        w.sent,
        w.received,
        median(ms),
        ms.iter().copied().fold(f64::INFINITY, f64::min),
        ms.iter().copied().fold(0.0, f64::max),
        ms.len()
    );
}

async fn reads(runs: usize) {
    let metadata = recorded_subtensor_metadata();
    let rpc = Node::start(metadata.clone(), subtensor_storage(NETUID, NEURONS)).await;
    println!(
        "== registry reads: subnet of {NEURONS} neurons, recorded metadata of {} KiB ==",
        metadata.len() / 1024
    );
    println!(
        "{:<44} {:>3} {:>10} {:>10} {:>12}",
        "", "RTs", "sent B", "recv B", "median"
    );
    let mut first = Vec::new();
    let mut unchanged = Vec::new();
    let mut block = Vec::new();
    let (mut w_first, mut w_unchanged, mut w_block) =
        (Wire::default(), Wire::default(), Wire::default());
    for run in 0..runs {
        // (a) a fresh backend: metadata, head, node list, values, stakes.
        let chain = RpcChain::new(&rpc.url(), RpcKind::Subtensor, vec![NETUID]).expect("chain");
        let before = wire_now(&rpc);
        let t = Instant::now();
        let snap = chain.snapshot().await.expect("first read");
        first.push(t.elapsed().as_secs_f64() * 1e3);
        w_first = wire_since(&rpc, before);
        assert_eq!(snap.registry.len(), usize::from(NEURONS));

        // (b) the same head again.
        let before = wire_now(&rpc);
        let t = Instant::now();
        chain.snapshot().await.expect("unchanged read");
        unchanged.push(t.elapsed().as_secs_f64() * 1e3);
        w_unchanged = wire_since(&rpc, before);

        // (c) a block in which a few neurons' stakes changed.
        let run_stake = 5_000 + run as u64;
        rpc.new_block(|s| {
            for uid in 0..CHANGED {
                s.insert(
                    st_stake_key(st_hotkey(uid * 50), NETUID),
                    meta::AlphaCurrency(run_stake).encode(),
                );
            }
        });
        let before = wire_now(&rpc);
        let t = Instant::now();
        let snap = chain.snapshot().await.expect("block read");
        block.push(t.elapsed().as_secs_f64() * 1e3);
        w_block = wire_since(&rpc, before);
        let e: Vec<_> = snap.registry.by_hotkey(&Hotkey(st_hotkey(50))).collect();
        assert_eq!(e[0].stake, u128::from(run_stake), "the block's stake");
    }
    row("(a) first read (metadata included)", w_first, &first);
    row(
        "(b) poll, finalized head unchanged",
        w_unchanged,
        &unchanged,
    );
    row(
        &format!("(c) new block, {CHANGED} stakes changed"),
        w_block,
        &block,
    );
}

/// Starts `cfg`, has `dialer` dial it once it listens, and returns (time until `start`
/// returned, time until the dialer was admitted), both from the call to `start`.
async fn cold_start(cfg: hermes::Config, dialer: &RuntimeHandle, dialer_ss58: &str) -> (f64, f64) {
    let t = Instant::now();
    let a = Runtime::builder(cfg).start().await.expect("start");
    let started = t.elapsed().as_secs_f64() * 1e3;
    let deadline = t + WAIT;
    let addr = loop {
        if let Some(addr) = a.listen_addrs().await.expect("addrs").first().cloned() {
            break addr;
        }
        assert!(Instant::now() < deadline, "the node never listened");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    dialer.dial(addr).await.expect("dial");
    while !a
        .peers()
        .await
        .expect("peers")
        .iter()
        .any(|p| p.ss58 == dialer_ss58)
    {
        assert!(Instant::now() < deadline, "the dialer was never admitted");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let admitted = t.elapsed().as_secs_f64() * 1e3;
    a.shutdown().await.expect("shutdown");
    (started, admitted)
}

async fn cold_starts(rounds: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = dir.path().join("chain");
    let listen = "/ip4/127.0.0.1/tcp/0";
    // The dialer reads the dev chain, where every node started later is registered first (it
    // reads the registry once, at start).
    let (bcfg, bss58) = node(dir.path(), "dialer", &chain, NETUID, listen);
    let mut starts = Vec::new();
    for round in 0..rounds {
        let kinds = if round % 2 == 0 {
            [ChainKind::Dev, ChainKind::Subtensor]
        } else {
            [ChainKind::Subtensor, ChainKind::Dev]
        };
        for kind in kinds {
            let name = format!("{kind:?}-{round}");
            starts.push((kind, node(dir.path(), &name, &chain, NETUID, listen).0));
        }
    }
    let b = Runtime::builder(bcfg).start().await.expect("dialer");
    // The subtensor node serves a 256-neuron subnet, the dialer's hotkey among them.
    let (b_hotkey, _) = Hotkey::from_ss58(&bss58).expect("ss58");
    let mut storage = subtensor_storage(NETUID, NEURONS - 1);
    st_register(&mut storage, NETUID, NEURONS - 1, b_hotkey.0, 1_000_000);
    let rpc = Node::start(recorded_subtensor_metadata(), storage).await;

    println!("\n== cold start to the first admitted peer ({rounds} rounds, interleaved) ==");
    let (mut dev, mut sub) = (Vec::new(), Vec::new());
    let mut w_sub = Wire::default();
    for (kind, mut cfg) in starts {
        let before = wire_now(&rpc);
        if kind == ChainKind::Subtensor {
            cfg.chain.kind = ChainKind::Subtensor;
            cfg.chain.url = rpc.url();
        }
        let r = cold_start(cfg, &b, &bss58).await;
        if kind == ChainKind::Subtensor {
            w_sub = wire_since(&rpc, before);
            sub.push(r);
        } else {
            dev.push(r);
        }
    }
    println!(
        "{:<44} {:>3} {:>10} {:>10} {:>12} {:>14}",
        "", "RTs", "sent B", "recv B", "start() ret.", "peer admitted"
    );
    for (label, w, v) in [
        (
            "baseline: dev chain (local sled directory)",
            Wire::default(),
            &dev,
        ),
        ("subtensor backend, recorded metadata", w_sub, &sub),
    ] {
        let started: Vec<f64> = v.iter().map(|r| r.0).collect();
        let admitted: Vec<f64> = v.iter().map(|r| r.1).collect();
        println!(
            "{label:<44} {:>3} {:>10} {:>10} {:>9.1} ms {:>11.1} ms  (admitted min {:.1}, max {:.1})",
            w.round_trips,
            w.sent,
            w.received,
            median(&started),
            median(&admitted),
            admitted.iter().copied().fold(f64::INFINITY, f64::min),
            admitted.iter().copied().fold(0.0, f64::max),
        );
    }
    b.shutdown().await.expect("shutdown");
}

fn main() {
    println!("load average at start: {}", load_avg());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        reads(env_u64("BENCH_READS", 21) as usize).await;
        cold_starts(env_u64("BENCH_ROUNDS", 7) as usize).await;
    });
    println!("load average at end: {}", load_avg());
}
