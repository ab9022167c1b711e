//! The Sync Engine between real nodes on loopback: offers served by the embedded store over
//! `/hermes/sync/1`, tickets delivered as messages, verified downloads, and every refusal.

mod common;

use common::{eventually, linked_pair, start, NodeDir, TCP};
use hermes::sync::{Direction, OfferOptions, State, Ticket};
use hermes::RuntimeHandle;
use std::path::Path;
use std::time::Duration;

const MIB: usize = 1 << 20;

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn small_chunks(c: &mut hermes::Config) {
    c.sync.chunk_size = hermes::config::ByteSize(MIB as u64);
}

/// The ticket as the receiver gets it: an end-to-end message in its inbox.
async fn ticket_from_inbox(rt: &RuntimeHandle) -> Ticket {
    let mut inbox = rt.subscribe().unwrap();
    let m = tokio::time::timeout(Duration::from_secs(30), inbox.recv())
        .await
        .expect("the ticket message arrives")
        .expect("inbox open");
    hermes::sync::ticket_in_message(&m.bytes)
        .expect("the message is a ticket")
        .expect("the ticket parses")
}

async fn fetch_to(rt: &RuntimeHandle, t: &Ticket, dest: &Path) -> Result<(), String> {
    let tr = rt
        .fetch(&t.to_string(), dest)
        .await
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(120), tr.wait())
        .await
        .expect("the download ends")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_moves_byte_exact_and_the_ticket_arrives_as_a_message() {
    let (_chain, _na, nb, a, b) = linked_pair(TCP, small_chunks).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("weights.bin");
    let data = payload(5 * MIB + 12_345, 7);
    std::fs::write(&src, &data).unwrap();

    let ticket = a
        .offer(&src, &nb.ss58, 3, OfferOptions::default())
        .await
        .expect("offer");
    assert_eq!(ticket.body.layout.size(), data.len() as u64);
    assert_eq!(ticket.body.file_name.as_deref(), Some("weights.bin"));

    let got = ticket_from_inbox(&b).await;
    assert_eq!(got, ticket, "the delivered ticket is the one issued");
    let dest = dir.path().join("out.bin");
    fetch_to(&b, &got, &dest).await.expect("download");
    assert!(std::fs::read(&dest).unwrap() == data, "byte-exact");
    assert!(!dir.path().join("out.bin.partial").exists());

    // Both sides list the transfer; the download is done, the offer has served every chunk.
    let mine = b.transfers().await.unwrap();
    let d = mine
        .iter()
        .find(|t| t.id == ticket.body.transfer_id)
        .unwrap();
    assert_eq!(d.direction, Direction::Download);
    assert_eq!(d.state, State::Done);
    assert_eq!(d.done_bytes, data.len() as u64);
    let theirs = a.transfers().await.unwrap();
    let o = theirs
        .iter()
        .find(|t| t.id == ticket.body.transfer_id)
        .unwrap();
    assert_eq!(o.direction, Direction::Offer);
    assert_eq!(o.state, State::Serving);
    assert!(o.done_bytes >= ticket.body.layout.sealed_size());

    // Fetching the same ticket into an existing file is refused; nothing is overwritten.
    let again = b.fetch(&ticket.to_string(), &dest).await;
    assert!(again.unwrap_err().to_string().contains("exists already"));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_moves_over_quic_too() {
    let (_chain, _na, nb, a, b) = linked_pair("/ip4/127.0.0.1/udp/0/quic-v1", small_chunks).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ckpt");
    let data = payload(3 * MIB, 9);
    std::fs::write(&src, &data).unwrap();
    let opts = OfferOptions {
        no_delivery: true,
        ..OfferOptions::default()
    };
    let ticket = a.offer(&src, &nb.ss58, 3, opts).await.unwrap();
    let dest = dir.path().join("got");
    fetch_to(&b, &ticket, &dest).await.expect("download");
    assert!(std::fs::read(&dest).unwrap() == data);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tickets_are_refused_with_the_reason() {
    let (chain, _na, nb, a, b) = linked_pair(TCP, small_chunks).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    std::fs::write(&src, payload(2 * MIB, 1)).unwrap();
    let no_msg = OfferOptions {
        no_delivery: true,
        ..OfferOptions::default()
    };
    let ticket = a.offer(&src, &nb.ss58, 3, no_msg.clone()).await.unwrap();
    let text = ticket.to_string();

    // A third registered node holding a copy of the ticket: not for it.
    let nc = NodeDir::new();
    chain.register(3, &nc, 1_000);
    let mut cfg = nc.cluster_config(&chain, vec![3]);
    small_chunks(&mut cfg);
    let c = start(cfg.with_bootstrap(vec![common::addr(&a).await])).await;
    let e = c.fetch(&text, dir.path().join("c")).await.unwrap_err();
    assert!(e.to_string().contains("not for this node"), "{e}");

    // Tampered: one character of the string changed.
    let mut chars: Vec<char> = text.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
    let tampered: String = chars.into_iter().collect();
    let e = b.fetch(&tampered, dir.path().join("t")).await.unwrap_err();
    assert!(
        e.to_string().contains("signature") || e.to_string().contains("damaged"),
        "{e}"
    );
    // Cut short while copying.
    let e = b
        .fetch(&text[..text.len() - 40], dir.path().join("s"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    // Not a ticket at all.
    let e = b.fetch("hello", dir.path().join("h")).await.unwrap_err();
    assert!(e.to_string().contains("not a Hermes ticket"), "{e}");

    // Expired: a ticket valid for one second, fetched after it lapsed.
    let short = OfferOptions {
        ttl: Some(Duration::from_secs(1)),
        ..no_msg.clone()
    };
    let t1 = a.offer(&src, &nb.ss58, 3, short).await.unwrap();
    let expires = t1.body.expires_at;
    assert!(
        eventually(Duration::from_secs(5), || async {
            common::unix_now() >= expires
        })
        .await
    );
    let e = b
        .fetch(&t1.to_string(), dir.path().join("x"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");

    // Revoked before the receiver came: the sender's node refuses every chunk, and says so.
    let t2 = a.offer(&src, &nb.ss58, 3, no_msg.clone()).await.unwrap();
    let info = a.revoke(t2.body.transfer_id).await.unwrap();
    assert_eq!(info.state, State::Revoked);
    let dest = dir.path().join("r");
    let e = fetch_to(&b, &t2, &dest).await.unwrap_err();
    assert!(e.contains("the sender revoked this transfer"), "{e}");
    assert!(!dest.exists(), "nothing lands at the destination");

    // Changed after the offer: refused before any byte of it leaves.
    let src2 = dir.path().join("g");
    std::fs::write(&src2, payload(2 * MIB, 2)).unwrap();
    let t3 = a.offer(&src2, &nb.ss58, 3, no_msg).await.unwrap();
    std::fs::write(&src2, payload(2 * MIB, 3)).unwrap();
    let dest = dir.path().join("g-out");
    let e = fetch_to(&b, &t3, &dest).await.unwrap_err();
    assert!(e.contains("changed"), "{e}");
    assert!(!dest.exists());
    for rt in [a, b, c] {
        rt.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_survive_a_restart_of_the_sender() {
    let (chain, na, nb, a, b) = linked_pair(TCP, small_chunks).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("f");
    let data = payload(2 * MIB + 3, 4);
    std::fs::write(&src, &data).unwrap();
    let opts = OfferOptions {
        no_delivery: true,
        ..OfferOptions::default()
    };
    let ticket = a.offer(&src, &nb.ss58, 3, opts).await.unwrap();
    let boot = common::addr(&b).await;
    a.shutdown().await.unwrap();

    // The sender comes back (its records in sled) and serves the same ticket.
    let mut cfg = na
        .cluster_config(&chain, vec![3])
        .with_bootstrap(vec![boot]);
    small_chunks(&mut cfg);
    let a = start(cfg).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            a.transfers()
                .await
                .unwrap()
                .iter()
                .any(|t| t.id == ticket.body.transfer_id && t.state == State::Serving)
        })
        .await
    );
    let dest = dir.path().join("out");
    fetch_to(&b, &ticket, &dest)
        .await
        .expect("download after restart");
    assert!(std::fs::read(&dest).unwrap() == data);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
