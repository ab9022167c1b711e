//! `hermes init`, `id`, `sign` and `verify`: the node's wallet identity. `sign` signs under the
//! application domain (`hermes/app/v1`) only; `verify --raw` checks other tools' plain signatures.

use crate::{block_on, outln, parse_hex};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hermes::config::{ChainKind, SubnetMode};
use hermes::proto::Hotkey;
use hermes::{control, Config, HotkeyPair, Runtime};
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
    outln!("0x{}", hex::encode(sig));
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
            outln!("valid");
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

/// One value of `hermes id`, for scripts.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum IdField {
    /// The hotkey's SS58 address.
    Ss58,
    /// The hotkey's public key (0x-hex).
    #[value(name = "public_key", alias = "public-key")]
    PublicKey,
    /// The libp2p peer id.
    #[value(name = "peer_id", alias = "peer-id")]
    PeerId,
    /// The encoded binding record (0x-hex).
    Binding,
}

pub(crate) fn id(config: &Path, json: bool, field: Option<IdField>) -> Result<()> {
    let cfg = Config::load(config)?;
    let sock = control::socket_path(&cfg.data_dir);
    let v = block_on(async {
        // A running node holds the data dir: ask it.
        if control::is_running(&sock).await {
            return Ok::<_, anyhow::Error>(control::request(&sock, "id").await?);
        }
        let started = Runtime::builder(cfg.clone())
            .with_logging(false)
            .with_network(false)
            .start()
            .await;
        let rt = match started {
            Ok(rt) => rt,
            Err(hermes::Error::DataDirInUse(_)) => return keys_only(&cfg),
            Err(e) => return Err(e.into()),
        };
        let info = rt.identity().await;
        rt.shutdown().await?;
        Ok(control::identity_json(&info?))
    })?;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    if let Some(f) = field {
        let value = match f {
            IdField::Ss58 => &v["ss58"],
            IdField::PublicKey => &v["public_key"],
            IdField::PeerId => &v["peer_id"],
            IdField::Binding => &v["binding"]["encoded"],
        };
        if value.is_null() {
            bail!(
                "{} is held by a runtime that serves no control socket, so its binding record is unknown here",
                cfg.data_dir.display()
            );
        }
        outln!("{}", s(value));
        return Ok(());
    }
    if v["binding"].is_null() {
        eprintln!(
            "note: {} is held by a runtime that serves no control socket; the binding record is left out",
            cfg.data_dir.display()
        );
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        outln!("ss58:        {}", s(&v["ss58"]));
        outln!("public_key:  {}", s(&v["public_key"]));
        outln!("peer_id:     {}", s(&v["peer_id"]));
        outln!("transport:   {}", s(&v["transport_key_type"]));
        let b = &v["binding"];
        if !b.is_null() {
            outln!("netuids:     {}", b["netuids"]);
            outln!(
                "binding:     issued_at {} expires_at {}",
                b["issued_at"],
                b["expires_at"]
            );
            outln!("             {}", s(&b["encoded"]));
        }
        if let Some(addrs) = v["listen"].as_array() {
            for a in addrs {
                outln!("listen:      {}", s(a));
            }
        }
    }
    Ok(())
}

/// What `id` can say without the data dir: the hotkey and the transport key, both read from
/// their files. Used when a runtime without a control socket (an embedding application) holds
/// the data dir; its binding record lives in that runtime's store and is left out.
fn keys_only(cfg: &Config) -> Result<serde_json::Value> {
    let (hotkey, _) = HotkeyPair::resolve(cfg.identity.hotkey_file.as_deref())?;
    let key = transport_key_of(cfg, false)?;
    Ok(serde_json::json!({
        "ss58": hotkey.public().to_ss58(42),
        "public_key": hotkey.public().to_hex(),
        "peer_id": key.public().to_peer_id().to_base58(),
        "transport_key_type": format!("{:?}", key.key_type()).to_lowercase(),
    }))
}

/// The node's transport key as the runtime finds it: `identity.transport_key_file`, else
/// DATA_DIR/transport.key (which the runtime generates when missing; `create` does the same).
pub(crate) fn transport_key_of(cfg: &Config, create: bool) -> Result<libp2p::identity::Keypair> {
    let configured = cfg.identity.transport_key_file.clone();
    let generate = create && configured.is_none();
    let path = configured.unwrap_or_else(|| cfg.data_dir.join("transport.key"));
    Ok(hermes_actors::identity::keys::load_or_create_transport_key(
        &path, generate,
    )?)
}

/// `hermes init` arguments.
#[derive(Args, Debug)]
pub(crate) struct InitArgs {
    /// Directory to create the node in.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Use this existing Bittensor hotkey file instead of generating one.
    #[arg(long)]
    hotkey_file: Option<PathBuf>,
    /// Port for the default listen addresses: QUIC and TCP on all interfaces.
    #[arg(long, default_value_t = 4001)]
    port: u16,
    /// Listen on these addresses instead of the defaults (repeat for several), e.g.
    /// /ip4/127.0.0.1/tcp/0 for loopback only on a free port.
    #[arg(long = "listen", value_name = "ADDR", value_parser = parse_addr, conflicts_with = "port")]
    listen: Vec<libp2p::Multiaddr>,
    /// Subnets this node serves (repeat for several).
    #[arg(long = "netuid")]
    netuids: Vec<u16>,
    /// Use the dev chain in this directory (`chain.kind` dev, `chain.path`, written as an
    /// absolute path); `hermes devchain register` creates it.
    #[arg(long, value_name = "PATH")]
    chain: Option<PathBuf>,
    /// Join the network through this node (repeat for several), e.g. /ip4/127.0.0.1/tcp/4001.
    #[arg(long = "bootstrap", value_name = "ADDR", value_parser = parse_addr)]
    bootstrap: Vec<libp2p::Multiaddr>,
}

fn parse_addr(s: &str) -> std::result::Result<libp2p::Multiaddr, String> {
    s.parse()
        .map_err(|e| format!("`{s}` is not a multiaddr ({e}); e.g. /ip4/127.0.0.1/tcp/4001"))
}

/// Files and directories `init` created, removed again if it fails part-way, so that a failed
/// `init` leaves nothing behind (a half-made node dir would make the retry fail with
/// "already exists").
#[derive(Default)]
struct Created(Vec<PathBuf>);

impl Created {
    /// Creates `dir` and its missing parents, remembering the outermost one it created.
    fn dir(&mut self, dir: &Path) -> Result<()> {
        let mut outermost = None;
        let mut d = Some(dir);
        while let Some(p) = d {
            if p.as_os_str().is_empty() || p.exists() {
                break;
            }
            outermost = Some(p.to_path_buf());
            d = p.parent();
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        self.0.extend(outermost);
        Ok(())
    }

    /// Remembers `path` if it does not exist yet (it is about to be created).
    fn will_create(&mut self, path: &Path) {
        if !path.exists() {
            self.0.push(path.to_path_buf());
        }
    }

    fn undo(self) {
        for p in self.0.iter().rev() {
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(p)
            } else {
                std::fs::remove_file(p)
            };
        }
    }
}

pub(crate) fn init(a: &InitArgs) -> Result<()> {
    let config_path = a.dir.join("hermes.json");
    if config_path.exists() {
        bail!(
            "{} already exists; refusing to overwrite it",
            config_path.display()
        );
    }
    // Check every input before anything is written.
    let existing = match &a.hotkey_file {
        Some(p) => {
            let key = HotkeyPair::load_bittensor_file(p)?;
            let abs = std::fs::canonicalize(p)
                .with_context(|| format!("cannot resolve {}", p.display()))?;
            Some((abs, key.public().to_ss58(42)))
        }
        None => None,
    };
    let chain = match &a.chain {
        Some(p) => Some(
            std::path::absolute(p)
                .with_context(|| format!("--chain: cannot resolve {}", p.display()))?,
        ),
        None => None,
    };
    let mode = match a.netuids.len() {
        0 => SubnetMode::Open,
        1 => SubnetMode::Single,
        _ => SubnetMode::Whitelist,
    };
    let listen = if a.listen.is_empty() {
        [
            format!("/ip4/0.0.0.0/udp/{}/quic-v1", a.port),
            format!("/ip4/0.0.0.0/tcp/{}", a.port),
        ]
        .iter()
        .map(|s| parse_addr(s).map_err(|e| anyhow!("--port: {e}")))
        .collect::<Result<Vec<_>>>()?
    } else {
        a.listen.clone()
    };
    let mut created = Created::default();
    let result = write_node(a, &config_path, existing, chain, mode, listen, &mut created);
    if result.is_err() {
        created.undo();
    }
    result
}

fn write_node(
    a: &InitArgs,
    config_path: &Path,
    existing: Option<(PathBuf, String)>,
    chain: Option<PathBuf>,
    mode: SubnetMode,
    listen: Vec<libp2p::Multiaddr>,
    created: &mut Created,
) -> Result<()> {
    created.dir(&a.dir)?;
    let (hotkey_path, ss58) = match existing {
        Some(k) => k,
        None => {
            let path = a.dir.join("hotkey");
            let (key, file) = HotkeyPair::generate();
            created.will_create(&path);
            file.write_new(&path)?;
            (PathBuf::from("./hotkey"), key.public().to_ss58(42))
        }
    };
    let mut cfg = Config::default()
        .with_data_dir("./hermes-data")
        .with_hotkey_file(hotkey_path)
        .with_subnets(mode, a.netuids.clone())
        .with_listen(listen)
        .with_bootstrap(a.bootstrap.clone());
    if let Some(chain) = chain {
        cfg = cfg.with_chain(ChainKind::Dev, chain);
    }
    created.will_create(config_path);
    std::fs::write(config_path, cfg.to_pretty_json() + "\n")
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let loaded = Config::load(config_path)?;
    // Create the transport key now so `hermes id` is instant and the peer id is fixed.
    created.will_create(&loaded.data_dir);
    let key = transport_key_of(&loaded, true)?;
    outln!("created {}", config_path.display());
    outln!("ss58:    {ss58}");
    outln!("peer_id: {}", key.public().to_peer_id());
    Ok(())
}
