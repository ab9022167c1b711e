//! Key material and the file formats it lives in.
//!
//! - **Hotkey** (sr25519): read from a Bittensor hotkey file, from a secret URI (mnemonic, hex seed
//!   or derivation such as `//Alice`), or generated and written in the Bittensor format so that
//!   `btcli` and the bittensor SDK can use it unchanged.
//! - **Transport key** (libp2p): ed25519 by default, generated on first start and stored in the data
//!   dir with mode 0600 in libp2p's protobuf encoding; an existing RSA key (PKCS#8, DER or PEM) or
//!   protobuf-encoded ed25519 key can be supplied instead.
//!
//! Every secret type zeroizes on drop and prints as `<redacted>`.

use crate::storage::write_private_file;
use hermes_proto::Hotkey;
use libp2p::identity::Keypair;
use serde::{Deserialize, Serialize};
use sp_core::crypto::SecretStringError;
use sp_core::{sr25519, Pair as _};
use std::fmt;
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

/// Name of the environment variable holding a secret URI for the hotkey.
pub const HOTKEY_URI_ENV: &str = "HERMES_HOTKEY_URI";

/// Errors loading, parsing or writing keys. Never contains secret material.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A hotkey file is not valid Bittensor keyfile JSON.
    #[error("{path}: not a Bittensor hotkey file: {reason}")]
    HotkeyFormat {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The hotkey file states an address or public key the secret does not produce.
    #[error("{path}: {field} is {stated} but the file's secret derives {derived}; refusing a tampered or mismatched hotkey file")]
    HotkeyMismatch {
        /// The file.
        path: PathBuf,
        /// Which field disagrees (`ss58Address`, `publicKey`, `secretPhrase`…).
        field: &'static str,
        /// What the file says.
        stated: String,
        /// What the secret gives.
        derived: String,
    },
    /// The secret URI could not be parsed.
    #[error("{source_name}: invalid secret URI ({reason})")]
    BadUri {
        /// Where the URI came from (the env var name).
        source_name: &'static str,
        /// sp-core's reason, with no secret in it.
        reason: String,
    },
    /// A transport key file could not be decoded as any supported format.
    #[error("{path}: not a libp2p transport key (expected protobuf-encoded ed25519, or RSA PKCS#8 in DER or PEM): {reason}")]
    TransportFormat {
        /// The file.
        path: PathBuf,
        /// What each decoder reported.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The sr25519 wallet hotkey. The inner pair zeroizes its secret on drop (schnorrkel does).
#[derive(Clone)]
pub struct HotkeyPair {
    pair: sr25519::Pair,
}

impl fmt::Debug for HotkeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HotkeyPair({:?}, secret: <redacted>)", self.public())
    }
}

/// Where a hotkey was loaded from, kept so the IdentityActor can reload after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HotkeySource {
    /// A Bittensor hotkey file.
    File(PathBuf),
    /// The `HERMES_HOTKEY_URI` environment variable.
    EnvUri,
}

impl fmt::Display for HotkeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HotkeySource::File(p) => write!(f, "hotkey file {}", p.display()),
            HotkeySource::EnvUri => write!(f, "${HOTKEY_URI_ENV}"),
        }
    }
}

impl HotkeyPair {
    /// The public key.
    pub fn public(&self) -> Hotkey {
        Hotkey::of(&self.pair)
    }

    /// The underlying sp-core pair, for signing.
    pub fn pair(&self) -> &sr25519::Pair {
        &self.pair
    }

    /// Signs `message` for an application, under the Hermes application domain
    /// ([`hermes_proto::hotkey::APP_DOMAIN`]): never valid as a binding record, session header or
    /// raw substrate signature. Verify with [`Hotkey::verify_app`].
    pub fn sign_app(&self, message: &[u8]) -> [u8; 64] {
        hermes_proto::hotkey::sign_app(&self.pair, message)
    }

    /// Signs `message` as it is, in the plain substrate context, as other wallet tools do (for
    /// interoperability and tests). Never pass it bytes someone else chose: they could be a
    /// binding record's signing payload or a chain extrinsic. Applications use
    /// [`HotkeyPair::sign_app`].
    pub fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        hermes_proto::hotkey::sign(&self.pair, message)
    }

    /// Parses a secret URI: a BIP-39 mnemonic, a `0x` hex seed, or either with derivation paths
    /// and an optional `///password` (e.g. `//Alice`, which means the dev phrase + `//Alice`).
    ///
    /// # Errors
    /// [`KeyError::BadUri`].
    pub fn from_uri(uri: &str, source_name: &'static str) -> Result<Self, KeyError> {
        sr25519::Pair::from_string(uri, None)
            .map(|pair| HotkeyPair { pair })
            .map_err(|e| KeyError::BadUri {
                source_name,
                reason: describe_secret_error(&e),
            })
    }

    /// Resolves the hotkey: `HERMES_HOTKEY_URI` when set (it takes precedence), else the file.
    ///
    /// # Errors
    /// [`KeyError`] from whichever source was used; `HotkeyFormat` if neither is available.
    pub fn resolve(file: Option<&Path>) -> Result<(Self, HotkeySource), KeyError> {
        if let Some(uri) = std::env::var_os(HOTKEY_URI_ENV) {
            let uri = Zeroizing::new(uri.to_string_lossy().into_owned());
            return Ok((
                Self::from_uri(uri.trim(), HOTKEY_URI_ENV)?,
                HotkeySource::EnvUri,
            ));
        }
        match file {
            Some(path) => Ok((
                Self::load_bittensor_file(path)?,
                HotkeySource::File(path.to_path_buf()),
            )),
            None => Err(KeyError::HotkeyFormat {
                path: PathBuf::from("identity.hotkey_file"),
                reason: format!(
                    "no hotkey configured: set identity.hotkey_file or {HOTKEY_URI_ENV}"
                ),
            }),
        }
    }

    /// Reloads from a previously resolved source.
    ///
    /// # Errors
    /// As [`HotkeyPair::resolve`].
    pub fn reload(source: &HotkeySource) -> Result<Self, KeyError> {
        match source {
            HotkeySource::File(p) => Self::load_bittensor_file(p),
            HotkeySource::EnvUri => Self::resolve(None).map(|(k, _)| k),
        }
    }

    /// Generates a fresh hotkey with a 12-word mnemonic.
    pub fn generate() -> (Self, BittensorKeyfile) {
        let (pair, phrase, seed) = sr25519::Pair::generate_with_phrase(None);
        let seed = Zeroizing::new(seed);
        let file = BittensorKeyfile::describe(&pair, Some(phrase), Some(seed.as_ref()));
        (HotkeyPair { pair }, file)
    }

    /// Loads a Bittensor hotkey file and checks that every public field matches the secret.
    ///
    /// Secrets are tried in the order `secretSeed`, `secretPhrase`, `privateKey`; when several
    /// are present they must all derive the same key.
    ///
    /// # Errors
    /// [`KeyError::Io`], [`KeyError::HotkeyFormat`] or [`KeyError::HotkeyMismatch`].
    pub fn load_bittensor_file(path: &Path) -> Result<Self, KeyError> {
        let text = Zeroizing::new(std::fs::read(path).map_err(io_err(path))?);
        let fmt_err = |reason: String| KeyError::HotkeyFormat {
            path: path.to_path_buf(),
            reason,
        };
        if text.starts_with(b"$NACL") || text.starts_with(b"$ANSIBLE_VAULT") {
            return Err(fmt_err(
                "the file is encrypted; Hermes reads unencrypted hotkey files (as btcli writes them)"
                    .into(),
            ));
        }
        // serde would also read a JSON array positionally into the fields; only an object is
        // a hotkey file. A bare mnemonic or seed lands here too.
        if text.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(fmt_err(format!(
                "expected {HOTKEY_FILE_SHAPE}; a secret phrase or seed on its own goes in \
                 {HOTKEY_URI_ENV} instead"
            )));
        }
        let file: BittensorKeyfile = serde_json::from_slice(&text).map_err(|e| {
            // A data error names the value of the wrong type; a syntax error only says where the
            // JSON broke, so add what was expected there.
            if e.is_data() {
                fmt_err(e.to_string())
            } else {
                fmt_err(format!("not JSON ({e}); expected {HOTKEY_FILE_SHAPE}"))
            }
        })?;
        let mismatch = |field, stated: &str, derived: String| KeyError::HotkeyMismatch {
            path: path.to_path_buf(),
            field,
            stated: stated.to_string(),
            derived,
        };

        let mut candidates: Vec<(&'static str, sr25519::Pair)> = Vec::new();
        if let Some(seed) = &file.secret_seed {
            let bytes = decode_hex(seed).map_err(|e| fmt_err(format!("secretSeed: {e}")))?;
            let pair = sr25519::Pair::from_seed_slice(&bytes)
                .map_err(|e| fmt_err(format!("secretSeed: {}", describe_secret_error(&e))))?;
            candidates.push(("secretSeed", pair));
        }
        if let Some(phrase) = &file.secret_phrase {
            let (pair, _) = sr25519::Pair::from_phrase(phrase.trim(), None)
                .map_err(|e| fmt_err(format!("secretPhrase: {}", describe_secret_error(&e))))?;
            candidates.push(("secretPhrase", pair));
        }
        if let Some(sk) = &file.private_key {
            let bytes = decode_hex(sk).map_err(|e| fmt_err(format!("privateKey: {e}")))?;
            let secret = schnorrkel::SecretKey::from_bytes(&bytes)
                .map_err(|e| fmt_err(format!("privateKey: {e}")))?;
            candidates.push(("privateKey", sr25519::Pair::from(secret)));
        }
        let mut iter = candidates.into_iter();
        let Some((_, pair)) = iter.next() else {
            return Err(fmt_err(
                "no secret: expected secretSeed, secretPhrase or privateKey".into(),
            ));
        };
        let derived = Hotkey::of(&pair);
        for (field, other) in iter {
            if Hotkey::of(&other) != derived {
                return Err(mismatch(field, "a different key", derived.to_hex()));
            }
        }
        for (field, stated) in [
            ("publicKey", &file.public_key),
            ("accountId", &file.account_id),
        ] {
            if let Some(stated) = stated {
                let ok = decode_hex(stated).is_ok_and(|b| b.as_slice() == derived.0.as_slice());
                if !ok {
                    return Err(mismatch(field, stated, derived.to_hex()));
                }
            }
        }
        match &file.ss58_address {
            Some(stated) => match Hotkey::from_ss58(stated) {
                Ok((key, _)) if key == derived => {}
                Ok((_, prefix)) => {
                    return Err(mismatch("ss58Address", stated, derived.to_ss58(prefix)))
                }
                Err(_) => {
                    return Err(mismatch(
                        "ss58Address",
                        stated,
                        derived.to_ss58(hermes_proto::hotkey::DEFAULT_SS58_PREFIX),
                    ))
                }
            },
            None => return Err(fmt_err("missing ss58Address".into())),
        }
        Ok(HotkeyPair { pair })
    }
}

/// What a hotkey file must contain, for error messages.
const HOTKEY_FILE_SHAPE: &str = "a JSON object with secretPhrase, secretSeed and/or privateKey, \
    plus publicKey, accountId and ss58Address (what btcli writes for an unencrypted hotkey)";

/// The JSON that bittensor's wallet writes for an unencrypted hotkey.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BittensorKeyfile {
    /// `0x` hex of the public key (same as `publicKey`).
    #[serde(default)]
    pub account_id: Option<String>,
    /// `0x` hex of the sr25519 public key.
    #[serde(default)]
    pub public_key: Option<String>,
    /// `0x` hex of the 64-byte schnorrkel secret key (scalar || nonce, canonical form).
    #[serde(default)]
    pub private_key: Option<String>,
    /// BIP-39 mnemonic, when the key was made from one.
    #[serde(default)]
    pub secret_phrase: Option<String>,
    /// `0x` hex of the 32-byte mini-secret seed.
    #[serde(default)]
    pub secret_seed: Option<String>,
    /// The SS58 address the file claims.
    #[serde(default)]
    pub ss58_address: Option<String>,
}

impl fmt::Debug for BittensorKeyfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BittensorKeyfile")
            .field("ss58_address", &self.ss58_address)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl Drop for BittensorKeyfile {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for s in [
            &mut self.private_key,
            &mut self.secret_phrase,
            &mut self.secret_seed,
        ]
        .into_iter()
        .flatten()
        {
            s.zeroize();
        }
    }
}

impl BittensorKeyfile {
    fn describe(pair: &sr25519::Pair, phrase: Option<String>, seed: Option<&[u8]>) -> Self {
        let public = Hotkey::of(pair);
        let kp: &schnorrkel::Keypair = pair.as_ref();
        let secret = Zeroizing::new(kp.secret.to_bytes());
        BittensorKeyfile {
            account_id: Some(public.to_hex()),
            public_key: Some(public.to_hex()),
            private_key: Some(secret_hex(secret.as_slice())),
            secret_phrase: phrase,
            secret_seed: seed.map(secret_hex),
            ss58_address: Some(public.to_ss58(hermes_proto::hotkey::DEFAULT_SS58_PREFIX)),
        }
    }

    /// Writes the file with mode 0600, refusing to overwrite an existing one.
    ///
    /// # Errors
    /// [`KeyError::Io`], including `AlreadyExists`.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        if path.exists() {
            return Err(KeyError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "refusing to overwrite an existing hotkey file",
                ),
            });
        }
        if let Some(parent) = path.parent() {
            crate::storage::create_private_dir(parent).map_err(io_err(parent))?;
        }
        // Room for the whole file up front: a buffer that grows leaves its old copies (secrets
        // included) in freed memory.
        let mut json = Zeroizing::new(Vec::with_capacity(4096));
        serde_json::to_writer(&mut *json, self).map_err(|e| KeyError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        write_private_file(path, &json).map_err(io_err(path))
    }
}

/// `0x` and lower-case hex of a secret, written straight into a string of its final size (no
/// temporary string holding the secret is left behind unzeroized).
fn secret_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("0x");
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

fn decode_hex(s: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let s = s.trim();
    let body = s.strip_prefix("0x").unwrap_or(s);
    hex::decode(body)
        .map(Zeroizing::new)
        .map_err(|e| format!("not hex: {e}"))
}

fn describe_secret_error(e: &SecretStringError) -> String {
    // sp-core's Debug output names the failure class only; it never echoes the secret.
    format!("{e:?}")
}

/// Loads the transport key from `path`, or generates an ed25519 key there if the file does not
/// exist and `generate` is true.
///
/// # Errors
/// [`KeyError::Io`] or [`KeyError::TransportFormat`].
pub fn load_or_create_transport_key(path: &Path, generate: bool) -> Result<Keypair, KeyError> {
    match std::fs::read(path) {
        Ok(bytes) => decode_transport_key(path, Zeroizing::new(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && generate => {
            let key = Keypair::generate_ed25519();
            let bytes = Zeroizing::new(key.to_protobuf_encoding().map_err(|e| {
                KeyError::TransportFormat {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?);
            if let Some(parent) = path.parent() {
                crate::storage::create_private_dir(parent).map_err(io_err(parent))?;
            }
            write_private_file(path, &bytes).map_err(io_err(path))?;
            Ok(key)
        }
        Err(e) => Err(io_err(path)(e)),
    }
}

fn decode_transport_key(path: &Path, mut bytes: Zeroizing<Vec<u8>>) -> Result<Keypair, KeyError> {
    use base64::Engine as _;
    let mut reasons = Vec::new();
    match Keypair::from_protobuf_encoding(&bytes) {
        Ok(k) => return Ok(k),
        Err(e) => reasons.push(format!("protobuf: {e}")),
    }
    // PEM: strip the armour and decode the base64 body to DER.
    if let Ok(text) = std::str::from_utf8(&bytes) {
        if text.contains("-----BEGIN") {
            if !text.contains("BEGIN PRIVATE KEY") {
                reasons.push("PEM: only unencrypted PKCS#8 (`BEGIN PRIVATE KEY`) is supported; convert with `openssl pkcs8 -topk8 -nocrypt`".into());
            }
            let body: String = text
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<Vec<_>>()
                .concat();
            match base64::engine::general_purpose::STANDARD.decode(body.trim()) {
                Ok(der) => bytes = Zeroizing::new(der),
                Err(e) => reasons.push(format!("PEM: {e}")),
            }
        }
    }
    match Keypair::rsa_from_pkcs8(&mut bytes) {
        Ok(k) => return Ok(k),
        Err(e) => reasons.push(format!("RSA PKCS#8: {e}")),
    }
    Err(KeyError::TransportFormat {
        path: path.to_path_buf(),
        reason: reasons.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_hex_is_plain_0x_hex() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(secret_hex(&bytes), format!("0x{}", hex::encode(&bytes)));
        assert_eq!(secret_hex(&[]), "0x");
    }

    #[test]
    fn generated_file_round_trips_and_tamper_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hotkeys").join("default");
        let (key, file) = HotkeyPair::generate();
        file.write_new(&path).unwrap();
        assert!(file.write_new(&path).is_err(), "must not overwrite");
        let loaded = HotkeyPair::load_bittensor_file(&path).unwrap();
        assert_eq!(loaded.public(), key.public());

        // Each secret on its own also loads to the same key.
        let full: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for keep in ["secretSeed", "secretPhrase", "privateKey"] {
            let mut v = full.clone();
            for drop in ["secretSeed", "secretPhrase", "privateKey"] {
                if drop != keep {
                    v.as_object_mut().unwrap().remove(drop);
                }
            }
            let p = dir.path().join(format!("only-{keep}"));
            std::fs::write(&p, v.to_string()).unwrap();
            assert_eq!(
                HotkeyPair::load_bittensor_file(&p).unwrap().public(),
                key.public(),
                "{keep}"
            );
        }
    }

    #[test]
    fn transport_key_is_created_0600_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("transport.key");
        assert!(matches!(
            load_or_create_transport_key(&p, false),
            Err(KeyError::Io { .. })
        ));
        let k = load_or_create_transport_key(&p, true).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = load_or_create_transport_key(&p, true).unwrap();
        assert_eq!(k.public().to_peer_id(), again.public().to_peer_id());
        std::fs::write(&p, b"garbage").unwrap();
        let err = load_or_create_transport_key(&p, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a libp2p transport key"), "{err}");
    }
}
