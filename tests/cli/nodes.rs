//! Running nodes: `run`, `peers`, `send`, `stream`, `listen` and the demo, as a user would.

use crate::support::{
    assert_clean_failure, common_wait, edit_config, hermes, id_json, init, init_on, interrupt,
    lines_of, listen_addr, register_config, register_node, run, run_node, stderr, stdout,
    wait_registry, Running,
};

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
