//! Delivery guarantees at the receiving application: a message is acknowledged when the
//! application is done with it, and reaches it exactly once across receiver crashes (a real
//! receiver process killed with SIGKILL at random points while a sender streams numbered
//! messages to it).
//!
//! The receiving application is `hermes listen --json` (which acknowledges each message once its
//! line is written) feeding a slow consumer that appends each line to a file and fsyncs it; the
//! consumer outlives the kills, and the node acknowledges to the sender only after the
//! application's acknowledgement is durable. The consumer being slow matters: the inbox and the
//! pipe fill up, so a node that acknowledged what merely sat in its inbox loses those messages
//! when it is killed. `docs/SECURITY.md` states what that guarantees:
//! every message reaches the application at least once, and any second copy (a crash in the few
//! milliseconds between the application's acknowledgement and its flush) carries the same id,
//! so an application that keeps ids with its results sees each message exactly once. The test
//! checks exactly that on the file: every number present, each number under one id only.

mod common;

use common::{linked_pair, DevChainDir, NodeDir, TCP};
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Messages streamed.
const MESSAGES: usize = 600;
/// Receiver crashes.
const KILLS: usize = 4;
/// Bound on the whole exchange.
const LIMIT: Duration = Duration::from_secs(50);

/// Waits for the delivery event of `id`.
async fn delivered(
    events: &mut tokio::sync::broadcast::Receiver<hermes::DeliveryEvent>,
    id: hermes::MessageId,
) {
    let r = tokio::time::timeout(LIMIT, async {
        loop {
            match events.recv().await.unwrap() {
                hermes::DeliveryEvent::Delivered { id: got, .. } if got == id => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "message {id} was not delivered");
}

/// SplitMix64 seeded from the clock: kill points differ between runs (the seed is printed).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A child killed if the test ends without stopping it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// (number, id) of every complete line the receiving application wrote. The file is read while
/// the consumer thread appends to it, so a last line without its newline is still being written
/// and is left for the next read.
fn received(out: &std::path::Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    let mut got = Vec::new();
    for line in complete.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let n = v["text"]
            .as_str()
            .and_then(|t| t.strip_prefix("n:"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a numbered message: {line}"));
        got.push((n, v["id"].as_str().unwrap_or_default().to_string()));
    }
    got
}

fn distinct(got: &[(usize, String)]) -> usize {
    got.iter().map(|(n, _)| *n).collect::<BTreeSet<_>>().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_the_application_once_across_receiver_kills() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    println!("seed {seed}");
    let mut rng = Rng(seed);

    let chain = DevChainDir::new();
    let (rx_node, tx_node) = (NodeDir::new(), NodeDir::new());
    chain.register(3, &rx_node, 1_000);
    chain.register(3, &tx_node, 1_000);
    // The receiver comes back on the same port after each kill, so the sender finds it again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let rx_addr: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    let rx_cfg = rx_node
        .cluster_config(&chain, vec![3])
        .with_listen(vec![rx_addr.clone()]);
    let rx_cfg_path = rx_node.path().join("receiver.json");
    std::fs::write(&rx_cfg_path, rx_cfg.to_pretty_json()).unwrap();
    let out = rx_node.path().join("received.jsonl");

    // The receiver, and the consumer of its output: every line appended to `out` and fsynced
    // before the next is read. The consumer ends when the receiver's stdout closes.
    let spawn_receiver = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hermes"))
            .args(["listen", "--json", "--config"])
            .arg(&rx_cfg_path)
            .env_remove("HERMES_HOTKEY_URI")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let out = out.clone();
        let consumer = std::thread::spawn(move || {
            use std::io::{BufRead, Write};
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&out)
                .unwrap();
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                file.write_all(format!("{line}\n").as_bytes()).unwrap();
                file.sync_data().unwrap();
            }
        });
        (Running(child), consumer)
    };
    let (mut receiver, mut consumer) = spawn_receiver();

    let mut tx_cfg = tx_node
        .cluster_config(&chain, vec![3])
        .with_bootstrap(vec![rx_addr]);
    tx_cfg.messages.retry_min = hermes::config::HumanDuration(Duration::from_millis(50));
    tx_cfg.messages.retry_max = hermes::config::HumanDuration(Duration::from_millis(300));
    let sender = common::start(tx_cfg).await;
    for i in 0..MESSAGES {
        sender
            .send(&rx_node.ss58, 3, format!("n:{i}").into_bytes())
            .await
            .unwrap();
    }

    // Kill points: after this many distinct numbers have reached the file, in increasing order.
    let mut points: Vec<usize> = (0..KILLS)
        .map(|_| 1 + (rng.next() as usize) % (MESSAGES - 1))
        .collect();
    points.sort_unstable();
    println!("kill points {points:?}");
    let start = Instant::now();
    let mut kills = 0;
    for at in points {
        while distinct(&received(&out)) < at {
            assert!(
                start.elapsed() < LIMIT,
                "only {} of {MESSAGES} arrived",
                distinct(&received(&out))
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        receiver.0.kill().unwrap();
        receiver.0.wait().unwrap();
        // What the killed receiver had written out is still recorded.
        consumer.join().unwrap();
        kills += 1;
        (receiver, consumer) = spawn_receiver();
    }
    assert_eq!(kills, KILLS);

    // Everything arrives, and the sender holds nothing any more: every message acknowledged.
    let done = common::eventually(LIMIT.saturating_sub(start.elapsed()), || async {
        distinct(&received(&out)) == MESSAGES && sender.outbox().await.unwrap().is_empty()
    })
    .await;
    let got = received(&out);
    let mut ids: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (n, id) in &got {
        ids.entry(*n).or_default().insert(id.clone());
    }
    let missing: Vec<usize> = (0..MESSAGES).filter(|n| !ids.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "lost across {kills} kills (seed {seed}): {missing:?}"
    );
    for (n, set) in &ids {
        assert_eq!(set.len(), 1, "message {n} arrived under two ids: {set:?}");
    }
    assert!(
        done,
        "the sender still holds {:?}",
        sender.outbox().await.unwrap()
    );
    let copies = got.len() - MESSAGES;
    println!("{MESSAGES} messages, {kills} kills, {copies} second copies (same id)");
    sender.shutdown().await.unwrap();
    drop(receiver);
    consumer.join().unwrap();
}

/// A message is acknowledged to its sender when the receiving application is done with it, not
/// when it reaches the inbox, and one the application holds on to does not hold back the
/// acknowledgements of those after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_when_the_application_is_done_in_any_order() {
    let (_chain, _na, nb, a, b) = linked_pair(TCP, |_| {}).await;
    let mut inbox = b.subscribe().unwrap();
    let mut events = a.delivery_events().unwrap();
    let first = a.send(&nb.ss58, 3, b"held".to_vec()).await.unwrap();
    let second = a.send(&nb.ss58, 3, b"done".to_vec()).await.unwrap();
    let held = tokio::time::timeout(LIMIT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    let done = tokio::time::timeout(LIMIT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((held.id, done.id), (first, second));
    done.ack();
    delivered(&mut events, second).await;
    // The first is still with the application: its sender keeps it.
    let kept: Vec<_> = a.outbox().await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(kept, vec![first]);
    drop(held);
    delivered(&mut events, first).await;
    assert!(a.outbox().await.unwrap().is_empty());
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
