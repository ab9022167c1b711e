//! The durable outbox on real nodes: messages to an offline peer survive a restart of the sender
//! and are delivered once the peer comes up; random interleavings of sends, restarts of either
//! node and prekey rotations never lose or duplicate a message.

mod common;

use common::{addr, eventually, start, DevChainDir, NodeDir};
use hermes::{Config, DeliveryEvent, Inbox, MessageId, RuntimeHandle};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn fast(mut c: Config) -> Config {
    // Quick retries keep the test short; the schedule itself is tested in hermes-proto.
    c.messages.retry_min = hermes::config::HumanDuration(Duration::from_millis(50));
    c.messages.retry_max = hermes::config::HumanDuration(Duration::from_millis(400));
    c.messages.connect_timeout = hermes::config::HumanDuration(Duration::from_secs(2));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_an_offline_peer_survives_a_sender_restart_and_arrives_once() {
    let chain = DevChainDir::new();
    let (na, nb) = (NodeDir::new(), NodeDir::new());
    chain.register(3, &na, 1_000);
    chain.register(3, &nb, 1_000);
    let a = start(fast(na.cluster_config(&chain, vec![3]))).await;
    let id = a.send(&nb.ss58, 3, b"kept for you".to_vec()).await.unwrap();
    let pending = a.outbox().await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(
        (pending[0].id, pending[0].to.as_str()),
        (id, nb.ss58.as_str())
    );
    // Restart the sender before the receiver ever existed.
    a.shutdown().await.unwrap();
    let a = start(fast(na.cluster_config(&chain, vec![3]))).await;
    assert_eq!(
        a.outbox()
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        vec![id]
    );
    let mut events = a.delivery_events().unwrap();
    // The receiver comes up and connects to the sender.
    let boot = addr(&a).await;
    let b = start(fast(nb.cluster_config(&chain, vec![3])).with_bootstrap(vec![boot])).await;
    let mut inbox = b.subscribe().unwrap();
    let got = tokio::time::timeout(WAIT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.id, got.bytes.as_slice()), (id, &b"kept for you"[..]));
    got.ack();
    let ev = tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ev,
        DeliveryEvent::Delivered {
            id,
            to: hermes::proto::Hotkey::from_ss58(&nb.ss58).unwrap().0
        }
    );
    assert!(a.outbox().await.unwrap().is_empty());
    // A later message arrives next: nothing was delivered twice in between.
    let id2 = a.send(&nb.ss58, 3, b"second".to_vec()).await.unwrap();
    let got = tokio::time::timeout(WAIT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, id2);
    assert_eq!(b.message_stats().await.unwrap().received, 2);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_message_is_dropped_and_reported() {
    let chain = DevChainDir::new();
    let (na, nb) = (NodeDir::new(), NodeDir::new());
    chain.register(3, &na, 1_000);
    chain.register(3, &nb, 1_000);
    let a = start(fast(na.cluster_config(&chain, vec![3]))).await;
    let mut events = a.delivery_events().unwrap();
    let id = a
        .send_with(
            &nb.ss58,
            3,
            b"short-lived".to_vec(),
            hermes::SendOptions {
                ttl: Some(Duration::from_secs(1)),
            },
        )
        .await
        .unwrap();
    let ev = tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ev, DeliveryEvent::Expired { id: got, .. } if got == id));
    assert!(a.outbox().await.unwrap().is_empty());
    a.shutdown().await.unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    /// A sends a message to B.
    Send,
    /// B sends a message to A.
    SendBack,
    RestartA,
    RestartB,
    RotateB,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Send),
        2 => Just(Op::SendBack),
        1 => Just(Op::RestartA),
        1 => Just(Op::RestartB),
        1 => Just(Op::RotateB),
    ]
}

struct Node {
    dir: NodeDir,
    rt: Option<RuntimeHandle>,
    inbox: Option<Inbox>,
    received: Vec<MessageId>,
}

impl Node {
    async fn up(&mut self, chain: &DevChainDir, boot: Vec<libp2p::Multiaddr>) {
        let rt = start(fast(self.dir.cluster_config(chain, vec![3])).with_bootstrap(boot)).await;
        self.inbox = Some(rt.subscribe().unwrap());
        self.rt = Some(rt);
    }

    /// Stops the node. What its application had not yet read is withheld (an acknowledgement
    /// could no longer be recorded): it is not acknowledged, and comes again after the restart.
    /// Reading after the shutdown must therefore yield nothing that is received a second time.
    async fn down(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown().await.unwrap();
        }
        if let Some(mut inbox) = self.inbox.take() {
            while let Some(m) = inbox.recv().await {
                self.received.push(m.id);
            }
        }
    }

    fn drain(&mut self) {
        if let Some(inbox) = self.inbox.as_mut() {
            while let Some(m) = inbox.try_recv() {
                self.received.push(m.id);
            }
        }
    }

    fn rt(&self) -> &RuntimeHandle {
        self.rt.as_ref().unwrap()
    }
}

async fn run(ops: Vec<Op>) {
    let chain = DevChainDir::new();
    let mut a = Node {
        dir: NodeDir::new(),
        rt: None,
        inbox: None,
        received: Vec::new(),
    };
    let mut b = Node {
        dir: NodeDir::new(),
        rt: None,
        inbox: None,
        received: Vec::new(),
    };
    chain.register(3, &a.dir, 1_000);
    chain.register(3, &b.dir, 1_000);
    a.up(&chain, vec![]).await;
    let boot = addr(a.rt()).await;
    b.up(&chain, vec![boot]).await;
    let (mut to_b, mut to_a) = (Vec::new(), Vec::new());
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Send => to_b.push(
                a.rt()
                    .send(&b.dir.ss58, 3, format!("a{i}").into_bytes())
                    .await
                    .unwrap(),
            ),
            Op::SendBack => to_a.push(
                b.rt()
                    .send(&a.dir.ss58, 3, format!("b{i}").into_bytes())
                    .await
                    .unwrap(),
            ),
            Op::RestartA => {
                a.down().await;
                a.up(&chain, vec![]).await;
                // B finds the restarted A through its new address.
                let boot = addr(a.rt()).await;
                b.rt().dial(boot).await.unwrap();
            }
            Op::RestartB => {
                b.down().await;
                let boot = addr(a.rt()).await;
                b.up(&chain, vec![boot]).await;
            }
            Op::RotateB => {
                b.rt().rotate_prekey(true).await.unwrap();
            }
        }
        a.drain();
        b.drain();
    }
    let everything = eventually(Duration::from_secs(60), || {
        a.drain();
        b.drain();
        let done = b.received.len() >= to_b.len() && a.received.len() >= to_a.len();
        async move { done }
    })
    .await;
    let count = |v: &[MessageId]| {
        let mut m = BTreeMap::new();
        for id in v {
            *m.entry(*id).or_insert(0) += 1;
        }
        m
    };
    let (rb, ra) = (count(&b.received), count(&a.received));
    assert!(
        everything,
        "lost messages: A→B {}/{} B→A {}/{}; ops {ops:?}",
        rb.len(),
        to_b.len(),
        ra.len(),
        to_a.len()
    );
    for id in &to_b {
        assert_eq!(rb.get(id), Some(&1), "A→B message {id}; ops {ops:?}");
    }
    for id in &to_a {
        assert_eq!(ra.get(id), Some(&1), "B→A message {id}; ops {ops:?}");
    }
    assert_eq!(rb.len(), to_b.len());
    assert_eq!(ra.len(), to_a.len());
    a.down().await;
    b.down().await;
}

proptest! {
    // Each case starts real nodes; a few cases of up to a dozen steps cover the interleavings
    // (the exhaustive exploration runs on the state machines in hermes-proto's simulation).
    #![proptest_config(ProptestConfig { cases: 6, max_shrink_iters: 8, ..ProptestConfig::default() })]

    #[test]
    fn sends_restarts_and_rotations_never_lose_or_duplicate(ops in proptest::collection::vec(op(), 1..12)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(ops));
    }
}
