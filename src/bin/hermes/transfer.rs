//! `hermes share`, `hermes fetch` and `hermes transfers`: the Sync Engine from the command line.
//!
//! Each goes through the node running on the config's data dir (its control socket) when there
//! is one. Otherwise `share` starts the node and serves the offer until Ctrl-C, `fetch` starts
//! it for the download, and `transfers` for the listing.

use crate::data::{on_node, one_off};
use crate::{block_on, outln};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use hermes::sync::{OfferOptions, TransferId};
use hermes::{control, Config};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args, Debug)]
pub(crate) struct ShareArgs {
    /// The node's config file.
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Receiver's SS58 address.
    #[arg(long)]
    to: String,
    /// Subnet (default: the node's subnet, when it serves exactly one).
    #[arg(long)]
    netuid: Option<u16>,
    /// Where the chunks are stored: `embedded` (served by this node from the file itself) or
    /// `s3` (uploaded to sync.s3). Default: sync.backend.
    #[arg(long)]
    via: Option<String>,
    /// How long the ticket is valid (default: sync.ticket_ttl), e.g. 2h.
    #[arg(long, value_parser = crate::parse_duration)]
    ttl: Option<Duration>,
    /// Print the ticket only; do not also send it to the receiver as a message.
    #[arg(long)]
    no_delivery: bool,
    /// The file to offer.
    file: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct FetchArgs {
    /// The node's config file.
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// The ticket (`hermes-ticket1:…`), `-` to read it from stdin, or `@FILE` to read it from a
    /// file.
    ticket: String,
    /// Where to save the file: a new file, or an existing directory (the sender's file name,
    /// made safe, is used inside it).
    #[arg(long, short = 'o')]
    out: PathBuf,
}

#[derive(Args, Debug)]
pub(crate) struct TransfersArgs {
    #[command(subcommand)]
    cmd: Option<TransfersCmd>,
    /// The node's config file.
    #[arg(long = "config", short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum TransfersCmd {
    /// Revoke an offer (its chunks are refused from now on) or cancel a download (its partial
    /// file is kept; fetching the ticket again resumes it).
    Revoke {
        /// The transfer id (32 hex digits, as `share` and `transfers` print it).
        id: String,
    },
}

fn read_ticket(arg: &str) -> Result<String> {
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("reading the ticket from stdin")?;
        s
    } else if let Some(file) = arg.strip_prefix('@') {
        std::fs::read_to_string(file).with_context(|| format!("reading the ticket from {file}"))?
    } else {
        arg.to_string()
    };
    // Parsed here for a clear error before any node is started.
    let t = hermes::sync::Ticket::parse(&text).map_err(|e| anyhow!("{e}"))?;
    Ok(t.to_string())
}

/// `--out`: a directory gets the sender's file name (sanitized), else the transfer id.
fn destination(out: &Path, ticket: &str) -> Result<PathBuf> {
    if !out.is_dir() {
        return Ok(out.to_path_buf());
    }
    let t = hermes::sync::Ticket::parse(ticket).map_err(|e| anyhow!("{e}"))?;
    let name = t
        .body
        .file_name
        .as_deref()
        .and_then(|n| hermes::proto::filename::sanitize(n.as_bytes()))
        .unwrap_or_else(|| format!("{}.bin", t.body.transfer_id));
    Ok(out.join(name))
}

/// Progress of a download on stderr: a bar on a terminal, otherwise a plain line every few
/// seconds (for logs and CI), never on stdout.
struct Reporter {
    bar: Option<ProgressBar>,
    last_line: std::time::Instant,
}

/// How often the plain progress line is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl Reporter {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let pb = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            ) {
                pb.set_style(style);
            }
            pb
        });
        Reporter {
            bar,
            last_line: std::time::Instant::now(),
        }
    }

    fn update(&mut self, done: u64, size: u64, rate: f64) {
        match &self.bar {
            Some(pb) => {
                pb.set_length(size);
                pb.set_position(done);
            }
            None if self.last_line.elapsed() >= PLAIN_EVERY => {
                self.last_line = std::time::Instant::now();
                eprintln!(
                    "fetched {done} of {size} bytes ({:.1} MiB/s)",
                    rate / (1024.0 * 1024.0)
                );
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
    }
}

pub(crate) fn share(args: &ShareArgs) -> Result<()> {
    let netuid = crate::netuid_for(&args.config, args.netuid)?;
    hermes::proto::Hotkey::from_ss58(&args.to).map_err(|e| anyhow!("--to: {e}"))?;
    let file = std::fs::canonicalize(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let cfg = Config::load(&args.config)?;
    let sock = control::socket_path(&cfg.data_dir);
    block_on(async {
        if control::is_running(&sock).await {
            let v = control::share(
                &sock,
                &file,
                &args.to,
                netuid,
                args.via.as_deref(),
                args.ttl,
            )
            .await?;
            outln!("{}", v["ticket"].as_str().unwrap_or_default());
            eprintln!(
                "offered {} ({} bytes) as transfer {}; the running node serves it until the ticket expires",
                file.display(),
                v["size"],
                v["id"].as_str().unwrap_or("?")
            );
            return Ok::<_, anyhow::Error>(());
        }
        let rt = one_off(cfg).await?;
        let opts = OfferOptions {
            via: control::parse_backend_arg(args.via.as_deref())?,
            ttl: args.ttl,
            no_delivery: args.no_delivery,
            ..OfferOptions::default()
        };
        let t = match rt.offer(&file, &args.to, netuid, opts).await {
            Ok(t) => t,
            Err(e) => {
                rt.shutdown().await?;
                return Err(e.into());
            }
        };
        outln!("{t}");
        eprintln!(
            "offered {} ({} bytes) as transfer {}; serving it until Ctrl-C (or run `hermes run` and share through it)",
            file.display(),
            t.body.layout.size(),
            t.body.transfer_id
        );
        let _ = tokio::signal::ctrl_c().await;
        rt.shutdown().await?;
        Ok(())
    })
}

pub(crate) fn fetch(args: &FetchArgs) -> Result<()> {
    let ticket = read_ticket(&args.ticket)?;
    let dest = destination(&args.out, &ticket)?;
    if dest.exists() {
        bail!(
            "{} exists already; choose another --out or remove it",
            dest.display()
        );
    }
    let cfg = Config::load(&args.config)?;
    let sock = control::socket_path(&cfg.data_dir);
    let started = std::time::Instant::now();
    let size = block_on(async {
        let mut pb = Reporter::new();
        if control::is_running(&sock).await {
            let v = control::fetch(&sock, &ticket, &dest, |done, size, rate| {
                pb.update(done, size, rate);
            })
            .await?;
            pb.finish();
            return Ok::<_, anyhow::Error>(v["size"].as_u64().unwrap_or(0));
        }
        let rt = one_off(cfg).await?;
        let r = async {
            let t = rt.fetch(&ticket, &dest).await?;
            let mut progress = t.progress.clone();
            let wait = t.wait();
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    r = &mut wait => break r.map_err(|e| anyhow!("{e}")),
                    c = progress.changed() => {
                        if c.is_err() { continue; }
                        let p = *progress.borrow_and_update();
                        pb.update(p.done_bytes, p.total_bytes, p.rate);
                    }
                }
            }?;
            pb.finish();
            let done = t.progress.borrow().total_bytes;
            Ok::<_, anyhow::Error>(done)
        }
        .await;
        rt.shutdown().await?;
        r
    })?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "saved {} ({size} bytes, {:.1} MiB/s), verified",
        dest.display(),
        size as f64 / (1024.0 * 1024.0) / secs
    );
    outln!("{}", dest.display());
    Ok(())
}

pub(crate) fn transfers(args: TransfersArgs) -> Result<()> {
    let Some(config) = args.config else {
        bail!("--config FILE is required (the node whose transfers to list)");
    };
    let cfg = Config::load(&config)?;
    match args.cmd {
        None => {
            let v = block_on(on_node(
                cfg,
                |sock| async move { control::request(&sock, "transfers").await },
                |rt| async move {
                    let prefix = rt.ss58_prefix();
                    let list = rt.transfers().await?;
                    Ok(serde_json::json!({
                        "transfers": list.iter().map(|t| control::transfer_json(t, prefix)).collect::<Vec<_>>()
                    }))
                },
            ))?;
            print_list(&v, args.json);
            Ok(())
        }
        Some(TransfersCmd::Revoke { id }) => {
            let id = TransferId::from_hex(&id).map_err(|e| anyhow!("{e}"))?;
            let v = block_on(on_node(
                cfg,
                |sock| async move { control::revoke(&sock, id).await },
                |rt| async move {
                    let prefix = rt.ss58_prefix();
                    Ok(control::transfer_json(&rt.revoke(id).await?, prefix))
                },
            ))?;
            if args.json {
                outln!("{v}");
            } else {
                outln!(
                    "{} {}: {}",
                    v["direction"].as_str().unwrap_or("?"),
                    v["id"].as_str().unwrap_or("?"),
                    v["state"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
    }
}

fn print_list(v: &serde_json::Value, json: bool) {
    if json {
        outln!("{v}");
        return;
    }
    let list = v["transfers"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        outln!("no transfers");
        return;
    }
    for t in list {
        let size = t["size"].as_u64().unwrap_or(0);
        let done = t["done"].as_u64().unwrap_or(0);
        outln!(
            "{} {:<8} {:<10} {} bytes, {} done, peer {}, {}",
            t["id"].as_str().unwrap_or("?"),
            t["direction"].as_str().unwrap_or("?"),
            t["state"].as_str().unwrap_or("?"),
            size,
            done,
            t["peer"].as_str().unwrap_or("?"),
            t["path"].as_str().unwrap_or("?"),
        );
    }
}
