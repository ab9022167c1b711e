//! Identity costs that the connection path will pay: binding decode and verify, compared in the
//! same run with the raw sr25519 verification they are built on (the floor), and the round trip
//! of a signing request through the IdentityActor compared with signing in place.
//!
//! Run: `cargo bench --bench identity`

use hermes::proto::{BindingRecord, Hotkey, SignedBinding};
use hermes::{Config, HotkeyPair, Runtime};
use std::hint::black_box;
use std::time::Instant;

fn rate(label: &str, n: u32, f: impl FnMut(u32)) -> f64 {
    let mut f = f;
    for i in 0..n / 10 {
        f(i);
    }
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    let per_s = f64::from(n) / t.elapsed().as_secs_f64();
    println!("{label:<52} {per_s:>12.0} /s  {:>8.2} µs each", 1e6 / per_s);
    per_s
}

fn main() {
    let (key, file) = HotkeyPair::generate();
    let peer = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id()
        .to_bytes();
    let now = 1_800_000_000;
    let signed = BindingRecord {
        hotkey: key.public(),
        ss58_prefix: 42,
        peer_id: peer.clone(),
        netuids: vec![1, 3, 42],
        prekey: [5; 32],
        issued_at: now,
        expires_at: now + 86_400,
    }
    .sign(key.pair())
    .expect("sign");
    let bytes = signed.encode();
    let payload = signed.record.signing_payload();
    let hk: Hotkey = key.public();

    println!("== binding records ({} bytes encoded) ==", bytes.len());
    let base = rate(
        "baseline: raw sr25519 verify of the same payload",
        20_000,
        |_| {
            assert!(hk.verify(black_box(&payload), &signed.signature));
        },
    );
    let full = rate(
        "decode + verify (signature, peer id, window)",
        20_000,
        |_| {
            let b = SignedBinding::decode(black_box(&bytes)).expect("decode");
            b.verify(&peer, Some(&hk), now + 1).expect("verify");
        },
    );
    rate("decode only", 2_000_000, |_| {
        black_box(SignedBinding::decode(black_box(&bytes)).expect("decode"));
    });
    println!(
        "overhead of decode + checks over raw verify: {:.1}%",
        (base / full - 1.0) * 100.0
    );

    println!("\n== hotkey signing ==");
    rate("baseline: sign in place", 20_000, |i| {
        black_box(key.sign_raw(&i.to_le_bytes()));
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let hotkey = dir.path().join("hotkey");
    file.write_new(&hotkey).expect("hotkey file");
    let cfg = Config::default()
        .with_data_dir(dir.path().join("data"))
        .with_hotkey_file(&hotkey)
        .with_log_level("warn");
    let rt = futures::executor::block_on(Runtime::builder(cfg.clone()).with_logging(false).start())
        .expect("start");
    rate(
        "through the IdentityActor (Sign message, await reply)",
        20_000,
        |i| {
            black_box(futures::executor::block_on(rt.sign(&i.to_le_bytes())).expect("sign"));
        },
    );
    futures::executor::block_on(rt.shutdown()).expect("shutdown");

    println!("\n== runtime lifecycle ==");
    let n = 20u32;
    let t = Instant::now();
    for _ in 0..n {
        futures::executor::block_on(async {
            let rt = Runtime::builder(cfg.clone())
                .with_logging(false)
                .start()
                .await
                .expect("start");
            rt.shutdown().await.expect("shutdown");
        });
    }
    println!(
        "start + shutdown on an existing data dir: {:.2} ms per cycle",
        t.elapsed().as_secs_f64() * 1e3 / f64::from(n)
    );
}
