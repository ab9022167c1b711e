//! End-to-end encrypted messages between nodes over loopback: real libp2p connections (TCP and
//! QUIC), a real dev chain, real sled databases and key files in temp dirs.

mod common;

use common::{eventually, DevChainDir, NodeDir};
use hermes::{Config, DeliveryEvent, Runtime, RuntimeHandle};
use libp2p::Multiaddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn start(cfg: Config) -> RuntimeHandle {
    Runtime::builder(cfg).start().await.expect("start")
}

async fn addr(rt: &RuntimeHandle) -> Multiaddr {
    assert!(
        eventually(WAIT, || async {
            !rt.listen_addrs().await.unwrap().is_empty()
        })
        .await
    );
    rt.listen_addrs().await.unwrap()[0].clone()
}

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
    let chain = DevChainDir::new();
    let (na, nb) = (NodeDir::new(), NodeDir::new());
    chain.register(3, &na, 1_000);
    chain.register(3, &nb, 1_000);
    let a = start(na.cluster_config(&chain, vec![3])).await;
    let boot = addr(&a).await;
    let b = start(
        nb.cluster_config(&chain, vec![3])
            .with_bootstrap(vec![boot]),
    )
    .await;
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
