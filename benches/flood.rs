//! Connection flood against the admission gate.
//!
//! One admitted peer (A) streams to a target node (T) over an end-to-end encrypted stream while a
//! flood client, in a separate
//! process so that the measured RSS is the nodes' own, opens unauthorized TCP connections to T as
//! fast as it can for 20 s from 8 loopback source addresses. Reports T's rejections per second
//! (from its own counters), the process RSS before/during/after, and A→T throughput without and
//! with the flood in the same run.
//!
//! Run: `cargo bench --bench flood` (`FLOOD_SECS` changes the flood length; `FLOOD_NO_PIN=1`
//! runs without CPU pinning, attacker and nodes competing for both cores; `FLOOD_ACCEPT_THREAD=0`
//! makes the target accept on its network thread, as before the accept thread existed).

#[path = "support.rs"]
mod support;

use futures::{AsyncReadExt, AsyncWriteExt};
use hermes::{IncomingStreams, Runtime, RuntimeHandle};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{listen_addr, node, rss_mib};

/// Application write size on A's stream.
const WRITE: usize = 1 << 20;

fn flood_child(target: SocketAddr, secs: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let attempts = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for i in 0..64u8 {
            let attempts = attempts.clone();
            tasks.push(tokio::spawn(async move {
                let src: std::net::IpAddr = format!("127.0.0.{}", 2 + i % 8).parse().expect("ip");
                while Instant::now() < end {
                    let Ok(sock) = tokio::net::TcpSocket::new_v4() else {
                        continue;
                    };
                    if sock.bind(SocketAddr::new(src, 0)).is_err() {
                        continue;
                    }
                    if let Ok(Ok(s)) =
                        tokio::time::timeout(Duration::from_secs(1), sock.connect(target)).await
                    {
                        drop(s);
                    }
                    attempts.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    println!("{}", attempts.load(Ordering::Relaxed));
}

/// CPU seconds (user + system) used so far by each thread of this process, summed by thread
/// name. Threads that already ended are not included.
fn cpu_by_thread() -> std::collections::HashMap<String, f64> {
    let mut out = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // Fields 14 and 15 of stat (utime, stime), in clock ticks of 1/100 s on Linux.
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<f64>().ok()))
            .sum();
        *out.entry(name).or_insert(0.0) += ticks / 100.0;
    }
    out
}

/// A writes to T over one E2E stream for `secs`; returns the MiB/s T verified and confirmed.
async fn throughput(
    a: &RuntimeHandle,
    t_ss58: &str,
    incoming: &mut IncomingStreams,
    secs: f64,
) -> f64 {
    let reader = async {
        let mut s = incoming.recv().await.expect("incoming stream");
        let mut buf = vec![0u8; WRITE];
        while s.reader.read(&mut buf).await.expect("read") > 0 {}
    };
    let writer = async {
        let data = vec![0x5au8; WRITE];
        let start = Instant::now();
        let mut w = a.open_stream(t_ss58, 1).await.expect("open stream");
        while start.elapsed().as_secs_f64() < secs {
            w.write_all(&data).await.expect("write");
        }
        let report = w.finish().await.expect("finish");
        report.bytes as f64 / start.elapsed().as_secs_f64() / (1024.0 * 1024.0)
    };
    tokio::join!(reader, writer).1
}

fn main() {
    if let Ok(spec) = std::env::var("HERMES_FLOOD_CHILD") {
        let (addr, secs) = spec.split_once(',').expect("addr,secs");
        flood_child(addr.parse().expect("addr"), secs.parse().expect("secs"));
        return;
    }
    // Emulate an attacker on another machine: this process (both nodes) on CPU 0, the flood
    // client on CPU 1, in every phase alike. Without pinning, the co-located client's CPU use
    // would be measured as if it were the gate's cost.
    let pinned = std::env::var_os("FLOOD_NO_PIN").is_none()
        && std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let flood_secs: u64 = std::env::var("FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = dir.path().join("chain");
    let (mut tcfg, tss58) = node(dir.path(), "target", &chain, 1, "/ip4/127.0.0.1/tcp/0");
    // FLOOD_ACCEPT_THREAD=0: the target accepts on its network thread through libp2p's
    // listener (the code before the accept thread), for a same-session baseline.
    tcfg.firewall.accept_thread = std::env::var("FLOOD_ACCEPT_THREAD").map_or(true, |v| v != "0");
    let (acfg, ass58) = node(dir.path(), "admitted", &chain, 1, "/ip4/127.0.0.1/tcp/0");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tcfg_accept_thread = tcfg.firewall.accept_thread;
        let t = Runtime::builder(tcfg).start().await.expect("target");
        let taddr = listen_addr(&t).await;
        let a = Runtime::builder(acfg.with_bootstrap(vec![taddr.clone()])).start().await.expect("admitted");
        let mut incoming = t.incoming_streams().expect("incoming streams");
        // Wait until A has verified T.
        while !a.peers().await.expect("peers").iter().any(|p| p.ss58 == tss58) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let port = taddr
            .iter()
            .find_map(|p| match p {
                libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
                _ => None,
            })
            .expect("tcp port");
        let target: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");

        let exe = std::env::current_exe().expect("exe");
        let spawn_flood = |secs: u64| {
            let mut cmd = if pinned {
                let mut c = std::process::Command::new("taskset");
                c.args(["-c", "1"]).arg(&exe);
                c
            } else {
                std::process::Command::new(&exe)
            };
            cmd.env("HERMES_FLOOD_CHILD", format!("{target},{secs}"))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("flood child")
        };
        let denied_total = |s: &hermes_actors::firewall::FirewallStats| -> u64 {
            s.denied.iter().map(|(_, n)| n).sum()
        };

        println!(
            "CPU pinning (nodes on CPU 0, flood client on CPU 1): {}",
            if pinned { "on" } else { "off" }
        );
        println!(
            "target accepts TCP on: {}",
            if tcfg_accept_thread { "its own accept thread" } else { "the network thread (libp2p's listener)" }
        );
        println!("== phase 1: flood only ({flood_secs} s, 64 client tasks, 8 source IPs, separate process) ==");
        // Let start-up allocations settle (sled's first buffers, gossip heartbeat, DHT publish)
        // so that they are not mistaken for the flood's cost.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss_before = rss_mib();
        let before = denied_total(&t.firewall_stats().await.expect("stats"));
        let cpu_before = cpu_by_thread();
        let child = spawn_flood(flood_secs);
        let start = Instant::now();
        let mut rss_peak = rss_before;
        let mut samples = Vec::new();
        while start.elapsed() < Duration::from_secs(flood_secs) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let r = rss_mib();
            rss_peak = rss_peak.max(r);
            samples.push(r);
        }
        let out = child.wait_with_output().expect("flood child");
        let elapsed = start.elapsed().as_secs_f64();
        let attempts: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        let stats = t.firewall_stats().await.expect("stats");
        let rejected = denied_total(&stats) - before;
        let cpu_after = cpu_by_thread();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_after = rss_mib();
        println!("flood connection attempts (client side):  {attempts:>8} ({:.0}/s)", attempts as f64 / elapsed);
        println!("connections rejected by the target:       {rejected:>8} ({:.0}/s)", rejected as f64 / elapsed);
        for (r, n) in stats.denied.iter().filter(|(_, n)| *n > 0) {
            println!("    {r:<20} {n}");
        }
        // What the flood cost this process (both nodes; A is idle in this phase): CPU time
        // per rejected connection is less sensitive to other load on the machine than rates.
        let mut used: Vec<(String, f64)> = cpu_after
            .iter()
            .map(|(k, v)| (k.clone(), v - cpu_before.get(k).copied().unwrap_or(0.0)))
            .collect();
        used.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = used.iter().map(|(_, v)| v).sum();
        println!(
            "process CPU during the flood:             {total:.2} s in {elapsed:.1} s ({:.0} % of a core), {:.2} µs per rejection",
            total / elapsed * 100.0,
            total * 1e6 / rejected.max(1) as f64
        );
        for (name, v) in used.iter().take(4).filter(|(_, v)| *v > 0.0) {
            println!("    thread {name:<20} {v:.2} s");
        }
        let step = (samples.len() / 8).max(1);
        let trace: Vec<String> = samples.iter().step_by(step).map(|r| format!("{r:.1}")).collect();
        println!("RSS during the flood, sampled (MiB):        {}", trace.join(" "));
        println!(
            "process RSS before / peak during / after:  {rss_before:.1} / {rss_peak:.1} / {rss_after:.1} MiB  (growth {:+.1} MiB)",
            rss_peak - rss_before
        );

        println!("\n== phase 2: admitted peer A streams to T (E2E stream, 1 MiB writes) ==");
        let _ = throughput(&a, &tss58, &mut incoming, 5.0).await; // warm-up: caches and windows reach steady state
        // Alternate quiet and flooded windows so drift and noise hit both sides alike.
        let (mut quiet, mut flooded) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            quiet.push(throughput(&a, &tss58, &mut incoming, 5.0).await);
            let child = spawn_flood(7);
            tokio::time::sleep(Duration::from_secs(1)).await;
            flooded.push(throughput(&a, &tss58, &mut incoming, 5.0).await);
            let _ = child.wait_with_output();
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" ");
        println!("A→T throughput, quiet windows (MiB/s):    {}  mean {:.1}", fmt(&quiet), mean(&quiet));
        println!("A→T throughput, flooded windows (MiB/s):  {}  mean {:.1}", fmt(&flooded), mean(&flooded));
        println!(
            "flooded / quiet:                          {:.0} %",
            mean(&flooded) / mean(&quiet) * 100.0
        );
        println!(
            "A still admitted by T: {}",
            t.peers().await.expect("peers").iter().any(|p| p.ss58 == ass58)
        );
        a.shutdown().await.expect("shutdown");
        t.shutdown().await.expect("shutdown");
    });
}
