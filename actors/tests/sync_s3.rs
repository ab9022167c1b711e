//! The S3 backend against a real S3-protocol server (s3s with SigV4 authentication over
//! s3s-fs, in-process on loopback): a multipart upload downloaded byte-exact through presigned
//! URLs, expired and revoked URLs refused, a corrupt or truncated stored object, a server
//! answering 500, stalling or sending short and long bodies, an upload resumed after a real
//! `kill -9` of the uploading process, and credentials from the environment or a file.

mod s3_support;

use hermes_actors::sync::fetch::partial_path;
use hermes_actors::sync::{
    ChunkSource, Downloader, FetchError, FetchOptions, PresignedSource, S3Credentials, S3Error,
    S3Settings, S3Store, SealedSource, SourceError, UploadSummary,
};
use hermes_proto::sync::layout::MIN_CHUNK_SIZE;
use hermes_proto::sync::{ContentKey, Location, Manifest, PartPlan};
use hermes_proto::Id128;
use s3_support::{BadServer, Misbehave, S3Server, ACCESS_KEY, BUCKET, REGION, SECRET_KEY};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

const C: u64 = MIN_CHUNK_SIZE as u64;
const TID: Id128 = Id128([5; 16]);
/// 19 chunks of 1 MiB (the last one partial): parts of 5 chunks, so 4 parts.
const SIZE: u64 = 18 * C + 1234;

fn key() -> ContentKey {
    ContentKey::from_bytes([9; 32])
}

fn payload(size: u64, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write_source(dir: &Path, size: u64) -> (PathBuf, Vec<u8>) {
    let path = dir.join("source.bin");
    let bytes = payload(size, 11);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

fn offer(path: &Path) -> Arc<SealedSource> {
    Arc::new(SealedSource::offer(path, TID, key(), MIN_CHUNK_SIZE, |_, _| {}).unwrap())
}

/// Every sealed chunk back to back: what the payload object must hold.
fn sealed_object(src: &SealedSource) -> Vec<u8> {
    let layout = *src.manifest().layout();
    let mut out = Vec::new();
    for i in 0..layout.chunk_count() {
        let mut buf = vec![0u8; layout.sealed_len(i) as usize];
        src.read_chunk(i, &mut buf).unwrap();
        out.extend_from_slice(&buf);
    }
    out
}

fn settings(endpoint: &str) -> S3Settings {
    S3Settings {
        endpoint: endpoint.into(),
        bucket: BUCKET.into(),
        region: REGION.into(),
        prefix: "hermes/".into(),
        path_style: true,
    }
}

fn store(server: &S3Server) -> S3Store {
    S3Store::new(
        settings(&server.endpoint),
        S3Credentials::new(ACCESS_KEY, SECRET_KEY),
    )
    .unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn no_cancel() -> watch::Receiver<bool> {
    // The sender is dropped: nobody can cancel.
    watch::channel(false).1
}

async fn upload(store: &S3Store, src: &Arc<SealedSource>) -> Result<UploadSummary, S3Error> {
    store.upload(src.clone(), 3, |_, _| {}, no_cancel()).await
}

fn urls(loc: Location) -> (String, String) {
    match loc {
        Location::Presigned {
            manifest_url,
            payload_url,
        } => (manifest_url, payload_url),
        other => panic!("{other:?}"),
    }
}

fn downloader(manifest: Manifest, dest: &Path, attempts: u32, timeout: Duration) -> Downloader {
    Downloader::new(TID, manifest.root(), manifest, key(), dest.to_path_buf())
        .unwrap()
        .with_options(FetchOptions {
            parallelism: 4,
            max_attempts: attempts,
            fetch_timeout: timeout,
            retry_delay: Duration::from_millis(10),
            ..Default::default()
        })
}

fn assert_send<T: Send>(t: T) -> T {
    t
}

/// Upload of a 4-part payload, presigned, downloaded through the Downloader: byte-exact. A
/// second upload finds the object complete and sends nothing. Runs on a multi-thread runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_presign_download_round_trip() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = write_source(dir.path(), SIZE);
    let src = offer(&path);
    let layout = *src.manifest().layout();
    let plan = PartPlan::new(layout).unwrap();
    assert_eq!(plan.part_count(), 4);
    let store = store(&server);

    let last = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let (l, c) = (last.clone(), calls.clone());
    let fut = assert_send(store.upload(
        src.clone(),
        2,
        move |done, total| {
            assert!(done <= total);
            l.store(done, Ordering::SeqCst);
            c.fetch_add(1, Ordering::SeqCst);
        },
        no_cancel(),
    ));
    let summary = fut.await.unwrap();
    assert_eq!(
        summary,
        UploadSummary {
            parts_total: 4,
            parts_resumed: 0,
            parts_uploaded: 4,
            bytes_uploaded: layout.sealed_size(),
            resumed_upload: false,
            already_complete: false,
        }
    );
    assert_eq!(last.load(Ordering::SeqCst), layout.sealed_size());
    assert!(
        calls.load(Ordering::SeqCst) > 4,
        "progress per chunk, not per part"
    );
    // The object is the sealed chunks back to back, one object; the manifest beside it.
    let object = std::fs::read(server.object_path(&store.payload_key(TID))).unwrap();
    assert!(object == sealed_object(&src), "stored object differs");
    assert_eq!(
        std::fs::read(server.object_path(&store.manifest_key(TID))).unwrap(),
        src.manifest().encode()
    );

    let again = upload(&store, &src).await.unwrap();
    assert!(
        again.already_complete && again.parts_uploaded == 0,
        "{again:?}"
    );

    let (murl, purl) = urls(store.presign(TID, now() + 3600, now()).unwrap());
    assert!(!murl.contains(SECRET_KEY) && !purl.contains(SECRET_KEY));
    let source = PresignedSource::new(&murl, &purl, layout).unwrap();
    let m = source.fetch_manifest(64 << 20).await.unwrap();
    let manifest =
        Manifest::decode_verified(&m, &src.manifest().root(), &layout, src.manifest().cipher())
            .unwrap();
    // A manifest longer than allowed is refused before it is read whole.
    let short = source.fetch_manifest(m.len() - 1).await.unwrap_err();
    assert!(!short.retryable, "{short}");
    let dest = dir.path().join("out.bin");
    let d = downloader(manifest, &dest, 4, Duration::from_secs(30));
    let summary = assert_send(d.run(&source)).await.unwrap();
    assert_eq!(summary.fetches, layout.chunk_count());
    assert_eq!(summary.corrupt, 0);
    assert!(
        std::fs::read(&dest).unwrap() == bytes,
        "downloaded file differs"
    );
}

/// An empty payload is one 16-byte part (the last part may be small) and round-trips.
#[tokio::test]
async fn an_empty_payload_round_trips() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_source(dir.path(), 0);
    let src = offer(&path);
    let layout = *src.manifest().layout();
    let store = store(&server);
    let summary = upload(&store, &src).await.unwrap();
    assert_eq!((summary.parts_total, summary.bytes_uploaded), (1, 16));
    let (murl, purl) = urls(store.presign(TID, now() + 60, now()).unwrap());
    let source = PresignedSource::new(&murl, &purl, layout).unwrap();
    let dest = dir.path().join("out.bin");
    let d = downloader(src.manifest().clone(), &dest, 2, Duration::from_secs(30));
    d.run(&source).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), Vec::<u8>::new());
}

/// A source file changed after the offer stops the upload at once with the source's error:
/// its chunks would seal to other bytes under the same nonces, so none of them is sent.
#[tokio::test]
async fn a_changed_source_stops_the_upload() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, mut bytes) = write_source(dir.path(), 12 * C);
    let src = offer(&path);
    bytes[7 * C as usize] ^= 1;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&bytes[7 * C as usize..7 * C as usize + 1], 7 * C)
        .unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1))
        .unwrap();
    let store = store(&server);
    match upload(&store, &src).await {
        Err(S3Error::Source(SourceError::Changed { .. })) => {}
        other => panic!("{other:?}"),
    }
    assert!(!server.object_path(&store.payload_key(TID)).exists());
    assert_eq!(server.state.parts_stored.load(Ordering::SeqCst), 0);
}

/// An expired presigned URL and a revoked transfer are refused at once, with a clear text.
#[tokio::test]
async fn expired_and_revoked_urls_are_refused() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_source(dir.path(), 3 * C);
    let src = offer(&path);
    let layout = *src.manifest().layout();
    let store = store(&server);
    upload(&store, &src).await.unwrap();

    // Signed 100 s ago for 50 s: the server's clock says it expired.
    let t = now();
    let (murl, purl) = urls(store.presign(TID, t - 50, t - 100).unwrap());
    let expired = PresignedSource::new(&murl, &purl, layout).unwrap();
    let mut buf = vec![0u8; layout.sealed_len(0) as usize];
    let e = expired.fetch(0, &mut buf).await.unwrap_err();
    assert!(!e.retryable, "{e}");
    assert!(e.message.contains("403"), "{e}");
    assert!(
        e.message
            .contains("the presigned URL expired or was revoked; ask the sender for a new ticket"),
        "{e}"
    );
    let e = expired.fetch_manifest(1 << 20).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("expired"), "{e}");
    // The Downloader stops at the refusal instead of retrying.
    let dest = dir.path().join("out.bin");
    let d = downloader(src.manifest().clone(), &dest, 1000, Duration::from_secs(30));
    match d.run(&expired).await {
        Err(FetchError::Source { error, .. }) => assert!(!error.retryable, "{error}"),
        other => panic!("{other:?}"),
    }
    // Presigning in the past, or more than 7 days ahead.
    assert!(store.presign(TID, t - 1, t).is_err());
    assert_eq!(S3Store::presigned_until(t + 30 * 86400, t), t + 7 * 86400);
    let (_, long) = urls(store.presign(TID, t + 30 * 86400, t).unwrap());
    assert!(long.contains("X-Amz-Expires=604800"), "{long}");

    // Revoked: the objects are deleted; valid URLs now answer 404.
    let (murl, purl) = urls(store.presign(TID, t + 3600, t).unwrap());
    let valid = PresignedSource::new(&murl, &purl, layout).unwrap();
    valid.fetch(0, &mut buf).await.unwrap();
    store.delete(TID).await.unwrap();
    assert!(!server.object_path(&store.payload_key(TID)).exists());
    assert!(!server.object_path(&store.manifest_key(TID)).exists());
    let e = valid.fetch(0, &mut buf).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("404"), "{e}");
    assert!(e.message.contains("ask the sender for a new ticket"), "{e}");
    let e = valid.fetch_manifest(1 << 20).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("404"), "{e}");
    // Deleting again is not an error.
    store.delete(TID).await.unwrap();
}

/// A byte flipped in the stored object: fetched again, then CorruptChunk; nothing renamed.
#[tokio::test]
async fn a_corrupt_stored_chunk_is_refetched_then_reported() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_source(dir.path(), 6 * C);
    let src = offer(&path);
    let layout = *src.manifest().layout();
    let store = store(&server);
    upload(&store, &src).await.unwrap();
    let object = server.object_path(&store.payload_key(TID));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(&object)
        .unwrap();
    let at = layout.sealed_offset(2) + 1000;
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], at).unwrap();

    let (murl, purl) = urls(store.presign(TID, now() + 3600, now()).unwrap());
    let source = PresignedSource::new(&murl, &purl, layout).unwrap();
    let dest = dir.path().join("out.bin");
    let d = downloader(src.manifest().clone(), &dest, 3, Duration::from_secs(30));
    match d.run(&source).await {
        Err(FetchError::CorruptChunk { index, attempts }) => {
            assert_eq!((index, attempts), (2, 3));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !dest.exists(),
        "a corrupt download must never be renamed into place"
    );
    assert!(partial_path(&dest).exists());
}

/// The stored object cut short: the missing chunks fail as unavailable, bounded; the partial
/// file is kept for a resume.
#[tokio::test]
async fn a_truncated_object_is_unavailable_and_bounded() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_source(dir.path(), 6 * C);
    let src = offer(&path);
    let layout = *src.manifest().layout();
    let store = store(&server);
    upload(&store, &src).await.unwrap();
    let object = server.object_path(&store.payload_key(TID));
    let last = layout.chunk_count() - 1;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&object)
        .unwrap();
    f.set_len(layout.sealed_offset(last) + 100).unwrap();

    let (murl, purl) = urls(store.presign(TID, now() + 3600, now()).unwrap());
    let source = PresignedSource::new(&murl, &purl, layout).unwrap();
    let mut buf = vec![0u8; layout.sealed_len(last) as usize];
    let e = source.fetch(last, &mut buf).await.unwrap_err();
    assert!(e.retryable, "{e}");
    let dest = dir.path().join("out.bin");
    let d = downloader(src.manifest().clone(), &dest, 3, Duration::from_secs(30));
    match d.run(&source).await {
        Err(FetchError::Source { index, error }) => {
            assert_eq!(index, last);
            assert!(error.retryable, "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!dest.exists() && partial_path(&dest).exists());
}

/// A server answering 500, stalling, or sending short or long bodies: each fetch is
/// unavailable (retryable), the Downloader gives up after its bound, the partial file stays.
#[tokio::test]
async fn a_failing_server_is_unavailable_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_source(dir.path(), 1000);
    let src = offer(&path);
    let layout = *src.manifest().layout();
    assert_eq!(layout.chunk_count(), 1);
    let len = layout.sealed_len(0) as usize;
    for (mode, expect) in [
        (Misbehave::Status500, "HTTP 500"),
        (Misbehave::Stall, "no answer"),
        (Misbehave::Short, "chunk 0 GET"),
        (Misbehave::Long, "more than the chunk"),
    ] {
        let server = BadServer::start(mode, len).await;
        let source = PresignedSource::new(&server.url("m"), &server.url("p"), layout).unwrap();
        let dest = dir.path().join(format!("out-{mode:?}"));
        // Short only where the server stalls: elsewhere a loaded machine must not turn a real
        // answer into a timeout.
        let timeout = if mode == Misbehave::Stall {
            Duration::from_millis(300)
        } else {
            Duration::from_secs(20)
        };
        let d = downloader(src.manifest().clone(), &dest, 3, timeout);
        let r = tokio::time::timeout(Duration::from_secs(120), d.run(&source))
            .await
            .expect("the download must end by itself");
        match r {
            Err(FetchError::Source { index: 0, error }) => {
                assert!(error.retryable, "{mode:?}: {error}");
                assert!(error.message.contains(expect), "{mode:?}: {error}");
            }
            other => panic!("{mode:?}: {other:?}"),
        }
        assert_eq!(
            server.requests.load(Ordering::SeqCst),
            3,
            "{mode:?}: bounded"
        );
        assert!(!dest.exists() && partial_path(&dest).exists(), "{mode:?}");
        if mode == Misbehave::Status500 {
            let e = source.fetch_manifest(1 << 20).await.unwrap_err();
            assert!(e.retryable && e.message.contains("HTTP 500"), "{e}");
        }
        if mode == Misbehave::Stall {
            let e = source
                .clone()
                .with_timeout(timeout)
                .fetch_manifest(1 << 20)
                .await
                .unwrap_err();
            assert!(e.retryable && e.message.contains("no answer within"), "{e}");
        }
    }
    // Nothing listening: a connection error, unavailable.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{gone}/p");
    let source = PresignedSource::new(&url, &url, layout).unwrap();
    let mut buf = vec![0u8; len];
    let e = source.fetch(0, &mut buf).await.unwrap_err();
    assert!(e.retryable, "{e}");
    assert!(PresignedSource::new("ftp://x/y", &url, layout).is_err());
}

/// An S3 endpoint answering 500, or never answering: the upload fails with a transient error
/// after a bounded number of attempts instead of hanging or retrying forever.
#[tokio::test]
async fn a_failing_or_stalled_endpoint_fails_the_upload_after_bounded_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_source(dir.path(), 3 * C);
    let src = offer(&path);
    for (mode, expect) in [
        (Misbehave::Status500, "HTTP 500"),
        (Misbehave::Stall, "no answer within"),
    ] {
        let server = BadServer::start(mode, 0).await;
        let store = S3Store::new(
            settings(&format!("http://{}", server.addr)),
            S3Credentials::new(ACCESS_KEY, SECRET_KEY),
        )
        .unwrap()
        .with_request_timeout(if mode == Misbehave::Stall {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(20)
        });
        let e = tokio::time::timeout(Duration::from_secs(120), upload(&store, &src))
            .await
            .expect("the upload must end by itself")
            .unwrap_err();
        assert!(e.is_transient(), "{mode:?}: {e}");
        assert!(e.to_string().contains(expect), "{mode:?}: {e}");
        assert_eq!(
            server.requests.load(Ordering::SeqCst),
            u64::from(hermes_actors::sync::s3::MAX_ATTEMPTS),
            "{mode:?}: bounded attempts"
        );
    }
}

/// A completion whose answer comes after the client's time limit: the server completed the
/// object, so the retry is refused (the upload id is consumed); the object is there with the
/// sealed size, and the upload counts as done instead of failing with that refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_whose_answer_was_lost_counts_as_done() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_source(dir.path(), SIZE);
    let src = offer(&path);
    // Limit: 2 s plus 1 s for assembling the 18 MiB object; the answer comes after 6 s.
    let store = store(&server).with_request_timeout(Duration::from_secs(2));
    server
        .state
        .complete_answer_delay_ms
        .store(6000, Ordering::SeqCst);
    let summary = tokio::time::timeout(Duration::from_secs(120), upload(&store, &src))
        .await
        .expect("the upload ends")
        .expect("the upload counts as complete");
    assert_eq!(summary.parts_uploaded, summary.parts_total);
    assert_eq!(
        server.state.complete_answer_delay_ms.load(Ordering::SeqCst),
        0,
        "the delayed answer was given"
    );
    let object = std::fs::read(server.object_path(&store.payload_key(TID))).unwrap();
    assert!(
        object == sealed_object(&src),
        "the object is the sealed payload"
    );
}

/// The child side of the `kill -9` test: uploads against the parent's server until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by an_upload_killed_with_sigkill_resumes_without_resending_parts"]
async fn child_upload_until_killed() {
    let (Ok(endpoint), Ok(source)) = (
        std::env::var("HERMES_S3_CHILD_ENDPOINT"),
        std::env::var("HERMES_S3_CHILD_SOURCE"),
    ) else {
        return;
    };
    let src = offer(Path::new(&source));
    let store = S3Store::new(
        settings(&endpoint),
        S3Credentials::new(ACCESS_KEY, SECRET_KEY),
    )
    .unwrap();
    let r = store.upload(src, 2, |_, _| {}, no_cancel()).await;
    eprintln!("child upload ended: {r:?}");
}

/// A real child process uploads until two parts are stored (the rest are held by the server),
/// is killed with SIGKILL, and the upload is run again here: the open upload is found, the two
/// parts are not sent again, the object is byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_killed_with_sigkill_resumes_without_resending_parts() {
    let server = S3Server::start().await;
    server.state.hold_after.store(2, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_source(dir.path(), SIZE);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_upload_until_killed",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HERMES_S3_CHILD_ENDPOINT", &server.endpoint)
        .env("HERMES_S3_CHILD_SOURCE", &path)
        .spawn()
        .unwrap();
    server
        .state
        .wait_until("two parts stored and one held", |s| {
            s.parts_stored.load(Ordering::SeqCst) >= 2 && s.parts_held.load(Ordering::SeqCst) >= 1
        })
        .await;
    assert_eq!(server.part_files(), 2, "two parts are listed on the server");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    server.state.hold_after.store(u64::MAX, Ordering::SeqCst);

    let src = offer(&path);
    let layout = *src.manifest().layout();
    let plan = PartPlan::new(layout).unwrap();
    let store = store(&server);
    let summary = upload(&store, &src).await.unwrap();
    assert!(summary.resumed_upload, "{summary:?}");
    assert_eq!(summary.parts_resumed, 2, "{summary:?}");
    assert_eq!(summary.parts_uploaded, plan.part_count() - 2, "{summary:?}");
    let resent: u64 = (2..plan.part_count())
        .map(|i| plan.part(i).unwrap().len)
        .sum();
    assert_eq!(summary.bytes_uploaded, resent);
    let object = std::fs::read(server.object_path(&store.payload_key(TID))).unwrap();
    assert!(object == sealed_object(&src), "stored object differs");
}

/// A cancelled upload stops with Cancelled and keeps its parts; the next run resumes them.
#[tokio::test]
async fn a_cancelled_upload_resumes() {
    let server = S3Server::start().await;
    server.state.hold_after.store(1, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_source(dir.path(), SIZE);
    let src = offer(&path);
    let store = store(&server);
    let (tx, rx) = watch::channel(false);
    let state = server.state.clone();
    let cancel_when_held = async move {
        state
            .wait_until("a part held", |s| s.parts_held.load(Ordering::SeqCst) >= 1)
            .await;
        tx.send_replace(true);
        tx
    };
    let (r, _tx) = tokio::join!(
        store.upload(src.clone(), 1, |_, _| {}, rx),
        cancel_when_held
    );
    assert!(matches!(r, Err(S3Error::Cancelled)), "{r:?}");
    server.state.hold_after.store(u64::MAX, Ordering::SeqCst);
    let summary = upload(&store, &src).await.unwrap();
    assert_eq!(
        (summary.parts_resumed, summary.parts_uploaded),
        (1, 3),
        "{summary:?}"
    );
}

/// A wrong secret: the upload fails with a clear 403, not retried.
#[tokio::test]
async fn a_wrong_secret_is_a_clear_403() {
    let server = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_source(dir.path(), 3 * C);
    let src = offer(&path);
    let bad = S3Store::new(
        settings(&server.endpoint),
        S3Credentials::new(ACCESS_KEY, "not-the-secret"),
    )
    .unwrap();
    let e = upload(&bad, &src).await.unwrap_err();
    match &e {
        S3Error::Http { status: 403, .. } => {}
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("HTTP 403") && text.contains("check the access key"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret"), "{text}");
    assert!(!format!("{bad:?}").contains("not-the-secret"));
}

#[test]
fn settings_are_checked() {
    let creds = || S3Credentials::new("a", "b");
    let mut s = settings("not a url");
    assert!(matches!(
        S3Store::new(s.clone(), creds()),
        Err(S3Error::Config(_))
    ));
    s.endpoint = "ftp://host".into();
    assert!(matches!(
        S3Store::new(s.clone(), creds()),
        Err(S3Error::Config(_))
    ));
    s.endpoint = "https://s3.example.com".into();
    s.bucket = String::new();
    assert!(matches!(
        S3Store::new(s.clone(), creds()),
        Err(S3Error::Config(_))
    ));
    s.bucket = "b".into();
    let store = S3Store::new(s.clone(), creds()).unwrap();
    assert_eq!(
        store.payload_key(TID),
        "hermes/05050505050505050505050505050505.sealed"
    );
    let (_, path_style) = urls(store.presign(TID, 2_000_000_060, 2_000_000_000).unwrap());
    assert!(
        path_style.starts_with("https://s3.example.com/b/hermes/0505"),
        "{path_style}"
    );
    // Virtual-hosted style (AWS), and temporary credentials: the token travels in the URL.
    s.path_style = false;
    let mut temp = creds();
    temp.session_token = Some("TOKEN".into());
    let store = S3Store::new(s, temp).unwrap();
    let (murl, purl) = urls(store.presign(TID, 2_000_000_060, 2_000_000_000).unwrap());
    assert!(
        purl.starts_with("https://b.s3.example.com/hermes/0505") && purl.contains(".sealed?"),
        "{purl}"
    );
    assert!(murl.contains(".manifest?"), "{murl}");
    for needle in [
        "X-Amz-Expires=60",
        "X-Amz-Date=20330518T033320Z",
        "X-Amz-Security-Token=TOKEN",
        "X-Amz-Signature=",
    ] {
        assert!(purl.contains(needle), "{needle}: {purl}");
    }
}

/// Conformance subset against a second, independent S3 implementation (moto's server, started
/// by `actors/tests/s3_moto.sh`): an upload cancelled after its first part and resumed, the
/// parts listed by that server skipped, a byte-exact download through presigned URLs, and a
/// revocation answered 404. Needs `HERMES_S3_EXTERNAL_ENDPOINT` (path-style, bucket
/// `transfers`, any credentials accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs HERMES_S3_EXTERNAL_ENDPOINT; run by actors/tests/s3_moto.sh"]
async fn external_server_conformance() {
    let Ok(endpoint) = std::env::var("HERMES_S3_EXTERNAL_ENDPOINT") else {
        panic!("set HERMES_S3_EXTERNAL_ENDPOINT (see actors/tests/s3_moto.sh)");
    };
    let store = S3Store::new(
        settings(&endpoint),
        S3Credentials::new(ACCESS_KEY, SECRET_KEY),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = write_source(dir.path(), SIZE);
    let src = offer(&path);
    let layout = *src.manifest().layout();
    let plan = PartPlan::new(layout).unwrap();
    let _ = store.delete(TID).await;

    // One part at a time; once half of the second part was handed over, the first one was
    // answered (stored), so the cancelled upload leaves at least one part on the server.
    let first = plan.part(0).unwrap().len;
    let threshold = first + plan.part(1).unwrap().len / 2;
    let (tx, rx) = watch::channel(false);
    let r = store
        .upload(
            src.clone(),
            1,
            move |done, _| {
                if done >= threshold {
                    tx.send_replace(true);
                }
            },
            rx,
        )
        .await;
    assert!(matches!(r, Err(S3Error::Cancelled)), "{r:?}");
    let summary = upload(&store, &src).await.unwrap();
    assert!(summary.resumed_upload, "{summary:?}");
    assert!(summary.parts_resumed >= 1, "{summary:?}");
    assert_eq!(
        summary.parts_resumed + summary.parts_uploaded,
        plan.part_count(),
        "{summary:?}"
    );

    let (murl, purl) = urls(store.presign(TID, now() + 3600, now()).unwrap());
    let source = PresignedSource::new(&murl, &purl, layout).unwrap();
    let m = source.fetch_manifest(64 << 20).await.unwrap();
    assert_eq!(m, src.manifest().encode());
    let dest = dir.path().join("out.bin");
    let d = downloader(src.manifest().clone(), &dest, 4, Duration::from_secs(30));
    d.run(&source).await.unwrap();
    assert!(
        std::fs::read(&dest).unwrap() == bytes,
        "downloaded file differs"
    );

    store.delete(TID).await.unwrap();
    let mut buf = vec![0u8; layout.sealed_len(0) as usize];
    let e = source.fetch(0, &mut buf).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("404"), "{e}");
}
