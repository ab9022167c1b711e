//! `hermes devchain`: registering, listing and stepping the embedded dev chain.

use crate::support::{assert_clean_failure, hermes, register, run, stderr, stdout};

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
