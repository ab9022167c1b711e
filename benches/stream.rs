//! Data-plane benchmark: one large stream between two nodes on loopback, over TCP and QUIC, with
//! end-to-end encryption on and off, side by side with a plain quinn connection (no libp2p)
//! moving the same bytes in the same run; then 1 KiB messages: throughput and round-trip latency.
//!
//! Run: `cargo bench --bench stream`. Environment: `BENCH_MIB` (stream size, default 1024),
//! `BENCH_ROUNDS` (default 3; configurations are interleaved round by round so drift hits them
//! alike), `BENCH_MSGS` (messages for the throughput test, default 100000), `BENCH_RTT` (round
//! trips, default 5000), `BENCH_ONLY` (comma-separated subset of `quinn,tcp,quic,msg`).

#[path = "support.rs"]
mod support;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use hermes::{Runtime, RuntimeHandle, StreamOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{listen_addr, node, rss_mib};

const WRITE: usize = 1 << 20;
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn wanted(what: &str) -> bool {
    match std::env::var("BENCH_ONLY") {
        Ok(list) => list.split(',').any(|w| w.trim() == what),
        Err(_) => true,
    }
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

// ------------------------------------------------------------------ quinn baseline

/// quinn's default TLS configuration (AES-256-GCM first), or with ChaCha20-Poly1305 first, the
/// suite stock libp2p QUIC (`libp2p-quic`) negotiates; Hermes' own QUIC transport prefers AES-GCM.
/// The second baseline shows what the cipher alone is worth on this CPU.
fn quinn_configs(
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
    chacha: bool,
) -> (quinn::ServerConfig, quinn::ClientConfig) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("root");
    if !chacha {
        return (
            quinn::ServerConfig::with_single_cert(vec![cert], key).expect("server"),
            quinn::ClientConfig::with_root_certificates(Arc::new(roots)).expect("client"),
        );
    }
    let provider = || {
        let mut p = rustls::crypto::aws_lc_rs::default_provider();
        // AES-128-GCM stays listed (second) because QUIC's initial packets require it.
        p.cipher_suites = vec![
            rustls::crypto::aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ];
        Arc::new(p)
    };
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server tls");
    server.alpn_protocols = vec![b"bench".to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"bench".to_vec()];
    (
        quinn::ServerConfig::with_crypto(Arc::new(
            quinn::crypto::rustls::QuicServerConfig::try_from(server).expect("quic server"),
        )),
        quinn::ClientConfig::new(Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(client).expect("quic client"),
        )),
    )
}

/// `tuned`: the socket buffers and flow-control windows of Hermes' QUIC transport, to separate
/// what tuning is worth from what the rest of the stack costs.
async fn quinn_once(total: u64, chacha: bool, tuned: bool) -> Duration {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(
        ck.key_pair.serialize_der(),
    ));
    let (mut server_cfg, mut client_cfg) = quinn_configs(cert, key, chacha);
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let (server, mut client) = if tuned {
        use hermes_actors::network::quic;
        let t = Arc::new(quic::transport_config(&quic::QuicConfig::default()).expect("transport"));
        server_cfg.transport_config(t.clone());
        client_cfg.transport_config(t);
        let ep = |server: Option<quinn::ServerConfig>| {
            let socket = quic::bind_udp(any).expect("bind");
            quinn::Endpoint::new(
                Default::default(),
                server,
                socket,
                Arc::new(quinn::TokioRuntime),
            )
            .expect("endpoint")
        };
        (ep(Some(server_cfg)), ep(None))
    } else {
        (
            quinn::Endpoint::server(server_cfg, any).expect("bind"),
            quinn::Endpoint::client(any).expect("bind"),
        )
    };
    let addr = server.local_addr().expect("addr");
    client.set_default_client_config(client_cfg);
    let recv = tokio::spawn(async move {
        let conn = server
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("conn");
        let (_, mut rx) = conn.accept_bi().await.expect("bi");
        let mut buf = vec![0u8; WRITE];
        let mut n = 0u64;
        while let Some(k) = rx.read(&mut buf).await.expect("read") {
            n += k as u64;
        }
        n
    });
    let conn = client
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("conn");
    let (mut tx, _rx) = conn.open_bi().await.expect("bi");
    let data = vec![0x5au8; WRITE];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        let k = (total - sent).min(WRITE as u64) as usize;
        tx.write_all(&data[..k]).await.expect("write");
        sent += k as u64;
    }
    tx.finish().expect("finish");
    let got = recv.await.expect("receiver");
    let d = start.elapsed();
    assert_eq!(got, total, "quinn baseline lost bytes");
    conn.close(0u32.into(), b"done");
    client.wait_idle().await;
    d
}

// ------------------------------------------------------------------ Hermes streams

struct Pair {
    a: RuntimeHandle,
    b: RuntimeHandle,
    b_ss58: String,
    a_ss58: String,
}

async fn pair(dir: &std::path::Path, name: &str, listen: &str) -> Pair {
    let chain = dir.join(format!("{name}-chain"));
    let (mut ca, a_ss58) = node(dir, &format!("{name}-a"), &chain, 1, listen);
    let (mut cb, b_ss58) = node(dir, &format!("{name}-b"), &chain, 1, listen);
    for c in [&mut ca, &mut cb] {
        c.streams.allow_plaintext = true;
        c.messages.inbox_capacity = 8192;
    }
    let b = Runtime::builder(cb).start().await.expect("b");
    let baddr = listen_addr(&b).await;
    let a = Runtime::builder(ca.with_bootstrap(vec![baddr]))
        .start()
        .await
        .expect("a");
    while !a
        .peers()
        .await
        .expect("peers")
        .iter()
        .any(|p| p.ss58 == b_ss58)
        || !b
            .peers()
            .await
            .expect("peers")
            .iter()
            .any(|p| p.ss58 == a_ss58)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Pair {
        a,
        b,
        b_ss58,
        a_ss58,
    }
}

/// Streams `total` bytes A→B; returns the time from open to the recipient's confirmation and the
/// peak RSS seen meanwhile.
async fn hermes_once(p: &Pair, total: u64, e2e: bool, chunk: usize) -> (Duration, f64) {
    let mut incoming = p.b.incoming_streams().expect("incoming");
    let recv = tokio::spawn(async move {
        let mut s = incoming.recv().await.expect("stream");
        let mut buf = vec![0u8; WRITE];
        let mut n = 0u64;
        loop {
            let k = s.reader.read(&mut buf).await.expect("read");
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    });
    let rss_base = rss_mib();
    let peak = Arc::new(std::sync::Mutex::new(rss_base));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let r = rss_mib();
                if let Ok(mut p) = peak.lock() {
                    *p = p.max(r);
                }
            }
        })
    };
    let data = vec![0x5au8; WRITE];
    let start = Instant::now();
    let mut w =
        p.a.open_stream_with(
            &p.b_ss58,
            1,
            StreamOptions {
                e2e,
                chunk_size: chunk,
                name: None,
            },
        )
        .await
        .expect("open");
    let mut sent = 0u64;
    while sent < total {
        let k = (total - sent).min(WRITE as u64) as usize;
        w.write_all(&data[..k]).await.expect("write");
        sent += k as u64;
    }
    let report = w.finish().await.expect("finish");
    let d = start.elapsed();
    let got = recv.await.expect("receiver");
    sampler.abort();
    assert_eq!(got, total);
    assert_eq!(report.bytes, total);
    let peak = *peak.lock().expect("peak");
    (d, peak - rss_base)
}

// ------------------------------------------------------------------ messages

async fn message_throughput(p: &Pair, n: u64) -> (Duration, u64) {
    let mut inbox = p.b.subscribe().expect("inbox");
    let counter = tokio::spawn(async move {
        let mut got = 0u64;
        while got < n {
            if inbox.recv().await.is_none() {
                break;
            }
            got += 1;
        }
        got
    });
    let payload = vec![0x42u8; 1024];
    let start = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(512, |_| {
            let a = p.a.clone();
            let to = p.b_ss58.clone();
            let payload = payload.clone();
            async move {
                a.send(&to, 1, payload).await.expect("send");
            }
        })
        .await;
    let got = counter.await.expect("counter");
    (start.elapsed(), got)
}

async fn round_trips(p: &Pair, n: usize) -> Vec<Duration> {
    let mut a_inbox = p.a.subscribe().expect("inbox a");
    let mut b_inbox = p.b.subscribe().expect("inbox b");
    let b = p.b.clone();
    let back_to = p.a_ss58.clone();
    let echo = tokio::spawn(async move {
        while let Some(m) = b_inbox.recv().await {
            if b.send(&back_to, 1, m.bytes).await.is_err() {
                break;
            }
        }
    });
    let payload = vec![0x17u8; 1024];
    let mut rtts = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        p.a.send(&p.b_ss58, 1, payload.clone()).await.expect("send");
        a_inbox.recv().await.expect("echo");
        if i >= n / 10 {
            rtts.push(t.elapsed());
        }
    }
    echo.abort();
    rtts
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn main() {
    let total = env("BENCH_MIB", 1024) << 20;
    let rounds = env("BENCH_ROUNDS", 3) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    println!(
        "machine: {} cores; stream {} MiB, {} round(s) interleaved; writes of {} KiB",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        total >> 20,
        rounds,
        WRITE >> 10
    );
    rt.block_on(async {
        let tcp = pair(dir.path(), "tcp", "/ip4/127.0.0.1/tcp/0").await;
        let quic = pair(dir.path(), "quic", "/ip4/127.0.0.1/udp/0/quic-v1").await;
        let chunk = (env("BENCH_CHUNK_KIB", 256) << 10) as usize;
        enum Run<'a> {
            Quinn { chacha: bool, tuned: bool },
            Hermes { pair: &'a Pair, e2e: bool },
        }
        let configs: Vec<(&str, Run)> = [
            ("quinn baseline (no libp2p, no E2E)", Run::Quinn { chacha: false, tuned: false }),
            ("quinn, ChaCha20 first (stock libp2p-quic)", Run::Quinn { chacha: true, tuned: false }),
            ("quinn, tuned like Hermes' QUIC", Run::Quinn { chacha: false, tuned: true }),
            ("Hermes TCP+noise+yamux, E2E on", Run::Hermes { pair: &tcp, e2e: true }),
            ("Hermes TCP+noise+yamux, E2E off", Run::Hermes { pair: &tcp, e2e: false }),
            ("Hermes QUIC, E2E on", Run::Hermes { pair: &quic, e2e: true }),
            ("Hermes QUIC, E2E off", Run::Hermes { pair: &quic, e2e: false }),
        ]
        .into_iter()
        .filter(|(_, c)| match c {
            Run::Quinn { .. } => wanted("quinn"),
            Run::Hermes { pair, .. } => wanted(if std::ptr::eq(*pair, &tcp) { "tcp" } else { "quic" }),
        })
        .collect();
        let mut results: Vec<(Vec<f64>, f64)> = vec![(Vec::new(), 0.0); configs.len()];
        if !configs.is_empty() {
            for round in 0..rounds {
                for (i, (name, c)) in configs.iter().enumerate() {
                    let (d, rss) = match c {
                        Run::Quinn { chacha, tuned } => (
                            tokio::time::timeout(RUN_TIMEOUT, quinn_once(total, *chacha, *tuned)).await.expect("quinn timed out"),
                            0.0,
                        ),
                        Run::Hermes { pair, e2e } => tokio::time::timeout(RUN_TIMEOUT, hermes_once(pair, total, *e2e, chunk))
                            .await
                            .expect("stream timed out"),
                    };
                    let r = mib_s(total, d);
                    println!("  round {} {name:<44} {r:>8.1} MiB/s  ({:.2} s, RSS growth {rss:+.1} MiB)", round + 1, d.as_secs_f64());
                    results[i].0.push(r);
                    results[i].1 = results[i].1.max(rss);
                }
            }
            let base = configs
                .iter()
                .position(|(_, c)| matches!(c, Run::Quinn { chacha: false, tuned: false }))
                .map(|i| median(&mut results[i].0.clone()));
            println!("\n{:<46} {:>10} {:>12} {:>14}", "configuration", "median", "vs quinn", "peak RSS +MiB");
            for (i, (name, _)) in configs.iter().enumerate() {
                let m = median(&mut results[i].0.clone());
                let ratio = base.map_or("-".to_string(), |b| format!("{:.0} %", m / b * 100.0));
                println!("{name:<46} {m:>7.1} MiB/s {ratio:>10} {:>12.1}", results[i].1);
            }
        }
        if wanted("msg") {
            let n = env("BENCH_MSGS", 100_000);
            println!("\n1 KiB messages, E2E on, TCP, {n} messages, 512 sends in flight:");
            let (d, got) = message_throughput(&tcp, n).await;
            println!("  throughput: {:.0} msg/s ({:.1} MiB/s of payload), {got} delivered", got as f64 / d.as_secs_f64(), mib_s(got * 1024, d));
            let rtt_n = env("BENCH_RTT", 5000) as usize;
            let mut rtts = round_trips(&tcp, rtt_n).await;
            rtts.sort();
            println!(
                "  round trip (A sends, B's application echoes, A's application receives), {rtt_n} samples: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
                pct(&rtts, 0.5).as_secs_f64() * 1e6,
                pct(&rtts, 0.99).as_secs_f64() * 1e6,
                rtts.last().copied().unwrap_or_default().as_secs_f64() * 1e6
            );
            let (d, got) = message_throughput(&quic, n).await;
            println!("  QUIC throughput: {:.0} msg/s, {got} delivered", got as f64 / d.as_secs_f64());
            let mut rtts = round_trips(&quic, rtt_n).await;
            rtts.sort();
            println!(
                "  QUIC round trip: p50 {:.0} µs, p99 {:.0} µs",
                pct(&rtts, 0.5).as_secs_f64() * 1e6,
                pct(&rtts, 0.99).as_secs_f64() * 1e6
            );
        }
        for p in [tcp, quic] {
            p.a.shutdown().await.expect("shutdown");
            p.b.shutdown().await.expect("shutdown");
        }
    });
}
