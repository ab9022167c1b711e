//! Helpers shared by the CLI tests: running the binary, reading its output, and nodes run as
//! child processes that are interrupted (or killed) when dropped.

use std::path::Path;
use std::process::{Command, Output};

pub(crate) fn hermes(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hermes"));
    c.args(args)
        .env_remove("HERMES_HOTKEY_URI")
        .env_remove("RUST_LOG");
    c
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run hermes")
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failure: non-zero exit, a first line starting `error:` naming `needle`, no panic.
pub(crate) fn assert_clean_failure(o: &Output, needle: &str) {
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

pub(crate) fn init(dir: &Path) -> String {
    let o = run(hermes(&["init", "--dir"]).arg(dir).args(["--netuid", "7"]));
    assert!(o.status.success(), "{}", stderr(&o));
    dir.join("hermes.json").display().to_string()
}

pub(crate) fn id_json(cfg: &str, env_uri: Option<&str>) -> serde_json::Value {
    let mut c = hermes(&["id", "--config", cfg, "--json"]);
    if let Some(uri) = env_uri {
        c.env("HERMES_HOTKEY_URI", uri);
    }
    let o = run(&mut c);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).expect("id --json prints JSON")
}

/// `hermes devchain register` on the chain at `chain`.
pub(crate) fn register(
    chain: &str,
    netuid: u16,
    hotkey_ss58: &str,
    peer_id: &str,
    stake: &str,
) -> Output {
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
pub(crate) fn register_node(chain: &Path, netuid: u16, cfg: &str) -> serde_json::Value {
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

/// `hermes init` for a loopback node on a free port, on the dev chain `chain`, bootstrapped to
/// `bootstrap`; returns the config path.
pub(crate) fn init_on(dir: &Path, chain: &Path, bootstrap: Option<&str>) -> String {
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
pub(crate) fn lines_of(
    r: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
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
pub(crate) fn listen_addr(lines: &std::sync::mpsc::Receiver<String>) -> String {
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
pub(crate) struct Running(pub(crate) std::process::Child);

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
pub(crate) fn interrupt(child: &mut std::process::Child) {
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

/// `hermes devchain register --config FILE --stake 10`: SS58, peer id, chain and subnet from the
/// node's own files.
pub(crate) fn register_config(cfg: &str) {
    let o = run(&mut hermes(&[
        "devchain", "register", "--config", cfg, "--stake", "10",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Waits until the running node of `cfg` has read `n` registrations from its chain (it polls
/// the chain every `chain.poll_interval`; a peer registered after it started is refused until
/// then).
pub(crate) fn wait_registry(cfg: &str, n: u64) {
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
pub(crate) fn common_wait(mut cond: impl FnMut() -> bool) -> bool {
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
pub(crate) fn edit_config(cfg: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(cfg).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(cfg, v.to_string()).unwrap();
}

/// Starts `hermes run` for `cfg`, its output discarded, and waits until it is up: its control
/// socket answers `hermes peers`.
pub(crate) fn run_node(cfg: &str) -> Running {
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
