//! Hotkey files and signatures, against a hotkey file written by the bittensor wallet itself.

use hermes::proto::Hotkey;
use hermes::{HotkeyPair, KeyError};
use std::path::{Path, PathBuf};

/// Written by `bittensor_wallet.Wallet.create_new_hotkey` (bittensor-wallet 4.1.1); a throwaway key.
const FIXTURE: &str = "tests/fixtures/bittensor_hotkey";
const FIXTURE_SS58: &str = "5EkCNqdETwKhGvLFmMBhL298SZiYiwuCgrrzdkRYGV5zjJhx";
/// `wallet.hotkey.sign(b"hermes interop")`, made by bittensor-wallet with the fixture key.
const BITTENSOR_SIG: &str = "9ad4a55fab0a0a68dee21cd16a7760c9bb8dec2c35c1ec84d9b0822e0d733c3151b83cc3b5ad81f589a9134718c72d56cd3340db225dd114f8c78dbc8808a48f";

fn fixture() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(FIXTURE).unwrap()).unwrap()
}

fn write(dir: &Path, name: &str, v: &serde_json::Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

#[test]
fn bittensor_hotkey_file_loads_to_the_address_it_states() {
    let key = HotkeyPair::load_bittensor_file(Path::new(FIXTURE)).unwrap();
    assert_eq!(key.public().to_ss58(42), FIXTURE_SS58);
    assert_eq!(
        key.public().to_hex(),
        fixture()["publicKey"].as_str().unwrap()
    );
}

#[test]
fn signature_made_by_bittensor_verifies_and_ours_round_trips() {
    let (pk, _) = Hotkey::from_ss58(FIXTURE_SS58).unwrap();
    let sig = hex::decode(BITTENSOR_SIG).unwrap();
    assert!(pk.verify(b"hermes interop", &sig));
    assert!(!pk.verify(b"hermes interop!", &sig));

    let key = HotkeyPair::load_bittensor_file(Path::new(FIXTURE)).unwrap();
    let ours = key.sign_raw(b"payload");
    assert!(pk.verify(b"payload", &ours));
    assert!(!pk.verify(b"other bytes", &ours));
    let mut flipped = ours;
    flipped[10] ^= 0x40;
    assert!(!pk.verify(b"payload", &flipped));
    // Another key's signature over the same bytes does not verify as ours.
    let (other, _) = HotkeyPair::generate();
    assert!(!pk.verify(b"payload", &other.sign_raw(b"payload")));
}

#[test]
fn dev_phrase_vector() {
    // The substrate development phrase without derivation, and `//Alice` derived from it.
    let root = HotkeyPair::from_uri(
        "bottom drive obey lake curtain smoke basket hold race lonely fit walk",
        "test",
    )
    .unwrap();
    assert_eq!(
        root.public().to_ss58(42),
        "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV"
    );
    let alice = HotkeyPair::from_uri("//Alice", "test").unwrap();
    assert_eq!(
        alice.public().to_ss58(42),
        "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
    );
    assert!(matches!(
        HotkeyPair::from_uri("not a mnemonic at all", "test"),
        Err(KeyError::BadUri { .. })
    ));
}

#[test]
fn tampered_files_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let bob = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty";
    type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "addr",
            Box::new(|v| v["ss58Address"] = bob.into()),
            "ss58Address",
        ),
        (
            "pub",
            Box::new(|v| {
                v["publicKey"] =
                    "0x8eaf04151687736326c9fea17e25fc5287613693c912909cb226aa4794f26a48".into()
            }),
            "publicKey",
        ),
        (
            "seed",
            Box::new(|v| {
                v["secretSeed"] =
                    "0x0000000000000000000000000000000000000000000000000000000000000001".into()
            }),
            "secretPhrase",
        ),
        (
            "garbled",
            Box::new(|v| v["ss58Address"] = "5notanaddress".into()),
            "ss58Address",
        ),
    ];
    for (name, mutate, field) in cases {
        let mut v = fixture();
        mutate(&mut v);
        let p = write(dir.path(), name, &v);
        match HotkeyPair::load_bittensor_file(&p) {
            Err(KeyError::HotkeyMismatch { field: f, .. }) => assert_eq!(f, field, "{name}"),
            other => panic!("{name}: expected HotkeyMismatch, got {other:?}"),
        }
    }
}

#[test]
fn malformed_files_get_specific_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut no_secret = fixture();
    for k in ["secretSeed", "secretPhrase", "privateKey"] {
        no_secret.as_object_mut().unwrap().remove(k);
    }
    let p = write(dir.path(), "nosecret", &no_secret);
    let e = HotkeyPair::load_bittensor_file(&p).unwrap_err().to_string();
    assert!(e.contains("no secret"), "{e}");

    let enc = dir.path().join("encrypted");
    std::fs::write(&enc, b"$NACL\x00\x01binary").unwrap();
    let e = HotkeyPair::load_bittensor_file(&enc)
        .unwrap_err()
        .to_string();
    assert!(e.contains("encrypted"), "{e}");

    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"{not json").unwrap();
    assert!(matches!(
        HotkeyPair::load_bittensor_file(&junk),
        Err(KeyError::HotkeyFormat { .. })
    ));
    let mut bad_hex = fixture();
    bad_hex["secretSeed"] = "0xzz".into();
    let p = write(dir.path(), "badhex", &bad_hex);
    let e = HotkeyPair::load_bittensor_file(&p).unwrap_err().to_string();
    assert!(e.contains("secretSeed"), "{e}");
    // The message never echoes secret material.
    let secret = fixture()["secretPhrase"].as_str().unwrap().to_string();
    let mut v = fixture();
    v["ss58Address"] = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty".into();
    let p = write(dir.path(), "leak", &v);
    let e = HotkeyPair::load_bittensor_file(&p).unwrap_err();
    assert!(!format!("{e} {e:?}").contains(&secret));
    assert!(matches!(
        HotkeyPair::load_bittensor_file(&dir.path().join("missing")),
        Err(KeyError::Io { .. })
    ));
}

#[test]
fn rsa_transport_key_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("rsa.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .status()
        .expect("openssl must be installed to create a real RSA key");
    assert!(status.success());
    let der = dir.path().join("rsa.der");
    let status = std::process::Command::new("openssl")
        .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&der)
        .status()
        .unwrap();
    assert!(status.success());
    let a = hermes::transport_key(&pem).unwrap();
    let b = hermes::transport_key(&der).unwrap();
    assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
    let id = a.public().to_peer_id().to_base58();
    // RSA peer ids are sha256 multihashes: `Qm…`, which the chain accepts.
    assert!(id.starts_with("Qm"), "{id}");
    assert!(hermes::proto::validate_peer_id(id.as_bytes()));
}

#[test]
fn a_file_that_is_not_a_hotkey_file_says_what_one_is() {
    let dir = tempfile::tempdir().unwrap();
    let phrase = fixture()["secretPhrase"].as_str().unwrap().to_string();
    for (name, text) in [
        ("array", "[]".to_string()),
        ("positional", "[\"0x00\", \"0x00\"]".to_string()),
        ("number", "5".to_string()),
        ("string", "\"hello\"".to_string()),
        ("mnemonic", format!("{phrase}\n")),
        ("broken", "{\"secretSeed\": ".to_string()),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, &text).unwrap();
        let e = HotkeyPair::load_bittensor_file(&p).unwrap_err();
        assert!(matches!(e, KeyError::HotkeyFormat { .. }), "{name}: {e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("a JSON object with secretPhrase, secretSeed and/or privateKey"),
            "{name}: {msg}"
        );
        for rust in ["struct", "BittensorKeyfile", "Option"] {
            assert!(!msg.contains(rust), "{name}: `{rust}` in {msg}");
        }
        // A phrase put where the file goes is pointed at the variable, without being echoed.
        assert!(!msg.contains(&phrase), "{name}: {msg}");
        if name == "mnemonic" {
            assert!(msg.contains(hermes::HOTKEY_URI_ENV), "{msg}");
        }
    }
}
