//! Resource exhaustion from outside, over real loopback connections: what a socket that never
//! speaks, or a peer that opens more than its share, can hold on a node, and for how long.

mod common;

use common::{addr, denied, eventually, listen_socket, sees, start, DevChainDir, NodeDir};
use hermes::config::HumanDuration;
use hermes::proto::firewall::DenyReason;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Waits (bounded by `limit`) until the peer closes `s`; returns whether it did.
async fn closed_by_peer(s: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    let end = Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            // EOF or reset: closed.
            Ok(Ok(0) | Err(_)) => return true,
            // The node may answer the protocol negotiation; keep reading.
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// A socket that connects and never sends a byte holds a connection slot only for
/// `firewall.handshake_timeout`, not libp2p's 10 s default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tcp_socket_is_closed_after_the_handshake_timeout() {
    let chain = DevChainDir::new();
    let t = NodeDir::new();
    chain.register(3, &t, 1_000);
    let mut cfg = t.cluster_config(&chain, vec![3]);
    cfg.firewall.handshake_timeout = HumanDuration(Duration::from_millis(500));
    let trt = start(cfg).await;
    let sock = listen_socket(&trt).await;

    let mut s = tokio::net::TcpStream::connect(sock).await.unwrap();
    // Well under libp2p's own 10 s: only the configured deadline can close it in time.
    assert!(
        closed_by_peer(&mut s, Duration::from_secs(7)).await,
        "a silent socket was kept open past the configured handshake timeout"
    );
    trt.shutdown().await.unwrap();
}

/// Has `peer` dial `target` again every 250 ms until `target` verifies `ss58` (the peer's
/// address) or `limit` passes. Returns how long admission took (`None`: not within `limit`) and
/// how many dials it made.
async fn dial_until_admitted(
    peer: &hermes::RuntimeHandle,
    target: &hermes::RuntimeHandle,
    ss58: &str,
    limit: Duration,
) -> (Option<Duration>, u32) {
    let taddr = addr(target).await;
    let t0 = Instant::now();
    let mut dials = 0u32;
    while t0.elapsed() < limit {
        dials += 1;
        let _ = peer.dial(taddr.clone()).await;
        if eventually(Duration::from_millis(250), || async {
            target.peers().await.unwrap().iter().any(|p| p.ss58 == ss58)
        })
        .await
        {
            return (Some(t0.elapsed()), dials);
        }
    }
    (None, dials)
}

/// Measurement (not a pass/fail test): an attacker keeps every one of the target's
/// `max_connections` slots busy with silent sockets from several loopback addresses, reopening
/// each as soon as the target closes it; a registered peer dials the target meanwhile. Prints how
/// long the peer takes to be admitted with and without the attacker.
///
/// Run: `cargo test --all-features --test dos silent_sockets -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement for docs/BENCHMARKS.md"]
async fn silent_sockets_holding_every_slot_keep_a_registered_peer_out() {
    const SLOTS: u32 = 64;
    const PER_IP: u32 = 8;
    const ATTACK: Duration = Duration::from_secs(30);
    let chain = DevChainDir::new();
    let nodes: Vec<NodeDir> = (0..3).map(|_| NodeDir::new()).collect();
    for n in &nodes {
        chain.register(3, n, 1_000);
    }
    let timeout = std::env::var("HANDSHAKE_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(5), Duration::from_millis);
    let mut cfg = nodes[0].cluster_config(&chain, vec![3]);
    cfg.firewall.max_connections = SLOTS;
    cfg.firewall.max_conns_per_ip = PER_IP;
    cfg.firewall.handshake_timeout = HumanDuration(timeout);
    let trt = start(cfg).await;
    let sock = listen_socket(&trt).await;
    let taddr = addr(&trt).await;

    // Baseline: a registered peer dials a quiet target.
    let b1 = start(nodes[1].cluster_config(&chain, vec![3])).await;
    let t0 = Instant::now();
    b1.dial(taddr.clone()).await.unwrap();
    assert!(sees(&trt, &nodes[1].ss58).await);
    let quiet = t0.elapsed();

    // The attacker: SLOTS silent sockets from SLOTS / PER_IP addresses, each reopened at once.
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..SLOTS {
        let (stop, opened) = (stop.clone(), opened.clone());
        tasks.push(tokio::spawn(async move {
            let src: std::net::IpAddr = format!("127.0.0.{}", 2 + i / PER_IP).parse().unwrap();
            while !stop.load(Ordering::Relaxed) {
                let Ok(s) = tokio::net::TcpSocket::new_v4() else {
                    continue;
                };
                if s.bind(SocketAddr::new(src, 0)).is_err() {
                    continue;
                }
                let Ok(mut s) = s.connect(sock).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                opened.fetch_add(1, Ordering::Relaxed);
                let since = Instant::now();
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(Ok(0) | Err(_)) =
                        tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
                    {
                        break;
                    }
                }
                // Refused at once (every slot taken): retry gently, within the per-IP rate
                // limit, so the address is never rate-limited when a slot frees.
                if since.elapsed() < Duration::from_secs(1) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }));
    }
    // Let the attacker fill every slot.
    assert!(
        eventually(Duration::from_secs(20), || async {
            opened.load(Ordering::Relaxed) >= u64::from(SLOTS)
        })
        .await
    );
    let refused_before = denied(&trt, DenyReason::TooManyConnections).await;

    // A second registered peer dials every 250 ms while the attack lasts.
    let b2 = start(nodes[2].cluster_config(&chain, vec![3])).await;
    let t0 = Instant::now();
    let (admitted, dials) = dial_until_admitted(&b2, &trt, &nodes[2].ss58, ATTACK).await;
    let attack_secs = t0.elapsed().as_secs_f64();
    let opened_during = opened.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let refused = denied(&trt, DenyReason::TooManyConnections).await - refused_before;
    // After the attack: how long until the peer gets in.
    let after = if admitted.is_none() {
        let limit = Duration::from_secs(30);
        dial_until_admitted(&b2, &trt, &nodes[2].ss58, limit)
            .await
            .0
    } else {
        None
    };
    println!(
        "handshake_timeout {timeout:?}, max_connections {SLOTS}, {} attacker IPs\n\
         quiet target: registered peer admitted in {quiet:?}\n\
         under attack: admitted {admitted:?} after {dials} dials over {attack_secs:.1} s; \
         {refused} connections refused for too_many_connections; attacker opened {opened_during} silent \
         sockets ({:.1}/s)\n\
         after the attack stopped: admitted in {after:?}",
        SLOTS / PER_IP,
        opened_during as f64 / attack_secs,
    );
    for rt in [b1, b2, trt] {
        rt.shutdown().await.unwrap();
    }
}

/// Three registered nodes in subnet 3: the target T (configured by `tweak`), then A and X, both
/// bootstrapped to T and verified by it.
async fn trio(
    tweak: impl Fn(&mut hermes::Config),
) -> (DevChainDir, Vec<NodeDir>, Vec<hermes::RuntimeHandle>) {
    let chain = DevChainDir::new();
    let nodes: Vec<NodeDir> = (0..3).map(|_| NodeDir::new()).collect();
    for n in &nodes {
        chain.register(3, n, 1_000);
    }
    let mut cfg = nodes[0].cluster_config(&chain, vec![3]);
    tweak(&mut cfg);
    let t = start(cfg).await;
    let boot = addr(&t).await;
    let mut rts = vec![t];
    for n in &nodes[1..] {
        let rt = start(
            n.cluster_config(&chain, vec![3])
                .with_bootstrap(vec![boot.clone()]),
        )
        .await;
        assert!(sees(&rt, &nodes[0].ss58).await && sees(&rts[0], &n.ss58).await);
        rts.push(rt);
    }
    (chain, nodes, rts)
}

async fn rejected(rt: &hermes::RuntimeHandle, reason: hermes::proto::RejectReason) -> u64 {
    rt.message_stats().await.unwrap().rejected(reason)
}

/// One peer that sends faster than the application reads holds at most its byte budget of the
/// inbox (one message over at most), so another peer's message still gets in. Before the budget,
/// the first peer's messages filled all `inbox_capacity` slots and the second waited for the
/// application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_fill_the_inbox() {
    let (_chain, nodes, rts) = trio(|c| {
        c.messages.inbox_capacity = 16;
        c.messages.inbox_max_bytes_per_peer = hermes::config::ByteSize(64 << 10);
    })
    .await;
    let (t, a, x) = (&rts[0], &rts[1], &rts[2]);
    // X sends 40 messages of 16 KiB; T's application reads nothing.
    for _ in 0..40 {
        x.send(&nodes[0].ss58, 3, vec![7u8; 16 << 10])
            .await
            .unwrap();
    }
    assert!(
        eventually(Duration::from_secs(20), || async {
            t.message_stats().await.unwrap().received >= 4
        })
        .await
    );
    // A's message gets into the inbox although nobody reads it (it is acknowledged only once
    // the application takes it, so the inbox itself is what is checked).
    let me = a.identity().await.unwrap().ss58;
    a.send(&nodes[0].ss58, 3, b"mine".to_vec()).await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            let s = t.message_stats().await.unwrap();
            s.sessions.0 >= 2 && s.received >= 5
        })
        .await,
        "A's message never got into T's inbox"
    );
    let held = t.message_stats().await.unwrap().received;
    // X holds 64 KiB + one message at most: 5 of its messages, plus A's one.
    assert!(held <= 6, "{held} messages held");
    // In the inbox A's message stands behind X's few, not behind a full inbox of them (16).
    let mut inbox = t.subscribe().unwrap();
    let mut from_x = 0;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), inbox.recv())
            .await
            .expect("the inbox stopped delivering")
            .unwrap();
        if m.from == me {
            assert_eq!(m.bytes, b"mine");
            break;
        }
        from_x += 1;
    }
    assert!(from_x <= 8, "A's message came after {from_x} of X's");
    // Reading the inbox gives X's budget back and its messages keep flowing.
    let mut got = from_x + 1;
    while got < 41 {
        tokio::time::timeout(Duration::from_secs(20), inbox.recv())
            .await
            .expect("X's messages stopped flowing after the inbox was read")
            .unwrap();
        got += 1;
    }
    for rt in rts {
        rt.shutdown().await.unwrap();
    }
}

/// One peer cannot take every slot of `streams.max_incoming`: its streams beyond
/// `max_incoming_per_peer` are refused as busy, and another peer's stream is still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_take_every_incoming_stream_slot() {
    let (_chain, nodes, rts) = trio(|c| {
        c.streams.max_incoming = 4;
        c.streams.max_incoming_per_peer = 2;
    })
    .await;
    let (t, a, x) = (&rts[0], &rts[1], &rts[2]);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..4 {
        match x.open_stream(&nodes[0].ss58, 3).await {
            Ok(w) => held.push(w),
            Err(_) => refused += 1,
        }
    }
    assert_eq!((held.len(), refused), (2, 2));
    let w = a.open_stream(&nodes[0].ss58, 3).await;
    assert!(w.is_ok(), "another peer's stream was refused: {w:?}");
    // Taking X's streams gives its slots back.
    let mut incoming = t.incoming_streams().unwrap();
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(20), incoming.recv())
            .await
            .unwrap()
            .unwrap();
    }
    assert!(x.open_stream(&nodes[0].ss58, 3).await.is_ok());
    drop((held, w));
    for rt in rts {
        rt.shutdown().await.unwrap();
    }
}

/// A peer opening dozens of message substreams has those beyond its share dropped (counted as
/// `busy`) instead of each getting a task and a read buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_open_unbounded_substreams() {
    let (_chain, nodes, rts) = trio(|_| {}).await;
    let (t, x) = (&rts[0], &rts[2]);
    let before = rejected(t, hermes::proto::RejectReason::Busy).await;
    let mut subs = Vec::new();
    for _ in 0..48 {
        subs.push(x.debug_raw_substream(&nodes[0].ss58, true).await.unwrap());
    }
    assert!(
        eventually(Duration::from_secs(20), || async {
            rejected(t, hermes::proto::RejectReason::Busy).await >= before + 16
        })
        .await,
        "{} substreams dropped",
        rejected(t, hermes::proto::RejectReason::Busy).await - before
    );
    drop(subs);
    for rt in rts {
        rt.shutdown().await.unwrap();
    }
}

/// Real QUIC Initials (each from a fresh client connection attempt), captured so they can be
/// sent from another address, as an off-path attacker spoofing a victim's address would.
async fn captured_initials(n: usize) -> Vec<Vec<u8>> {
    let capture = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let target = capture.local_addr().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    roots
        .add(rustls::pki_types::CertificateDer::from(
            ck.cert.der().to_vec(),
        ))
        .unwrap();
    let client = quinn::ClientConfig::with_root_certificates(Arc::new(roots)).unwrap();
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    // Kept alive until every Initial is captured (a dropped attempt stops sending).
    let mut attempts = Vec::new();
    for _ in 0..n {
        attempts.push(
            ep.connect_with(client.clone(), target, "localhost")
                .unwrap(),
        );
    }
    let mut seen = std::collections::HashSet::new();
    let mut initials = Vec::new();
    let mut buf = vec![0u8; 65536];
    while initials.len() < n {
        let (len, _) = tokio::time::timeout(Duration::from_secs(20), capture.recv_from(&mut buf))
            .await
            .expect("the client sent no Initial")
            .unwrap();
        // A retransmission repeats its connection's destination connection id (after the
        // first byte, the 4-byte version and the id's length byte); keep one per connection.
        let dcid = buf[6..6 + usize::from(buf[5])].to_vec();
        if seen.insert(dcid) {
            initials.push(buf[..len].to_vec());
        }
    }
    drop(attempts);
    initials
}

/// QUIC Initials sent from an address that never answers (a spoofer does not see the replies)
/// are answered with a stateless Retry and never reach the per-IP limits: before address
/// validation, 60 of them drained the address's token bucket (burst 40), so the real owner of
/// the address would have been refused as `rate_limited`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_quic_initials_do_not_touch_the_per_ip_limits() {
    let chain = DevChainDir::new();
    let t = NodeDir::new();
    chain.register(3, &t, 1_000);
    let cfg = t
        .cluster_config(&chain, vec![3])
        .with_listen(vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()]);
    let trt = start(cfg).await;
    let target = listen_socket(&trt).await;
    let initials = captured_initials(60).await;
    // The "victim" address: 127.0.0.2. Replies go there and are never read.
    let spoofer = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    for d in &initials {
        spoofer.send_to(d, target).await.unwrap();
    }
    // The node answers every Initial (a Retry now; before, a handshake reply once its
    // upgrade ran): wait for the answers so that every Initial has been processed.
    let mut buf = vec![0u8; 65536];
    let mut answered = 0;
    while answered < initials.len() {
        match tokio::time::timeout(Duration::from_secs(5), spoofer.recv_from(&mut buf)).await {
            Ok(Ok(_)) => answered += 1,
            _ => break,
        }
    }
    let limited = trt
        .firewall_stats()
        .await
        .unwrap()
        .denied
        .iter()
        .filter(|(r, _)| matches!(r, DenyReason::RateLimited | DenyReason::TooManyFromIp))
        .map(|(_, n)| *n)
        .sum::<u64>();
    assert_eq!(
        limited, 0,
        "spoofed Initials were charged to 127.0.0.2 ({answered} answered)"
    );
    assert!(answered > 0, "the node never answered the Initials");
    trt.shutdown().await.unwrap();
}

/// A burst of TCP connections from one address beyond its rate: the surplus is reset at accept
/// (the client reads a reset, not a handshake) and each one is counted as `rate_limited`, while
/// a registered peer from another address still completes the full handshake and is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_over_the_rate_are_reset_and_counted_and_a_peer_still_gets_in() {
    const ATTEMPTS: usize = 24;
    let chain = DevChainDir::new();
    let (t, b) = (NodeDir::new(), NodeDir::new());
    chain.register(3, &t, 1_000);
    chain.register(3, &b, 1_000);
    let mut cfg = t.cluster_config(&chain, vec![3]);
    cfg.firewall.conn_rate_per_ip = 1;
    cfg.firewall.conn_burst_per_ip = 2;
    let trt = start(cfg).await;
    let sock = listen_socket(&trt).await;

    // Open every connection first (the kernel completes them before the node looks), from
    // 127.0.0.2 so that the registered peer's address keeps its tokens.
    let mut socks = Vec::new();
    let mut reset_early = 0u64;
    for _ in 0..ATTEMPTS {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        match s.connect(sock).await {
            Ok(c) => socks.push(c),
            // The accept thread may refuse it before `connect` has reported the handshake done.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => reset_early += 1,
            Err(e) => panic!("connect: {e}"),
        }
    }
    // A refused socket reads a reset at once; an admitted one hears nothing (the node waits
    // for the dialer to speak first) until the handshake timeout.
    let outcomes = futures::future::join_all(socks.iter_mut().map(|s| async move {
        let mut buf = [0u8; 16];
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Err(e)) => e.kind() == std::io::ErrorKind::ConnectionReset,
            _ => false,
        }
    }))
    .await;
    let resets = reset_early + outcomes.iter().filter(|r| **r).count() as u64;
    // Burst 2 plus at most a few tokens refilled at 1/s while the connections were opened.
    assert!(
        resets >= ATTEMPTS as u64 - 8,
        "only {resets} of {ATTEMPTS} connections over the rate were reset"
    );
    let limited = || async {
        trt.firewall_stats()
            .await
            .unwrap()
            .denied
            .iter()
            .filter(|(r, _)| *r == DenyReason::RateLimited)
            .map(|(_, n)| *n)
            .sum::<u64>()
    };
    assert_eq!(limited().await, resets, "each reset is counted once");
    drop(socks);

    let brt = start(b.cluster_config(&chain, vec![3])).await;
    brt.dial(addr(&trt).await).await.unwrap();
    assert!(
        sees(&trt, &b.ss58).await,
        "a registered peer was not admitted"
    );
    assert!(sees(&brt, &t.ss58).await);
    brt.shutdown().await.unwrap();
    trt.shutdown().await.unwrap();
}
