//! The `hermes` command-line tool.
//!
//! Every failure prints one clear `error:` line (plus its causes) to stderr and exits 2;
//! `verify` exits 1 for any signature that does not check out, `send` has its own statuses.
//! Output meant for scripts (`--json`, `listen --json`) goes to stdout alone; banners, progress
//! and logs go to stderr. A reader that closes the pipe early (`hermes peers | head -1`) ends the
//! output quietly with exit 0, as `head` asked for no more.
//!
//! One file per group of subcommands: `identity` (init, id, sign, verify), `node` (run, peers,
//! stats), `data` (send, listen, stream), `transfer` (share, fetch, transfers), `outbox`,
//! `consensus`, `devchain`, `demo`.

use anyhow::{anyhow, bail, Result};
use clap::{Args, Parser, Subcommand};
use hermes::Config;
use std::path::PathBuf;
use std::process::ExitCode;

mod chain;
mod consensus;
mod data;
mod demo;
mod devchain;
mod identity;
mod node;
mod outbox;
mod transfer;

use consensus::ConsensusCmd;
use data::MessageBody;
use devchain::DevchainCmd;
use identity::Payload;

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
    ///
    /// Everything the config needs for a first network can be given here, so no JSON has to be
    /// edited by hand; on failure nothing is left behind.
    Init(identity::InitArgs),
    /// Print the node's SS58 address, public key, peer id and binding record.
    ///
    /// Works while the node runs (asks it through its control socket). If the data dir is held
    /// by a runtime without a control socket (an embedding application), the binding record is
    /// left out and the rest is read from the key files.
    Id {
        #[command(flatten)]
        config: ConfigArg,
        /// Print one JSON object instead of text.
        #[arg(long, conflicts_with = "field")]
        json: bool,
        /// Print only this value (for scripts: `N1=$(hermes id -c n1/hermes.json --field ss58)`).
        #[arg(long, value_enum)]
        field: Option<identity::IdField>,
    },
    /// Sign a message with the hotkey under the application domain (`hermes/app/v1`); prints the
    /// 0x-hex sr25519 signature.
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
        /// Check a plain substrate signature over the bytes as given (made by bittensor,
        /// polkadot.js or subkey) instead of a Hermes application signature.
        #[arg(long)]
        raw: bool,
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
        target: Target,
        #[command(flatten)]
        body: MessageBody,
        /// How long the message is kept and retried (default: messages.ttl).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
        /// How long to wait for the delivery confirmation.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        wait: std::time::Duration,
    },
    /// Run a node and print every message it receives; save incoming streams and shared files
    /// with --save-dir.
    Listen {
        #[command(flatten)]
        config: ConfigArg,
        /// Directory to save incoming streams in, under the sender's file name made safe (one
        /// plain name: no separators, `..`, leading dot or control characters), or <stream
        /// id>.bin when it sent none; an existing file is never replaced (name-1, name-2… are
        /// used instead). Each stream is confirmed to its sender only once its file is in place.
        /// Without it, streams are verified and discarded.
        ///
        /// Tickets that arrive as messages (`hermes share`) are fetched into the same directory
        /// the same way, each reported when it is complete and verified.
        #[arg(long)]
        save_dir: Option<PathBuf>,
        /// Print one JSON object per message or stream on stdout, nothing else (the banner goes
        /// to stderr). Both kinds carry `type`, `from`, `netuid`, `id` and `size` (bytes).
        #[arg(long)]
        json: bool,
    },
    /// Stream stdin (or --file) to a node, end-to-end encrypted, with a progress bar.
    ///
    /// Goes through the running node of this config if there is one, else starts the node for
    /// the stream. With --file the file's name goes along (sealed with the data). Exit status: 0
    /// once the recipient has confirmed the stream: its node received every byte intact and
    /// authentic and its application took the end of the stream (`hermes listen --save-dir`
    /// confirms only once the file is saved); 2 on any failure (unknown or unreachable recipient,
    /// stream refused or broken, input unreadable), with the reason on stderr. Nothing is queued:
    /// a failed stream is not retried.
    Stream {
        #[command(flatten)]
        target: Target,
        /// Read this file instead of stdin (its name is sent with the data).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Offer a file to a node through the Sync Engine; prints the ticket (one line) and sends it
    /// to the receiver as a message too.
    ///
    /// The file is sealed and hashed in one pass and served from where it is (nothing is
    /// copied) to the receiver only, until the ticket expires or the offer is revoked. Through a
    /// running node the command returns at once; otherwise it serves until Ctrl-C.
    Share(transfer::ShareArgs),
    /// Download what a ticket names: parallel, verified chunk by chunk, resumable (run it again
    /// after an interruption); the file appears at --out only once complete and verified.
    Fetch(transfer::FetchArgs),
    /// List Sync Engine transfers (offers and downloads); `transfers revoke ID` stops one.
    Transfers(transfer::TransfersArgs),
    /// List the messages waiting for delivery: id, recipient, subnet, size, age, expiry, and why
    /// the last attempt failed. `outbox cancel ID` drops one.
    Outbox(outbox::OutboxArgs),
    /// List the verified peers of a running node.
    Peers {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Firewall denial counters and message counters of a running node.
    Stats {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// This node's part in its subnets' epochs: election, proposal, attestation, outcome.
    Consensus {
        #[command(subcommand)]
        cmd: ConsensusCmd,
    },
    /// The configured chain as this node sees it.
    Chain {
        #[command(subcommand)]
        cmd: chain::ChainCmd,
    },
    /// The embedded development chain.
    Devchain {
        #[command(subcommand)]
        cmd: DevchainCmd,
    },
    /// Start a dev chain and three local nodes in two subnets: admission and a refusal, end-to-end
    /// encrypted messages, a 1 GiB stream and a 1 GiB Sync Engine transfer with their rates
    /// (HERMES_DEMO_MIB sets the size).
    Demo,
    /// Config file operations.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Validate the config file and print the effective config.
    #[command(group(clap::ArgGroup::new("file_arg").required(true).args(["file", "config"])))]
    Check {
        /// The config file (or give it as `-c/--config FILE`, like every other command).
        file: Option<PathBuf>,
        /// The config file.
        #[arg(long, short = 'c', value_name = "FILE", conflicts_with = "file")]
        config: Option<PathBuf>,
    },
}

/// Where `send` and `stream` go, and through which node: the flags the two share.
#[derive(Args, Debug)]
struct Target {
    #[command(flatten)]
    config: ConfigArg,
    /// Recipient's SS58 address.
    #[arg(long)]
    to: String,
    /// Subnet to send on (default: the node's subnet, when it serves exactly one).
    #[arg(long)]
    netuid: Option<u16>,
}

impl Target {
    /// The subnet given, or else the config's only one.
    fn netuid(&self) -> Result<u16> {
        netuid_for(&self.config.path, self.netuid)
    }
}

#[derive(Args, Debug)]
struct ConfigArg {
    /// The node's config file.
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    path: PathBuf,
}

pub(crate) fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); e.g. 30s, 5m, 1h"))
}

pub(crate) fn parse_hex(what: &str, s: &str) -> Result<Vec<u8>> {
    let body = s
        .strip_prefix("0x")
        .ok_or_else(|| anyhow!("{what}: expected 0x-prefixed hex, got `{s}`"))?;
    hex::decode(body).map_err(|e| anyhow!("{what}: invalid hex ({e})"))
}

/// Set once a write to stdout failed because the reader went away (`| head`).
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Woken when stdout closes, so that `listen` stops and shuts its node down cleanly.
pub(crate) static STDOUT_CLOSED_NOTIFY: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Writes one line to stdout. When the reader has closed the pipe, the line and every later one
/// is dropped instead of panicking (what `println!` does), and `listen` is told to stop. Returns
/// whether the line was written.
pub(crate) fn out_line(line: std::fmt::Arguments<'_>) -> bool {
    use std::io::Write as _;
    use std::sync::atomic::Ordering;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return false;
    }
    let mut out = std::io::stdout().lock();
    let r = out
        .write_fmt(line)
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush());
    if r.is_err() {
        // Any write error on stdout means nobody reads it any more; there is no one to tell.
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        STDOUT_CLOSED_NOTIFY.notify_one();
    }
    r.is_ok()
}

/// `println!` that survives a closed stdout (see [`out_line`]).
macro_rules! outln {
    ($($t:tt)*) => { { let _ = $crate::out_line(format_args!($($t)*)); } };
}
pub(crate) use outln;

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        // A `println!` into a pipe whose reader has gone (`| head`) panics in the standard
        // library; like other Unix tools, end quietly instead.
        let text = info.to_string();
        if text.contains("failed printing to std") && text.contains("Broken pipe") {
            std::process::exit(0);
        }
        // Never show a backtrace to a user: a bug still ends with one readable line.
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
        Cmd::Init(args) => identity::init(&args).map(|_| ExitCode::SUCCESS),
        Cmd::Id {
            config,
            json,
            field,
        } => identity::id(&config.path, json, field).map(|_| ExitCode::SUCCESS),
        Cmd::Sign { config, payload } => identity::sign(&config.path, &payload),
        Cmd::Verify {
            ss58,
            payload,
            signature,
            raw,
        } => Ok(identity::verify(&ss58, &payload, &signature, raw)),
        Cmd::Demo => demo::demo().map(|_| ExitCode::SUCCESS),
        Cmd::Run { config } => node::run_node(&config.path).map(|_| ExitCode::SUCCESS),
        Cmd::Peers { config, json } => node::peers(&config.path, json).map(|_| ExitCode::SUCCESS),
        Cmd::Send {
            target,
            body,
            ttl,
            wait,
        } => {
            let netuid = target.netuid()?;
            let config = &target.config.path;
            data::send(config, &target.to, netuid, &body.bytes()?, ttl, wait)
        }
        Cmd::Listen {
            config,
            save_dir,
            json,
        } => data::listen(&config.path, save_dir.as_deref(), json).map(|_| ExitCode::SUCCESS),
        Cmd::Stream { target, file } => {
            let netuid = target.netuid()?;
            data::stream(&target.config.path, &target.to, netuid, file.as_deref())
                .map(|_| ExitCode::SUCCESS)
        }
        Cmd::Outbox(args) => outbox::outbox(args).map(|_| ExitCode::SUCCESS),
        Cmd::Share(args) => transfer::share(&args).map(|_| ExitCode::SUCCESS),
        Cmd::Fetch(args) => transfer::fetch(&args).map(|_| ExitCode::SUCCESS),
        Cmd::Transfers(args) => transfer::transfers(args).map(|_| ExitCode::SUCCESS),
        Cmd::Stats { config, json } => node::stats(&config.path, json).map(|_| ExitCode::SUCCESS),
        Cmd::Consensus { cmd } => consensus::consensus(cmd).map(|_| ExitCode::SUCCESS),
        Cmd::Chain { cmd } => chain::chain(cmd).map(|_| ExitCode::SUCCESS),
        Cmd::Devchain { cmd } => devchain::devchain(cmd).map(|_| ExitCode::SUCCESS),
        Cmd::Config {
            cmd: ConfigCmd::Check { file, config },
        } => {
            let file = file
                .or(config)
                .ok_or_else(|| anyhow!("give the config file (`hermes config check -c FILE`)"))?;
            let cfg = Config::load(&file)?;
            outln!("{}", cfg.to_pretty_json());
            eprintln!("{}: ok", file.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The subnet of a send or stream: `--netuid` if given, else the node's own subnet when its
/// config names exactly one. Defaulting to anything else (subnet 0) would only get the message
/// refused as out of scope by the recipient.
pub(crate) fn netuid_for(config: &std::path::Path, given: Option<u16>) -> Result<u16> {
    if let Some(n) = given {
        return Ok(n);
    }
    let cfg = Config::load(config)?;
    match cfg.subnets.netuids.as_slice() {
        [only] => Ok(*only),
        [] => bail!(
            "--netuid is required: {} names no subnet, so there is no default",
            config.display()
        ),
        many => bail!(
            "--netuid is required: {} serves subnets {many:?}; say which one the recipient is in",
            config.display()
        ),
    }
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
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
