//! End-to-end encrypted streams between nodes over loopback (TCP and QUIC).

mod common;

use common::{eventually, DevChainDir, NodeDir};
use futures::{AsyncReadExt, AsyncWriteExt};
use hermes::{Config, Runtime, RuntimeHandle};
use libp2p::Multiaddr;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

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

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_arrives_whole_and_is_confirmed() {
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
