//! The `hermes` command-line tool.
//!
//! Every failure prints one clear `error:` line (plus its causes) to stderr and exits non-zero;
//! `verify` exits 1 for any signature that does not check out.
//!
//! One file per group of subcommands: `identity` (init, id, sign, verify), `node` (run, peers,
//! stats), `data` (send, listen, stream), `outbox`, `devchain`, `demo`.

use anyhow::{anyhow, Result};
use clap::{Args, Parser, Subcommand};
use hermes::Config;
use std::path::PathBuf;
use std::process::ExitCode;

mod data;
mod demo;
mod devchain;
mod identity;
mod node;
mod outbox;

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
        /// Directory to save incoming streams in, under the sender's file name made safe (one
        /// plain name: no separators, `..`, leading dot or control characters), or <stream
        /// id>.bin when it sent none; an existing file is never replaced (name-1, name-2… are
        /// used instead). Each stream is confirmed to its sender only once its file is in place.
        /// Without it, streams are verified and discarded.
        #[arg(long)]
        save_dir: Option<PathBuf>,
        /// Print one JSON object per message or stream.
        #[arg(long)]
        json: bool,
    },
    /// Stream stdin (or --file) to a node, end-to-end encrypted, with a progress bar.
    ///
    /// With --file the file's name goes along (sealed with the data). "Confirmed" means the
    /// recipient's node received every byte intact and authentic and its application took the
    /// end of the stream; `hermes listen --save-dir` confirms only once the file is saved.
    Stream {
        #[command(flatten)]
        config: ConfigArg,
        /// Recipient's SS58 address.
        #[arg(long)]
        to: String,
        /// Subnet of the stream.
        #[arg(long, default_value_t = 0)]
        netuid: u16,
        /// Read this file instead of stdin (its name is sent with the data).
        #[arg(long)]
        file: Option<PathBuf>,
    },
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
        } => identity::init(&dir, hotkey_file.as_deref(), port, netuids).map(|_| ExitCode::SUCCESS),
        Cmd::Id { config, json } => identity::id(&config.path, json).map(|_| ExitCode::SUCCESS),
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
        Cmd::Outbox(args) => outbox::outbox(args).map(|_| ExitCode::SUCCESS),
        Cmd::Stats { config } => node::stats(&config.path).map(|_| ExitCode::SUCCESS),
        Cmd::Devchain { cmd } => devchain::devchain(cmd).map(|_| ExitCode::SUCCESS),
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
