//! `hermes init`, `id`, `sign` and `verify`: identities from fresh keys, URIs and existing wallet files.

use crate::support::{
    assert_clean_failure, hermes, id_json, init, register_config, run, stderr, stdout,
};
use std::path::Path;

#[test]
fn alice_uri_gives_the_known_address() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(dir.path());
    let v = id_json(&cfg, Some("//Alice"));
    assert_eq!(
        v["ss58"],
        "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
    );
    assert_eq!(
        v["public_key"],
        "0xd43593c715fdd31c61141abd04a99fd6822c8558854ccde39a5684e7a56da27d"
    );
}

#[test]
fn init_then_id_reports_the_files_identity() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(dir.path());
    let hotkey: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("hotkey")).unwrap()).unwrap();
    let v = id_json(&cfg, None);
    assert_eq!(v["ss58"], hotkey["ss58Address"]);
    assert_eq!(v["public_key"], hotkey["publicKey"]);
    let peer = v["peer_id"].as_str().unwrap();
    assert!(peer.starts_with("12D3KooW"), "{peer}");
    assert!(hermes::proto::validate_peer_id(peer.as_bytes()));
    assert_eq!(v["binding"]["netuids"], serde_json::json!([7]));
    // The printed binding decodes and verifies for that peer id.
    let enc = v["binding"]["encoded"].as_str().unwrap();
    let b = hermes::proto::SignedBinding::decode(&hex::decode(&enc[2..]).unwrap()).unwrap();
    let pid: libp2p::PeerId = peer.parse().unwrap();
    let now = b.record.issued_at;
    b.verify(&pid.to_bytes(), None, now).unwrap();
    // Same identity on a second run; init refuses to overwrite.
    assert_eq!(id_json(&cfg, None)["peer_id"], v["peer_id"]);
    let o = run(hermes(&["init", "--dir"]).arg(dir.path()));
    assert_clean_failure(&o, "already exists");
    // Text output carries the same facts.
    let o = run(&mut hermes(&["id", "--config", &cfg]));
    let text = stdout(&o);
    assert!(
        text.contains(v["ss58"].as_str().unwrap()) && text.contains(peer),
        "{text}"
    );
}

#[test]
fn init_with_existing_bittensor_hotkey() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(hermes(&["init", "--dir"])
        .arg(dir.path())
        .args(["--hotkey-file", "tests/fixtures/bittensor_hotkey"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = dir.path().join("hermes.json").display().to_string();
    assert_eq!(
        id_json(&cfg, None)["ss58"],
        "5EkCNqdETwKhGvLFmMBhL298SZiYiwuCgrrzdkRYGV5zjJhx"
    );
}

#[test]
fn sign_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(dir.path());
    let ss58 = id_json(&cfg, None)["ss58"].as_str().unwrap().to_string();
    let o = run(&mut hermes(&[
        "sign",
        "--config",
        &cfg,
        "--message",
        "hello subnet",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let sig = stdout(&o).trim().to_string();
    assert!(sig.starts_with("0x") && sig.len() == 130, "{sig}");

    let verify = |args: &[&str]| {
        run(&mut hermes(&[&["verify"], args].concat()))
            .status
            .code()
    };
    // Verify `message` against `sig` as signed by `signer`.
    let check = |signer: &str, message: &str, sig: &str| {
        verify(&["--ss58", signer, "--message", message, "--signature", sig])
    };
    assert_eq!(check(&ss58, "hello subnet", &sig), Some(0));
    // The same bytes given as hex.
    let hex_msg = format!("0x{}", hex::encode("hello subnet"));
    assert_eq!(
        verify(&["--ss58", &ss58, "--hex", &hex_msg, "--signature", &sig]),
        Some(0)
    );
    // Other bytes, another signer, a corrupted signature: exit 1.
    assert_eq!(check(&ss58, "hello subnet!", &sig), Some(1));
    let alice = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
    assert_eq!(check(alice, "hello subnet", &sig), Some(1));
    let mut bad = sig.clone().into_bytes();
    bad[20] = if bad[20] == b'0' { b'1' } else { b'0' };
    let bad = String::from_utf8(bad).unwrap();
    assert_eq!(check(&ss58, "hello subnet", &bad), Some(1));
    // Malformed inputs are refused with a reason, still exit 1.
    let o = run(&mut hermes(&[
        "verify",
        "--ss58",
        "5xyz",
        "--message",
        "m",
        "--signature",
        &sig,
    ]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--ss58"), "{}", stderr(&o));
    let o = run(&mut hermes(&[
        "verify",
        "--ss58",
        &ss58,
        "--message",
        "m",
        "--signature",
        "0xabc",
    ]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--signature"), "{}", stderr(&o));

    // A signature from `--hex` input verifies against the same bytes given as text.
    let o = run(&mut hermes(&["sign", "--config", &cfg, "--hex", &hex_msg]));
    let sig2 = stdout(&o).trim().to_string();
    assert_eq!(check(&ss58, "hello subnet", &sig2), Some(0));

    // `hermes sign` signs under the application domain: its signature is no plain substrate
    // signature over the bytes (so it cannot be one over a binding record or an extrinsic), and
    // a plain one is checked only with `--raw`.
    let raw_check = |signer: &str, message: &str, sig: &str| {
        verify(&[
            "--ss58",
            signer,
            "--message",
            message,
            "--signature",
            sig,
            "--raw",
        ])
    };
    assert_eq!(raw_check(&ss58, "hello subnet", &sig), Some(1));
    let key = hermes::HotkeyPair::load_bittensor_file(&dir.path().join("hotkey")).unwrap();
    let plain = format!("0x{}", hex::encode(key.sign_raw(b"hello subnet")));
    assert_eq!(raw_check(&ss58, "hello subnet", &plain), Some(0));
    assert_eq!(check(&ss58, "hello subnet", &plain), Some(1));
    assert!(key
        .public()
        .verify_app(b"hello subnet", &hex::decode(&sig[2..]).unwrap()));
}

/// A runtime embedded in another process holds the data dir and serves no control socket: `id`
/// still reports the identity from the key files (the binding record, which lives in that
/// runtime's store, is left out and said so), and `sign` needs only the hotkey.
#[test]
fn id_and_sign_work_while_an_embedded_runtime_holds_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(dir.path());
    let before = id_json(&cfg, None);
    let config = hermes::Config::load(Path::new(&cfg)).unwrap();
    let rt =
        futures::executor::block_on(hermes::Runtime::builder(config).with_logging(false).start())
            .unwrap();
    let o = run(&mut hermes(&["id", "--config", &cfg, "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for k in ["ss58", "public_key", "peer_id", "transport_key_type"] {
        assert_eq!(v[k], before[k], "{k}");
    }
    assert!(v["binding"].is_null(), "{v}");
    assert!(
        stderr(&o).contains("binding record is left out"),
        "{}",
        stderr(&o)
    );
    let o = run(&mut hermes(&["id", "--config", &cfg, "--field", "peer_id"]));
    assert_eq!(stdout(&o).trim(), before["peer_id"].as_str().unwrap());
    let o = run(&mut hermes(&["id", "--config", &cfg, "--field", "binding"]));
    assert_clean_failure(&o, "no control socket");
    let o = run(&mut hermes(&["sign", "--config", &cfg, "--message", "x"]));
    assert!(o.status.success(), "{}", stderr(&o));
    futures::executor::block_on(rt.shutdown()).unwrap();
}

/// `hermes init` writes everything the tutorial used to edit by hand (dev chain, bootstrap,
/// listen addresses), and `devchain register --config` takes the SS58 address, peer id, chain
/// and subnet from the node's files; explicit flags still override.
#[test]
fn init_flags_and_register_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let chain = dir.path().join("chain");
    let boot = ["/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1"];
    let o = run(hermes(&["init", "--dir"])
        .arg(dir.path().join("n1"))
        .args([
            "--netuid",
            "7",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--chain",
        ])
        .arg(&chain)
        .args(["--bootstrap", boot[0], "--bootstrap", boot[1]]));
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = dir.path().join("n1/hermes.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    assert_eq!(v["chain"]["kind"], "dev");
    assert_eq!(v["chain"]["path"], chain.to_str().unwrap());
    assert_eq!(v["bootstrap"], serde_json::json!(boot));
    assert_eq!(v["listen"], serde_json::json!(["/ip4/127.0.0.1/tcp/0"]));
    let cfg = cfg.to_str().unwrap();
    let id = id_json(cfg, None);

    // Relative --chain is taken relative to where the command runs, not to the node dir.
    let o = run(hermes(&["init", "--dir", "n2", "--chain", "chain"]).current_dir(dir.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let v2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("n2/hermes.json")).unwrap()).unwrap();
    assert_eq!(
        Path::new(v2["chain"]["path"].as_str().unwrap()),
        std::path::absolute(dir.path().join("chain")).unwrap()
    );

    register_config(cfg);
    let list = || -> serde_json::Value {
        let o = run(hermes(&["devchain", "list", "--chain"]).arg(&chain));
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str(&stdout(&o)).unwrap()
    };
    let v = list();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(
        (&v["nodes"][0]["hotkey"], &v["nodes"][0]["peer_id"]),
        (&id["ss58"], &id["peer_id"])
    );
    assert_eq!(v["nodes"][0]["netuid"], 7);
    // --netuid overrides the node's own subnet.
    let o = run(&mut hermes(&[
        "devchain", "register", "--config", cfg, "--stake", "5", "--netuid", "9",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v = list();
    assert_eq!(v["nodes"].as_array().unwrap().len(), 2, "{v}");

    // No default subnet for a node that serves two: a clear error naming the flag.
    let o = run(hermes(&["init", "--dir"])
        .arg(dir.path().join("n3"))
        .args(["--netuid", "3", "--netuid", "7", "--chain"])
        .arg(&chain));
    assert!(o.status.success(), "{}", stderr(&o));
    let c3 = dir.path().join("n3/hermes.json");
    let o = run(hermes(&["devchain", "register", "--stake", "5", "--config"]).arg(&c3));
    assert_clean_failure(&o, "--netuid");
    // Without --config, the explicit flags are required.
    let o = run(&mut hermes(&["devchain", "register", "--stake", "5"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--chain"), "{}", stderr(&o));
    // A bad bootstrap address is refused before anything is written.
    let o = run(hermes(&["init", "--dir"])
        .arg(dir.path().join("n4"))
        .args(["--bootstrap", "localhost:4001"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--bootstrap"), "{}", stderr(&o));
    assert!(!dir.path().join("n4").exists());
}

/// A failed `init` leaves no directory (nor part of one) behind, so the retry does not trip on
/// "already exists".
#[test]
fn failed_init_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_key = dir.path().join("not-a-key");
    std::fs::write(&not_a_key, "{}").unwrap();
    for bad in [dir.path().join("no-such-file"), not_a_key] {
        let target = dir.path().join("new").join("node");
        let o = run(hermes(&["init", "--dir"])
            .arg(&target)
            .arg("--hotkey-file")
            .arg(&bad));
        assert!(!o.status.success());
        assert!(stderr(&o).starts_with("error:"), "{}", stderr(&o));
        assert!(!dir.path().join("new").exists(), "init left a directory");
        // In a directory that already exists, nothing is added to it.
        let existing = dir.path().join("existing");
        std::fs::create_dir_all(&existing).unwrap();
        let o = run(hermes(&["init", "--dir"])
            .arg(&existing)
            .arg("--hotkey-file")
            .arg(&bad));
        assert!(!o.status.success());
        assert_eq!(std::fs::read_dir(&existing).unwrap().count(), 0);
    }
    // The same directory then works.
    let o = run(hermes(&["init", "--dir"]).arg(dir.path().join("new").join("node")));
    assert!(o.status.success(), "{}", stderr(&o));
}
