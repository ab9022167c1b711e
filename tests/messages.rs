//! End-to-end encrypted messages between nodes over loopback: real libp2p connections (TCP and
//! QUIC), a real dev chain, real sled databases and key files in temp dirs.

mod common;

use common::{addr, linked_pair, start, DevChainDir, NodeDir, TCP};
use hermes::DeliveryEvent;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Waits for the delivery event of `id`.
async fn delivered(
    events: &mut tokio::sync::broadcast::Receiver<DeliveryEvent>,
    id: hermes::MessageId,
) {
    let r = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await.unwrap() {
                DeliveryEvent::Delivered { id: got, .. } if got == id => return,
                _ => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "message {id} was not delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_messages_over_tcp() {
    let (_chain, na, nb, a, b) = linked_pair(TCP, |_| {}).await;
    let mut inbox = b.subscribe().unwrap();
    let mut events = a.delivery_events().unwrap();
    let id = a
        .send(&nb.ss58, 3, b"hello over e2e".to_vec())
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.bytes, b"hello over e2e");
    assert_eq!(got.id, id);
    assert_eq!(got.from, na.ss58);
    assert_eq!(got.netuid, 3);
    // Not acknowledged while the application holds it: the sender keeps it.
    assert!(a.outbox().await.unwrap().iter().any(|e| e.id == id));
    got.ack();
    delivered(&mut events, id).await;
    // And back.
    let mut inbox_a = a.subscribe().unwrap();
    let id2 = b.send(&na.ss58, 3, vec![7u8; 100_000]).await.unwrap();
    let got = tokio::time::timeout(WAIT, inbox_a.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, id2);
    assert_eq!(got.bytes, vec![7u8; 100_000]);
    let stats = a.message_stats().await.unwrap();
    assert_eq!(stats.sent, 1);
    assert_eq!(stats.received, 1);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_over_quic_too() {
    let (_chain, _na, nb, a, b) = linked_pair("/ip4/127.0.0.1/udp/0/quic-v1", |_| {}).await;
    assert!(addr(&a).await.to_string().contains("quic-v1"));
    let mut inbox = b.subscribe().unwrap();
    let mut ids = Vec::new();
    for i in 0..50u32 {
        ids.push(a.send(&nb.ss58, 3, i.to_le_bytes().to_vec()).await.unwrap());
    }
    for (i, id) in ids.iter().enumerate() {
        let got = tokio::time::timeout(WAIT, inbox.recv())
            .await
            .unwrap()
            .unwrap();
        // One link per destination and one substream: messages arrive in the order sent.
        assert_eq!(got.id, *id);
        assert_eq!(got.bytes, (i as u32).to_le_bytes());
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_in_two_subnets_and_the_subnet_rules() {
    // A serves subnet 3, C subnet 7, B both. B relays nothing: each pair talks directly.
    let chain = DevChainDir::new();
    let (na, nb, nc) = (NodeDir::new(), NodeDir::new(), NodeDir::new());
    chain.register(3, &na, 1_000);
    chain.register(3, &nb, 1_000);
    chain.register(7, &nb, 1_000);
    chain.register(7, &nc, 1_000);
    let b = start(nb.cluster_config(&chain, vec![3, 7])).await;
    let boot = addr(&b).await;
    let a = start(
        na.cluster_config(&chain, vec![3])
            .with_bootstrap(vec![boot.clone()]),
    )
    .await;
    let c = start(
        nc.cluster_config(&chain, vec![7])
            .with_bootstrap(vec![boot]),
    )
    .await;
    let (mut ib, mut ic) = (b.subscribe().unwrap(), c.subscribe().unwrap());
    a.send(&nb.ss58, 3, b"a to b on 3".to_vec()).await.unwrap();
    c.send(&nb.ss58, 7, b"c to b on 7".to_vec()).await.unwrap();
    b.send(&nc.ss58, 7, b"b to c on 7".to_vec()).await.unwrap();
    let mut at_b = Vec::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(WAIT, ib.recv())
            .await
            .unwrap()
            .unwrap();
        at_b.push((m.from, m.netuid, m.bytes));
    }
    at_b.sort();
    let mut want = vec![
        (na.ss58.clone(), 3, b"a to b on 3".to_vec()),
        (nc.ss58.clone(), 7, b"c to b on 7".to_vec()),
    ];
    want.sort();
    assert_eq!(at_b, want);
    let m = tokio::time::timeout(WAIT, ic.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((m.from.as_str(), m.netuid), (nb.ss58.as_str(), 7));

    // A is registered only in subnet 3: a message it sends B on subnet 7 is refused for good.
    let mut events = a.delivery_events().unwrap();
    let id = a.send(&nb.ss58, 7, b"wrong subnet".to_vec()).await.unwrap();
    let ev = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await.unwrap() {
                DeliveryEvent::Failed {
                    id: got, reason, ..
                } if got == id => return reason,
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(ev, "out_of_scope");
    assert_eq!(
        b.message_stats()
            .await
            .unwrap()
            .rejected(hermes::proto::RejectReason::OutOfScope),
        1
    );
    for rt in [a, b, c] {
        rt.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sends_fail_at_once_with_a_clear_error() {
    let chain = DevChainDir::new();
    let na = NodeDir::new();
    chain.register(3, &na, 1_000);
    let mut cfg = na.cluster_config(&chain, vec![3]);
    cfg.messages.max_size = hermes::config::ByteSize(1000);
    let a = start(cfg).await;
    let nb = NodeDir::new();
    let err = a.send(&nb.ss58, 3, vec![0u8; 1001]).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("1001 bytes exceeds the maximum of 1000 bytes"),
        "{err}"
    );
    let err = a.send("not-an-address", 3, vec![1]).await.unwrap_err();
    assert!(
        err.to_string().contains("not a valid SS58 address"),
        "{err}"
    );
    let err = a.send(&na.ss58, 3, vec![1]).await.unwrap_err();
    assert!(err.to_string().contains("own hotkey"), "{err}");
    // Nothing was queued by the refused calls.
    assert!(a.outbox().await.unwrap().is_empty());
    // The inbox has one consumer at a time, and is handed back when dropped.
    let inbox = a.subscribe().unwrap();
    assert!(a.subscribe().is_err());
    drop(inbox);
    assert!(a.subscribe().is_ok());
    a.shutdown().await.unwrap();
}

/// A panic in the stream layer of either node costs the request that panicked, not the data
/// plane: the StreamActor restarts under supervision (same address), reloads its outbox and
/// seen-set, and messages keep flowing both ways, exactly once.
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_layer_survives_a_panic_on_either_side() {
    let (_chain, na, nb, a, b) = linked_pair(TCP, |_| {}).await;
    let mut inbox_a = a.subscribe().unwrap();
    let mut inbox_b = b.subscribe().unwrap();
    let mut n = 0u32;
    // One round trip per step: before any fault, after the receiver's, after the sender's.
    for fault in [None, Some(&b), Some(&a)] {
        if let Some(rt) = fault {
            let err = rt.inject_stream_panic().await.unwrap_err().to_string();
            assert!(err.contains("crashed"), "{err}");
        }
        n += 1;
        let body = n.to_le_bytes().to_vec();
        let id = a.send(&nb.ss58, 3, body.clone()).await.unwrap();
        let got = tokio::time::timeout(WAIT, inbox_b.recv())
            .await
            .expect("a to b stalled")
            .unwrap();
        assert_eq!((got.id, got.bytes), (id, body.clone()));
        let id = b.send(&na.ss58, 3, body.clone()).await.unwrap();
        let got = tokio::time::timeout(WAIT, inbox_a.recv())
            .await
            .expect("b to a stalled")
            .unwrap();
        assert_eq!((got.id, got.bytes), (id, body));
    }
    // Nothing was delivered twice, and the counters lived through the restarts.
    assert!(inbox_a.try_recv().is_none());
    assert!(inbox_b.try_recv().is_none());
    for rt in [&a, &b] {
        assert_eq!(rt.message_stats().await.unwrap().received, 3);
    }
}
