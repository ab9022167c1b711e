//! Attacks on the end-to-end layer, made by real nodes over real connections: a registered,
//! admitted attacker (or an honest node replaying its own traffic) writes hand-made frames on a
//! raw substream, and the target must refuse each with its own counted reason and deliver
//! nothing. Plus forward secrecy: once a prekey is erased, no key stored by either node opens a
//! captured message.

mod common;

use common::{
    addr, eventually, linked_pair, os_rng, read_frame_body, sees, start, unix_now, DevChainDir,
    NodeDir, TCP,
};
use futures::{AsyncReadExt, AsyncWriteExt};
use hermes::proto::chunk::{ChunkSealer, CHUNK_HEADER_LEN};
use hermes::proto::envelope::{
    seal_session, MessageBody, Prekey, RecvRatchet, SendRatchet, SessionHeader, SessionKind,
    SessionRequest, SessionSecret,
};
use hermes::proto::frame::{msg_prefix, MsgFrame, RefuseCode, StreamControl};
use hermes::proto::prekey::PrekeyRing;
use hermes::proto::{Hotkey, Id128, RejectReason, SignedBinding};
use hermes::RuntimeHandle;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

struct Cluster {
    _chain: DevChainDir,
    a: (NodeDir, RuntimeHandle),
    b: (NodeDir, RuntimeHandle),
    x: (NodeDir, RuntimeHandle),
}

/// B is the target; A an honest node; X an admitted attacker. A and X know B.
async fn cluster() -> Cluster {
    let chain = DevChainDir::new();
    let nodes: Vec<NodeDir> = (0..3).map(|_| NodeDir::new()).collect();
    for n in &nodes {
        chain.register(3, n, 1_000);
    }
    let mut it = nodes.into_iter();
    let (na, nb, nx) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    let b = start(nb.cluster_config(&chain, vec![3])).await;
    let boot = addr(&b).await;
    let a = start(
        na.cluster_config(&chain, vec![3])
            .with_bootstrap(vec![boot.clone()]),
    )
    .await;
    let x = start(
        nx.cluster_config(&chain, vec![3])
            .with_bootstrap(vec![boot]),
    )
    .await;
    assert!(sees(&a, &nb.ss58).await && sees(&x, &nb.ss58).await);
    assert!(sees(&b, &na.ss58).await && sees(&b, &nx.ss58).await);
    Cluster {
        _chain: chain,
        a: (na, a),
        b: (nb, b),
        x: (nx, x),
    }
}

fn hotkey(n: &NodeDir) -> Hotkey {
    Hotkey::from_ss58(&n.ss58).unwrap().0
}

/// The prekey `rt` currently knows for the node of `ss58`.
async fn prekey_of(rt: &RuntimeHandle, ss58: &str) -> [u8; 32] {
    rt.peers()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.ss58 == ss58)
        .unwrap()
        .binding
        .record
        .prekey
}

fn seal(
    signer: &NodeDir,
    recipient: Hotkey,
    prekey: [u8; 32],
    kind: SessionKind,
) -> (SessionHeader, SessionSecret) {
    seal_session(
        signer.hotkey().pair(),
        &SessionRequest {
            kind,
            recipient,
            prekey,
            netuid: 3,
        },
        unix_now(),
        &mut os_rng(),
    )
    .unwrap()
}

/// A sealed `Msg` frame carrying `payload` on netuid 3.
fn msg_frame(tx: &mut SendRatchet, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    MessageBody::encode_parts(
        &Id128([7; 16]),
        3,
        unix_now(),
        unix_now() + 600,
        payload,
        &mut buf,
    );
    let counter = tx.seal(&mut buf).unwrap();
    let mut f = msg_prefix(&tx.session_id(), counter, buf.len()).to_vec();
    f.extend_from_slice(&buf);
    f
}

async fn rejected(rt: &RuntimeHandle, reason: RejectReason) -> u64 {
    rt.message_stats().await.unwrap().rejected(reason)
}

/// Writes `frames` on a fresh raw message substream from `from` to `to`, and waits until the
/// target counts one more `reason`.
async fn attack(
    from: &RuntimeHandle,
    target: &RuntimeHandle,
    to: &str,
    frames: &[Vec<u8>],
    reason: RejectReason,
) -> libp2p::Stream {
    let before = rejected(target, reason).await;
    let mut s = from.debug_raw_substream(to, true).await.unwrap();
    for f in frames {
        s.write_all(f).await.unwrap();
    }
    s.flush().await.unwrap();
    assert!(
        eventually(WAIT, || async { rejected(target, reason).await > before }).await,
        "{reason} was not counted: {:?}",
        target.message_stats().await.unwrap().rejected
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tampered_and_replayed_messages_are_refused_and_counted() {
    let c = cluster().await;
    let (na, a) = &c.a;
    let (nb, b) = &c.b;
    let (nx, x) = &c.x;
    let mut inbox = b.subscribe().unwrap();
    let b_key = hotkey(nb);

    // An honest message from A, captured on the wire, delivered once.
    let mut tap = a.debug_wiretap().await.unwrap();
    let id = a.send(&nb.ss58, 3, b"honest".to_vec()).await.unwrap();
    let got = tokio::time::timeout(WAIT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.id, got.bytes.as_slice()), (id, &b"honest"[..]));
    let captured: Vec<Vec<u8>> = vec![tap.recv().await.unwrap(), tap.recv().await.unwrap()];
    let a_header = match MsgFrame::decode(&captured[0], 1 << 20).unwrap() {
        MsgFrame::SessionInit(h) => h,
        other => panic!("expected the session header first, got {other:?}"),
    };

    let b_prekey = prekey_of(x, &nb.ss58).await;

    // 1. Tampered ciphertext: one flipped bit in a message of a valid session.
    let (h, secret) = seal(nx, b_key, b_prekey, SessionKind::Messages);
    let mut tx = SendRatchet::new(h.session_id, secret);
    let mut m = msg_frame(&mut tx, b"evil");
    let last = m.len() - 3;
    m[last] ^= 0x20;
    let mut s = attack(
        x,
        b,
        &nb.ss58,
        &[MsgFrame::SessionInit(h).encode(), m],
        RejectReason::BadCiphertext,
    )
    .await;
    // The attacker is told only "retry", and the substream is closed.
    let answer = MsgFrame::decode_body(read_frame_body(&mut s).await.unwrap()).unwrap();
    assert!(matches!(
        answer,
        MsgFrame::Reject {
            code: hermes::proto::frame::RejectCode::Retry,
            ..
        }
    ));
    assert!(read_frame_body(&mut s).await.is_none());

    // 2. Tampered header: a signed field changed after signing.
    let (mut h, _) = seal(nx, b_key, b_prekey, SessionKind::Messages);
    h.created_at -= 1;
    attack(
        x,
        b,
        &nb.ss58,
        &[MsgFrame::SessionInit(h).encode()],
        RejectReason::BadHeader,
    )
    .await;

    // 3. Wrong recipient: a valid session for someone else, sent to B.
    let stranger = Hotkey([0x42; 32]);
    let (h, _) = seal(nx, stranger, b_prekey, SessionKind::Messages);
    attack(
        x,
        b,
        &nb.ss58,
        &[MsgFrame::SessionInit(h).encode()],
        RejectReason::WrongRecipient,
    )
    .await;

    // 4. Sender mismatch: A's captured header (signed by A) presented on X's connection.
    attack(x, b, &nb.ss58, &captured[..1], RejectReason::SenderMismatch).await;

    // 5. Replay: A's own captured frames, sent again by A on a new substream.
    attack(a, b, &nb.ss58, &captured, RejectReason::Replay).await;
    assert_eq!(a_header.sender, hotkey(na));

    // 6. Sealed to an erased prekey: B rotates and erases; X still uses the old one.
    let (h, _) = seal(nx, b_key, b_prekey, SessionKind::Messages);
    let rotated = b.rotate_prekey(true).await.unwrap();
    assert_ne!(rotated.binding.record.prekey, b_prekey);
    let mut s = attack(
        x,
        b,
        &nb.ss58,
        &[MsgFrame::SessionInit(h).encode()],
        RejectReason::StalePrekey,
    )
    .await;
    match MsgFrame::decode_body(read_frame_body(&mut s).await.unwrap()).unwrap() {
        MsgFrame::SessionRefused {
            code: RefuseCode::StalePrekey,
            binding: Some(bytes),
            ..
        } => {
            let fresh = SignedBinding::decode(&bytes).unwrap();
            assert_eq!(fresh.record.prekey, rotated.binding.record.prekey);
        }
        other => panic!("expected a stale-prekey refusal with the fresh binding, got {other:?}"),
    }
    // The new binding also reached X by itself (pushed on rotation).
    let new_prekey = rotated.binding.record.prekey;
    assert!(
        eventually(WAIT, || async {
            prekey_of(x, &nb.ss58).await == new_prekey
        })
        .await
    );

    // Nothing but the honest message was ever delivered, and honest traffic still flows.
    let stats = b.message_stats().await.unwrap();
    assert_eq!(stats.received, 1);
    assert!(inbox.try_recv().is_none());
    let id2 = a.send(&nb.ss58, 3, b"after".to_vec()).await.unwrap();
    let got = tokio::time::timeout(WAIT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, id2);
    for rt in [a, b, x] {
        rt.shutdown().await.unwrap();
    }
}

/// Opens a raw stream from X to B with a valid stream session, returns the substream and the
/// sealer for its chunks once B accepted it.
async fn raw_stream(c: &Cluster) -> (libp2p::Stream, ChunkSealer) {
    let (nb, _) = &c.b;
    let (nx, x) = &c.x;
    let prekey = prekey_of(x, &nb.ss58).await;
    let (h, secret) = seal(nx, hotkey(nb), prekey, SessionKind::Stream);
    let sealer = ChunkSealer::new(h.session_id, &secret).unwrap();
    let mut s = x.debug_raw_substream(&nb.ss58, false).await.unwrap();
    let open = StreamControl::Open {
        header: Box::new(h),
        e2e: true,
        chunk_max: 4096,
        name: None,
    };
    s.write_all(&open.encode()).await.unwrap();
    s.flush().await.unwrap();
    let answer = StreamControl::decode_body(&read_frame_body(&mut s).await.unwrap()).unwrap();
    assert_eq!(answer, StreamControl::Accept);
    (s, sealer)
}

fn chunk(sealer: &mut ChunkSealer, data: &[u8], last: bool) -> Vec<u8> {
    let mut f = vec![0u8; CHUNK_HEADER_LEN];
    f.extend_from_slice(data);
    sealer.seal_frame(&mut f, last).unwrap();
    f
}

/// Reads the next incoming stream to its end (the reader's error if it refuses the stream).
async fn next_stream_bytes(incoming: &mut hermes::IncomingStreams) -> std::io::Result<Vec<u8>> {
    let mut st = tokio::time::timeout(WAIT, incoming.recv())
        .await
        .expect("a stream within the wait")
        .expect("incoming streams open");
    let mut out = Vec::new();
    st.reader.read_to_end(&mut out).await?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reordered_truncated_and_extended_streams_are_refused() {
    let c = cluster().await;
    let b = &c.b.1;
    let mut incoming = b.incoming_streams().unwrap();
    type Shape = fn(Vec<Vec<u8>>) -> Vec<Vec<u8>>;
    let cases: [(RejectReason, Shape); 4] = [
        (RejectReason::BadChunk, |f| {
            vec![f[1].clone(), f[0].clone(), f[2].clone()]
        }),
        (RejectReason::StreamTruncated, |f| f[..2].to_vec()),
        (RejectReason::StreamExtended, |f| {
            let mut v = f.clone();
            v.push(f[0].clone());
            v
        }),
        // A few stray bytes, less than a chunk header, after the final chunk.
        (RejectReason::StreamExtended, |f| {
            let mut v = f;
            v.push(vec![0xAB; 3]);
            v
        }),
    ];
    for (reason, shape) in cases {
        let before = rejected(b, reason).await;
        let (mut s, mut sealer) = raw_stream(&c).await;
        let frames = vec![
            chunk(&mut sealer, &[1; 1000], false),
            chunk(&mut sealer, &[2; 1000], false),
            chunk(&mut sealer, &[3; 10], true),
        ];
        for f in shape(frames) {
            s.write_all(&f).await.unwrap();
        }
        s.close().await.unwrap();
        let err = next_stream_bytes(&mut incoming).await.unwrap_err();
        assert!(err.to_string().contains(reason.as_str()), "{reason}: {err}");
        assert_eq!(rejected(b, reason).await, before + 1, "{reason}");
    }
    // A well-formed stream on the same terms goes through.
    let (mut s, mut sealer) = raw_stream(&c).await;
    s.write_all(&chunk(&mut sealer, b"fine", true))
        .await
        .unwrap();
    s.close().await.unwrap();
    assert_eq!(next_stream_bytes(&mut incoming).await.unwrap(), b"fine");
    let done = StreamControl::decode_body(&read_frame_body(&mut s).await.unwrap()).unwrap();
    assert_eq!(done, StreamControl::Done { bytes: 4 });
    for rt in [&c.a.1, &c.b.1, &c.x.1] {
        rt.shutdown().await.unwrap();
    }
}

/// Every regular file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Tries every prekey stored in `data_dir` on the captured session, forcing each key onto the
/// header so that a wrong key is actually tried rather than refused by name. Returns the
/// plaintext if any key opens the message.
fn open_with_stored_keys(
    data_dir: &std::path::Path,
    header: &SessionHeader,
    counter: u64,
    ct: &[u8],
) -> Option<Vec<u8>> {
    let bytes = std::fs::read(data_dir.join("prekeys")).unwrap();
    let (ring, _) = PrekeyRing::decode(&bytes).unwrap();
    ring.entries().into_iter().find_map(|e| {
        let key = e.keypair();
        let mut h = header.clone();
        h.prekey = key.public();
        let secret = h.open(&key).ok()?;
        let mut rx = RecvRatchet::new(h.session_id, secret);
        let mut buf = ct.to_vec();
        rx.open(counter, &mut buf).ok()?;
        Some(MessageBody::decode(buf).ok()?.payload)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_prekey_leaves_no_stored_key_that_opens_a_captured_message() {
    // b listens, a dials it.
    let (_chain, nb, na, b, a) = linked_pair(TCP, |_| {}).await;
    let mut inbox = b.subscribe().unwrap();
    let mut tap = a.debug_wiretap().await.unwrap();
    a.send(&nb.ss58, 3, b"weights for epoch 9".to_vec())
        .await
        .unwrap();
    tokio::time::timeout(WAIT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    let header = match MsgFrame::decode(&tap.recv().await.unwrap(), 1 << 20).unwrap() {
        MsgFrame::SessionInit(h) => h,
        other => panic!("{other:?}"),
    };
    let (counter, ct) = match MsgFrame::decode(&tap.recv().await.unwrap(), 1 << 20).unwrap() {
        MsgFrame::Msg {
            counter,
            ciphertext,
            ..
        } => (counter, ciphertext),
        other => panic!("{other:?}"),
    };

    // Positive control: before the rotation, B's stored prekey does open the captured message.
    let opened = open_with_stored_keys(&nb.data_dir(), &header, counter, &ct);
    assert_eq!(opened.as_deref(), Some(&b"weights for epoch 9"[..]));
    // Remember that key's slot (its seed) to look for it on disk afterwards.
    let seed = {
        let bytes = std::fs::read(nb.data_dir().join("prekeys")).unwrap();
        bytes
            .chunks(64)
            .map(|slot| <[u8; 32]>::try_from(&slot[24..56]).unwrap())
            .find(|seed| Prekey::from_seed(seed).public() == header.prekey)
            .expect("the key that opens the message is in the prekey file")
    };

    b.rotate_prekey(true).await.unwrap();
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();

    for dir in [nb.data_dir(), na.data_dir()] {
        assert_eq!(
            open_with_stored_keys(&dir, &header, counter, &ct),
            None,
            "{}",
            dir.display()
        );
        for f in files(&dir) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !bytes.windows(32).any(|w| w == seed.as_slice()),
                "the erased prekey's seed is still in {}",
                f.display()
            );
        }
    }
}

/// A recipient whose application never reads the stream never confirms it: `finish` gives up
/// after its deadline instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_gives_up_on_a_recipient_that_never_confirms() {
    let (_chain, _na, nb, a, b) = linked_pair(TCP, |_| {}).await;
    let mut incoming = b.incoming_streams().unwrap();
    let mut w = a.open_stream(&nb.ss58, 3).await.unwrap();
    w.write_all(b"never read").await.unwrap();
    let finish = tokio::spawn(w.finish_within(Duration::from_secs(2)));
    // B's application takes the stream and holds it without reading.
    let held = tokio::time::timeout(WAIT, incoming.recv())
        .await
        .unwrap()
        .unwrap();
    let err = tokio::time::timeout(WAIT, finish)
        .await
        .expect("finish waited past its deadline")
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("confirm"), "{err}");
    drop(held);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Two linked nodes, A and B, that see each other; A has sent B one honest message, which B
/// received. Returns the chain (keep it alive), B's directory, both runtimes and the first frame
/// A wrote on the wire for it (its session header), ready to be replayed.
async fn pair_with_a_captured_header(
) -> (DevChainDir, NodeDir, RuntimeHandle, RuntimeHandle, Vec<u8>) {
    let (chain, na, nb, a, b) = linked_pair(TCP, |_| {}).await;
    assert!(sees(&a, &nb.ss58).await && sees(&b, &na.ss58).await);
    let mut inbox = b.subscribe().unwrap();
    let mut tap = a.debug_wiretap().await.unwrap();
    a.send(&nb.ss58, 3, b"honest".to_vec()).await.unwrap();
    tokio::time::timeout(WAIT, inbox.recv())
        .await
        .unwrap()
        .unwrap();
    let header = tap.recv().await.unwrap();
    (chain, nb, a, b, header)
}

/// A replayed session header is refused without the signature check from its second copy on,
/// and a substream that keeps presenting refused headers is closed: replaying costs the replayer
/// a new substream every few headers instead of costing the target a signature check and a
/// seen-set lookup per header forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_substream_replaying_a_session_header_is_closed() {
    let (_chain, nb, a, b, header) = pair_with_a_captured_header().await;
    assert!(matches!(
        MsgFrame::decode(&header, 1 << 20).unwrap(),
        MsgFrame::SessionInit(_)
    ));

    let before = rejected(&b, RejectReason::Replay).await;
    let mut s = a.debug_raw_substream(&nb.ss58, true).await.unwrap();
    for _ in 0..20 {
        s.write_all(&header).await.unwrap();
    }
    s.flush().await.unwrap();
    // Each refusal is answered; then the target hangs up.
    let mut answers = 0;
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(body) = read_frame_body(&mut s).await {
            assert!(matches!(
                MsgFrame::decode_body(body).unwrap(),
                MsgFrame::SessionRefused { .. }
            ));
            answers += 1;
        }
    })
    .await
    .is_ok();
    assert!(closed, "the substream stayed open after {answers} refusals");
    let replays = rejected(&b, RejectReason::Replay).await - before;
    assert!(
        (1..=3).contains(&replays),
        "{replays} replays handled on one substream"
    );
    for rt in [a, b] {
        rt.shutdown().await.unwrap();
    }
}

/// Replaying on fresh substreams does not reset the cost: once a peer has had a dozen session
/// headers refused within a minute, its new message substreams are dropped unread (`busy`),
/// before any signature check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_replaying_on_fresh_substreams_is_cut_off() {
    let (_chain, nb, a, b, header) = pair_with_a_captured_header().await;

    let replays_before = rejected(&b, RejectReason::Replay).await;
    let busy_before = rejected(&b, RejectReason::Busy).await;
    for i in 0..10 {
        let mut s = a.debug_raw_substream(&nb.ss58, true).await.unwrap();
        for _ in 0..3 {
            // The node may have hung up already.
            let _ = s.write_all(&header).await;
        }
        let _ = s.flush().await;
        let closed = tokio::time::timeout(WAIT, async {
            while read_frame_body(&mut s).await.is_some() {}
        })
        .await
        .is_ok();
        assert!(closed, "substream {i} stayed open");
    }
    let replays = rejected(&b, RejectReason::Replay).await - replays_before;
    let busy = rejected(&b, RejectReason::Busy).await - busy_before;
    assert!(replays <= 12, "{replays} replayed headers handled");
    assert!(busy >= 5, "only {busy} substreams dropped unread");
    for rt in [a, b] {
        rt.shutdown().await.unwrap();
    }
}
