//! End-to-end encrypted streams between nodes over loopback (TCP and QUIC).

mod common;

use common::{eventually, linked_pair, TCP};
use futures::{AsyncReadExt, AsyncWriteExt};
use hermes::RuntimeHandle;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_arrives_whole_and_is_confirmed() {
    let (_chain, na, nb, a, b) = linked_pair(TCP, |_| {}).await;
    let mut incoming = b.incoming_streams().unwrap();
    let data = pattern(5 << 20 | 12345, 9);
    let sender = {
        let a = a.clone();
        let to = nb.ss58.clone();
        let data = data.clone();
        tokio::spawn(async move {
            let mut w = a.open_stream(&to, 3).await.unwrap();
            for part in data.chunks(100_003) {
                w.write_all(part).await.unwrap();
            }
            w.finish().await.unwrap()
        })
    };
    let mut s = tokio::time::timeout(WAIT, incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.from, na.ss58);
    assert_eq!(s.netuid, 3);
    assert!(s.e2e);
    let mut got = Vec::new();
    s.reader.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    let report = tokio::time::timeout(WAIT, sender).await.unwrap().unwrap();
    assert_eq!(report.bytes, data.len() as u64);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_cross_quic_both_ways_at_once() {
    let (_chain, na, nb, a, b) = linked_pair("/ip4/127.0.0.1/udp/0/quic-v1", |_| {}).await;
    let (mut ia, mut ib) = (a.incoming_streams().unwrap(), b.incoming_streams().unwrap());
    let send = |from: RuntimeHandle, to: String, data: Vec<u8>| {
        tokio::spawn(async move {
            let mut w = from.open_stream(&to, 3).await.unwrap();
            w.write_all(&data).await.unwrap();
            w.finish().await.unwrap().bytes
        })
    };
    let (d1, d2) = (pattern(3 << 20, 1), pattern((2 << 20) + 7, 2));
    let t1 = send(a.clone(), nb.ss58.clone(), d1.clone());
    let t2 = send(b.clone(), na.ss58.clone(), d2.clone());
    let mut s1 = tokio::time::timeout(WAIT, ib.recv())
        .await
        .unwrap()
        .unwrap();
    let mut s2 = tokio::time::timeout(WAIT, ia.recv())
        .await
        .unwrap()
        .unwrap();
    let (mut g1, mut g2) = (Vec::new(), Vec::new());
    let (r1, r2) = tokio::join!(
        s1.reader.read_to_end(&mut g1),
        s2.reader.read_to_end(&mut g2)
    );
    r1.unwrap();
    r2.unwrap();
    assert!(g1 == d1 && g2 == d2);
    assert_eq!(t1.await.unwrap(), d1.len() as u64);
    assert_eq!(t2.await.unwrap(), d2.len() as u64);
    let stats = b.message_stats().await.unwrap();
    assert_eq!(stats.streams, (1, 1));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_does_not_read_holds_the_writer_back() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let (_chain, _na, nb, a, b) = linked_pair(TCP, |_| {}).await;
    let mut incoming = b.incoming_streams().unwrap();
    let total = 256u64 << 20;
    let progress = Arc::new(AtomicU64::new(0));
    let writer = {
        let (a, to, progress) = (a.clone(), nb.ss58.clone(), progress.clone());
        tokio::spawn(async move {
            let mut w = a.open_stream(&to, 3).await.unwrap();
            let block = vec![0xabu8; 64 << 10];
            while progress.load(Ordering::Relaxed) < total {
                w.write_all(&block).await.unwrap();
                progress.fetch_add(block.len() as u64, Ordering::Relaxed);
            }
            w.finish().await.unwrap().bytes
        })
    };
    let mut s = tokio::time::timeout(WAIT, incoming.recv())
        .await
        .unwrap()
        .unwrap();
    // Nobody reads: the writer must stall, with only a few chunks and the transport's window
    // in flight. Wait until its progress stops moving.
    let mut last = u64::MAX;
    let mut still = 0;
    assert!(
        eventually(WAIT, || {
            let now = progress.load(Ordering::Relaxed);
            still = if now == last { still + 1 } else { 0 };
            last = now;
            async move { still >= 25 }
        })
        .await
    );
    let stalled_at = progress.load(Ordering::Relaxed);
    assert!(
        stalled_at < 32 << 20,
        "the writer got {stalled_at} bytes ahead of a reader that read nothing"
    );
    // Reading releases it, and everything arrives.
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = s.reader.read(&mut buf).await.unwrap();
        if k == 0 {
            break;
        }
        assert!(buf[..k].iter().all(|x| *x == 0xab));
        n += k as u64;
    }
    assert_eq!(n, total);
    assert_eq!(
        tokio::time::timeout(WAIT, writer).await.unwrap().unwrap(),
        total
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_streams_need_the_recipients_consent() {
    let (_chain, _na, nb, a, b) = linked_pair(TCP, |_| {}).await;
    let _incoming = b.incoming_streams().unwrap();
    let opts = hermes::StreamOptions {
        e2e: false,
        chunk_size: 64 << 10,
        name: None,
    };
    let err = a
        .open_stream_with(&nb.ss58, 3, opts.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let (_chain, _na, nb, a, b) = linked_pair(TCP, |c| c.streams.allow_plaintext = true).await;
    let mut incoming = b.incoming_streams().unwrap();
    let mut w = a.open_stream_with(&nb.ss58, 3, opts).await.unwrap();
    w.write_all(b"in the clear, inside the transport")
        .await
        .unwrap();
    let report = tokio::spawn(w.finish());
    let mut s = tokio::time::timeout(WAIT, incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!s.e2e);
    let mut got = Vec::new();
    s.reader.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"in the clear, inside the transport");
    assert_eq!(report.await.unwrap().unwrap().bytes, got.len() as u64);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
