//! `hermes outbox` and `hermes outbox cancel ID`: the messages this node still has to deliver.
//!
//! Both go through the node running on the config's data dir (its control socket) when there is
//! one, and otherwise start the node for the duration of the command (it then also retries the
//! messages while it runs, as any run of the node does). The reason of the last failed attempt
//! lives in the running node's memory only: a node started just for the listing has made no
//! attempt yet, so it lists no reason.

use crate::data::on_node;
use crate::{block_on, outln};
use anyhow::Result;
use clap::{Args, Subcommand};
use hermes::{control, Config};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub(crate) struct OutboxArgs {
    #[command(subcommand)]
    cmd: Option<OutboxCmd>,
    /// The node's config file.
    #[arg(long = "config", short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum OutboxCmd {
    /// Drop a queued message: it is not sent, or retried, any more. A message being written to
    /// its recipient at this very moment may already have arrived and cannot be called back.
    Cancel {
        /// The message id (32 hex digits, as `send` and `outbox` print it).
        id: String,
    },
}

pub(crate) fn outbox(args: OutboxArgs) -> Result<()> {
    let Some(config) = args.config else {
        anyhow::bail!("--config FILE is required (the node whose outbox to read)");
    };
    let cfg = Config::load(&config)?;
    match args.cmd {
        None => {
            let v = block_on(on_node(
                cfg,
                |sock| async move { control::request(&sock, "outbox").await },
                |rt| async move {
                    let list = rt.outbox().await?;
                    Ok(serde_json::json!({
                        "outbox": list.iter().map(control::outbox_entry_json).collect::<Vec<_>>()
                    }))
                },
            ))?;
            print_list(&v, args.json)
        }
        Some(OutboxCmd::Cancel { id }) => {
            let id = control::parse_id(&id)?;
            let v = block_on(on_node(
                cfg,
                |sock| async move { control::cancel(&sock, id).await },
                |rt| async move { Ok(control::outbox_entry_json(&rt.cancel(id).await?)) },
            ))?;
            if args.json {
                outln!("{v}");
            } else {
                outln!(
                    "cancelled {} (to {}, {} bytes): it will not be sent",
                    v["id"].as_str().unwrap_or("?"),
                    v["to"].as_str().unwrap_or("?"),
                    v["size"]
                );
            }
            Ok(())
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn ago(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn print_list(v: &serde_json::Value, json: bool) -> Result<()> {
    if json {
        outln!("{v}");
        return Ok(());
    }
    let list = v["outbox"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        outln!("the outbox is empty");
        return Ok(());
    }
    let now = unix_now();
    for e in list {
        let created = e["created_at"].as_u64().unwrap_or(now);
        let expires = e["expires_at"].as_u64().unwrap_or(now);
        outln!(
            "{}  to {}  netuid {}  {} bytes  queued {} ago, expires in {}",
            e["id"].as_str().unwrap_or("?"),
            e["to"].as_str().unwrap_or("?"),
            e["netuid"],
            e["size"],
            ago(now.saturating_sub(created)),
            ago(expires.saturating_sub(now)),
        );
        if let Some(r) = e["last_error"].as_str() {
            outln!("    last attempt: {r}");
        }
    }
    Ok(())
}
