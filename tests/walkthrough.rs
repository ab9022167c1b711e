//! The README's command-line tutorial, run as a user would: the real `hermes` binary, in a fresh
//! directory, with no hand-edited files and no `jq`.
//!
//! Every command is given here exactly as the README prints it, and the test first checks that
//! the README still holds that line: a tutorial edit that this test does not follow (or the
//! reverse) fails it. Only what a user's machine supplies differs: the ports (4001-4003 become
//! free ports, so that tests never clash), `~` (a temporary home holding a Bittensor wallet) and
//! the payload files the tutorial sends.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// The tutorial's working directory, its shell variables and its port mapping.
struct Walk {
    readme: String,
    cwd: tempfile::TempDir,
    home: PathBuf,
    vars: HashMap<String, String>,
    ports: Vec<(&'static str, String)>,
}

/// A command line split into what a shell would hand over.
struct Parsed {
    env: Vec<(String, String)>,
    args: Vec<String>,
    stdin: Option<PathBuf>,
}

impl Walk {
    fn new() -> Self {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let cwd = tempfile::tempdir().expect("tempdir");
        let home = cwd.path().join("home");
        let hotkey = home.join(".bittensor/wallets/default/hotkeys/default");
        std::fs::create_dir_all(hotkey.parent().expect("parent")).expect("wallet dir");
        std::fs::copy(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/bittensor_hotkey"
            ),
            &hotkey,
        )
        .expect("wallet hotkey");
        let ports = free_ports(3);
        Walk {
            readme,
            home,
            cwd,
            vars: HashMap::new(),
            ports: ["4001", "4002", "4003"]
                .into_iter()
                .zip(ports.iter().map(u16::to_string))
                .collect(),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.cwd.path().join(p)
    }

    /// Asserts that the README shows `line` as a command (followed by nothing or a comment).
    fn in_readme(&self, line: &str) {
        let found = self.readme.lines().any(|l| {
            let command = l.split(" #").next().unwrap_or_default().trim();
            command == line
        });
        assert!(found, "README.md no longer shows the command `{line}`");
    }

    /// Splits a README line the way the shell would: `NAME=value` prefixes, "quoted words",
    /// `$VAR`, `~/`, `< file`, and the tutorial's ports mapped to free ones.
    fn parse(&self, line: &str) -> Parsed {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut quoted = false;
        let mut in_word = false;
        for c in line.chars() {
            match c {
                '"' => {
                    quoted = !quoted;
                    in_word = true;
                }
                c if c.is_whitespace() && !quoted => {
                    if in_word {
                        words.push(std::mem::take(&mut word));
                        in_word = false;
                    }
                }
                c => {
                    word.push(c);
                    in_word = true;
                }
            }
        }
        if in_word {
            words.push(word);
        }
        let expand = |w: &str| -> String {
            // Ports first, on the README's own text only: an expanded address or path may
            // contain the same digits.
            let mut w = w.to_string();
            for (doc, real) in &self.ports {
                w = w.replace(doc, real);
            }
            if let Some(name) = w.strip_prefix('$') {
                w = self
                    .vars
                    .get(name)
                    .unwrap_or_else(|| panic!("${name} is not set"))
                    .clone();
            }
            if let Some(rest) = w.strip_prefix("~/") {
                w = self.home.join(rest).display().to_string();
            }
            w
        };
        let mut out = Parsed {
            env: Vec::new(),
            args: Vec::new(),
            stdin: None,
        };
        let mut words = words.into_iter().peekable();
        while let Some(w) = words.next_if(|w| w.contains('=') && !w.starts_with('-')) {
            let (k, v) = w.split_once('=').expect("NAME=value");
            out.env.push((k.to_string(), expand(v)));
        }
        while let Some(w) = words.next() {
            if w == "<" {
                out.stdin = Some(self.path(&words.next().expect("a file after <")));
            } else {
                out.args.push(expand(&w));
            }
        }
        assert_eq!(out.args.first().map(String::as_str), Some("hermes"));
        out
    }

    fn command(&self, line: &str) -> (Command, Option<PathBuf>) {
        self.in_readme(line);
        let p = self.parse(line);
        let mut c = Command::new(env!("CARGO_BIN_EXE_hermes"));
        c.args(&p.args[1..])
            .current_dir(self.cwd.path())
            .env("HOME", &self.home)
            .env_remove("HERMES_HOTKEY_URI")
            .env_remove("RUST_LOG")
            .envs(p.env);
        (c, p.stdin)
    }

    /// Runs a README command to its end.
    fn run(&self, line: &str) -> Output {
        let (mut c, stdin) = self.command(line);
        if let Some(f) = stdin {
            c.stdin(std::fs::File::open(&f).expect("stdin file"));
        }
        c.output().expect("run hermes")
    }

    /// Runs a README command that must succeed; returns its stdout.
    fn ok(&self, line: &str) -> String {
        let o = self.run(line);
        assert!(
            o.status.success(),
            "`{line}` failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `NAME=$(command)`: runs the command and sets the variable to its output.
    fn capture(&mut self, line: &str) -> String {
        self.in_readme(line);
        let (name, rest) = line.split_once("=$(").expect("NAME=$(...)");
        let inner = rest.strip_suffix(')').expect("closing parenthesis");
        let o = self.run_unchecked(inner);
        assert!(
            o.status.success(),
            "`{line}`: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let value = String::from_utf8_lossy(&o.stdout).trim().to_string();
        self.vars.insert(name.to_string(), value.clone());
        value
    }

    /// Runs a command that appears in the README only inside `$(...)`.
    fn run_unchecked(&self, line: &str) -> Output {
        let p = self.parse(line);
        Command::new(env!("CARGO_BIN_EXE_hermes"))
            .args(&p.args[1..])
            .current_dir(self.cwd.path())
            .env("HOME", &self.home)
            .env_remove("HERMES_HOTKEY_URI")
            .env_remove("RUST_LOG")
            .output()
            .expect("run hermes")
    }

    /// Starts a README command that runs until Ctrl-C ("terminal 1"), with its stdout and stderr
    /// read line by line.
    fn terminal(&self, line: &str) -> Terminal {
        let (mut c, _) = self.command(line);
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hermes");
        let out = lines_of(child.stdout.take().expect("stdout"));
        let err = lines_of(child.stderr.take().expect("stderr"));
        Terminal { child, out, err }
    }
}

/// A long-running command: the process and what it has printed.
struct Terminal {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
}

impl Terminal {
    /// Waits (at most 30 s) for a line on stdout or stderr containing every one of `needles`.
    fn expect(&self, needles: &[&str]) -> String {
        let end = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while Instant::now() < end {
            for rx in [&self.out, &self.err] {
                while let Ok(line) = rx.try_recv() {
                    if needles.iter().all(|n| line.contains(n)) {
                        return line;
                    }
                    seen.push(line);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no line with {needles:?}; saw:\n{}", seen.join("\n"));
    }

    /// Ctrl-C: the node must shut down cleanly.
    fn interrupt(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success());
        assert!(
            self.child.wait().expect("wait").success(),
            "not a clean shutdown"
        );
    }
}

impl Drop for Terminal {
    /// A test that fails half-way must not leave its nodes running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn lines_of(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Drain to the end even when nobody listens: a closed pipe would end the child.
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// `n` distinct ports that are free for both TCP and UDP on all interfaces (the tutorial's
/// nodes listen with TCP and QUIC on one port each).
fn free_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    while held.len() < n {
        let tcp = std::net::TcpListener::bind("0.0.0.0:0").expect("tcp port");
        let port = tcp.local_addr().expect("addr").port();
        if let Ok(udp) = std::net::UdpSocket::bind(("0.0.0.0", port)) {
            held.push((tcp, udp));
        }
    }
    held.iter()
        .map(|(t, _)| t.local_addr().expect("addr").port())
        .collect()
}

/// Polls `cond` every 50 ms for at most 30 s.
fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn readme_tutorial_runs_as_written() {
    let mut w = Walk::new();

    // --- Use it from the command line -------------------------------------------------------
    let out = w.ok("hermes init --dir node1 --netuid 3");
    assert!(out.contains("created node1/hermes.json"), "{out}");
    w.ok("hermes init --dir node2 --hotkey-file ~/.bittensor/wallets/default/hotkeys/default");
    let id = w.ok("hermes id --config node1/hermes.json");
    let me = w.capture("ME=$(hermes id --config node1/hermes.json --field ss58)");
    assert!(id.contains(&format!("ss58:        {me}")), "{id}");
    let sig = w.capture(r#"SIG=$(hermes sign --config node1/hermes.json --message "hello")"#);
    assert!(sig.starts_with("0x") && sig.len() == 130, "{sig}");
    let out = w.ok(r#"hermes verify --ss58 $ME --message "hello" --signature $SIG"#);
    assert_eq!(out.trim(), "valid");
    let effective = json(&w.ok("hermes config check -c node1/hermes.json"));
    assert_eq!(effective["subnets"]["netuids"], serde_json::json!([3]));
    let alice = w.ok("HERMES_HOTKEY_URI=//Alice hermes id --config node1/hermes.json");
    assert!(
        alice.contains("5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"),
        "{alice}"
    );

    // --- Two nodes in two terminals, on a dev chain ----------------------------------------
    w.ok("hermes init --dir n1 --port 4001 --netuid 3 --chain chain");
    w.ok(
        "hermes init --dir n2 --port 4002 --netuid 3 --chain chain --bootstrap /ip4/127.0.0.1/tcp/4001",
    );
    w.ok("hermes devchain register --config n1/hermes.json --stake 1000");
    w.ok("hermes devchain register --config n2/hermes.json --stake 1000");
    let n1 = w.terminal("hermes run --config n1/hermes.json");
    n1.expect(&["running; Ctrl-C to stop"]);
    let n2 = w.terminal("hermes run --config n2/hermes.json");
    n2.expect(&["running; Ctrl-C to stop"]);
    let n2_ss58 = json(&String::from_utf8_lossy(
        &w.run_unchecked("hermes id --config n2/hermes.json --json")
            .stdout,
    ))["ss58"]
        .as_str()
        .expect("ss58")
        .to_string();
    assert!(
        eventually(|| {
            let o = w.run("hermes peers --config n1/hermes.json");
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&n2_ss58)
        }),
        "n1 never listed n2"
    );
    let stats = w.ok("hermes stats --config n1/hermes.json");
    assert!(stats.contains("connections refused:"), "{stats}");
    let registry = json(&w.ok("hermes devchain list --chain chain"));
    assert_eq!(registry["nodes"].as_array().map(Vec::len), Some(2));

    // A third node, not registered: refused by n1, logged and counted.
    w.ok(
        "hermes init --dir n3 --port 4003 --netuid 3 --chain chain --bootstrap /ip4/127.0.0.1/tcp/4001",
    );
    let n3 = w.terminal("hermes run --config n3/hermes.json");
    n1.expect(&["refused a connection", "reason=unregistered"]);
    assert!(
        eventually(|| w
            .ok("hermes stats --config n1/hermes.json")
            .contains("connections refused:  unregistered ")),
        "n1 never counted the refusal"
    );
    n3.interrupt();

    // --- Messages and streams ---------------------------------------------------------------
    n1.interrupt();
    let listen = w.terminal("hermes listen --config n1/hermes.json --save-dir inbox");
    listen.expect(&["listening for messages and streams"]);
    let n1_ss58 = w.capture("N1=$(hermes id --config n1/hermes.json --field ss58)");
    assert!(n1_ss58.starts_with('5'), "{n1_ss58}");
    w.ok(r#"hermes send --config n2/hermes.json --to $N1 --message "epoch 7 ready""#);
    listen.expect(&["message ", "netuid 3", "\"epoch 7 ready\""]);
    let weights: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(w.path("weights.bin"), &weights).expect("weights.bin");
    w.ok("hermes send --config n2/hermes.json --to $N1 --file weights.bin");
    listen.expect(&["message ", "(netuid 3, 20000 bytes)"]);
    let checkpoint: Vec<u8> = (0..(3u32 << 20) + 5).map(|i| (i * 13 + 1) as u8).collect();
    std::fs::write(w.path("checkpoint.tar"), &checkpoint).expect("checkpoint.tar");
    w.ok("hermes stream --config n2/hermes.json --to $N1 < checkpoint.tar");
    listen.expect(&["stream ", &n2_ss58, &format!("{} bytes", checkpoint.len())]);
    // Saved whole in the inbox (whatever the file is named).
    let saved = std::fs::read_dir(w.path("inbox"))
        .expect("inbox")
        .filter_map(Result::ok)
        .any(|e| std::fs::read(e.path()).ok().as_deref() == Some(&checkpoint[..]));
    assert!(saved, "the stream is not in inbox/");
    let o = w.run(r#"hermes send --config n2/hermes.json --to $N1 --message "done" --wait 5s"#);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    listen.expect(&["\"done\""]);

    // --- Large files: the Sync Engine -------------------------------------------------------
    let model: Vec<u8> = (0..(2u32 << 20) + 77).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(w.path("model.bin"), &model).expect("model.bin");
    let ticket = w.capture("TICKET=$(hermes share --config n2/hermes.json --to $N1 model.bin)");
    assert!(ticket.starts_with("hermes-ticket1:"), "{ticket}");
    // The ticket went to n1 as a message too; its listen fetched it into inbox/.
    listen.expect(&["transfer ", "bytes received and verified", "model.bin"]);
    assert!(std::fs::read(w.path("inbox/model.bin")).expect("inbox/model.bin") == model);
    w.ok("hermes fetch --config n1/hermes.json $TICKET --out model-copy.bin");
    assert!(std::fs::read(w.path("model-copy.bin")).expect("model-copy.bin") == model);
    let list = w.ok("hermes transfers --config n2/hermes.json");
    assert!(list.contains("offer") && list.contains("serving"), "{list}");

    listen.interrupt();
    n2.interrupt();
}
