//! Every class of bad config gives an error that names the field (or line and column).

use hermes::{Config, ConfigError};
use std::path::{Path, PathBuf};

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
