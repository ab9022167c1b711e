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

/// `hermes devchain register` on the chain at `chain`.
fn register(chain: &str, netuid: u16, hotkey_ss58: &str, peer_id: &str, stake: &str) -> Output {
    run(&mut hermes(&[
        "devchain",
        "register",
        "--chain",
        chain,
        "--netuid",
        &netuid.to_string(),
        "--hotkey-ss58",
        hotkey_ss58,
        "--peer-id",
        peer_id,
        "--stake",
        stake,
    ]))
}

/// Registers the node of `cfg` (as `hermes id` reports it) with stake 10; returns its id JSON.
fn register_node(chain: &Path, netuid: u16, cfg: &str) -> serde_json::Value {
    let id = id_json(cfg, None);
    let o = register(
        chain.to_str().unwrap(),
        netuid,
        id["ss58"].as_str().unwrap(),
        id["peer_id"].as_str().unwrap(),
        "10",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    id
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

#[test]
fn devchain_register_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let chain = dir.path().join("chain");
    let chain_s = chain.to_str().unwrap();
    let alice = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
    let peer = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    let reg = |peer: &str, hk: &str| register(chain_s, 3, hk, peer, "1000");
    let o = reg(peer, alice);
    assert!(o.status.success(), "{}", stderr(&o));
    // The chain's peer-id rule, and a clear error naming the flag.
    let o = reg("2D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA", alice);
    assert_clean_failure(&o, "--peer-id");
    let o = reg(peer, "5notanaddress");
    assert_clean_failure(&o, "--hotkey-ss58");
    let o = run(&mut hermes(&["devchain", "list", "--chain", chain_s]));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["nodes"][0]["hotkey"], alice);
    assert_eq!(v["nodes"][0]["peer_id"], peer);
    assert_eq!(v["nodes"][0]["stake"], 1000);
    assert_eq!(v["nodes"].as_array().unwrap().len(), 1);
}

/// Two `hermes run` processes registered on one dev chain find each other; `hermes peers` lists
/// them; an unregistered third is refused; SIGINT shuts each down cleanly (exit 0).
#[test]
fn run_two_nodes_and_list_peers() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let chain = dir.path().join("chain");
    let mut cfgs = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let d = dir.path().join(name);
        let cfg = init(&d);
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
        v["listen"] = serde_json::json!(["/ip4/127.0.0.1/tcp/0"]);
        v["chain"] = serde_json::json!({"kind": "dev", "path": chain, "poll_interval": "100ms"});
        std::fs::write(&cfg, v.to_string()).unwrap();
        cfgs.push(cfg);
    }
    for cfg in &cfgs[..2] {
        register_node(&chain, 7, cfg);
    }
    let spawn = |cfg: &str| {
        hermes(&["run", "--config", cfg])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut n1 = spawn(&cfgs[0]);
    let mut lines = BufReader::new(n1.stdout.take().unwrap()).lines();
    let listen = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listen:").map(|a| a.trim().to_string()))
        .expect("n1 prints its listen address");
    for cfg in &cfgs[1..] {
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(cfg).unwrap()).unwrap();
        v["bootstrap"] = serde_json::json!([listen]);
        std::fs::write(cfg, v.to_string()).unwrap();
    }
    let mut n2 = spawn(&cfgs[1]);
    let mut n3 = spawn(&cfgs[2]);
    let n2_ss58 = id_json_live(&cfgs[1]);
    let lists = |cfg: &str, who: &str| {
        let o = run(&mut hermes(&["peers", "--config", cfg, "--json"]));
        o.status.success() && stdout(&o).contains(who)
    };
    let n1_ss58 = id_json_live(&cfgs[0]);
    assert!(common_wait(
        || lists(&cfgs[0], &n2_ss58) && lists(&cfgs[1], &n1_ss58)
    ));
    // The unregistered third is counted as refused by n1 and never listed.
    assert!(common_wait(|| {
        let o = run(&mut hermes(&["stats", "--config", &cfgs[0]]));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap_or_default();
        v["denied"]["unregistered"].as_u64().unwrap_or(0) >= 1
    }));
    let o = run(&mut hermes(&["peers", "--config", &cfgs[2]]));
    assert!(stdout(&o).contains("no verified peers"), "{}", stdout(&o));
    for child in [&mut n1, &mut n2, &mut n3] {
        let pid = child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success());
        assert!(
            child.wait().unwrap().success(),
            "node did not shut down cleanly"
        );
    }
    // Without a running node, `peers` says so clearly.
    let o = run(&mut hermes(&["peers", "--config", &cfgs[0]]));
    assert_clean_failure(&o, "no running node");
}

/// The SS58 of a node, read through the running node's control socket.
fn id_json_live(cfg: &str) -> String {
    let cfg = hermes::Config::load(Path::new(cfg)).unwrap();
    let path = hermes::control::socket_path(&cfg.data_dir);
    let mut v = serde_json::Value::Null;
    assert!(common_wait(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        match rt.block_on(hermes::control::request(&path, "id")) {
            Ok(x) => {
                v = x;
                true
            }
            Err(_) => false,
        }
    }));
    v["ss58"].as_str().unwrap().to_string()
}

/// Bounded polling for process-level tests.
fn common_wait(mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// `hermes listen` prints what `hermes send` sends and saves what `hermes stream` streams, with
/// the sender run ad hoc or through its own running node; failures are clear.
#[test]
fn send_stream_and_listen_as_a_user_would() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let chain = dir.path().join("chain");
    let mut cfgs = Vec::new();
    let mut ids = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let d = dir.path().join(name);
        let cfg = init(&d);
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
        v["listen"] = serde_json::json!(["/ip4/127.0.0.1/tcp/0"]);
        v["chain"] = serde_json::json!({"kind": "dev", "path": chain, "poll_interval": "100ms"});
        v["messages"] = serde_json::json!({"max_size": "64KiB", "connect_timeout": "3s"});
        std::fs::write(&cfg, v.to_string()).unwrap();
        let id = register_node(&chain, 7, &cfg);
        ids.push(id["ss58"].as_str().unwrap().to_string());
        cfgs.push(cfg);
    }
    let saved = dir.path().join("saved");
    let mut listener = hermes(&["listen", "--config", &cfgs[0], "--json", "--save-dir"])
        .arg(&saved)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = listener.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_json = |what: &str| -> serde_json::Value {
        loop {
            let line = rx
                .recv_timeout(std::time::Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("listen printed no {what}"));
            if line.starts_with('{') {
                return serde_json::from_str(&line).unwrap();
            }
        }
    };
    let listen = loop {
        let line = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
        if let Some(a) = line.strip_prefix("listen:") {
            break a.trim().to_string();
        }
    };
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfgs[1]).unwrap()).unwrap();
    v["bootstrap"] = serde_json::json!([listen]);
    std::fs::write(&cfgs[1], v.to_string()).unwrap();

    // A message, the sender's node started just for it.
    let o = run(&mut hermes(&[
        "send",
        "--config",
        &cfgs[1],
        "--to",
        &ids[0],
        "--netuid",
        "7",
        "--message",
        "hello from n2",
    ]));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("delivered "), "{}", stdout(&o));
    let m = next_json("message");
    assert_eq!(
        (m["type"].as_str(), m["text"].as_str(), m["from"].as_str()),
        (
            Some("message"),
            Some("hello from n2"),
            Some(ids[1].as_str())
        )
    );

    // A stream from a file, saved whole under the file's name; the sender's confirmation comes
    // only once the file is in place, so it is there the moment `stream` exits. A second copy
    // does not overwrite the first.
    let data: Vec<u8> = (0..(3u32 << 20) + 17).map(|i| (i * 7 + 3) as u8).collect();
    let file = dir.path().join("payload.bin");
    std::fs::write(&file, &data).unwrap();
    for copy in ["payload.bin", "payload-1.bin"] {
        let o = run(hermes(&[
            "stream", "--config", &cfgs[1], "--to", &ids[0], "--netuid", "7", "--file",
        ])
        .arg(&file));
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains(&format!("sent {} bytes", data.len())),
            "{}",
            stdout(&o)
        );
        assert!(std::fs::read(saved.join(copy)).unwrap() == data, "{copy}");
        let s = next_json("stream");
        assert_eq!(s["bytes"].as_u64(), Some(data.len() as u64));
        assert_eq!(s["name"].as_str(), Some("payload.bin"));
        let path = saved.join(copy);
        assert_eq!(s["path"].as_str(), Some(path.to_str().unwrap()));
    }
    // One from stdin has no name: it is saved under its id.
    let o = run(hermes(&[
        "stream", "--config", &cfgs[1], "--to", &ids[0], "--netuid", "7",
    ])
    .stdin(std::fs::File::open(&file).unwrap()));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = next_json("stream from stdin");
    assert!(
        std::fs::read(saved.join(format!("{}.bin", s["id"].as_str().unwrap()))).unwrap() == data
    );
    assert!(s["name"].is_null(), "{s}");

    // Through the sender's own running node (its control socket).
    let mut n2 = hermes(&["run", "--config", &cfgs[1]])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = id_json_live(&cfgs[1]);
    let o = run(&mut hermes(&[
        "send", "--config", &cfgs[1], "--to", &ids[0], "--netuid", "7", "--hex", "0x00ff10",
    ]));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let m = next_json("message via the control socket");
    assert_eq!(m["hex"].as_str(), Some("0x00ff10"));
    // The listener's node counts what it took in: two messages, three streams, nothing refused.
    let o = run(&mut hermes(&["stats", "--config", &cfgs[0]]));
    assert!(o.status.success(), "{}", stderr(&o));
    let st: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (
            st["messages"]["received"].as_u64(),
            st["messages"]["streams_in"].as_u64(),
            st["messages"]["rejected"].as_object().map(|r| r.len()),
        ),
        (Some(2), Some(3), Some(0)),
        "{st}"
    );
    assert!(Command::new("kill")
        .args(["-INT", &n2.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(n2.wait().unwrap().success());

    // Clear failures, and a queued message when the recipient is down.
    let o = run(&mut hermes(&[
        "send",
        "--config",
        &cfgs[1],
        "--to",
        "nobody",
        "--message",
        "x",
    ]));
    assert_clean_failure(&o, "--to");
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![1u8; 65 << 10]).unwrap();
    let o = run(hermes(&["send", "--config", &cfgs[1], "--to", &ids[0], "--file"]).arg(&big));
    assert_clean_failure(&o, "messages.max_size");
    let o = run(&mut hermes(&[
        "send",
        "--config",
        &cfgs[1],
        "--to",
        &ids[2],
        "--netuid",
        "7",
        "--message",
        "later",
        "--wait",
        "1s",
    ]));
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).starts_with("queued "), "{}", stdout(&o));

    assert!(Command::new("kill")
        .args(["-INT", &listener.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(listener.wait().unwrap().success());
}

/// A message to an address nobody registered: `send` says why it is still queued, `outbox`
/// lists it with that reason, `outbox cancel` drops it; a stream there fails in words.
#[test]
fn unreachable_recipients_are_explained_and_queued_messages_cancelled() {
    use std::process::Stdio;
    // The development key `//Alice`: valid, and registered nowhere here.
    const NOBODY: &str = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
    let dir = tempfile::tempdir().unwrap();
    let cfg = init(&dir.path().join("n1"));
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    v["listen"] = serde_json::json!(["/ip4/127.0.0.1/tcp/0"]);
    v["chain"] = serde_json::json!({"kind": "dev", "path": dir.path().join("chain")});
    v["messages"] = serde_json::json!({"connect_timeout": "1s"});
    std::fs::write(&cfg, v.to_string()).unwrap();
    let mut node = hermes(&["run", "--config", &cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = id_json_live(&cfg);

    let o = run(&mut hermes(&[
        "send",
        "--config",
        &cfg,
        "--to",
        NOBODY,
        "--netuid",
        "7",
        "--message",
        "hi",
        "--wait",
        "5s",
    ]));
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("queued "), "{out}");
    assert!(out.contains("unknown address"), "{out}");
    let id = out.split_whitespace().nth(1).unwrap().to_string();

    let o = run(&mut hermes(&["outbox", "--config", &cfg]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains(&id) && out.contains(NOBODY), "{out}");
    assert!(out.contains("last attempt: unknown address"), "{out}");
    let o = run(&mut hermes(&["outbox", "--config", &cfg, "--json"]));
    let list: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(list["outbox"][0]["id"].as_str(), Some(id.as_str()));
    assert_eq!(list["outbox"][0]["size"].as_u64(), Some(2));
    assert_eq!(list["outbox"][0]["netuid"].as_u64(), Some(7));

    let o = run(&mut hermes(&["outbox", "cancel", &id, "--config", &cfg]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with(&format!("cancelled {id}")),
        "{}",
        stdout(&o)
    );
    let o = run(&mut hermes(&["outbox", "--config", &cfg]));
    assert!(stdout(&o).contains("the outbox is empty"), "{}", stdout(&o));
    let o = run(&mut hermes(&["outbox", "cancel", &id, "--config", &cfg]));
    assert_clean_failure(&o, "no message");
    let o = run(&mut hermes(&["outbox", "cancel", "12ab", "--config", &cfg]));
    assert_clean_failure(&o, "32 hex digits");

    let o = run(
        hermes(&["stream", "--config", &cfg, "--to", NOBODY, "--netuid", "7"]).stdin(Stdio::null()),
    );
    assert_clean_failure(&o, "unknown address");
    assert!(!stderr(&o).contains("NotFound"), "{}", stderr(&o));

    assert!(Command::new("kill")
        .args(["-INT", &node.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(node.wait().unwrap().success());
}
