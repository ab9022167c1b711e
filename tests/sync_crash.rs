//! The receiving node (`hermes run`) killed with SIGKILL halfway through a download it was asked
//! for with `hermes fetch`, then `hermes fetch` run again with the same ticket: the download
//! resumes from its journal (chunks written before the kill are not fetched again, beyond the few
//! in flight) and the file ends byte-exact.

mod common;

use common::{DevChainDir, NodeDir};
use hermes::proto::sync::Journal;
use hermes::sync::OfferOptions;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
/// Payload: enough 1 MiB chunks that the kill lands mid-way on any machine.
const CHUNKS: usize = 192;

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn journal(dest: &std::path::Path) -> Option<Journal> {
    let mut p = dest.as_os_str().to_owned();
    p.push(".partial.journal");
    Journal::decode(&std::fs::read(p).ok()?).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_fetch_resumes_from_its_journal_and_ends_byte_exact() {
    let chain = DevChainDir::new();
    let (tx_node, rx_node) = (NodeDir::new(), NodeDir::new());
    chain.register(3, &tx_node, 1_000);
    chain.register(3, &rx_node, 1_000);
    let mut tx_cfg = tx_node
        .cluster_config(&chain, vec![3])
        .with_listen(vec![common::TCP.parse().unwrap()]);
    tx_cfg.sync.chunk_size = hermes::config::ByteSize(MIB as u64);
    let sender = common::start(tx_cfg).await;
    let boot = common::addr(&sender).await;

    let mut rx_cfg = rx_node
        .cluster_config(&chain, vec![3])
        .with_bootstrap(vec![boot]);
    // One fetch at a time: the kill then finds a partial file with a known, small amount in
    // flight.
    rx_cfg.sync.parallelism = 2;
    let rx_cfg_path = rx_node.path().join("receiver.json");
    std::fs::write(&rx_cfg_path, rx_cfg.to_pretty_json()).unwrap();
    let mut node = Running(
        Command::new(env!("CARGO_BIN_EXE_hermes"))
            .args(["run", "--config"])
            .arg(&rx_cfg_path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        common::sees(&sender, &rx_node.ss58).await,
        "the receiver never came up"
    );

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ckpt.bin");
    let data: Vec<u8> = (0..CHUNKS * MIB)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect();
    std::fs::write(&src, &data).unwrap();
    let opts = OfferOptions {
        no_delivery: true,
        ..OfferOptions::default()
    };
    let ticket = sender
        .offer(&src, &rx_node.ss58, 3, opts)
        .await
        .unwrap()
        .to_string();
    let dest = dir.path().join("got.bin");
    let fetch = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hermes"));
        c.args(["fetch", "--config"])
            .arg(&rx_cfg_path)
            .arg(&ticket)
            .arg("--out")
            .arg(&dest)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };

    // The running node downloads (asked through its control socket); kill the node once a third
    // of the chunks are journaled (durably in the partial file).
    let _client = Running(fetch().spawn().unwrap());
    let end = Instant::now() + Duration::from_secs(120);
    let before = loop {
        if let Some(j) = journal(&dest) {
            if j.done_chunks() >= (CHUNKS / 3) as u64 {
                break j;
            }
        }
        assert!(
            node.0.try_wait().unwrap().is_none(),
            "the receiving node exited"
        );
        assert!(
            Instant::now() < end,
            "the download never got a third of the way"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    node.0.kill().unwrap();
    node.0.wait().unwrap();
    let killed_at = journal(&dest).unwrap();
    assert!(killed_at.done_chunks() >= before.done_chunks());
    assert!(
        !killed_at.is_complete(),
        "the kill came after the end; nothing to resume"
    );
    assert!(
        !dest.exists(),
        "no file at the destination before it is complete"
    );
    let served_before = served(&sender, &ticket).await;

    // Run again with the same ticket (the node is down, so the command starts it): it resumes,
    // and only the missing chunks (plus at most the
    // few that were in flight and not yet journaled) are fetched.
    let out = fetch().output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&dest).unwrap() == data,
        "byte-exact after resume"
    );
    let served_after = served(&sender, &ticket).await;
    let refetched = (served_after - served_before) as usize;
    let missing = CHUNKS - killed_at.done_chunks() as usize;
    // Fetched again at most: the `parallelism` (2) in flight at the kill and the two unjournaled
    // batches of ⌈2 / 2⌉ (see the design's resume section); and the sender may count up to 2
    // answers it was still writing to the killed node after `served_before` was read.
    let slack = 2 + 2 + 2;
    assert!(
        refetched <= missing + slack,
        "fetched {refetched} chunks after the restart; {missing} were missing"
    );
    sender.shutdown().await.unwrap();
}

/// Chunks the sender has served for the ticket's transfer so far.
async fn served(sender: &hermes::RuntimeHandle, ticket: &str) -> u64 {
    let t = hermes::sync::Ticket::parse(ticket).unwrap();
    let sealed = u64::from(t.body.layout.chunk_size()) + 16;
    let info = sender
        .transfers()
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.id == t.body.transfer_id)
        .unwrap();
    info.done_bytes / sealed
}
