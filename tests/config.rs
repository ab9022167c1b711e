//! Every class of bad config gives an error that names the field (or line and column) in the
//! user's terms, defaults are what a file that leaves a field out gets, and a node whose chain
//! registry would make it refuse everyone says so when it starts.

mod common;

use common::{DevChainDir, NodeDir};
use hermes::config::{ChainKind, SubnetMode};
use hermes::{Config, ConfigError};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

struct Case {
    dir: tempfile::TempDir,
    hotkey: PathBuf,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hotkey = dir.path().join("hotkey");
        std::fs::copy("tests/fixtures/bittensor_hotkey", &hotkey).unwrap();
        Case { dir, hotkey }
    }

    /// Loads `json` (with `HOTKEY` replaced by a real hotkey path) from a real file.
    fn load(&self, json: &str) -> Result<Config, ConfigError> {
        let p = self.dir.path().join("hermes.json");
        let json = json.replace("HOTKEY", &self.hotkey.display().to_string());
        std::fs::write(&p, json).unwrap();
        Config::load(&p)
    }

    fn field_error(&self, json: &str) -> (String, String) {
        match self.load(json) {
            Err(ConfigError::Field { field, reason, .. }) => (field, reason),
            other => panic!("expected a field error for {json}, got {other:?}"),
        }
    }
}

#[test]
fn minimal_config_loads_with_defaults_and_resolved_paths() {
    let c = Case::new();
    let cfg = c
        .load(r#"{"identity": {"hotkey_file": "hotkey"}, "storage": {"cache_size": "8MiB", "flush_every": "250ms"}}"#)
        .unwrap();
    assert_eq!(
        cfg.identity.hotkey_file.as_deref(),
        Some(c.hotkey.as_path())
    );
    assert_eq!(cfg.data_dir, c.dir.path().join("hermes-data"));
    assert_eq!(cfg.storage.cache_size.0, 8 << 20);
    assert_eq!(cfg.storage.flush_every.0.as_millis(), 250);
    assert_eq!(cfg.identity.ss58_prefix, 42);
    // The effective config printed by `config check` parses back to the same config.
    let again = Config::parse(&cfg.to_pretty_json(), Path::new("x")).unwrap();
    assert_eq!(again, cfg);
}

#[test]
fn unknown_field() {
    let c = Case::new();
    let (f, r) = c.field_error(r#"{"identity": {"hotkey_file": "HOTKEY", "hotkey_fil": 1}}"#);
    assert_eq!(f, "identity.hotkey_fil");
    assert!(
        r.contains("unknown field `hotkey_fil`, expected one of"),
        "{r}"
    );
    let (f, r) = c.field_error(r#"{"identity": {"hotkey_file": "HOTKEY"}, "firewal": {}}"#);
    assert_eq!(f, "firewal");
    assert!(r.contains("firewal"), "{r}");
}

#[test]
fn wrong_type() {
    let c = Case::new();
    let (f, r) = c.field_error(r#"{"identity": {"hotkey_file": "HOTKEY", "ss58_prefix": "42"}}"#);
    assert_eq!(f, "identity.ss58_prefix");
    assert!(r.contains("expected u16"), "{r}");
    let (f, _) =
        c.field_error(r#"{"identity": {"hotkey_file": "HOTKEY"}, "listen": "/ip4/0.0.0.0/tcp/1"}"#);
    assert_eq!(f, "listen");
    let (f, r) =
        c.field_error(r#"{"identity": {"hotkey_file": "HOTKEY"}, "subnets": {"mode": "closed"}}"#);
    assert_eq!(f, "subnets.mode");
    assert!(
        r.contains("single") && r.contains("whitelist") && r.contains("open"),
        "{r}"
    );
}

#[test]
fn bad_size_and_duration() {
    let c = Case::new();
    let (f, r) = c.field_error(
        r#"{"identity": {"hotkey_file": "HOTKEY"}, "storage": {"cache_size": "8MB/s"}}"#,
    );
    assert_eq!(f, "storage.cache_size");
    assert!(r.contains("8MB/s"), "{r}");
    let (f, r) = c.field_error(
        r#"{"identity": {"hotkey_file": "HOTKEY"}, "storage": {"cache_size": "10KiB"}}"#,
    );
    assert_eq!(f, "storage.cache_size");
    assert!(r.contains("out of range"), "{r}");
    let (f, r) =
        c.field_error(r#"{"identity": {"hotkey_file": "HOTKEY", "binding_ttl": "1 fortnight"}}"#);
    assert_eq!(f, "identity.binding_ttl");
    assert!(r.contains("invalid duration `1 fortnight`"), "{r}");
    let (f, r) =
        c.field_error(r#"{"identity": {"hotkey_file": "HOTKEY", "binding_ttl": "90days"}}"#);
    assert_eq!(f, "identity.binding_ttl");
    assert!(r.contains("out of range"), "{r}");
    // A staleness limit shorter than one poll would call the registry stale between two reads.
    let (f, r) = c.field_error(
        r#"{"identity": {"hotkey_file": "HOTKEY"}, "chain": {"poll_interval": "10s", "max_staleness": "5s"}}"#,
    );
    assert_eq!(f, "chain.max_staleness");
    assert!(r.contains("at least chain.poll_interval"), "{r}");
    let ok = c
        .load(r#"{"identity": {"hotkey_file": "HOTKEY"}, "chain": {"poll_interval": "10s", "max_staleness": "10s"}}"#)
        .unwrap();
    assert_eq!(ok.chain.max_staleness.0, std::time::Duration::from_secs(10));
}

#[test]
fn bad_multiaddr_names_its_index() {
    let c = Case::new();
    let (f, r) = c.field_error(
        r#"{"identity": {"hotkey_file": "HOTKEY"}, "listen": ["/ip4/0.0.0.0/tcp/4001", "/ip4/300.0.0.1/tcp/1"]}"#,
    );
    assert_eq!(f, "listen[1]");
    assert!(
        r.contains("invalid multiaddr `/ip4/300.0.0.1/tcp/1`"),
        "{r}"
    );
    let (f, _) = c
        .field_error(r#"{"identity": {"hotkey_file": "HOTKEY"}, "bootstrap": ["localhost:4001"]}"#);
    assert_eq!(f, "bootstrap[0]");
}

#[test]
fn bad_netuids() {
    let c = Case::new();
    let (f, r) = c.field_error(
        r#"{"identity": {"hotkey_file": "HOTKEY"}, "subnets": {"mode": "whitelist", "netuids": [1, 2, 70000]}}"#,
    );
    assert_eq!(f, "subnets.netuids[2]");
    assert!(r.contains("70000"), "{r}");
    let (f, _) = c.field_error(
        r#"{"identity": {"hotkey_file": "HOTKEY"}, "subnets": {"mode": "whitelist", "netuids": [1, -2]}}"#,
    );
    assert_eq!(f, "subnets.netuids[1]");
    let (f, r) = c.field_error(
        r#"{"identity": {"hotkey_file": "HOTKEY"}, "subnets": {"mode": "whitelist", "netuids": [4, 5, 4]}}"#,
    );
    assert_eq!(f, "subnets.netuids[2]");
    assert!(r.contains("listed twice"), "{r}");
    let (f, r) = c.field_error(
        r#"{"identity": {"hotkey_file": "HOTKEY"}, "subnets": {"mode": "single", "netuids": [4, 5]}}"#,
    );
    assert_eq!(f, "subnets.netuids");
    assert!(r.contains("exactly one"), "{r}");
}

#[test]
fn missing_or_unreadable_key_file() {
    let c = Case::new();
    let (f, r) = c.field_error(r#"{"identity": {"hotkey_file": "no/such/hotkey"}}"#);
    assert_eq!(f, "identity.hotkey_file");
    assert!(r.contains("does not exist"), "{r}");
    // A directory where a file is expected.
    let (f, r) = c.field_error(r#"{"identity": {"hotkey_file": "."}}"#);
    assert_eq!(f, "identity.hotkey_file");
    assert!(r.contains("not a regular file"), "{r}");
    let (f, _) = c.field_error(
        r#"{"identity": {"hotkey_file": "HOTKEY", "transport_key_file": "nope.key"}}"#,
    );
    assert_eq!(f, "identity.transport_key_file");
    if std::env::var_os(hermes::HOTKEY_URI_ENV).is_none() {
        let (f, r) = c.field_error(r#"{}"#);
        assert_eq!(f, "identity.hotkey_file");
        assert!(r.contains("required"), "{r}");
    }
}

#[test]
fn unreadable_config_file() {
    let c = Case::new();
    for p in [
        c.dir.path().join("missing.json"),
        c.dir.path().to_path_buf(),
    ] {
        match Config::load(&p) {
            Err(e @ ConfigError::Unreadable { .. }) => {
                assert!(e.to_string().contains(&p.display().to_string()))
            }
            other => panic!("expected Unreadable, got {other:?}"),
        }
    }
}

#[test]
fn syntax_errors_give_line_and_column() {
    let c = Case::new();
    match c.load("{\n  \"data_dir\": \"x\",\n  \"listen\": [,]\n}") {
        Err(ConfigError::Syntax { line, column, .. }) => assert_eq!((line, column), (3, 14)),
        other => panic!("expected a syntax error, got {other:?}"),
    }
    match c.load("{\"data_dir\": \"x\"") {
        Err(e @ ConfigError::Syntax { .. }) => assert!(e.to_string().contains(":1:")),
        other => panic!("expected a syntax error, got {other:?}"),
    }
    // Text after the config object is not ignored.
    match c.load("{\"identity\": {\"hotkey_file\": \"HOTKEY\"}}\n}") {
        Err(
            e @ ConfigError::Syntax {
                line: 2, column: 1, ..
            },
        ) => {
            assert!(e.to_string().contains("trailing characters"), "{e}")
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn bad_log_level() {
    let c = Case::new();
    let (f, _) = c
        .field_error(r#"{"identity": {"hotkey_file": "HOTKEY"}, "log": {"level": "hermes=loud"}}"#);
    assert_eq!(f, "log.level");
    let (f, _) =
        c.field_error(r#"{"identity": {"hotkey_file": "HOTKEY"}, "log": {"format": "xml"}}"#);
    assert_eq!(f, "log.format");
}

#[test]
fn default_config_round_trips_through_json() {
    let d = Config::default();
    let json = d.to_pretty_json();
    assert_eq!(Config::parse(&json, Path::new("x")).unwrap(), d);
    // Every section is printed in full, so `config check` shows each default it applies.
    let v: Value = serde_json::from_str(&json).unwrap();
    for section in [
        "identity",
        "subnets",
        "chain",
        "acl",
        "firewall",
        "storage",
        "encryption",
        "messages",
        "streams",
        "log",
    ] {
        assert!(v[section].is_object(), "{section} missing from {json}");
    }
    assert_eq!(v["firewall"]["max_conns_per_ip"], 8);
    assert_eq!(v["messages"]["max_size"], "16MiB");
    assert_eq!(v["chain"]["kind"], "dev");
}

#[test]
fn minimal_file_and_empty_sections_give_the_defaults() {
    let c = Case::new();
    let expected = Config::default()
        .with_hotkey_file(&c.hotkey)
        .with_data_dir(c.dir.path().join("hermes-data"))
        .with_chain(ChainKind::Dev, c.dir.path().join("devchain"));
    let minimal = c
        .load(r#"{"identity": {"hotkey_file": "HOTKEY"}}"#)
        .unwrap();
    assert_eq!(minimal, expected);
    let empty_sections = c
        .load(
            r#"{"identity": {"hotkey_file": "HOTKEY"}, "subnets": {}, "chain": {}, "acl": {},
                "firewall": {}, "storage": {}, "encryption": {}, "messages": {}, "streams": {},
                "log": {}}"#,
        )
        .unwrap();
    assert_eq!(empty_sections, expected);
    // One field set leaves its neighbours at their defaults.
    let one = c
        .load(r#"{"identity": {"hotkey_file": "HOTKEY"}, "firewall": {"min_stake": 5}}"#)
        .unwrap();
    assert_eq!(one.firewall.min_stake, 5);
    assert_eq!(
        one.firewall.max_connections,
        expected.firewall.max_connections
    );
    assert!(one.firewall.enabled && one.firewall.require_stake);
}

#[test]
fn every_field_is_documented() {
    let docs = std::fs::read_to_string("docs/CONFIG.md").unwrap();
    let v: Value = serde_json::from_str(&Config::default().to_pretty_json()).unwrap();
    let mut missing = Vec::new();
    for (path, _) in leaves(&v) {
        if !docs.contains(&format!("| `{path}` |")) {
            missing.push(path);
        }
    }
    // Optional fields are not printed when unset.
    for path in ["identity.hotkey_file", "identity.transport_key_file"] {
        if !docs.contains(&format!("| `{path}` |")) {
            missing.push(path.to_string());
        }
    }
    assert!(missing.is_empty(), "not in docs/CONFIG.md: {missing:?}");
}

/// Every field and section of `v` with its value, by path (`firewall.min_stake`).
fn leaves(v: &Value) -> Vec<(String, Value)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, child, out);
                }
            }
            _ => out.push((prefix.to_string(), v.clone())),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

/// Words of Rust that a user never wrote and cannot act on.
fn assert_no_rust_names(context: &str, text: &str) {
    for word in [
        "struct",
        "enum ",
        "variant",
        "Config",
        "Addr",
        "HumanDuration",
        "ByteSize",
        "AclEntry",
        "PathBuf",
        "Option",
        "Vec<",
        "Snapshot",
        "NodeJson",
    ] {
        assert!(!text.contains(word), "{context}: `{word}` in: {text}");
    }
}

#[test]
fn wrong_values_anywhere_name_the_field_in_the_users_terms() {
    let c = Case::new();
    let base: Value = serde_json::from_str(&Config::default().to_pretty_json()).unwrap();
    let wrong = [
        "[]", "{}", "5", "-1", "1.5", "\"x\"", "null", "true", "[5]", "[{}]",
    ];
    let mut paths: Vec<String> = leaves(&base).into_iter().map(|(p, _)| p).collect();
    paths.extend(base.as_object().unwrap().keys().cloned());
    paths.push("identity.transport_key_file".into());
    let mut checked = 0;
    for path in &paths {
        for w in wrong {
            let mut v = base.clone();
            v["identity"]["hotkey_file"] = c.hotkey.display().to_string().into();
            let mut slot = &mut v;
            for part in path.split('.') {
                slot = &mut slot[part];
            }
            *slot = serde_json::from_str(w).unwrap();
            let ctx = format!("{path} = {w}");
            match c.load(&v.to_string()) {
                Ok(_) => {}
                Err(ConfigError::Field { field, reason, .. }) => {
                    assert!(
                        field.starts_with(path.as_str()),
                        "{ctx}: error names `{field}`: {reason}"
                    );
                    assert_no_rust_names(&ctx, &reason);
                    checked += 1;
                }
                // The file is valid JSON: a syntax error would send the user looking for a typo
                // that is not there.
                Err(e) => panic!("{ctx}: expected a field error, got {e}"),
            }
        }
    }
    assert!(checked > 300, "only {checked} errors checked");
    // A wrong name for a choice lists the choices.
    let (f, r) = c.field_error(r#"{"identity": {"hotkey_file": "HOTKEY"}, "chain": {"kind": 7}}"#);
    assert_eq!(f, "chain.kind");
    assert!(r.contains("one of `dev`, `static`"), "{r}");
    let (f, r) =
        c.field_error(r#"{"identity": {"hotkey_file": "HOTKEY"}, "log": {"format": "xml"}}"#);
    assert_eq!(f, "log.format");
    assert!(
        r.contains("\"xml\"") && r.contains("one of `text`, `json`"),
        "{r}"
    );
}

#[test]
fn a_file_that_is_not_an_object_says_what_the_config_is() {
    let c = Case::new();
    for text in ["[]", "5", "\"hermes\"", "null", "[{\"data_dir\": \"x\"}]"] {
        let (f, r) = c.field_error(text);
        assert_eq!(f, "(top level)", "{text}");
        assert!(
            r.contains("a JSON object with the fields data_dir, identity"),
            "{text}: {r}"
        );
        assert_no_rust_names(text, &r);
    }
    let (f, r) = c.field_error(r#"{"identity": "HOTKEY"}"#);
    assert_eq!(f, "identity");
    assert!(r.contains("hotkey_file, transport_key_file"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_snapshot_that_is_not_one_says_what_it_should_be() {
    let node = NodeDir::new();
    let snap = node.path().join("snapshot.json");
    for (text, needle) in [
        ("[]", "a JSON object {\"nodes\": [...]}"),
        (r#"{"nodes": [5]}"#, "netuid, hotkey (SS58), peer_id, stake"),
    ] {
        std::fs::write(&snap, text).unwrap();
        let cfg = node.config().with_chain(ChainKind::Static, &snap);
        let err = hermes::Runtime::builder(cfg)
            .with_logging(false)
            .with_network(false)
            .start()
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains(&snap.display().to_string()), "{err}");
        assert!(err.contains(needle), "{text}: {err}");
        assert_no_rust_names(text, &err.replace(&snap.display().to_string(), ""));
    }
}

/// Everything the tracing subscriber of this test process wrote (every test's runtimes log here;
/// each test looks for its own paths).
fn captured_log() -> String {
    static LOG: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    struct Sink(&'static Mutex<Vec<u8>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let log = LOG.get_or_init(|| {
        let buf: &'static Mutex<Vec<u8>> = Box::leak(Box::new(Mutex::new(Vec::new())));
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || Sink(buf))
            .init();
        buf
    });
    String::from_utf8_lossy(&log.lock().unwrap()).into_owned()
}

/// Starts a node with `cfg` (networking on, our log capture in place of Hermes' own), stops it,
/// and returns the warnings it logged about its chain registry.
async fn start_warnings(cfg: Config, network: bool) -> Vec<String> {
    let before = captured_log().len();
    let chain = cfg.chain.path.display().to_string();
    let rt = hermes::Runtime::builder(cfg)
        .with_logging(false)
        .with_network(network)
        .start()
        .await
        .expect("the node starts whatever its registry holds");
    rt.shutdown().await.unwrap();
    // The check runs before `start` returns, so its line is already written.
    captured_log()[before..]
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&chain))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_would_refuse_everyone_warns_at_start() {
    // chain.path never set: the default `./devchain` next to the config, which nothing created.
    let node = NodeDir::new();
    let mut file: Value = serde_json::from_str(&node.config().to_pretty_json()).unwrap();
    file.as_object_mut().unwrap().remove("chain");
    let p = node.path().join("hermes.json");
    std::fs::write(&p, file.to_string()).unwrap();
    let cfg = Config::load(&p).unwrap();
    let missing = node.path().join("devchain");
    assert_eq!(cfg.chain.path, missing);
    assert!(!missing.exists());
    let w = start_warnings(cfg.clone(), true).await;
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains(&format!(
            "the dev chain directory {} (chain.path) does not exist",
            missing.display()
        )) && w[0].contains("every peer is refused as unregistered"),
        "{}",
        w[0]
    );
    // Starting did not create it: the warning stays true until someone registers.
    assert!(!missing.exists());

    // Without networking (`hermes id`) nobody is refused, so nothing is said.
    assert!(start_warnings(cfg.clone(), false).await.is_empty());
    // With the firewall off the registry is not consulted.
    let mut off = cfg.clone();
    off.firewall.enabled = false;
    assert!(start_warnings(off, true).await.is_empty());

    // A directory that holds no registrations.
    std::fs::create_dir(&missing).unwrap();
    let w = start_warnings(cfg.clone(), true).await;
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("holds no registrations"), "{}", w[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_only_outside_the_nodes_subnets_are_warned_about() {
    let chain = DevChainDir::new();
    let (node, other) = (NodeDir::new(), NodeDir::new());
    chain.register(1, &other, 1_000);
    let cfg = |n: &NodeDir| {
        n.cluster_config(&chain, vec![3])
            .with_listen(vec![common::TCP.parse().unwrap()])
    };
    let w = start_warnings(cfg(&node), true).await;
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("1 registration(s) but none in subnet(s) 3"),
        "{}",
        w[0]
    );
    // In `open` mode a registration in any subnet admits its node.
    let open = cfg(&node).with_subnets(SubnetMode::Open, vec![]);
    assert!(start_warnings(open, true).await.is_empty());
    // Once a node is registered in subnet 3 there is someone to admit.
    chain.register(3, &other, 1_000);
    assert!(start_warnings(cfg(&node), true).await.is_empty());
}
