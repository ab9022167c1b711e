//! `hermes init`, `id`, `sign` and `verify`: the node's wallet identity. `sign` signs under the
//! application domain (`hermes/app/v1`) only; `verify --raw` checks other tools' plain signatures.

use crate::{block_on, parse_hex};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hermes::config::SubnetMode;
use hermes::proto::Hotkey;
use hermes::{Config, HotkeyPair, Runtime};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct Payload {
    /// The message as UTF-8 text.
    #[arg(long)]
    message: Option<String>,
    /// The message as 0x-prefixed hex bytes.
    #[arg(long)]
    hex: Option<String>,
}

impl Payload {
    pub(crate) fn bytes(&self) -> Result<Vec<u8>> {
        match (&self.message, &self.hex) {
            (Some(m), None) => Ok(m.as_bytes().to_vec()),
            (None, Some(h)) => parse_hex("--hex", h),
            _ => bail!("give exactly one of --message or --hex"),
        }
    }
}

/// `hermes sign`: the same application signature as `RuntimeHandle::sign` (domain
/// `hermes/app/v1`), so that signing chosen bytes can never produce a binding record's signature.
pub(crate) fn sign(config: &Path, payload: &Payload) -> Result<ExitCode> {
    let cfg = Config::load(config)?;
    let (key, _) = HotkeyPair::resolve(cfg.identity.hotkey_file.as_deref())?;
    let sig = key.sign_app(&payload.bytes()?);
    println!("0x{}", hex::encode(sig));
    Ok(ExitCode::SUCCESS)
}

/// `hermes verify`: an application signature (`hermes sign`, `RuntimeHandle::sign`), or with
/// `raw` a plain substrate signature over the bytes as given (bittensor's `Keypair.sign`,
/// polkadot.js, subkey). Verifying raw signatures is safe; Hermes only never *makes* them over
/// bytes it is handed.
pub(crate) fn verify(ss58: &str, payload: &Payload, signature: &str, raw: bool) -> ExitCode {
    let check = || -> Result<bool> {
        let (key, _) = Hotkey::from_ss58(ss58).context("--ss58")?;
        let sig = parse_hex("--signature", signature)?;
        if sig.len() != 64 {
            bail!(
                "--signature: an sr25519 signature is 64 bytes, got {}",
                sig.len()
            );
        }
        let bytes = payload.bytes()?;
        Ok(if raw {
            key.verify(&bytes, &sig)
        } else {
            key.verify_app(&bytes, &sig)
        })
    };
    match check() {
        Ok(true) => {
            println!("valid");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("invalid: the signature does not match this address and message");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

pub(crate) fn id(config: &Path, json: bool) -> Result<()> {
    let cfg = Config::load(config)?;
    let info = block_on(async {
        let rt = Runtime::builder(cfg)
            .with_logging(false)
            .with_network(false)
            .start()
            .await?;
        let info = rt.identity().await;
        rt.shutdown().await?;
        info
    })?;
    let b = &info.binding;
    let binding_hex = format!("0x{}", hex::encode(b.encode()));
    if json {
        let v = serde_json::json!({
            "ss58": info.ss58,
            "public_key": info.hotkey.to_hex(),
            "peer_id": info.peer_id.to_base58(),
            "transport_key_type": info.transport_key_type,
            "binding": {
                "netuids": b.record.netuids,
                "prekey": format!("0x{}", hex::encode(b.record.prekey)),
                "issued_at": b.record.issued_at,
                "expires_at": b.record.expires_at,
                "signature": format!("0x{}", hex::encode(b.signature)),
                "encoded": binding_hex,
            }
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("ss58:        {}", info.ss58);
        println!("public_key:  {}", info.hotkey.to_hex());
        println!("peer_id:     {}", info.peer_id);
        println!("transport:   {}", info.transport_key_type);
        println!("netuids:     {:?}", b.record.netuids);
        println!(
            "binding:     issued_at {} expires_at {}",
            b.record.issued_at, b.record.expires_at
        );
        println!("             {binding_hex}");
    }
    Ok(())
}

pub(crate) fn init(
    dir: &Path,
    hotkey_file: Option<&Path>,
    port: u16,
    netuids: Vec<u16>,
) -> Result<()> {
    let config_path = dir.join("hermes.json");
    if config_path.exists() {
        bail!(
            "{} already exists; refusing to overwrite it",
            config_path.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (hotkey_path, ss58) = match hotkey_file {
        Some(p) => {
            let key = HotkeyPair::load_bittensor_file(p)?;
            let abs = std::fs::canonicalize(p)
                .with_context(|| format!("cannot resolve {}", p.display()))?;
            (abs, key.public().to_ss58(42))
        }
        None => {
            let path = dir.join("hotkey");
            let (key, file) = HotkeyPair::generate();
            file.write_new(&path)?;
            (PathBuf::from("./hotkey"), key.public().to_ss58(42))
        }
    };
    let mode = match netuids.len() {
        0 => "open",
        1 => "single",
        _ => "whitelist",
    };
    let mode = match mode {
        "open" => SubnetMode::Open,
        "single" => SubnetMode::Single,
        _ => SubnetMode::Whitelist,
    };
    let listen = [
        format!("/ip4/0.0.0.0/udp/{port}/quic-v1"),
        format!("/ip4/0.0.0.0/tcp/{port}"),
    ]
    .iter()
    .map(|a| a.parse().map_err(|e| anyhow!("listen address {a}: {e}")))
    .collect::<Result<Vec<_>>>()?;
    let cfg = Config::default()
        .with_data_dir("./hermes-data")
        .with_hotkey_file(hotkey_path)
        .with_subnets(mode, netuids)
        .with_listen(listen);
    std::fs::write(&config_path, cfg.to_pretty_json() + "\n")
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let loaded = Config::load(&config_path)?;
    // Create the transport key now so `hermes id` is instant and the peer id is fixed.
    let key_path = loaded.data_dir.join("transport.key");
    let key = hermes_actors_transport(&key_path)?;
    println!("created {}", config_path.display());
    println!("ss58:    {ss58}");
    println!("peer_id: {key}");
    Ok(())
}

fn hermes_actors_transport(path: &Path) -> Result<String> {
    let key = hermes::transport_key(path)?;
    Ok(key.public().to_peer_id().to_base58())
}
