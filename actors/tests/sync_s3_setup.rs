//! S3 backend setup that needs a process of its own: credentials read from the real
//! environment (a child process per case, so no test changes this process's environment), and
//! HTTPS verified against Mozilla's and the system's roots (the system store is read once per
//! process, so the trusted case runs in a child given SSL_CERT_FILE).

mod s3_support;

use hermes_actors::sync::{PresignedSource, S3Credentials};
use hermes_proto::sync::layout::MIN_CHUNK_SIZE;
use hermes_proto::sync::Layout;
use std::path::Path;

/// The child side of the credentials test: loads credentials with the environment it was
/// given and prints the outcome.
#[test]
#[ignore = "run by credentials_come_from_the_environment_or_a_file"]
fn child_load_credentials() {
    let Ok(mode) = std::env::var("HERMES_S3_PROBE") else {
        return;
    };
    let file = std::env::var("HERMES_S3_PROBE_FILE").ok();
    let profile = std::env::var("HERMES_S3_PROBE_PROFILE").ok();
    let r = S3Credentials::load(file.as_deref().map(Path::new), profile.as_deref());
    match r {
        Ok(c) => println!(
            "RESULT {mode} OK {} {}",
            c.access_key_id,
            c.session_token.as_deref().unwrap_or("-")
        ),
        Err(e) => println!("RESULT {mode} ERR {e}"),
    }
}

/// Runs the credentials child with exactly the given AWS variables and probe arguments.
fn load_in_child(vars: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "child_load_credentials",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for v in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ] {
        cmd.env_remove(v);
    }
    cmd.env("HERMES_S3_PROBE", "1");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        // The harness prints the test's name on the same line, before the output.
        .find_map(|l| l.split_once("RESULT 1 ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no result: {stdout}"))
        .to_owned()
}

#[test]
fn credentials_come_from_the_environment_or_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials");
    std::fs::write(
        &file,
        "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = FILESECRET\n\
         [other]\naws_access_key_id = OTHERKEY\naws_secret_access_key = S\n\
         aws_session_token = TOKEN\n[nosecret]\naws_access_key_id = K\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let env = [
        ("AWS_ACCESS_KEY_ID", "ENVKEY"),
        ("AWS_SECRET_ACCESS_KEY", "ENVSECRET"),
        ("HERMES_S3_PROBE_FILE", f),
    ];
    assert_eq!(load_in_child(&env), "OK ENVKEY -");
    assert_eq!(
        load_in_child(&[("HERMES_S3_PROBE_FILE", f)]),
        "OK FILEKEY -"
    );
    assert_eq!(
        load_in_child(&[("HERMES_S3_PROBE_FILE", f), ("AWS_PROFILE", "other")]),
        "OK OTHERKEY TOKEN"
    );
    assert_eq!(
        load_in_child(&[
            ("AWS_SHARED_CREDENTIALS_FILE", f),
            ("HERMES_S3_PROBE_PROFILE", "other")
        ]),
        "OK OTHERKEY TOKEN"
    );
    let half = load_in_child(&[("AWS_ACCESS_KEY_ID", "K"), ("HERMES_S3_PROBE_FILE", f)]);
    assert!(
        half.starts_with("ERR") && half.contains("AWS_SECRET_ACCESS_KEY"),
        "{half}"
    );
    let missing = dir.path().join("nope");
    let m = load_in_child(&[("HERMES_S3_PROBE_FILE", missing.to_str().unwrap())]);
    assert!(
        m.starts_with("ERR") && m.contains(missing.to_str().unwrap()),
        "{m}"
    );
    assert!(m.contains("AWS_ACCESS_KEY_ID"), "{m}");
    let s = load_in_child(&[("HERMES_S3_PROBE_FILE", f), ("AWS_PROFILE", "absent")]);
    assert!(
        s.starts_with("ERR") && s.contains("[absent]") && s.contains(f),
        "{s}"
    );
    let k = load_in_child(&[
        ("HERMES_S3_PROBE_FILE", f),
        ("HERMES_S3_PROBE_PROFILE", "nosecret"),
    ]);
    assert!(
        k.contains("[nosecret]") && k.contains("aws_secret_access_key"),
        "{k}"
    );
    // Debug never shows the secret.
    let c = S3Credentials {
        access_key_id: "AK".into(),
        secret_access_key: "SECRET".into(),
        session_token: Some("TOKEN".into()),
    };
    let d = format!("{c:?}");
    assert!(!d.contains("SECRET") && !d.contains("TOKEN"), "{d}");
}

/// The child side of the HTTPS test: fetches the manifest URL it is given and prints the result.
#[tokio::test]
#[ignore = "run by https_is_verified_against_mozilla_and_system_roots"]
async fn child_fetch_over_https() {
    let Ok(url) = std::env::var("HERMES_S3_TLS_URL") else {
        return;
    };
    let layout = Layout::new(0, MIN_CHUNK_SIZE).unwrap();
    let source = PresignedSource::new(&url, &url, layout).unwrap();
    match source.fetch_manifest(1 << 10).await {
        Ok(body) => println!("RESULT OK {}", String::from_utf8_lossy(&body)),
        Err(e) => println!("RESULT ERR {e}"),
    }
}

/// HTTPS works, and is verified: a loopback server whose certificate no root vouches for is
/// refused; a child process given that certificate through SSL_CERT_FILE (the system roots'
/// standard override) fetches from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_verified_against_mozilla_and_system_roots() {
    let (addr, pem) = s3_support::start_tls_server(b"sealed-manifest").await;
    let url = format!("https://{addr}/m?X-Amz-Signature=x");
    let layout = Layout::new(0, MIN_CHUNK_SIZE).unwrap();
    let untrusted = PresignedSource::new(&url, &url, layout).unwrap();
    let e = untrusted.fetch_manifest(1 << 10).await.unwrap_err();
    assert!(e.message.to_lowercase().contains("certificate"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_fetch_over_https",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HERMES_S3_TLS_URL", &url)
        .env("SSL_CERT_FILE", &ca)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r.to_owned()))
        .unwrap_or_else(|| panic!("no result: {stdout}"));
    assert_eq!(result, "OK sealed-manifest");
}
