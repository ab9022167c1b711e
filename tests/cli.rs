//! The `hermes` binary's contract, exercised as a user would: real processes, real files.

use std::path::Path;
use std::process::{Command, Output};

fn hermes(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hermes"));
    c.args(args)
        .env_remove("HERMES_HOTKEY_URI")
        .env_remove("RUST_LOG");
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run hermes")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failure: non-zero exit, a first line starting `error:` naming `needle`, no panic.
fn assert_clean_failure(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(first.starts_with("error:"), "first line: {first}");
    assert!(err.contains(needle), "`{needle}` not in: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

fn init(dir: &Path) -> String {
    let o = run(hermes(&["init", "--dir"]).arg(dir).args(["--netuid", "7"]));
    assert!(o.status.success(), "{}", stderr(&o));
    dir.join("hermes.json").display().to_string()
}

fn id_json(cfg: &str, env_uri: Option<&str>) -> serde_json::Value {
    let mut c = hermes(&["id", "--config", cfg, "--json"]);
    if let Some(uri) = env_uri {
        c.env("HERMES_HOTKEY_URI", uri);
    }
    let o = run(&mut c);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).expect("id --json prints JSON")
}

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
    assert_eq!(
        verify(&[
            "--ss58",
            &ss58,
            "--message",
            "hello subnet",
            "--signature",
            &sig
        ]),
        Some(0)
    );
    // The same bytes given as hex.
    let hex_msg = format!("0x{}", hex::encode("hello subnet"));
    assert_eq!(
        verify(&["--ss58", &ss58, "--hex", &hex_msg, "--signature", &sig]),
        Some(0)
    );
    // Other bytes, another signer, a corrupted signature: exit 1.
    assert_eq!(
        verify(&[
            "--ss58",
            &ss58,
            "--message",
            "hello subnet!",
            "--signature",
            &sig
        ]),
        Some(1)
    );
    let alice = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
    assert_eq!(
        verify(&[
            "--ss58",
            alice,
            "--message",
            "hello subnet",
            "--signature",
            &sig
        ]),
        Some(1)
    );
    let mut bad = sig.clone().into_bytes();
    bad[20] = if bad[20] == b'0' { b'1' } else { b'0' };
    let bad = String::from_utf8(bad).unwrap();
    assert_eq!(
        verify(&[
            "--ss58",
            &ss58,
            "--message",
            "hello subnet",
            "--signature",
            &bad
        ]),
        Some(1)
    );
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
    assert_eq!(
        verify(&[
            "--ss58",
            &ss58,
            "--message",
            "hello subnet",
            "--signature",
            &sig2
        ]),
        Some(0)
    );
}

#[test]
fn config_check_prints_effective_config_or_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(dir.path());
    let o = run(&mut hermes(&["config", "check", &cfg]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["subnets"]["netuids"], serde_json::json!([7]));
    assert_eq!(v["storage"]["cache_size"], "64MiB");

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"identity": {"hotkey_file": "hotkey"}, "subnets": {"mode": "whitelist", "netuids": [1, 2, 65536]}}"#).unwrap();
    let o = run(&mut hermes(&["config", "check", bad.to_str().unwrap()]));
    assert_clean_failure(&o, "`subnets.netuids[2]`");
    assert!(stderr(&o).contains("65536"));
    let o = run(&mut hermes(&["config", "check", "/no/such/file.json"]));
    assert_clean_failure(&o, "/no/such/file.json");
}

#[test]
fn bad_invocations_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(dir.path());
    // Missing payload: clap usage error.
    let o = run(&mut hermes(&["sign", "--config", &cfg]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).starts_with("error:"), "{}", stderr(&o));
    // Bad hex payload.
    let o = run(&mut hermes(&["sign", "--config", &cfg, "--hex", "0xq1"]));
    assert_clean_failure(&o, "--hex");
    // A bad secret URI in the environment.
    let o =
        run(hermes(&["sign", "--config", &cfg, "--message", "x"])
            .env("HERMES_HOTKEY_URI", "0x1234"));
    assert_clean_failure(&o, "HERMES_HOTKEY_URI");
    // A tampered hotkey file.
    let hk = dir.path().join("hotkey");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&hk).unwrap()).unwrap();
    v["ss58Address"] = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY".into();
    std::fs::write(&hk, v.to_string()).unwrap();
    let o = run(&mut hermes(&["id", "--config", &cfg]));
    assert_clean_failure(&o, "ss58Address");
    let o = run(&mut hermes(&["sign", "--config", &cfg, "--message", "x"]));
    assert_clean_failure(&o, "tampered");
}

#[test]
fn busy_data_dir_is_reported_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(dir.path());
    let config = hermes::Config::load(Path::new(&cfg)).unwrap();
    let rt =
        futures::executor::block_on(hermes::Runtime::builder(config).with_logging(false).start())
            .unwrap();
    let o = run(&mut hermes(&["id", "--config", &cfg]));
    assert_clean_failure(&o, "data dir in use");
    // Signing needs only the hotkey, so it works while the node runs.
    let o = run(&mut hermes(&["sign", "--config", &cfg, "--message", "x"]));
    assert!(o.status.success(), "{}", stderr(&o));
    futures::executor::block_on(rt.shutdown()).unwrap();
}
