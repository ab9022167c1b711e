//! Recipients that cannot be reached, on real nodes: the sender says why in words (unknown
//! address, our connection refused, recipient offline) without the remote's reason, keeps the
//! message in its outbox with that reason, and can cancel it.

mod common;

use common::{addr, start, DevChainDir, NodeDir};
use hermes::{Config, Error, StreamError};
use std::time::Duration;

/// An SS58 address no chain here registers (the well-known development key `//Alice`).
const NOBODY: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";

fn quick(mut c: Config) -> Config {
    // The reason is known once the first attempt gives up; a short attempt keeps tests short.
    c.messages.connect_timeout = hermes::config::HumanDuration(Duration::from_secs(1));
    c.messages.retry_min = hermes::config::HumanDuration(Duration::from_millis(50));
    c.messages.retry_max = hermes::config::HumanDuration(Duration::from_millis(200));
    c
}

/// Waits until the outbox entry for `to` carries a reason, and returns it.
async fn last_error(rt: &hermes::RuntimeHandle, to: &str) -> String {
    let reason = || async {
        rt.outbox()
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.to == to)
            .and_then(|e| e.last_error)
    };
    assert!(
        common::eventually(Duration::from_secs(20), || async {
            reason().await.is_some()
        })
        .await,
        "no reason recorded for {to}"
    );
    reason().await.unwrap_or_default()
}

fn assert_no_debug_dump(text: &str) {
    for leak in ["NotFound {", "Key(", "key:", "closest_peers"] {
        assert!(!text.contains(leak), "raw debug output in: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_to_an_unknown_address_fails_with_words() {
    let chain = DevChainDir::new();
    let na = NodeDir::new();
    chain.register(3, &na, 1_000);
    let a = start(quick(na.cluster_config(&chain, vec![3]))).await;
    let err = a.open_stream(NOBODY, 3).await.unwrap_err();
    assert!(
        matches!(err, Error::Stream(StreamError::Unreachable(_))),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("cannot reach {NOBODY}: unknown address")),
        "{text}"
    );
    assert_no_debug_dump(&text);
    // A DHT lookup by address says the same in words.
    let text = a.find(NOBODY).await.unwrap_err().to_string();
    assert!(text.contains("no node has published a binding"), "{text}");
    assert_no_debug_dump(&text);
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_messages_carry_the_reason_and_can_be_cancelled() {
    let chain = DevChainDir::new();
    let (na, offline) = (NodeDir::new(), NodeDir::new());
    chain.register(3, &na, 1_000);
    // Registered, but its node never runs.
    chain.register(3, &offline, 1_000);
    let a = start(quick(na.cluster_config(&chain, vec![3]))).await;
    let unknown = a.send(NOBODY, 3, b"to nobody".to_vec()).await.unwrap();
    let waiting = a
        .send(&offline.ss58, 3, b"for later".to_vec())
        .await
        .unwrap();
    let why = last_error(&a, NOBODY).await;
    assert!(why.starts_with("unknown address"), "{why}");
    assert_no_debug_dump(&why);
    let why = last_error(&a, &offline.ss58).await;
    assert!(why.starts_with("recipient offline"), "{why}");

    // Cancelling drops exactly that message, once.
    let gone = a.cancel(unknown).await.unwrap();
    assert_eq!((gone.id, gone.to.as_str(), gone.len), (unknown, NOBODY, 9));
    let left: Vec<_> = a.outbox().await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(left, vec![waiting]);
    match a.cancel(unknown).await {
        Err(Error::Stream(StreamError::NotInOutbox(id))) => assert_eq!(id, unknown),
        other => panic!("expected NotInOutbox, got {other:?}"),
    }
    // The cancellation survives a restart.
    a.shutdown().await.unwrap();
    let a = start(quick(na.cluster_config(&chain, vec![3]))).await;
    let left: Vec<_> = a.outbox().await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(left, vec![waiting]);
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recipient_that_refuses_us_is_reported_without_its_reason() {
    let chain = DevChainDir::new();
    let (na, nb) = (NodeDir::new(), NodeDir::new());
    // A serves subnets 3 and 5 and admits B; B serves only 5, where A is not registered, so
    // B's firewall refuses A's connections.
    chain.register(3, &na, 1_000);
    chain.register(5, &nb, 1_000);
    let b = start(quick(nb.cluster_config(&chain, vec![5]))).await;
    let boot = addr(&b).await;
    let a = start(quick(na.cluster_config(&chain, vec![3, 5])).with_bootstrap(vec![boot])).await;
    a.send(&nb.ss58, 5, b"let me in".to_vec()).await.unwrap();
    let why = last_error(&a, &nb.ss58).await;
    assert!(why.starts_with("our connection is refused"), "{why}");
    // B's reason stays B's: the sender is not told which check failed.
    assert!(
        !why.contains("out_of_scope") && !why.contains("out of scope"),
        "{why}"
    );
    let err = a.open_stream(&nb.ss58, 5).await.unwrap_err().to_string();
    assert!(err.contains("our connection is refused"), "{err}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_went_away_is_reported_offline_with_the_transport_reason() {
    let (_chain, _na, nb, a, b) = common::linked_pair(common::TCP, |c| {
        *c = quick(c.clone());
    })
    .await;
    // B dialled A, so A learns where B listens only from B's identify message, which may come
    // after the binding: wait for the address, or A rightly reports that it knows none.
    assert!(
        common::eventually(Duration::from_secs(20), || async {
            a.peers()
                .await
                .unwrap()
                .iter()
                .any(|p| p.ss58 == nb.ss58 && !p.addresses.is_empty())
        })
        .await,
        "A never learned B's listen address"
    );
    b.shutdown().await.unwrap();
    assert!(
        common::eventually(Duration::from_secs(20), || async {
            a.peers().await.unwrap().is_empty()
        })
        .await
    );
    a.send(&nb.ss58, 3, b"are you there".to_vec())
        .await
        .unwrap();
    let why = last_error(&a, &nb.ss58).await;
    assert!(why.starts_with("recipient offline"), "{why}");
    assert!(
        why.contains("refused"),
        "the transport's reason is missing: {why}"
    );
    assert_no_debug_dump(&why);
    a.shutdown().await.unwrap();
}
