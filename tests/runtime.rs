//! Runtime lifecycle against real sled databases and key files in temp dirs.

mod common;

use common::{fd_count, thread_count, unix_now, wait_until, NodeDir};
use hermes::{Error, Runtime};
use std::time::Duration;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}

#[test]
fn start_shutdown_start_again_keeps_identity() {
    let node = NodeDir::new();
    let (peer, prekey) = block_on(async {
        let rt = Runtime::builder(node.config()).start().await.unwrap();
        let info = rt.identity().await.unwrap();
        assert_eq!(info.ss58, node.ss58);
        assert_eq!(info.binding.record.netuids, vec![3, 42]);
        rt.shutdown().await.unwrap();
        // A handle after shutdown reports it, instead of hanging.
        assert!(matches!(rt.identity().await, Err(Error::Stopped)));
        (info.peer_id, info.binding.record.prekey)
    });
    block_on(async {
        let rt = Runtime::builder(node.config()).start().await.unwrap();
        let info = rt.identity().await.unwrap();
        // Transport key and prekey were persisted, so the node is the same node.
        assert_eq!(info.peer_id, peer);
        assert_eq!(info.binding.record.prekey, prekey);
        rt.shutdown().await.unwrap();
        // Idempotent.
        rt.shutdown().await.unwrap();
    });
}

#[test]
fn second_runtime_on_a_busy_dir_is_refused() {
    let node = NodeDir::new();
    block_on(async {
        let a = Runtime::builder(node.config()).start().await.unwrap();
        match Runtime::builder(node.config()).start().await {
            Err(Error::DataDirInUse(p)) => assert_eq!(p, node.data_dir()),
            other => panic!("expected DataDirInUse, got {other:?}"),
        }
        let msg = Runtime::builder(node.config())
            .start()
            .await
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("data dir in use"), "{msg}");
        // The first runtime is unaffected.
        a.identity().await.unwrap();
        a.shutdown().await.unwrap();
        // And once it is gone the dir is free again.
        let b = Runtime::builder(node.config()).start().await.unwrap();
        b.shutdown().await.unwrap();
    });
}

#[test]
fn two_runtimes_with_different_dirs_run_side_by_side() {
    let (n1, n2) = (NodeDir::new(), NodeDir::new());
    block_on(async {
        let a = Runtime::builder(n1.config()).start().await.unwrap();
        let b = Runtime::builder(n2.config()).start().await.unwrap();
        let (ia, ib) = (a.identity().await.unwrap(), b.identity().await.unwrap());
        assert_ne!(ia.peer_id, ib.peer_id);
        assert_eq!(ia.ss58, n1.ss58);
        assert_eq!(ib.ss58, n2.ss58);
        // B checks A's binding as it will on a connection from A...
        let ok = b
            .verify_binding(ia.binding.encode(), ia.peer_id, Some(ia.hotkey))
            .await
            .unwrap();
        assert_eq!(ok, ia.binding);
        // ...and refuses it when presented over a connection from someone else.
        let err = b
            .verify_binding(ia.binding.encode(), ib.peer_id, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("binding is for peer id"), "{err}");
        // Or when it is another hotkey's binding than the one registered for that peer.
        let err = b
            .verify_binding(ia.binding.encode(), ia.peer_id, Some(ib.hotkey))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("binding is signed by"), "{err}");
        a.shutdown().await.unwrap();
        b.shutdown().await.unwrap();
    });
}

#[test]
fn handle_is_clone_send_sync_and_works_from_any_thread() {
    fn assert_traits<T: Clone + Send + Sync + 'static>() {}
    assert_traits::<hermes::RuntimeHandle>();
    let node = NodeDir::new();
    let rt = block_on(Runtime::builder(node.config()).start()).unwrap();
    // From a tokio runtime...
    let tokio_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let h = rt.clone();
    let sig = tokio_rt.block_on(async move { h.sign(b"from tokio").await.unwrap() });
    let pk = block_on(rt.identity()).unwrap().hotkey;
    assert!(pk.verify_app(b"from tokio", &sig));
    // ...and from plain threads at once.
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let h = rt.clone();
            std::thread::spawn(move || {
                let msg = format!("thread {i}");
                let sig = block_on(h.sign(msg.as_bytes())).unwrap();
                (msg, sig)
            })
        })
        .collect();
    for t in threads {
        let (msg, sig) = t.join().unwrap();
        assert!(pk.verify_app(msg.as_bytes(), &sig));
    }
    block_on(rt.shutdown()).unwrap();
}

#[test]
fn panicking_actor_is_restarted_with_state_reloaded() {
    let node = NodeDir::new();
    block_on(async {
        let rt = Runtime::builder(node.config()).start().await.unwrap();
        let before = rt.identity().await.unwrap();
        assert_eq!(before.restarts, 0);
        let err = rt.inject_identity_panic().await.unwrap_err().to_string();
        assert!(err.contains("crashed"), "{err}");
        // Same address, restarted actor, same persisted identity.
        let after = rt.identity().await.unwrap();
        assert_eq!(after.restarts, 1);
        assert_eq!(after.peer_id, before.peer_id);
        assert_eq!(after.binding.record.prekey, before.binding.record.prekey);
        assert_eq!(after.ss58, before.ss58);
        rt.shutdown().await.unwrap();
    });
}

#[test]
fn dropping_every_handle_releases_the_data_dir() {
    let node = NodeDir::new();
    let rt = block_on(Runtime::builder(node.config()).start()).unwrap();
    drop(rt);
    let again = block_on(Runtime::builder(node.config()).start()).unwrap();
    block_on(again.shutdown()).unwrap();
}

#[test]
fn twenty_cycles_leak_no_threads_or_files() {
    let node = NodeDir::new();
    let cycle = || {
        block_on(async {
            let rt = Runtime::builder(node.config()).start().await.unwrap();
            rt.identity().await.unwrap();
            rt.shutdown().await.unwrap();
        })
    };
    // Warm up once: lazily created process-wide pools are not leaks.
    cycle();
    let (threads, fds) = (thread_count(), fd_count());
    for _ in 0..20 {
        cycle();
    }
    // Threads of the last cycle may still be unwinding for a moment after join; allow a bounded
    // wait for them to go, never a fixed sleep.
    assert!(
        wait_until(Duration::from_secs(10), || thread_count() <= threads),
        "threads grew from {threads} to {}",
        thread_count()
    );
    assert!(
        wait_until(Duration::from_secs(10), || fd_count() <= fds),
        "open files grew from {fds} to {}",
        fd_count()
    );
}

/// An application that signs whatever it is handed (a challenge, a request) must not become a
/// binding oracle: handed the signing payload of a binding record that vouches for an attacker's
/// peer id under its hotkey, the signature it returns must not make that record valid.
#[test]
fn an_application_signature_never_verifies_as_a_binding_signature() {
    let node = NodeDir::new();
    block_on(async {
        let rt = Runtime::builder(node.config())
            .with_network(false)
            .start()
            .await
            .unwrap();
        let me = rt.identity().await.unwrap();
        let attacker = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let mut record = me.binding.record.clone();
        record.peer_id = attacker.to_bytes();
        let payload = record.signing_payload();
        let signature = rt.sign(&payload).await.unwrap();
        let forged = hermes::proto::SignedBinding { record, signature };
        assert!(
            forged
                .verify(&attacker.to_bytes(), Some(&me.hotkey), unix_now())
                .is_err(),
            "an application signature made a binding record valid"
        );
        let err = rt
            .verify_binding(forged.encode(), attacker, Some(me.hotkey))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not verify"), "{err}");
        // It is a valid application signature over those bytes, and only that.
        assert!(rt.verify(&me.hotkey, &payload, &signature));
        assert!(!me.hotkey.verify(&payload, &signature));
        // The genuine binding's signature is, conversely, no application signature.
        assert!(!rt.verify(
            &me.hotkey,
            &me.binding.record.signing_payload(),
            &me.binding.signature
        ));
        rt.shutdown().await.unwrap();
    });
}
