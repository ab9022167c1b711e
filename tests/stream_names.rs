//! Named streams and what a sender's confirmation means, between real nodes over loopback.

mod common;

use common::{linked_pair, TCP};
use futures::{AsyncReadExt, AsyncWriteExt};
use hermes::{
    Error, IncomingStream, IncomingStreams, StreamError, StreamOptions, StreamReport, StreamWriter,
};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Writes `data` on `w`, finishes it in the background (the sender then waits for the
/// receiver's confirmation) and takes the stream at the receiver. Returns the pending finish and
/// the received stream.
async fn send_and_take(
    mut w: StreamWriter,
    data: &[u8],
    incoming: &mut IncomingStreams,
) -> (
    tokio::task::JoinHandle<Result<StreamReport, StreamError>>,
    IncomingStream,
) {
    w.write_all(data).await.unwrap();
    let finish = tokio::spawn(w.finish());
    let s = tokio::time::timeout(WAIT, incoming.recv())
        .await
        .unwrap()
        .unwrap();
    (finish, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_travels_with_the_stream_and_arrives_sanitized() {
    let (_chain, _na, nb, a, b) = linked_pair(TCP, |c| c.streams.allow_plaintext = true).await;
    let mut incoming = b.incoming_streams().unwrap();
    let cases: [(Option<&str>, bool); 4] = [
        (Some("weights-epoch7.safetensors"), true),
        (Some("../../etc/cron.d/\x1b[31mevil"), true),
        (Some("plain name.txt"), false),
        (None, true),
    ];
    for (name, e2e) in cases {
        let mut opts = StreamOptions::new(64 << 10);
        opts.e2e = e2e;
        opts.name = name.map(str::to_string);
        let w = a.open_stream_with(&nb.ss58, 3, opts).await.unwrap();
        let (finish, mut s) = send_and_take(w, b"data", &mut incoming).await;
        let expected = name.and_then(|n| hermes::proto::filename::sanitize(n.as_bytes()));
        assert_eq!(s.name, expected, "{name:?}");
        if let Some(got) = &s.name {
            assert!(!got.contains('/') && !got.contains("..") && !got.starts_with('.'));
            assert!(!got.chars().any(char::is_control), "{got:?}");
        }
        let mut got = Vec::new();
        s.reader.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"data");
        finish.await.unwrap().unwrap();
    }
    // The sender cannot name a stream beyond the wire's bound.
    let err = a
        .open_stream_named(&nb.ss58, 3, Some(&"n".repeat(256)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Stream(StreamError::Invalid(_))),
        "{err:?}"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_can_hold_the_confirmation_until_it_has_stored_the_data() {
    let (_chain, _na, nb, a, b) = linked_pair(TCP, |_| {}).await;
    let mut incoming = b.incoming_streams().unwrap();

    // Confirmed only when the receiver says so.
    let w = a.open_stream(&nb.ss58, 3).await.unwrap();
    let (finish, mut s) = send_and_take(w, &[7u8; 100_000], &mut incoming).await;
    s.reader.confirm_later();
    let mut got = Vec::new();
    s.reader.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), 100_000);
    // Everything was read, nothing confirmed yet: the sender is still waiting.
    assert!(!finish.is_finished());
    assert_eq!(s.reader.confirm().unwrap(), 100_000);
    assert!(s.reader.confirm().is_err(), "confirmed twice");
    let report = tokio::time::timeout(WAIT, finish).await.unwrap().unwrap();
    assert_eq!(report.unwrap().bytes, 100_000);

    // A receiver that gives up before confirming (say, its disk is full) fails the sender.
    let w = a.open_stream(&nb.ss58, 3).await.unwrap();
    let (finish, mut s) = send_and_take(w, b"lost", &mut incoming).await;
    s.reader.confirm_later();
    assert!(s.reader.confirm().is_err(), "confirmed before the end");
    let mut got = Vec::new();
    s.reader.read_to_end(&mut got).await.unwrap();
    drop(s);
    let err = tokio::time::timeout(WAIT, finish)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("without confirming"), "{err}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
