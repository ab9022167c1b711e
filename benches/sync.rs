//! Sync Engine benchmark: one file moved between two nodes on loopback, side by side in the
//! same run with a plain disk copy of the same file and with the direct stream path, through
//! the embedded store (over TCP and QUIC) and through the S3 backend (an in-process
//! S3-protocol server on loopback: s3s with SigV4 checks over s3s-fs, its bucket on the same
//! disk); then the receiver's peak memory for two payload sizes, and a resume after `kill -9`,
//! both with the receiver in a child process.
//!
//! Run: `cargo bench --bench sync`. Environment:
//! - `SYNC_BENCH_DIR`: where the files go (default `target/sync-bench` of this crate; it must be
//!   a real disk, not tmpfs, for the disk figures to mean anything);
//! - `SYNC_BENCH_MIB`: payload of the throughput runs (default 1024);
//! - `SYNC_BENCH_ROUNDS`: rounds, configurations interleaved round by round (default 3);
//! - `SYNC_BENCH_MEM_MIB`: comma-separated payload sizes of the memory runs (default
//!   `1024,8192`; their source is a sparse file, so only the destination costs disk);
//! - `SYNC_BENCH_RESUME_MIB`: payload of the resume run (default 1024);
//! - `BENCH_ONLY`: comma-separated subset of `copy,dd,stream,tcp,quic,s3,memory,resume,split`
//!   (`s3`: the sender uploads the sealed chunks to the in-process S3 server, the offer timed
//!   apart as the upload; the receiver fetches them with presigned range GETs; the server's
//!   store is under the bench's directory and its credentials are in a file there, so the
//!   `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` variables must not be set)
//!   (`split`: one core each, as two machines would have: this process, the sender and the disk
//!   copy on CPU 0, the receiver child on CPU 1, `SYNC_BENCH_MIB` and `SYNC_BENCH_ROUNDS` as above);
//! - `SYNC_BENCH_DISCARD=1`: the receiver children keep no bytes: behind the download, holes are
//!   punched into the partial file (every chunk is still hash-checked, decrypted and written;
//!   only the disk space is given back), and the resume run's source is sparse too. For runs
//!   larger than the free disk (100 GiB).
//!
//! The receiver child is this binary again, selected by `SYNC_BENCH_CHILD` (see [`child`]).

#[path = "../actors/tests/s3_support/mod.rs"]
mod s3_support;
#[path = "support.rs"]
mod support;

use futures::{AsyncReadExt, AsyncWriteExt};
use hermes::config::S3Config;
use hermes::sync::{Backend, OfferOptions};
use hermes::{Runtime, RuntimeHandle};
use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::{env_u64, listen_addr, load_avg, median, node};

const MIB: u64 = 1 << 20;
/// Buffer of the disk copy and of the stream's reads and writes.
const BUF: usize = 8 << 20;
const NETUID: u16 = 1;
const RUN_TIMEOUT: Duration = Duration::from_secs(1800);

fn wanted(what: &str) -> bool {
    match std::env::var("BENCH_ONLY") {
        Ok(list) => list.split(',').any(|w| w.trim() == what),
        Err(_) => true,
    }
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB as f64 / d.as_secs_f64()
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

// ------------------------------------------------------------------ files

/// A file of `size` pseudo-random bytes (incompressible; every 8 MiB block differs), synced.
fn make_source(path: &Path, size: u64) {
    let mut block = vec![0u8; BUF];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in block.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes());
    }
    let mut f = File::create(path).expect("create source");
    let mut left = size;
    let mut i = 0u64;
    while left > 0 {
        block[..8].copy_from_slice(&i.to_le_bytes());
        let k = left.min(BUF as u64) as usize;
        f.write_all(&block[..k]).expect("write source");
        left -= k as u64;
        i += 1;
    }
    f.sync_all().expect("sync source");
}

/// Whether two files have the same bytes.
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (File::open(a).expect("open"), File::open(b).expect("open"));
    let (mut ba, mut bb) = (vec![0u8; BUF], vec![0u8; BUF]);
    loop {
        let k = read_full(&mut fa, &mut ba);
        if k != read_full(&mut fb, &mut bb) || ba[..k] != bb[..k] {
            return false;
        }
        if k == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).expect("read") {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// (a) The disk baseline: read the source in 8 MiB blocks, write them, `fdatasync` at the end.
fn copy_once(src: &Path, dst: &Path) -> Duration {
    let start = Instant::now();
    let mut from = File::open(src).expect("open source");
    let mut to = File::create(dst).expect("create copy");
    let mut buf = vec![0u8; BUF];
    loop {
        let k = read_full(&mut from, &mut buf);
        if k == 0 {
            break;
        }
        to.write_all(&buf[..k]).expect("write copy");
    }
    to.sync_data().expect("fdatasync");
    start.elapsed()
}

/// (a') The same with `dd bs=8M conv=fdatasync`.
fn dd_once(src: &Path, dst: &Path) -> Duration {
    let start = Instant::now();
    let st = Command::new("dd")
        .arg(format!("if={}", src.display()))
        .arg(format!("of={}", dst.display()))
        .args(["bs=8M", "conv=fdatasync", "status=none"])
        .status()
        .expect("dd");
    assert!(st.success(), "dd failed");
    start.elapsed()
}

// ------------------------------------------------------------------ nodes

struct Pair {
    a: RuntimeHandle,
    b: RuntimeHandle,
    b_ss58: String,
    incoming: hermes::IncomingStreams,
}

async fn until_peers(a: &RuntimeHandle, ss58: &str) {
    let end = Instant::now() + Duration::from_secs(60);
    while !a
        .peers()
        .await
        .expect("peers")
        .iter()
        .any(|p| p.ss58 == ss58)
    {
        assert!(Instant::now() < end, "the nodes never linked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two linked nodes under `dir`, A the sender (with the S3 store `s3`, if any), B the receiver.
async fn pair(dir: &Path, name: &str, listen: &str, s3: Option<S3Config>) -> Pair {
    let chain = dir.join(format!("{name}-chain"));
    let (mut ca, a_ss58) = node(dir, &format!("{name}-a"), &chain, NETUID, listen);
    ca.sync.s3 = s3;
    let (cb, b_ss58) = node(dir, &format!("{name}-b"), &chain, NETUID, listen);
    let b = Runtime::builder(cb).start().await.expect("b");
    let baddr = listen_addr(&b).await;
    let a = Runtime::builder(ca.with_bootstrap(vec![baddr]))
        .start()
        .await
        .expect("a");
    until_peers(&a, &b_ss58).await;
    until_peers(&b, &a_ss58).await;
    let incoming = b.incoming_streams().expect("incoming");
    Pair {
        a,
        b,
        b_ss58,
        incoming,
    }
}

/// (b) The direct stream: A opens a named stream and copies the file in; B's application saves
/// it to `dst` and syncs. Timed from open to B's `fdatasync`.
async fn stream_once(p: &mut Pair, src: &Path, dst: &Path, size: u64) -> Duration {
    let start = Instant::now();
    let mut w =
        p.a.open_stream_named(&p.b_ss58, NETUID, Some("bench.bin"))
            .await
            .expect("open stream");
    let mut s = p.incoming.recv().await.expect("incoming stream");
    let dst = dst.to_path_buf();
    let recv = tokio::spawn(async move {
        let mut f = File::create(&dst).expect("create");
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = s.reader.read(&mut buf).await.expect("read stream");
            if k == 0 {
                break;
            }
            f.write_all(&buf[..k]).expect("write");
            n += k as u64;
        }
        f.sync_data().expect("fdatasync");
        (n, Instant::now())
    });
    let mut from = File::open(src).expect("open source");
    let mut buf = vec![0u8; BUF];
    loop {
        let k = read_full(&mut from, &mut buf);
        if k == 0 {
            break;
        }
        w.write_all(&buf[..k]).await.expect("write stream");
    }
    let report = w.finish().await.expect("finish");
    let (n, end) = recv.await.expect("receiver");
    assert_eq!((n, report.bytes), (size, size), "the stream lost bytes");
    end - start
}

/// (c, d, e) The Sync Engine: A offers through `via` (timed apart: the sealing pass, and for
/// S3 the upload), B fetches into `dst`. Returns (offer time, fetch time).
async fn sync_once(
    p: &Pair,
    via: Backend,
    src: &Path,
    dst: &Path,
    size: u64,
) -> (Duration, Duration) {
    let t = Instant::now();
    let opts = OfferOptions {
        via: Some(via),
        no_delivery: true,
        ..OfferOptions::default()
    };
    let ticket =
        p.a.offer(src, &p.b_ss58, NETUID, opts)
            .await
            .expect("offer");
    let offered = t.elapsed();
    let start = Instant::now();
    let tr = p.b.fetch(&ticket.to_string(), dst).await.expect("fetch");
    tr.wait().await.expect("download");
    let fetched = start.elapsed();
    assert_eq!(std::fs::metadata(dst).expect("dest").len(), size);
    if via == Backend::S3 {
        // Every chunk came from the bucket: the sender, the ticket's fallback location, served
        // none. Revoking deletes the objects (not timed), so the bucket holds one payload.
        assert_eq!(
            served(&p.a, &ticket).await,
            0,
            "the S3 fetch fell back to the sender"
        );
        p.a.revoke(ticket.body.transfer_id).await.expect("revoke");
    }
    (offered, fetched)
}

/// The S3 store the bench's sender uses: the in-process server, its credentials in a file
/// under `dir` (the environment's, if set, would take precedence and be refused).
fn s3_config(server: &s3_support::S3Server, dir: &Path) -> S3Config {
    let creds = dir.join("s3-credentials");
    std::fs::write(
        &creds,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            s3_support::ACCESS_KEY,
            s3_support::SECRET_KEY
        ),
    )
    .expect("credentials file");
    S3Config {
        endpoint: server.endpoint.clone(),
        bucket: s3_support::BUCKET.into(),
        region: s3_support::REGION.into(),
        prefix: "bench/".into(),
        path_style: true,
        credentials_file: Some(creds),
        profile: None,
    }
}

// ------------------------------------------------------------------ throughput

fn throughput(rt: &tokio::runtime::Runtime, dir: &Path) {
    let size = env_u64("SYNC_BENCH_MIB", 1024) * MIB;
    let rounds = env_u64("SYNC_BENCH_ROUNDS", 3) as usize;
    let src = dir.join("source.bin");
    let dst = dir.join("dest.bin");
    println!(
        "== throughput: {} MiB, {rounds} round(s), load {}",
        size / MIB,
        load_avg()
    );
    make_source(&src, size);
    let names = [
        ("copy", "(a) disk copy: read/write 8 MiB, fdatasync"),
        ("dd", "(a') dd bs=8M conv=fdatasync"),
        ("stream", "(b) stream TCP, E2E, receiver saves+syncs"),
        ("stream", "(b') stream QUIC, E2E, receiver saves+syncs"),
        ("tcp", "(c) Sync Engine, TCP"),
        ("quic", "(d) Sync Engine, QUIC"),
        ("s3", "(e) Sync Engine, S3 backend (presigned GETs)"),
    ];
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let (mut offers, mut uploads) = (Vec::new(), Vec::new());
    rt.block_on(async {
        let mut tcp = pair(dir, "tcp", "/ip4/127.0.0.1/tcp/0", None).await;
        let mut quic = pair(dir, "quic", "/ip4/127.0.0.1/udp/0/quic-v1", None).await;
        // The S3 server runs on this runtime, on the same two cores as both nodes.
        let server = if wanted("s3") {
            Some(s3_support::S3Server::start_in(dir).await)
        } else {
            None
        };
        let s3 = match &server {
            Some(server) => {
                let cfg = s3_config(server, dir);
                Some(pair(dir, "s3", "/ip4/127.0.0.1/tcp/0", Some(cfg)).await)
            }
            None => None,
        };
        for round in 1..=rounds {
            for (i, (key, name)) in names.iter().enumerate() {
                if !wanted(key) {
                    continue;
                }
                let _ = std::fs::remove_file(&dst);
                let load = load_avg();
                let d = match i {
                    0 => copy_once(&src, &dst),
                    1 => dd_once(&src, &dst),
                    2 => tokio::time::timeout(RUN_TIMEOUT, stream_once(&mut tcp, &src, &dst, size))
                        .await
                        .expect("timed out"),
                    3 => {
                        tokio::time::timeout(RUN_TIMEOUT, stream_once(&mut quic, &src, &dst, size))
                            .await
                            .expect("timed out")
                    }
                    _ => {
                        let (p, via) = match i {
                            4 => (&tcp, Backend::Embedded),
                            5 => (&quic, Backend::Embedded),
                            _ => (s3.as_ref().expect("s3 pair"), Backend::S3),
                        };
                        let (o, d) =
                            tokio::time::timeout(RUN_TIMEOUT, sync_once(p, via, &src, &dst, size))
                                .await
                                .expect("timed out");
                        match via {
                            Backend::S3 => {
                                println!(
                                    "  round {round} {:<46} {:>7.1} MiB/s ({:.2} s, load {load})",
                                    "(e') S3 upload: offer, sealing + multipart",
                                    mib_s(size, o),
                                    o.as_secs_f64()
                                );
                                uploads.push(mib_s(size, o));
                            }
                            Backend::Embedded => offers.push(mib_s(size, o)),
                        }
                        d
                    }
                };
                if round == 1 && i >= 2 {
                    assert!(
                        same_bytes(&src, &dst),
                        "{name}: the copy differs from the source"
                    );
                }
                let r = mib_s(size, d);
                println!(
                    "  round {round} {name:<46} {r:>7.1} MiB/s ({:.2} s, load {load})",
                    d.as_secs_f64()
                );
                results[i].push(r);
            }
        }
        for p in [Some(tcp), Some(quic), s3].into_iter().flatten() {
            p.a.shutdown().await.expect("shutdown");
            p.b.shutdown().await.expect("shutdown");
        }
    });
    let _ = std::fs::remove_file(&dst);
    let _ = std::fs::remove_file(&src);
    let base = (!results[0].is_empty()).then(|| median(&results[0]));
    println!(
        "\n{:<48} {:>12} {:>10}",
        "configuration", "median", "vs copy"
    );
    for (i, (_, name)) in names.iter().enumerate() {
        if results[i].is_empty() {
            continue;
        }
        let m = median(&results[i]);
        let pct = base.map_or("-".into(), |b| format!("{:.0} %", m / b * 100.0));
        println!("{name:<48} {m:>7.1} MiB/s {pct:>10}");
    }
    if !offers.is_empty() {
        println!(
            "offer (one sealing + hashing pass over the source): median {:.1} MiB/s",
            median(&offers)
        );
    }
    if !uploads.is_empty() {
        println!(
            "upload (offer via S3: sealing + hashing + multipart upload, not in (e)): median {:.1} MiB/s",
            median(&uploads)
        );
    }
    println!("load after: {}", load_avg());
}

// ------------------------------------------------------------------ receiver child

/// One line from the child, stamped with the parent's clock on arrival.
struct Line {
    at: Instant,
    words: Vec<String>,
}

/// A receiver node in its own process: this binary with `SYNC_BENCH_CHILD` set.
struct Child {
    proc: std::process::Child,
    lines: mpsc::Receiver<Line>,
    spawned: Instant,
}

impl Child {
    /// Starts the receiver of config `cfg` downloading into `dest`; with `time_v`, under
    /// `/usr/bin/time -v` (its report goes to `time_log`); with `cpus`, on those CPUs only
    /// (`taskset -c`).
    fn spawn(
        cfg: &Path,
        ticket: &Path,
        dest: &Path,
        time_log: Option<&Path>,
        cpus: Option<&str>,
    ) -> Child {
        let exe = std::env::current_exe().expect("exe");
        let mut cmd = match (time_log, cpus) {
            (Some(log), _) => {
                let mut c = Command::new("/usr/bin/time");
                c.arg("-v").arg("-o").arg(log).arg(exe);
                c
            }
            (None, Some(cpus)) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(exe);
                c
            }
            (None, None) => Command::new(exe),
        };
        cmd.env("SYNC_BENCH_CHILD", "1")
            .env("SYNC_BENCH_CONFIG", cfg)
            .env("SYNC_BENCH_TICKET", ticket)
            .env("SYNC_BENCH_DEST", dest)
            .stdout(Stdio::piped());
        let spawned = Instant::now();
        let mut proc = cmd.spawn().expect("spawn child");
        let out = proc.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                let words = l.split_whitespace().map(str::to_string).collect();
                if tx
                    .send(Line {
                        at: Instant::now(),
                        words,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        Child {
            proc,
            lines,
            spawned,
        }
    }

    /// The next line whose first word is `what`, within the run timeout.
    fn expect(&self, what: &str) -> Line {
        loop {
            let l = self
                .lines
                .recv_timeout(RUN_TIMEOUT)
                .expect("the child stopped talking");
            if l.words.first().map(String::as_str) == Some(what) {
                return l;
            }
            assert!(
                l.words.first().map(String::as_str) != Some("failed"),
                "child: {:?}",
                l.words
            );
        }
    }
}

fn word(l: &Line, i: usize) -> u64 {
    l.words.get(i).and_then(|w| w.parse().ok()).expect("number")
}

/// Child mode: start the node of `SYNC_BENCH_CONFIG`, take the ticket from the file
/// `SYNC_BENCH_TICKET` or else from the inbox (then save it there, for a restart), fetch it into
/// `SYNC_BENCH_DEST`, and print `started`, `fetching <done>`, `progress <done>` per change and
/// `done <ms> <VmHWM KiB>` lines on stdout.
fn child() {
    let discard = std::env::var_os("SYNC_BENCH_DISCARD").is_some();
    let var = |k: &str| PathBuf::from(std::env::var_os(k).expect(k));
    let (cfg, ticket_file, dest) = (
        var("SYNC_BENCH_CONFIG"),
        var("SYNC_BENCH_TICKET"),
        var("SYNC_BENCH_DEST"),
    );
    let t0 = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut cfg = hermes::Config::load(&cfg).expect("config");
        // Discarding: no reservation (there is not the room), holes punched as it goes.
        cfg.sync.preallocate = !discard;
        let node = Runtime::builder(cfg).start().await.expect("start");
        println!("started {}", t0.elapsed().as_millis());
        let ticket = match std::fs::read_to_string(&ticket_file) {
            Ok(t) => t,
            Err(_) => {
                let mut inbox = node.subscribe().expect("inbox");
                let t = loop {
                    let m = inbox.recv().await.expect("inbox open");
                    if let Some(Ok(t)) = hermes::sync::ticket_in_message(&m.bytes) {
                        break t.to_string();
                    }
                };
                let tmp = ticket_file.with_extension("tmp");
                std::fs::write(&tmp, &t).expect("save ticket");
                std::fs::rename(&tmp, &ticket_file).expect("save ticket");
                t
            }
        };
        let tr = match node.fetch(&ticket, &dest).await {
            Ok(t) => t,
            Err(e) => {
                println!("failed {e}");
                return;
            }
        };
        let mut progress = tr.progress.clone();
        println!(
            "fetching {} {}",
            t0.elapsed().as_millis(),
            progress.borrow_and_update().done_bytes
        );
        let wait = tr.wait();
        tokio::pin!(wait);
        let result = loop {
            tokio::select! {
                r = &mut wait => break r,
                c = progress.changed() => {
                    if c.is_err() {
                        break tr.wait().await;
                    }
                    let done = progress.borrow_and_update().done_bytes;
                    println!("progress {} {done}", t0.elapsed().as_millis());
                    if discard {
                        punch_behind(&dest, done);
                    }
                }
            }
        };
        match result {
            Ok(()) => println!("done {} {}", t0.elapsed().as_millis(), status_kib("VmHWM:")),
            Err(e) => println!("failed {e}"),
        }
        node.shutdown().await.expect("shutdown");
    });
}

/// Gives back the disk space of the partial file of `dest` below `done` bytes minus a margin of
/// 1 GiB (chunks are written roughly in order, a few retried ones later; a hole punched where a
/// chunk is yet to be written is simply filled again).
fn punch_behind(dest: &Path, done: u64) {
    let upto = done.saturating_sub(1 << 30) & !(MIB - 1);
    if upto == 0 {
        return;
    }
    let partial = PathBuf::from(format!("{}.partial", dest.display()));
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(partial) {
        let _ = rustix::fs::fallocate(
            &f,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            0,
            upto,
        );
    }
}

/// A registered receiver node under `dir/name` bootstrapped to `to`; returns its config file
/// and SS58 address.
fn receiver(dir: &Path, name: &str, chain: &Path, to: &libp2p::Multiaddr) -> (PathBuf, String) {
    let (c, ss58) = node(dir, name, chain, NETUID, "/ip4/127.0.0.1/tcp/0");
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, c.with_bootstrap(vec![to.clone()]).to_pretty_json()).expect("config");
    (path, ss58)
}

fn offer_to(
    rt: &tokio::runtime::Runtime,
    a: &RuntimeHandle,
    src: &Path,
    ss58: &str,
) -> hermes::sync::Ticket {
    rt.block_on(async {
        until_peers(a, ss58).await;
        a.offer(src, ss58, NETUID, OfferOptions::default())
            .await
            .expect("offer")
    })
}

fn served_bytes(rt: &tokio::runtime::Runtime, a: &RuntimeHandle, t: &hermes::sync::Ticket) -> u64 {
    rt.block_on(served(a, t))
}

/// Sealed bytes `a` served itself (over the network) for the transfer of `t`.
async fn served(a: &RuntimeHandle, t: &hermes::sync::Ticket) -> u64 {
    a.transfers()
        .await
        .expect("transfers")
        .iter()
        .find(|i| i.id == t.body.transfer_id)
        .map_or(0, |i| i.done_bytes)
}

fn max_rss_kib(time_log: &Path) -> u64 {
    std::fs::read_to_string(time_log)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

// ------------------------------------------------------------------ memory and resume

fn children(rt: &tokio::runtime::Runtime, dir: &Path) {
    let mem_sizes: Vec<u64> = std::env::var("SYNC_BENCH_MEM_MIB")
        .unwrap_or_else(|_| "1024,8192".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let resume_size = env_u64("SYNC_BENCH_RESUME_MIB", 1024) * MIB;
    let chain = dir.join("child-chain");
    // Every node is on the chain before the sender starts (it reads the registry once), and
    // the receivers bootstrap to the sender: so the sender's port is chosen first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let (ca, _) = node(dir, "sender", &chain, NETUID, &listen);
    let to: libp2p::Multiaddr = listen.parse().expect("addr");
    let mems: Vec<_> = mem_sizes
        .iter()
        .map(|m| receiver(dir, &format!("mem-{m}"), &chain, &to))
        .collect();
    let resume = receiver(dir, "resume", &chain, &to);
    let split = receiver(dir, "split", &chain, &to);
    let a = rt.block_on(Runtime::builder(ca).start()).expect("sender");
    rt.block_on(listen_addr(&a));

    if wanted("memory") {
        println!(
            "\n== receiver peak RSS (separate process, /usr/bin/time -v), sparse source, load {}",
            load_avg()
        );
        let mut peaks = Vec::new();
        for (m, (cfg, ss58)) in mem_sizes.iter().zip(&mems) {
            let size = m * MIB;
            let src = dir.join(format!("sparse-{m}.bin"));
            File::create(&src)
                .expect("sparse")
                .set_len(size)
                .expect("set_len");
            let dest = dir.join(format!("mem-{m}.out"));
            let log = dir.join(format!("mem-{m}.time"));
            let ticket_file = dir.join(format!("mem-{m}.ticket"));
            let c = Child::spawn(cfg, &ticket_file, &dest, Some(&log), None);
            c.expect("started");
            let load = load_avg();
            let t = Instant::now();
            offer_to(rt, &a, &src, ss58);
            let offered = t.elapsed();
            let f = c.expect("fetching");
            let d = c.expect("done");
            let hwm = word(&d, 2);
            let mut proc = c.proc;
            proc.wait().expect("wait");
            let rss = max_rss_kib(&log);
            assert_eq!(std::fs::metadata(&dest).expect("dest").len(), size);
            println!(
                "  {m:>6} MiB: peak RSS {:.1} MiB (/usr/bin/time), VmHWM {:.1} MiB; fetch {:.1} MiB/s; offer {:.1} s (load {load})",
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0,
                mib_s(size, d.at - f.at),
                offered.as_secs_f64()
            );
            peaks.push(rss);
            let _ = std::fs::remove_file(&dest);
            let _ = std::fs::remove_file(&src);
        }
        if let (Some(first), Some(last)) = (peaks.first(), peaks.last()) {
            println!(
                "  difference, largest minus smallest: {:+.1} MiB",
                (*last as f64 - *first as f64) / 1024.0
            );
        }
    }

    if wanted("resume") {
        let size = resume_size;
        println!(
            "\n== resume after kill -9 at ~50 %: {} MiB, load {}",
            size / MIB,
            load_avg()
        );
        let (cfg, ss58) = &resume;
        let src = dir.join("resume-src.bin");
        if std::env::var_os("SYNC_BENCH_DISCARD").is_some() {
            File::create(&src)
                .expect("sparse")
                .set_len(size)
                .expect("set_len");
        } else {
            make_source(&src, size);
        }
        let dest = dir.join("resume.out");
        let ticket_file = dir.join("resume.ticket");
        let c = Child::spawn(cfg, &ticket_file, &dest, None, None);
        c.expect("started");
        let ticket = offer_to(rt, &a, &src, ss58);
        let layout = ticket.body.layout;
        let chunk = u64::from(layout.chunk_size());
        let first = c.expect("fetching");
        let mut proc = c.proc;
        let mut written = 0;
        while written < size / 2 {
            let l = c.lines.recv_timeout(RUN_TIMEOUT).expect("progress");
            if l.words.first().map(String::as_str) == Some("progress") {
                written = word(&l, 2);
            }
        }
        let first_half = first.at.elapsed();
        proc.kill().expect("kill -9");
        proc.wait().expect("wait");
        println!(
            "  first part: {:.1} GiB in {:.1} s ({:.1} MiB/s), then kill -9",
            written as f64 / (1u64 << 30) as f64,
            first_half.as_secs_f64(),
            mib_s(written, first_half)
        );
        let journal_path = PathBuf::from(format!("{}.partial.journal", dest.display()));
        let journal =
            hermes::proto::sync::Journal::decode(&std::fs::read(&journal_path).expect("journal"))
                .expect("journal decodes");
        let served_before = served_bytes(rt, &a, &ticket);
        println!(
            "  killed with {} of {} chunks written (last progress seen), {} journaled, {} served",
            written.div_ceil(chunk),
            layout.chunk_count(),
            journal.done_chunks(),
            served_before / u64::from(layout.sealed_len(0))
        );
        let load = load_avg();
        let c = Child::spawn(cfg, &ticket_file, &dest, None, None);
        let started = c.expect("started");
        let f = c.expect("fetching");
        let first_new = loop {
            let l = c.expect("progress");
            if word(&l, 2) > journal.done_bytes() {
                break l;
            }
        };
        let done = c.expect("done");
        let mut proc = c.proc;
        proc.wait().expect("wait");
        let served = served_bytes(rt, &a, &ticket);
        let served_chunks = served / u64::from(layout.sealed_len(0));
        assert!(
            same_bytes(&src, &dest),
            "the resumed file differs from the source"
        );
        println!(
            "  restart → node started {} ms, fetch resumed {} ms, first new chunk written {} ms after the spawn (load {load})",
            (started.at - c.spawned).as_millis(),
            (f.at - c.spawned).as_millis(),
            (first_new.at - c.spawned).as_millis()
        );
        println!(
            "  resumed from {} journaled chunks; chunks fetched again: {} written but not journaled, {} served twice in all (sender's count: {} chunks served for {}); rest took {:.1} s, resumed receiver's VmHWM {:.1} MiB",
            journal.done_chunks(),
            written.div_ceil(chunk).saturating_sub(journal.done_chunks()),
            served_chunks.saturating_sub(layout.chunk_count()),
            served_chunks,
            layout.chunk_count(),
            (done.at - f.at).as_secs_f64(),
            word(&done, 2) as f64 / 1024.0
        );
        let _ = std::fs::remove_file(&dest);
        let _ = std::fs::remove_file(&src);
    }
    if wanted("split") {
        split_cores(rt, dir, &a, &split);
    }
    rt.block_on(a.shutdown()).expect("shutdown");
}

/// Throughput with one core each, as two machines would have: every thread of this process
/// (the sender node, the disk copy) is moved to CPU 0 and the receiver child runs on CPU 1, so
/// neither side's crypto and copies take the other's core. The disk copy on one core is the
/// baseline, in the same rounds.
fn split_cores(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    a: &RuntimeHandle,
    (cfg, ss58): &(PathBuf, String),
) {
    let size = env_u64("SYNC_BENCH_MIB", 1024) * MIB;
    let rounds = env_u64("SYNC_BENCH_ROUNDS", 3) as usize;
    let pinned = Command::new("taskset")
        .args(["-a", "-c", "-p", "0", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("taskset");
    assert!(pinned.success(), "taskset failed");
    println!(
        "\n== one core each: sender and disk copy on CPU 0, receiver child on CPU 1; {} MiB, {rounds} round(s), load {}",
        size / MIB,
        load_avg()
    );
    let src = dir.join("split-src.bin");
    make_source(&src, size);
    let (mut copies, mut syncs) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let copy = dir.join("split-copy.out");
        copies.push(mib_s(size, copy_once(&src, &copy)));
        let _ = std::fs::remove_file(&copy);
        let dest = dir.join("split.out");
        let ticket_file = dir.join(format!("split-{round}.ticket"));
        let c = Child::spawn(cfg, &ticket_file, &dest, None, Some("1"));
        c.expect("started");
        offer_to(rt, a, &src, ss58);
        let f = c.expect("fetching");
        let d = c.expect("done");
        let mut proc = c.proc;
        proc.wait().expect("wait");
        syncs.push(mib_s(size, d.at - f.at));
        if round == 1 {
            assert!(same_bytes(&src, &dest), "the fetched file differs");
        }
        let _ = std::fs::remove_file(&dest);
        println!(
            "  round {round}: disk copy {:.1} MiB/s, Sync Engine over TCP {:.1} MiB/s (load {})",
            copies[round - 1],
            syncs[round - 1],
            load_avg()
        );
    }
    let (copy, sync) = (median(&copies), median(&syncs));
    println!(
        "  median: disk copy {copy:.1} MiB/s, Sync Engine {sync:.1} MiB/s = {:.0} % of the copy",
        100.0 * sync / copy
    );
    let _ = std::fs::remove_file(&src);
}

fn main() {
    if std::env::var_os("SYNC_BENCH_CHILD").is_some() {
        child();
        return;
    }
    let base = std::env::var_os("SYNC_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sync-bench"));
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::tempdir_in(&base).expect("tempdir");
    let df = Command::new("df")
        .arg("-h")
        .arg(dir.path())
        .output()
        .expect("df");
    println!(
        "machine: {} cores, load {}; files under {}\n{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_avg(),
        dir.path().display(),
        String::from_utf8_lossy(&df.stdout).trim_end()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if ["copy", "dd", "stream", "tcp", "quic", "s3"]
        .iter()
        .any(|w| wanted(w))
    {
        throughput(&rt, dir.path());
    }
    if wanted("memory") || wanted("resume") || wanted("split") {
        children(&rt, dir.path());
    }
}
