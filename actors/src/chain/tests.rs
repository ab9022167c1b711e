//! Tests of the ChainActor: publication past a full mailbox, read backoff and overlap, heads
//! followed through the one-read-at-a-time path, snapshot errors.

use super::*;

const P1: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

fn entry(netuid: u16, hk: u8, peer: &str) -> NodeEntry {
    NodeEntry {
        netuid,
        hotkey: Hotkey([hk; 32]),
        peer_id: peer.into(),
        stake: 1000,
        class: NodeClass::Registered,
    }
}

/// Receives registry updates; can be held busy so its mailbox fills up.
struct Sink {
    got: tokio::sync::mpsc::UnboundedSender<usize>,
}
impl Actor for Sink {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1);
    }
}
impl Handler<RegistryUpdated> for Sink {
    type Result = ();
    fn handle(&mut self, msg: RegistryUpdated, _: &mut Self::Context) {
        let _ = self.got.send(msg.registry.len());
    }
}
#[derive(Message)]
#[rtype(result = "()")]
struct Hold(futures::channel::oneshot::Receiver<()>);
impl Handler<Hold> for Sink {
    type Result = ();
    fn handle(&mut self, msg: Hold, ctx: &mut Self::Context) {
        // Processes nothing else until released.
        ctx.wait(actix::fut::wrap_future(async move {
            let _ = msg.0.await;
        }));
    }
}
#[derive(Message)]
#[rtype(result = "()")]
struct Noop;
impl Handler<Noop> for Sink {
    type Result = ();
    fn handle(&mut self, _: Noop, _: &mut Self::Context) {}
}

/// A registry change the subscriber's full mailbox refused is published at the next poll,
/// although the chain has not changed again since.
#[test]
fn an_update_refused_by_a_full_mailbox_is_published_later() {
    actix::System::new().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let chain = DevChain::new(dir.path().join("chain"));
        chain.register_sync(entry(1, 1, P1)).unwrap();
        let backend = Arc::new(chain.clone());
        let (tx, mut got) = tokio::sync::mpsc::unbounded_channel();
        let sink = Sink { got: tx }.start();
        let (release, held) = futures::channel::oneshot::channel();
        sink.send(Hold(held)).await.unwrap();
        for _ in 0..4 {
            sink.do_send(Noop);
        }
        let actor = ChainActor::new(
            backend,
            Some(Registry::default()),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
            sink.clone().recipient(),
        )
        .start();
        // actix queues one message past a full mailbox (and holds the sender back), and
        // refuses the next: two changes while the subscriber is busy.
        assert_eq!(actor.send(Refresh).await.unwrap().unwrap().len(), 1);
        chain.register_sync(entry(2, 1, P1)).unwrap();
        assert_eq!(actor.send(Refresh).await.unwrap().unwrap().len(), 2);
        release.send(()).unwrap();
        sink.send(Noop).await.unwrap();
        assert_eq!(got.try_recv().ok(), Some(1));
        assert!(got.try_recv().is_err(), "the second update was not refused");
        // The chain is unchanged; the next poll must still deliver the second update.
        actor.send(Refresh).await.unwrap().unwrap();
        let n = tokio::time::timeout(Duration::from_secs(10), got.recv()).await;
        assert_eq!(n.ok().flatten(), Some(2), "the update was lost");
    });
}

/// A backend whose reads fail, after `hang` each, counting reads and how many overlap.
#[derive(Debug, Default)]
struct Failing {
    hang: Duration,
    calls: std::sync::atomic::AtomicU32,
    in_flight: std::sync::atomic::AtomicU32,
    max_in_flight: std::sync::atomic::AtomicU32,
}
impl Chain for Failing {
    fn registry(&self) -> BoxFuture<'_, Result<Registry, ChainError>> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            self.calls.fetch_add(1, SeqCst);
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.max_in_flight.fetch_max(now, SeqCst);
            tokio::time::sleep(self.hang).await;
            self.in_flight.fetch_sub(1, SeqCst);
            Err(ChainError::Refused("test endpoint down".into()))
        })
    }
}

fn actor_on(chain: Arc<dyn Chain>, poll: Duration, max_staleness: Duration) -> ChainActor {
    let sink = Sink {
        got: tokio::sync::mpsc::unbounded_channel().0,
    }
    .start();
    ChainActor::new(
        chain,
        Some(Registry::default()),
        poll,
        max_staleness,
        sink.recipient(),
    )
}

/// After k failures in a row the next read waits poll·2^k (less up to a fifth), capped;
/// one success brings it back to `poll`; before the registry is stale the wait never passes
/// the moment it would become stale.
#[test]
fn failed_reads_back_off_exponentially_and_a_success_resets() {
    actix::System::new().block_on(async {
        let poll = Duration::from_millis(100);
        let mut a = actor_on(
            Arc::new(Failing::default()),
            poll,
            Duration::from_secs(3600),
        );
        assert_eq!(a.next_delay(), poll);
        for k in 1..=12u32 {
            let _ = a.apply(Err(ChainError::Refused("down".into())));
            let full = (poll * 2u32.pow(k)).min(poll * MAX_BACKOFF_POLLS);
            let d = a.next_delay();
            assert!(
                d <= full && d >= full.mul_f64(0.8),
                "after {k} failures: {d:?}"
            );
        }
        let _ = a.apply(Ok(Registry::default()));
        assert_eq!(a.next_delay(), poll);

        // A lost head subscription: min(poll, 1 s) after the first loss, doubling, ≤ 30 s.
        for (k, full) in [(1, poll), (3, poll * 4), (12, poll * 2048)] {
            a.sub_failures = k;
            let d = a.resubscribe_delay();
            let full = full.min(MAX_BACKOFF);
            assert!(
                d <= full && d >= full.mul_f64(0.8),
                "after {k} losses: {d:?}"
            );
        }
        let mut slow = actor_on(
            Arc::new(Failing::default()),
            Duration::from_secs(600),
            Duration::from_secs(3600),
        );
        slow.sub_failures = 1;
        assert!(slow.resubscribe_delay() <= RESUBSCRIBE_FIRST);
        slow.sub_failures = 30;
        assert!(slow.resubscribe_delay() <= MAX_BACKOFF);

        // 250 ms to staleness: however many failures, the next read comes before then.
        let mut a = actor_on(
            Arc::new(Failing::default()),
            poll,
            Duration::from_millis(250),
        );
        for _ in 0..6 {
            let _ = a.apply(Err(ChainError::Refused("down".into())));
        }
        assert!(!a.stale);
        assert!(a.next_delay() <= Duration::from_millis(250));
    });
}

/// A backend that hangs on every read (up to the RPC timeout) has one read at a time against
/// it, never a pile of them, and is read ever less often.
#[test]
fn reads_never_overlap_and_slow_down_against_a_hanging_backend() {
    use std::sync::atomic::Ordering::SeqCst;
    actix::System::new().block_on(async {
        let chain = Arc::new(Failing {
            hang: Duration::from_millis(100),
            ..Failing::default()
        });
        let _actor = actor_on(
            chain.clone(),
            Duration::from_millis(5),
            Duration::from_millis(50),
        )
        .start();
        // Reads at 5 ms and then every ~100 ms + backoff: 10, 20, 40, 40, 40 ms …
        // About ten in 1.5 s; a read every 5 ms regardless would be 300.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let calls = chain.calls.load(SeqCst);
        assert!((2..=15).contains(&calls), "{calls} reads in 1.5 s");
        assert_eq!(chain.max_in_flight.load(SeqCst), 1);
    });
}

/// A backend following heads fed by the test, whose reads each wait for the test's go.
struct Gated {
    heads: std::sync::Mutex<Option<BoxStream<'static, Result<u64, ChainError>>>>,
    calls: std::sync::atomic::AtomicU32,
    started: tokio::sync::mpsc::UnboundedSender<u32>,
    go: tokio::sync::Semaphore,
}
impl std::fmt::Debug for Gated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gated")
    }
}
impl Chain for Gated {
    fn registry(&self) -> BoxFuture<'_, Result<Registry, ChainError>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let _ = self.started.send(n);
            self.go.acquire().await.unwrap().forget();
            Ok(Registry::default())
        })
    }
    fn follow_heads(&self) -> Option<BoxStream<'static, Result<u64, ChainError>>> {
        self.heads.lock().unwrap().take()
    }
}

async fn next_start(started: &mut tokio::sync::mpsc::UnboundedReceiver<u32>) -> u32 {
    tokio::time::timeout(Duration::from_secs(10), started.recv())
        .await
        .expect("no read started")
        .unwrap()
}

/// A new head is read at once; twenty heads arriving while that read runs cause exactly one
/// more read, right after it; a later head is read at once again.
#[test]
fn heads_during_a_read_cause_one_more_read() {
    use futures::StreamExt;
    use std::sync::atomic::Ordering::SeqCst;
    actix::System::new().block_on(async {
        let (tx, mut rx) = futures::channel::mpsc::unbounded::<u64>();
        // Reports how many heads the actor had taken each time it found none waiting.
        let (drained_tx, mut drained) = tokio::sync::mpsc::unbounded_channel();
        let mut taken = 0usize;
        let heads = futures::stream::poll_fn(move |cx| {
            let r = rx.poll_next_unpin(cx);
            match &r {
                std::task::Poll::Ready(Some(_)) => taken += 1,
                _ => {
                    let _ = drained_tx.send(taken);
                }
            }
            r.map(|h| h.map(Ok))
        })
        .boxed();
        let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
        let chain = Arc::new(Gated {
            heads: std::sync::Mutex::new(Some(heads)),
            calls: Default::default(),
            started: started_tx,
            go: tokio::sync::Semaphore::new(0),
        });
        let hour = Duration::from_secs(3600);
        let _actor = actor_on(chain.clone(), hour, hour).start();
        tx.unbounded_send(1).unwrap();
        assert_eq!(next_start(&mut started).await, 1);
        for h in 2..=21 {
            tx.unbounded_send(h).unwrap();
        }
        // Every head of the burst reached the actor while read 1 still runs.
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), drained.recv())
                .await
                .expect("the burst was not taken")
                .unwrap();
            if n == 21 {
                break;
            }
        }
        chain.go.add_permits(1);
        assert_eq!(next_start(&mut started).await, 2, "no read after the burst");
        chain.go.add_permits(1);
        tx.unbounded_send(22).unwrap();
        assert_eq!(next_start(&mut started).await, 3);
        assert_eq!(
            chain.calls.load(SeqCst),
            3,
            "more than one read for the burst"
        );
        assert!(started.try_recv().is_err());
    });
}

#[test]
fn snapshot_errors_name_the_node() {
    let p = Path::new("snap.json");
    let ok = format!(
        r#"{{"nodes": [{{"netuid": 1, "hotkey": "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY", "peer_id": "{P1}", "stake": 10}}]}}"#
    );
    assert_eq!(parse_snapshot(&ok, p).unwrap().len(), 1);
    let bad = ok.replace(P1, "xyz");
    let e = parse_snapshot(&bad, p).unwrap_err().to_string();
    assert!(e.contains("nodes[0].peer_id"), "{e}");
    let bad = ok.replace("5Grw", "5Xrw");
    let e = parse_snapshot(&bad, p).unwrap_err().to_string();
    assert!(e.contains("nodes[0].hotkey"), "{e}");
}
