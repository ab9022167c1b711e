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
    // `-c/--config FILE`, like every other command, gives the same answer.
    for flag in ["-c", "--config"] {
        let o = run(&mut hermes(&["config", "check", flag, &cfg]));
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap(),
            v
        );
    }
    let o = run(&mut hermes(&["config", "check"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("<FILE|--config <FILE>>"),
        "{}",
        stderr(&o)
    );

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

/// `hermes devchain init`, `step` and `epoch`: blocks stepped by hand, an epoch's round and its
/// outcome, and a validator that never submits punished, then removed at the maximum.
#[test]
fn devchain_steps_blocks_and_shows_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let chain = dir.path().join("chain");
    let chain_s = chain.to_str().unwrap();
    let alice = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
    let peer = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    let o = run(&mut hermes(&[
        "devchain",
        "init",
        "--chain",
        chain_s,
        "--block-time",
        "manual",
        "--epoch-blocks",
        "4",
        "--max-penalties",
        "2",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&mut hermes(&[
        "devchain",
        "init",
        "--chain",
        chain_s,
        "--epoch-blocks",
        "0",
    ]));
    assert_clean_failure(&o, "--epoch-blocks");
    let o = run(&mut hermes(&[
        "devchain",
        "register",
        "--chain",
        chain_s,
        "--netuid",
        "3",
        "--hotkey-ss58",
        alice,
        "--peer-id",
        peer,
        "--stake",
        "10",
        "--class",
        "validator",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let epoch = |e: Option<&str>| {
        let mut c = hermes(&[
            "devchain", "epoch", "--chain", chain_s, "--netuid", "3", "--json",
        ]);
        c.args(e);
        let o = run(&mut c);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()
    };
    // Epoch 0 started before the subnet had nodes.
    assert!(epoch(None)["round"].is_null());
    let o = run(&mut hermes(&["devchain", "step", "--chain", chain_s, "4"]));
    assert!(
        stdout(&o).starts_with("block 4 (epoch 1)"),
        "{}",
        stdout(&o)
    );
    let v = epoch(None);
    assert_eq!(v["round"]["elected"], alice);
    assert!(v["round"]["finalized"].is_null());
    // Nobody submits in epochs 1 and 2: punished twice, removed at 2.
    let o = run(&mut hermes(&["devchain", "step", "--chain", chain_s, "8"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v = epoch(Some("1"));
    assert_eq!(v["round"]["finalized"]["verdict"], "no_submission");
    assert_eq!(v["round"]["finalized"]["changes"][0]["kind"], "punished");
    let v = epoch(Some("2"));
    assert_eq!(v["round"]["finalized"]["changes"][1]["kind"], "removed");
    assert_eq!(v["nodes"].as_array().unwrap().len(), 0);
    let o = run(&mut hermes(&[
        "devchain", "epoch", "--chain", chain_s, "--netuid", "3", "1",
    ]));
    assert!(stdout(&o).contains("no_submission"), "{}", stdout(&o));
    let o = run(&mut hermes(&[
        "devchain",
        "step",
        "--chain",
        "/nonexistent/chain",
    ]));
    assert_clean_failure(&o, "no dev chain");
}

/// `hermes init` for a loopback node on a free port, on the dev chain `chain`, bootstrapped to
/// `bootstrap`; returns the config path.
fn init_on(dir: &Path, chain: &Path, bootstrap: Option<&str>) -> String {
    let mut c = hermes(&["init", "--dir"]);
    c.arg(dir)
        .args([
            "--netuid",
            "7",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--chain",
        ])
        .arg(chain);
    if let Some(b) = bootstrap {
        c.args(["--bootstrap", b]);
    }
    let o = run(&mut c);
    assert!(o.status.success(), "{}", stderr(&o));
    dir.join("hermes.json").display().to_string()
}

/// The lines a child prints on one of its outputs, read on a thread. The output is drained to
/// its end even when nobody takes the lines any more: a pipe closed under the child would end it.
fn lines_of(r: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// The first `listen:` address in `lines` (waits at most 30 s).
fn listen_addr(lines: &std::sync::mpsc::Receiver<String>) -> String {
    loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the node prints its listen address");
        if let Some(a) = line.strip_prefix("listen:") {
            return a.trim().to_string();
        }
    }
}

/// A child process that is killed if the test ends without stopping it (a failed assertion), so
/// that no node outlives its test.
struct Running(std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Sends SIGINT to `child` and asserts it shut down cleanly (exit 0).
fn interrupt(child: &mut std::process::Child) {
    assert!(Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(
        child.wait().unwrap().success(),
        "node did not shut down cleanly"
    );
}

/// Two `hermes run` processes registered on one dev chain find each other; `hermes peers` lists
/// them; an unregistered third is refused; SIGINT shuts each down cleanly (exit 0). Configs come
/// from `hermes init` flags alone, registrations from `devchain register --config`.
#[test]
fn run_two_nodes_and_list_peers() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let chain = dir.path().join("chain");
    let spawn = |cfg: &str| {
        hermes(&["run", "--config", cfg])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map(Running)
            .unwrap()
    };
    let c1 = init_on(&dir.path().join("n1"), &chain, None);
    register_config(&c1);
    let mut n1 = spawn(&c1);
    let listen = listen_addr(&lines_of(n1.stdout.take().unwrap()));
    let c2 = init_on(&dir.path().join("n2"), &chain, Some(&listen));
    let c3 = init_on(&dir.path().join("n3"), &chain, Some(&listen));
    register_config(&c2);
    wait_registry(&c1, 2);
    let mut n2 = spawn(&c2);
    let mut n3 = spawn(&c3);
    // `hermes id` answers for running nodes (through their control sockets).
    let n1_ss58 = id_json(&c1, None)["ss58"].as_str().unwrap().to_string();
    let n2_ss58 = id_json(&c2, None)["ss58"].as_str().unwrap().to_string();
    let lists = |cfg: &str, who: &str| {
        let o = run(&mut hermes(&["peers", "--config", cfg, "--json"]));
        o.status.success() && stdout(&o).contains(who)
    };
    assert!(common_wait(|| lists(&c1, &n2_ss58) && lists(&c2, &n1_ss58)));
    // The unregistered third is counted as refused by n1 and never listed.
    assert!(common_wait(|| {
        let o = run(&mut hermes(&["stats", "--config", &c1, "--json"]));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap_or_default();
        v["denied"]["unregistered"].as_u64().unwrap_or(0) >= 1
    }));
    let o = run(&mut hermes(&["stats", "--config", &c1]));
    assert!(
        stdout(&o).contains("connections refused:  unregistered "),
        "{}",
        stdout(&o)
    );
    let o = run(&mut hermes(&["peers", "--config", &c3]));
    assert!(stdout(&o).contains("no verified peers"), "{}", stdout(&o));
    for child in [&mut n1, &mut n2, &mut n3] {
        interrupt(child);
    }
    // Without a running node, `peers` says so clearly.
    let o = run(&mut hermes(&["peers", "--config", &c1]));
    assert_clean_failure(&o, "no running node");
}

/// `hermes devchain register --config FILE --stake 10`: SS58, peer id, chain and subnet from the
/// node's own files.
fn register_config(cfg: &str) {
    let o = run(&mut hermes(&[
        "devchain", "register", "--config", cfg, "--stake", "10",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Waits until the running node of `cfg` has read `n` registrations from its chain (it polls
/// the chain every `chain.poll_interval`; a peer registered after it started is refused until
/// then).
fn wait_registry(cfg: &str, n: u64) {
    assert!(
        common_wait(|| {
            let o = run(&mut hermes(&["stats", "--config", cfg, "--json"]));
            let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap_or_default();
            v["registry_entries"].as_u64() == Some(n)
        }),
        "{cfg} never saw {n} registrations"
    );
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

/// Rewrites the JSON config file `cfg` through `edit`.
fn edit_config(cfg: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(cfg).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(cfg, v.to_string()).unwrap();
}

/// Starts `hermes run` for `cfg`, its output discarded, and waits until it is up: its control
/// socket answers `hermes peers`.
fn run_node(cfg: &str) -> Running {
    use std::process::Stdio;
    let node = hermes(&["run", "--config", cfg])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Running)
        .unwrap();
    assert!(common_wait(|| run(&mut hermes(&[
        "peers", "--config", cfg
    ]))
    .status
    .success()));
    node
}

/// `hermes listen` prints what `hermes send` sends and saves what `hermes stream` streams, with
/// the sender run ad hoc or through its own running node; failures are clear.
#[test]
fn send_stream_and_listen_as_a_user_would() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let chain = dir.path().join("chain");
    let mut cfgs = Vec::new();
    let mut ids = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let d = dir.path().join(name);
        let cfg = init(&d);
        edit_config(&cfg, |v| {
            v["listen"] = serde_json::json!(["/ip4/127.0.0.1/tcp/0"]);
            v["chain"] =
                serde_json::json!({"kind": "dev", "path": chain, "poll_interval": "100ms"});
            v["messages"] = serde_json::json!({"max_size": "64KiB", "connect_timeout": "3s"});
        });
        let id = register_node(&chain, 7, &cfg);
        ids.push(id["ss58"].as_str().unwrap().to_string());
        cfgs.push(cfg);
    }
    let saved = dir.path().join("saved");
    let mut listener = hermes(&["listen", "--config", &cfgs[0], "--json", "--save-dir"])
        .arg(&saved)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .unwrap();
    let rx = lines_of(listener.stdout.take().unwrap());
    // With --json, stdout is JSON lines only: every line parses.
    let next_json = |what: &str| -> serde_json::Value {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("listen printed no {what}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    };
    // The banner (who, where) is on stderr.
    let listen = listen_addr(&lines_of(listener.stderr.take().unwrap()));
    edit_config(&cfgs[1], |v| v["bootstrap"] = serde_json::json!([listen]));

    // A message, the sender's node started just for it; the subnet defaults to n2's only one.
    let o = run(&mut hermes(&[
        "send",
        "--config",
        &cfgs[1],
        "--to",
        &ids[0],
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
    assert_eq!(m["size"].as_u64(), Some(13));
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
        // Messages and streams name their length in bytes alike: `size`.
        assert_eq!(s["size"].as_u64(), Some(data.len() as u64));
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
    let mut n2 = run_node(&cfgs[1]);
    let o = run(&mut hermes(&[
        "send", "--config", &cfgs[1], "--to", &ids[0], "--netuid", "7", "--hex", "0x00ff10",
    ]));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let m = next_json("message via the control socket");
    assert_eq!(m["hex"].as_str(), Some("0x00ff10"));
    // The listener's node counts what it took in: two messages, three streams, nothing refused.
    let o = run(&mut hermes(&["stats", "--config", &cfgs[0], "--json"]));
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
    interrupt(&mut n2);

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

    interrupt(&mut listener);
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
    edit_config(&cfg, |v| {
        v["listen"] = serde_json::json!(["/ip4/127.0.0.1/tcp/0"]);
        v["chain"] = serde_json::json!({"kind": "dev", "path": dir.path().join("chain")});
        v["messages"] = serde_json::json!({"connect_timeout": "1s"});
    });
    let mut node = run_node(&cfg);

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

    interrupt(&mut node);
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

/// `devchain list` on a path that holds no chain fails clearly instead of printing an empty
/// registry (which a script would take for a real answer), and creates nothing there.
#[test]
fn devchain_list_refuses_a_path_without_a_chain() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("chian");
    let o = run(hermes(&["devchain", "list", "--chain"]).arg(&missing));
    assert_clean_failure(&o, "does not exist");
    assert_eq!(o.status.code(), Some(2));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    assert!(!missing.exists());
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = run(hermes(&["devchain", "list", "--chain"]).arg(&empty));
    assert_clean_failure(&o, "no chain database");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let o = run(hermes(&["devchain", "list", "--chain"]).arg(&file));
    assert_clean_failure(&o, "is a file");
}

/// `send` and `stream` default `--netuid` to the node's subnet only when it serves exactly one;
/// otherwise they ask for it (a default of 0 would be refused as out of scope).
#[test]
fn netuid_is_required_unless_the_node_serves_one_subnet() {
    let dir = tempfile::tempdir().unwrap();
    let alice = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY";
    let two = dir.path().join("two");
    let o = run(hermes(&["init", "--netuid", "3", "--netuid", "7", "--dir"]).arg(&two));
    assert!(o.status.success(), "{}", stderr(&o));
    let none = dir.path().join("none");
    let o = run(hermes(&["init", "--dir"]).arg(&none));
    assert!(o.status.success(), "{}", stderr(&o));
    for (d, says) in [(&two, "serves subnets [3, 7]"), (&none, "names no subnet")] {
        let cfg = d.join("hermes.json");
        let cfg = cfg.to_str().unwrap();
        let o = run(&mut hermes(&[
            "send",
            "--config",
            cfg,
            "--to",
            alice,
            "--message",
            "x",
        ]));
        assert_clean_failure(&o, "--netuid is required");
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
        let o = run(&mut hermes(&["stream", "--config", cfg, "--to", alice]));
        assert_clean_failure(&o, "--netuid is required");
    }
}

/// A pipe closed early by its reader (`hermes ... | head -1`) ends the output quietly with exit 0:
/// no panic, no exit 101, and `listen` shuts its node down cleanly.
#[test]
fn closed_stdout_ends_quietly() {
    use std::process::Stdio;
    // A pipe whose reader is already gone: the first write fails with EPIPE.
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Stdio::from(writer)
    };
    let quiet = |o: &Output| {
        let err = stderr(o);
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(
            !err.contains("panicked") && !err.contains("internal error"),
            "{err}"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let chain = dir.path().join("chain");
    let c1 = init_on(&dir.path().join("n1"), &chain, None);
    register_config(&c1);
    for args in [
        vec!["id", "--config", &c1, "--json"],
        vec!["config", "check", "-c", &c1],
        vec!["devchain", "list", "--chain", chain.to_str().unwrap()],
    ] {
        quiet(&run(hermes(&args).stdout(closed())));
    }
    // `listen` stops by itself at its first output line and shuts down cleanly.
    let mut listener = hermes(&["listen", "--config", &c1])
        .stdout(closed())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .unwrap();
    let listen = listen_addr(&lines_of(listener.stderr.take().unwrap()));
    let o = run(hermes(&["peers", "--config", &c1]).stdout(closed()));
    quiet(&o);
    let c2 = init_on(&dir.path().join("n2"), &chain, Some(&listen));
    register_config(&c2);
    wait_registry(&c1, 2);
    let to = id_json(&c1, None)["ss58"].as_str().unwrap().to_string();
    // The listener may stop before its acknowledgement leaves, so the sender may see the message
    // delivered (0) or still queued (3); either way it reached the listener, which then stops.
    let o = run(&mut hermes(&[
        "send",
        "--config",
        &c2,
        "--to",
        &to,
        "--message",
        "anyone there?",
        "--wait",
        "10s",
    ]));
    assert!(
        matches!(o.status.code(), Some(0 | 3)),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(
        common_wait(|| listener.try_wait().unwrap().is_some()),
        "listen kept running with nobody reading"
    );
    assert!(listener.wait().unwrap().success());
}

/// `hermes run` prints its listen addresses once every listener is up: with QUIC and TCP on
/// 0.0.0.0, one address per local IPv4 interface and transport, every time. Its logs carry no
/// colour codes when stderr is not a terminal.
#[test]
fn run_prints_every_listen_address_and_plain_logs() {
    use std::io::Read;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let o = run(hermes(&["init", "--port", "0", "--netuid", "3", "--dir"]).arg(dir.path()));
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg = dir.path().join("hermes.json");
    let mut node = hermes(&["run", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Running)
        .unwrap();
    let out = lines_of(node.stdout.take().unwrap());
    let mut listen = Vec::new();
    loop {
        let line = out
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("run prints its banner");
        if line.starts_with("control:") {
            break;
        }
        if let Some(a) = line.strip_prefix("listen:") {
            listen.push(a.trim().to_string());
        }
    }
    let v4: Vec<_> = if_addrs::get_if_addrs()
        .unwrap()
        .iter()
        .map(|i| i.ip())
        .filter(|ip| ip.is_ipv4())
        .collect();
    assert!(!v4.is_empty());
    for ip in &v4 {
        for transport in ["tcp", "udp"] {
            let prefix = format!("/ip4/{ip}/{transport}/");
            assert!(
                listen.iter().any(|a| a.starts_with(&prefix)),
                "no {prefix} in {listen:?}"
            );
        }
    }
    assert_eq!(listen.len(), 2 * v4.len(), "{listen:?}");
    let mut err = node.stderr.take().unwrap();
    interrupt(&mut node);
    let mut logs = String::new();
    err.read_to_string(&mut logs).unwrap();
    assert!(logs.contains("listening"), "{logs}");
    assert!(!logs.contains('\u{1b}'), "colour codes in logs: {logs:?}");
}

/// Small promises of the command line: `--version` is one line, `stream --help` documents its
/// exit statuses like `send --help`, `stats` has a text default and `--json`.
#[test]
fn small_cli_contracts() {
    let o = run(&mut hermes(&["--version"]));
    assert!(o.status.success());
    assert!(
        stdout(&o).starts_with("hermes ") && stdout(&o).ends_with('\n'),
        "{:?}",
        stdout(&o)
    );
    for cmd in ["send", "stream"] {
        let o = run(&mut hermes(&[cmd, "--help"]));
        assert!(o.status.success());
        assert!(stdout(&o).contains("Exit status: 0 "), "{}", stdout(&o));
    }
    for cmd in ["stats", "peers", "id"] {
        let o = run(&mut hermes(&[cmd, "--help"]));
        assert!(stdout(&o).contains("--json"), "{cmd}: {}", stdout(&o));
    }
    let o = run(&mut hermes(&["listen", "--help"]));
    assert!(stdout(&o).contains("`size`"), "{}", stdout(&o));
}

/// The README's first command: `hermes demo` completes, whichever of alpha and gamma refuses
/// the other first, and says what its numbers count.
#[test]
fn demo_runs_to_the_end() {
    let o = run(hermes(&["demo"]).env("HERMES_DEMO_MIB", "2"));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("refused gamma: reason `out_of_scope`")
            || out.contains("refused alpha: reason `out_of_scope`"),
        "{out}"
    );
    assert!(out.contains("counted by the refusing side"), "{out}");
    // Subnet 3's epoch: both validators report it finalized with both attestations.
    for who in ["alpha", "beta "] {
        assert!(
            out.contains(&format!(
                "{who} sees epoch 1 finalized: InConsensus, 2/2 attestations"
            )),
            "{out}"
        );
    }
    // Subnet 7's queue: both its nodes move up a class.
    assert!(out.contains("gamma Registered -> Idle"), "{out}");
    assert!(out.contains("beta Registered -> Idle"), "{out}");
    assert!(out.contains("all nodes shut down cleanly"), "{out}");
}
