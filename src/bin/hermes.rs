//! The `hermes` command-line tool.
//!
//! Every failure prints one clear `error:` line (plus its causes) to stderr and exits non-zero;
//! `verify` exits 1 for any signature that does not check out.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use hermes::config::SubnetMode;
use hermes::proto::Hotkey;
use hermes::{Config, HotkeyPair, Runtime};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[path = "cli/data.rs"]
mod data;

#[derive(Parser, Debug)]
#[command(
    name = "hermes",
    version,
    about = "Direct, wallet-authenticated P2P for subnet nodes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create DIR/hermes.json, a hotkey (Bittensor format) and a transport key.
    Init {
        /// Directory to create the node in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Use this existing Bittensor hotkey file instead of generating one.
        #[arg(long)]
        hotkey_file: Option<PathBuf>,
        /// Port for the default TCP and QUIC listen addresses.
        #[arg(long, default_value_t = 4001)]
        port: u16,
        /// Subnets this node serves (repeat for several).
        #[arg(long = "netuid")]
        netuids: Vec<u16>,
    },
    /// Print the node's SS58 address, public key, peer id and binding record.
    Id {
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Sign a message with the hotkey; prints the 0x-hex sr25519 signature.
    Sign {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        payload: Payload,
    },
    /// Verify an sr25519 signature; exit 0 if valid, 1 if not.
    Verify {
        /// Signer's SS58 address.
        #[arg(long)]
        ss58: String,
        #[command(flatten)]
        payload: Payload,
        /// 0x-hex signature.
        #[arg(long)]
        signature: String,
    },
    /// Run a node until Ctrl-C (serves `hermes peers` through DATA_DIR/control.sock).
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Send an end-to-end encrypted message to a node by wallet address.
    ///
    /// Goes through the running node of this config if there is one, else starts the node for
    /// the send. Exit status: 0 delivered, 1 refused or expired, 3 still queued (kept in the
    /// outbox and retried while the node runs, until its TTL ends).
    Send {
        #[command(flatten)]
        config: ConfigArg,
        /// Recipient's SS58 address.
        #[arg(long)]
        to: String,
        /// Subnet of the message.
        #[arg(long, default_value_t = 0)]
        netuid: u16,
        #[command(flatten)]
        body: MessageBody,
        /// How long the message is kept and retried (default: messages.ttl).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
        /// How long to wait for the delivery confirmation.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        wait: std::time::Duration,
    },
    /// Run a node and print every message it receives; save incoming streams with --save-dir.
    Listen {
        #[command(flatten)]
        config: ConfigArg,
        /// Directory to save incoming streams in (as <stream id>.bin); without it, streams
        /// are verified and discarded.
        #[arg(long)]
        save_dir: Option<PathBuf>,
        /// Print one JSON object per message or stream.
        #[arg(long)]
        json: bool,
    },
    /// Stream stdin (or --file) to a node, end-to-end encrypted, with a progress bar.
    Stream {
        #[command(flatten)]
        config: ConfigArg,
        /// Recipient's SS58 address.
        #[arg(long)]
        to: String,
        /// Subnet of the stream.
        #[arg(long, default_value_t = 0)]
        netuid: u16,
        /// Read this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// List the verified peers of a running node.
    Peers {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Firewall denial counters and message counters of a running node, as JSON.
    Stats {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The embedded development chain.
    Devchain {
        #[command(subcommand)]
        cmd: DevchainCmd,
    },
    /// Start a dev chain and three local nodes in two subnets: admission and a refusal, end-to-end
    /// encrypted messages, and a 1 GiB stream with its rate (HERMES_DEMO_MIB sets the size).
    Demo,
    /// Config file operations.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
}

#[derive(Subcommand, Debug)]
enum DevchainCmd {
    /// Register (or update) a node; the chain's peer-id rule applies.
    Register {
        /// Dev chain directory.
        #[arg(long)]
        chain: PathBuf,
        /// Subnet.
        #[arg(long)]
        netuid: u16,
        /// The node's hotkey SS58 address.
        #[arg(long)]
        hotkey_ss58: String,
        /// The node's peer id.
        #[arg(long)]
        peer_id: String,
        /// Stake in the smallest unit.
        #[arg(long)]
        stake: u128,
        /// registered, idle, included or validator.
        #[arg(long, default_value = "registered")]
        class: String,
    },
    /// Print every registration as a JSON snapshot (usable as a `static` chain).
    List {
        /// Dev chain directory.
        #[arg(long)]
        chain: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Validate FILE and print the effective config.
    Check {
        /// The config file.
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
struct ConfigArg {
    /// The node's config file.
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    path: PathBuf,
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct MessageBody {
    /// The message as UTF-8 text.
    #[arg(long)]
    message: Option<String>,
    /// The message is this file's content (`-` for stdin).
    #[arg(long)]
    file: Option<PathBuf>,
    /// The message as 0x-prefixed hex bytes.
    #[arg(long)]
    hex: Option<String>,
}

impl MessageBody {
    fn bytes(&self) -> Result<Vec<u8>> {
        if let Some(m) = &self.message {
            return Ok(m.as_bytes().to_vec());
        }
        if let Some(h) = &self.hex {
            return parse_hex("--hex", h);
        }
        match &self.file {
            Some(p) if p.as_os_str() == "-" => {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                    .context("--file -: cannot read stdin")?;
                Ok(v)
            }
            Some(p) => {
                std::fs::read(p).with_context(|| format!("--file: cannot read {}", p.display()))
            }
            None => bail!("give one of --message, --file or --hex"),
        }
    }
}

fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); e.g. 30s, 5m, 1h"))
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct Payload {
    /// The message as UTF-8 text.
    #[arg(long)]
    message: Option<String>,
    /// The message as 0x-prefixed hex bytes.
    #[arg(long)]
    hex: Option<String>,
}

impl Payload {
    fn bytes(&self) -> Result<Vec<u8>> {
        match (&self.message, &self.hex) {
            (Some(m), None) => Ok(m.as_bytes().to_vec()),
            (None, Some(h)) => parse_hex("--hex", h),
            _ => bail!("give exactly one of --message or --hex"),
        }
    }
}

fn parse_hex(what: &str, s: &str) -> Result<Vec<u8>> {
    let body = s
        .strip_prefix("0x")
        .ok_or_else(|| anyhow!("{what}: expected 0x-prefixed hex, got `{s}`"))?;
    hex::decode(body).map_err(|e| anyhow!("{what}: invalid hex ({e})"))
}

fn main() -> ExitCode {
    // Never show a backtrace to a user: a bug still ends with one readable line.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error: {info}");
    }));
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Init {
            dir,
            hotkey_file,
            port,
            netuids,
        } => init(&dir, hotkey_file.as_deref(), port, netuids).map(|_| ExitCode::SUCCESS),
        Cmd::Id { config, json } => id(&config.path, json).map(|_| ExitCode::SUCCESS),
        Cmd::Sign { config, payload } => {
            let cfg = Config::load(&config.path)?;
            let (key, _) = HotkeyPair::resolve(cfg.identity.hotkey_file.as_deref())?;
            let sig = key.sign(&payload.bytes()?);
            println!("0x{}", hex::encode(sig));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Verify {
            ss58,
            payload,
            signature,
        } => Ok(verify(&ss58, &payload, &signature)),
        Cmd::Demo => demo().map(|_| ExitCode::SUCCESS),
        Cmd::Run { config } => run_node(&config.path).map(|_| ExitCode::SUCCESS),
        Cmd::Peers { config, json } => peers(&config.path, json).map(|_| ExitCode::SUCCESS),
        Cmd::Send {
            config,
            to,
            netuid,
            body,
            ttl,
            wait,
        } => data::send(&config.path, &to, netuid, &body.bytes()?, ttl, wait),
        Cmd::Listen {
            config,
            save_dir,
            json,
        } => data::listen(&config.path, save_dir.as_deref(), json).map(|_| ExitCode::SUCCESS),
        Cmd::Stream {
            config,
            to,
            netuid,
            file,
        } => data::stream(&config.path, &to, netuid, file.as_deref()).map(|_| ExitCode::SUCCESS),
        Cmd::Stats { config } => {
            let cfg = Config::load(&config.path)?;
            let path = hermes::control::socket_path(&cfg.data_dir);
            let v = block_on(hermes::control::request(&path, "stats"))?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Devchain { cmd } => devchain(cmd).map(|_| ExitCode::SUCCESS),
        Cmd::Config {
            cmd: ConfigCmd::Check { file },
        } => {
            let cfg = Config::load(&file)?;
            println!("{}", cfg.to_pretty_json());
            eprintln!("{}: ok", file.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify(ss58: &str, payload: &Payload, signature: &str) -> ExitCode {
    let check = || -> Result<bool> {
        let (key, _) = Hotkey::from_ss58(ss58).context("--ss58")?;
        let sig = parse_hex("--signature", signature)?;
        if sig.len() != 64 {
            bail!(
                "--signature: an sr25519 signature is 64 bytes, got {}",
                sig.len()
            );
        }
        Ok(key.verify(&payload.bytes()?, &sig))
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

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    // The runtime owns its threads; the CLI only needs to wait on a future.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match rt {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("error: cannot create an executor: {e}");
            std::process::exit(2)
        }
    }
}

fn id(config: &Path, json: bool) -> Result<()> {
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

fn init(dir: &Path, hotkey_file: Option<&Path>, port: u16, netuids: Vec<u16>) -> Result<()> {
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

fn demo() -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("hermes-demo-{}", std::process::id()));
    let result = demo_in(&tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Polls `f` every 20 ms until it yields `Some`, for at most `secs` seconds.
async fn within<T, F, Fut>(secs: u64, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    None
}

/// The next item of a demo channel (`recv` future), waiting at most 20 s; `what` names it in the
/// error.
async fn next_within<T>(
    recv: impl std::future::Future<Output = Option<T>>,
    what: &str,
) -> Result<T> {
    tokio::time::timeout(std::time::Duration::from_secs(20), recv)
        .await
        .map_err(|_| anyhow!("{what} did not arrive within 20 s"))?
        .ok_or_else(|| anyhow!("the channel for {what} closed"))
}

/// A demo node: its name, address, subnets and config.
struct DemoNode {
    name: &'static str,
    ss58: String,
    cfg: Config,
}

fn demo_nodes(tmp: &Path) -> Result<Vec<DemoNode>> {
    use hermes::config::ChainKind;
    use hermes::proto::chain::{NodeClass, NodeEntry};
    let chain_dir = tmp.join("devchain");
    let chain = hermes_actors::chain::DevChain::new(&chain_dir);
    let mut nodes = Vec::new();
    for (name, netuids) in [("alpha", vec![3]), ("beta", vec![3, 7]), ("gamma", vec![7])] {
        let dir = tmp.join(name);
        let (key, file) = HotkeyPair::generate();
        let hotkey = dir.join("hotkeys").join("default");
        file.write_new(&hotkey)?;
        let peer = hermes::transport_key(&dir.join("data").join("transport.key"))?
            .public()
            .to_peer_id();
        for n in &netuids {
            chain.register_sync(NodeEntry {
                netuid: *n,
                hotkey: key.public(),
                peer_id: peer.to_base58(),
                stake: 1_000,
                class: NodeClass::Registered,
            })?;
        }
        let mode = if netuids.len() == 1 {
            SubnetMode::Single
        } else {
            SubnetMode::Whitelist
        };
        let mut cfg = Config::default()
            .with_data_dir(dir.join("data"))
            .with_hotkey_file(&hotkey)
            .with_chain(ChainKind::Dev, &chain_dir)
            .with_subnets(mode, netuids)
            .with_listen(vec!["/ip4/127.0.0.1/tcp/0".parse()?])
            .with_log_level("warn");
        cfg.chain.poll_interval = hermes::config::HumanDuration(std::time::Duration::from_secs(5));
        cfg.validate()?;
        nodes.push(DemoNode {
            name,
            ss58: key.public().to_ss58(42),
            cfg,
        });
    }
    Ok(nodes)
}

fn demo_in(tmp: &Path) -> Result<()> {
    use futures::AsyncReadExt as _;
    use hermes::proto::firewall::DenyReason;
    let mib: u64 = std::env::var("HERMES_DEMO_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    println!("Hermes demo in {}", tmp.display());
    println!("A dev chain and three nodes on loopback, registered with stake:");
    println!("  alpha serves subnet 3, beta subnets 3 and 7, gamma subnet 7.\n");
    let nodes = demo_nodes(tmp)?;
    block_on(async {
        let mut rts = Vec::new();
        let mut boot = Vec::new();
        for n in &nodes {
            let t = std::time::Instant::now();
            let rt = Runtime::builder(n.cfg.clone().with_bootstrap(boot.clone()))
                .with_logging(std::env::var_os("RUST_LOG").is_some())
                .start()
                .await?;
            let addr = within(10, || async {
                rt.listen_addrs().await.ok()?.first().cloned()
            })
            .await
            .ok_or_else(|| anyhow!("{} did not start listening", n.name))?;
            println!(
                "  {:<5} up in {:>4.0} ms  {}  {addr}",
                n.name,
                t.elapsed().as_secs_f64() * 1e3,
                n.ss58
            );
            // gamma dials both alpha and beta.
            boot.push(addr);
            rts.push(rt);
        }
        let (alpha, beta, gamma) = (&rts[0], &rts[1], &rts[2]);
        let (a, b, g) = (&nodes[0].ss58, &nodes[1].ss58, &nodes[2].ss58);
        let knows = |rt: &hermes::RuntimeHandle, who: &str| {
            let (rt, who) = (rt.clone(), who.to_string());
            async move {
                rt.peers()
                    .await
                    .ok()?
                    .iter()
                    .any(|p| p.ss58 == who)
                    .then_some(())
            }
        };

        println!(
            "\nAdmission (firewall at connection time, then the wallet-signed binding exchange):"
        );
        within(20, || knows(alpha, b))
            .await
            .ok_or_else(|| anyhow!("alpha never admitted beta"))?;
        within(20, || knows(beta, g))
            .await
            .ok_or_else(|| anyhow!("beta never admitted gamma"))?;
        println!("  alpha <-> beta   admitted (both in subnet 3)");
        println!("  beta  <-> gamma  admitted (both in subnet 7)");
        let refused = within(20, || async {
            let n = alpha
                .firewall_stats()
                .await
                .ok()?
                .denied(DenyReason::OutOfScope);
            (n > 0).then_some(n)
        })
        .await
        .ok_or_else(|| anyhow!("alpha never refused gamma"))?;
        println!("  alpha refused gamma: reason `out_of_scope` (registered only in subnet 7), {refused} attempt(s), before any substream");

        println!("\nEnd-to-end encrypted messages (HPKE session to the recipient's prekey, a fresh AES-256-GCM key per message):");
        let mut inbox = beta.subscribe()?;
        let mut events = alpha.delivery_events()?;
        let t = std::time::Instant::now();
        let id = alpha
            .send(b, 3, b"epoch 12: weights ready".to_vec())
            .await?;
        let m = next_within(inbox.recv(), "alpha's message to beta").await?;
        println!(
            "  alpha -> beta  {:?} (id {id}) received in {:.1} ms",
            String::from_utf8_lossy(&m.bytes),
            t.elapsed().as_secs_f64() * 1e3
        );
        if data::delivered(&mut events, id, std::time::Duration::from_secs(20)).await {
            println!("  alpha got beta's acknowledgement: delivered exactly once");
        }
        gamma
            .send(b, 7, b"gamma reporting on subnet 7".to_vec())
            .await?;
        let m = next_within(inbox.recv(), "gamma's message to beta").await?;
        println!(
            "  gamma -> beta  {:?} from {}",
            String::from_utf8_lossy(&m.bytes),
            m.from
        );
        // RTT figure for orientation: a few ping-pongs through both applications.
        let mut back = alpha.subscribe()?;
        let mut samples = Vec::new();
        for _ in 0..200 {
            let t = std::time::Instant::now();
            alpha.send(b, 3, vec![0u8; 1024]).await?;
            let m = inbox.recv().await.ok_or_else(|| anyhow!("inbox closed"))?;
            beta.send(a, 3, m.bytes).await?;
            back.recv().await.ok_or_else(|| anyhow!("inbox closed"))?;
            samples.push(t.elapsed());
        }
        samples.sort();
        println!(
            "  1 KiB round trip alpha -> beta -> alpha, 200 samples: median {:.0} µs",
            samples[samples.len() / 2].as_secs_f64() * 1e6
        );

        println!("\nA {mib} MiB stream beta -> alpha (one HPKE session, then AES-256-GCM chunks; backpressure end to end):");
        let mut incoming = alpha.incoming_streams()?;
        let total = mib << 20;
        let sender = {
            let (beta, to) = (beta.clone(), a.clone());
            tokio::spawn(async move {
                let mut w = beta.open_stream(&to, 3).await?;
                let block = vec![0x5au8; 1 << 20];
                let mut sent = 0u64;
                while sent < total {
                    let k = (total - sent).min(block.len() as u64) as usize;
                    tokio::io::AsyncWriteExt::write_all(&mut w, &block[..k]).await?;
                    sent += k as u64;
                }
                Ok::<_, anyhow::Error>(w.finish().await?)
            })
        };
        let mut s = next_within(incoming.recv(), "beta's stream to alpha").await?;
        let t = std::time::Instant::now();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let k = s.reader.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            got += k as u64;
        }
        let report = sender.await??;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "  alpha verified {got} bytes in {secs:.2} s: {:.0} MiB/s; beta got the confirmation after {:.2} s",
            got as f64 / (1024.0 * 1024.0) / secs,
            report.elapsed.as_secs_f64()
        );

        println!("\nCounters:");
        let sa = alpha.message_stats().await?;
        let sb = beta.message_stats().await?;
        println!(
            "  beta:  {} messages received, {} duplicates suppressed, {} refused; alpha: {} stream bytes verified",
            sb.received,
            sb.duplicates,
            sb.rejected.iter().map(|(_, n)| n).sum::<u64>(),
            sa.stream_bytes.0
        );
        println!(
            "  alpha: {} connection(s) refused as out_of_scope",
            alpha.firewall_stats().await?.denied(DenyReason::OutOfScope)
        );

        println!("\nBinding records checked by hand:");
        let ia = alpha.identity().await?;
        let ib = beta.identity().await?;
        let stolen = alpha
            .verify_binding(ib.binding.encode(), ia.peer_id, None)
            .await;
        println!(
            "  beta's record replayed over alpha's connection -> {}",
            verdict(&stolen)
        );
        let mut forged = ib.binding.clone();
        forged.record.netuids = vec![3, 99];
        let forged = alpha
            .verify_binding(forged.encode(), ib.peer_id, None)
            .await;
        println!(
            "  beta's record with a subnet added               -> {}",
            verdict(&forged)
        );

        for rt in &rts {
            rt.shutdown().await?;
        }
        println!("\nall nodes shut down cleanly");
        Ok::<_, anyhow::Error>(())
    })
}

fn verdict<T>(r: &Result<T, hermes::Error>) -> String {
    match r {
        Ok(_) => "accepted".into(),
        Err(e) => format!("refused: {e}"),
    }
}

fn run_node(config: &Path) -> Result<()> {
    serve(config, |_| async {
        println!("running; Ctrl-C to stop");
        wait_for_signal().await;
        Ok(())
    })
}

/// Starts the node of `config`, prints who it is and where it listens, serves the control
/// socket, runs `body` to completion and shuts the node down cleanly.
fn serve<F, Fut>(config: &Path, body: F) -> Result<()>
where
    F: FnOnce(hermes::RuntimeHandle) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let cfg = Config::load(config)?;
    let data_dir = cfg.data_dir.clone();
    block_on(async {
        let rt = Runtime::builder(cfg).start().await?;
        let me = rt.identity().await?;
        println!("ss58:    {}", me.ss58);
        println!("peer_id: {}", me.peer_id);
        // Listen addresses appear as the transports bind; wait for the first.
        let addrs = within(2, || async {
            let a = rt.listen_addrs().await.ok()?;
            (!a.is_empty()).then_some(a)
        })
        .await
        .unwrap_or_default();
        for a in &addrs {
            println!("listen:  {a}/p2p/{}", me.peer_id);
        }
        let sock = hermes::control::socket_path(&data_dir);
        let server = tokio::spawn(hermes::control::serve(rt.clone(), sock.clone()));
        println!(
            "control: {} (try `hermes peers --config ...`)",
            sock.display()
        );
        let result = body(rt.clone()).await;
        eprintln!("shutting down");
        server.abort();
        let _ = std::fs::remove_file(&sock);
        rt.shutdown().await?;
        result
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn peers(config: &Path, json: bool) -> Result<()> {
    let cfg = Config::load(config)?;
    let path = hermes::control::socket_path(&cfg.data_dir);
    let v = block_on(hermes::control::request(&path, "peers"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let peers = v["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        println!("no verified peers");
    }
    for p in peers {
        println!(
            "{}  {}  netuids {}  {}",
            p["ss58"].as_str().unwrap_or("?"),
            p["peer_id"].as_str().unwrap_or("?"),
            p["netuids"],
            p["addresses"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn devchain(cmd: DevchainCmd) -> Result<()> {
    use hermes_actors::chain::{DevChain, NodeJson, SnapshotJson};
    match cmd {
        DevchainCmd::Register {
            chain,
            netuid,
            hotkey_ss58,
            peer_id,
            stake,
            class,
        } => {
            let node = NodeJson {
                netuid,
                hotkey: hotkey_ss58,
                peer_id,
                stake,
                class,
            };
            // Name the flag the bad value came from.
            let entry = node.to_entry().map_err(|e| match e.split_once(": ") {
                Some(("hotkey", rest)) => anyhow!("--hotkey-ss58: {rest}"),
                Some(("peer_id", rest)) => anyhow!("--peer-id: {rest}"),
                Some((field, rest)) => anyhow!("--{field}: {rest}"),
                None => anyhow!(e),
            })?;
            DevChain::new(&chain).register_sync(entry)?;
            println!(
                "registered {} with peer id {} in subnet {} (stake {})",
                node.hotkey, node.peer_id, node.netuid, node.stake
            );
        }
        DevchainCmd::List { chain } => {
            let reg = DevChain::new(&chain).load()?;
            let snap = SnapshotJson {
                nodes: reg
                    .entries()
                    .iter()
                    .map(|e| NodeJson::from_entry(e, 42))
                    .collect(),
            };
            println!("{}", serde_json::to_string_pretty(&snap)?);
        }
    }
    Ok(())
}
