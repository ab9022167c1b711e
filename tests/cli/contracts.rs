//! Arguments, config checks and output handling: every mistake gets a clear, specific error.

use crate::support::{
    assert_clean_failure, common_wait, hermes, id_json, init, init_on, lines_of, listen_addr,
    register_config, run, stderr, stdout, wait_registry, Running,
};
use std::process::Output;

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
