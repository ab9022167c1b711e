//! `hermes chain check`: what the node sees on its chain (block, subnet sizes, its own
//! registration, stake, class) and how it follows new blocks (subscription or polling, with the
//! subscription tried once), the first thing to run against a real chain.

use crate::identity::transport_key_of;
use crate::{block_on, outln};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use futures::StreamExt;
use hermes::{Config, HotkeyPair};
use hermes_actors::chain::rpc::{RpcChain, RpcKind, SubnetConsensus};
use hermes_actors::chain::{Chain, ChainError};
use hermes_proto::chain::Registry;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the check waits for the subscription's first head (a Substrate node sends the
/// current finalized head as soon as the subscription is made).
const FIRST_HEAD_WAIT: Duration = Duration::from_secs(10);

/// `hermes chain …`.
#[derive(Subcommand, Debug)]
pub(crate) enum ChainCmd {
    /// Read the configured chain once and print the block, each subnet's size, this node's
    /// registration, stake and class, and how new blocks are followed (a `ws://` or `wss://`
    /// URL's subscription is tried once).
    Check {
        /// The node's config file.
        #[arg(long = "config", short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
}

pub(crate) fn chain(cmd: ChainCmd) -> Result<()> {
    match cmd {
        ChainCmd::Check { config } => check(&config),
    }
}

fn check(config: &Path) -> Result<()> {
    let cfg = Config::load(config)?;
    let (hotkey, _) = HotkeyPair::resolve(cfg.identity.hotkey_file.as_deref())?;
    let hotkey = hotkey.public();
    let peer_id = transport_key_of(&cfg, false)?
        .public()
        .to_peer_id()
        .to_base58();
    let (registry, block, heads, consensus) = block_on(async {
        if let Some(kind) = cfg.chain.kind.rpc() {
            let chain = RpcChain::new(&cfg.chain.url, kind, cfg.subnets.netuids.clone())?;
            let snap = chain.snapshot().await?;
            let mut consensus = Vec::new();
            if kind == RpcKind::Hypertensor {
                for n in &cfg.subnets.netuids {
                    consensus.push((*n, chain.subnet_consensus(*n).await));
                }
            }
            Ok::<_, ChainError>((
                snap.registry,
                Some((snap.block, snap.block_hash)),
                chain.follow_heads(),
                consensus,
            ))
        } else {
            let backend: Arc<dyn Chain> = match cfg.chain.kind {
                hermes::config::ChainKind::Static => {
                    Arc::new(hermes_actors::chain::StaticChain::new(&cfg.chain.path))
                }
                _ => Arc::new(hermes_actors::chain::DevChain::new(&cfg.chain.path)),
            };
            Ok((backend.registry().await?, None, None, Vec::new()))
        }
    })
    .with_context(|| format!("reading the chain ({:?})", cfg.chain.kind))?;
    match block {
        Some((n, hash)) => outln!("block: {n} (finalized, 0x{})", hex::encode(hash)),
        None => outln!("block: - (a local chain)"),
    }
    report(&cfg, &registry, &hotkey, &peer_id);
    report_consensus(&consensus, &peer_id);
    let poll = humantime::format_duration(cfg.chain.poll_interval.0);
    let subscription = report_heads(heads, block.is_some(), &poll);
    let registered = registry
        .by_hotkey(&hotkey)
        .chain(registry.by_peer(&peer_id))
        .any(|e| cfg.subnets.netuids.contains(&e.netuid));
    match (subscription, registered) {
        (None, true) => Ok(()),
        (None, false) => bail!("this node is not registered in any of its subnets"),
        (Some(e), registered) => bail!(
            "the subscription to new heads at {} does not work ({e}): the node would read new \
             blocks only every {poll} (chain.poll_interval); check that the endpoint accepts \
             WebSocket connections (a proxy in front of it may not){}",
            cfg.chain.url,
            if registered {
                ""
            } else {
                "; and this node is not registered in any of its subnets"
            }
        ),
    }
}

/// How new blocks are followed; with a subscription, tries it once. The error when it does not
/// work.
fn report_heads(
    heads: Option<futures::stream::BoxStream<'static, Result<u64, ChainError>>>,
    rpc: bool,
    poll: &humantime::FormattedDuration,
) -> Option<String> {
    let Some(heads) = heads else {
        if rpc {
            outln!(
                "new blocks: polling every {poll} (chain.url is not ws:// or wss://: no \
                 subscription)"
            );
        } else {
            outln!("new blocks: polling every {poll} (a local chain)");
        }
        return None;
    };
    outln!("new blocks: subscription (ws), polling every {poll} as the fallback");
    match block_on(first_head(heads)) {
        Ok((n, took)) => {
            outln!(
                "  subscription: works (first finalized head: block {n}, after {} ms)",
                took.as_millis()
            );
            None
        }
        Err(e) => {
            outln!("  subscription: does not work: {e}");
            Some(e)
        }
    }
}

/// Hypertensor: each subnet's epoch and elected validator, as the chain records them.
fn report_consensus(consensus: &[(u16, Result<SubnetConsensus, ChainError>)], peer_id: &str) {
    let mut epoch_shown = false;
    for (netuid, c) in consensus {
        let c = match c {
            Ok(c) => c,
            Err(e) => {
                outln!("subnet {netuid} consensus: unreadable: {e}");
                continue;
            }
        };
        if !epoch_shown {
            outln!("epoch: {} ({} blocks per epoch)", c.epoch, c.epoch_length);
            epoch_shown = true;
        }
        let (Some(slot), Some(epoch)) = (c.slot, c.subnet_epoch) else {
            outln!(
                "subnet {netuid} consensus: no epoch yet (the subnet has no slot, or its slot is still ahead)"
            );
            continue;
        };
        let elected = match (c.elected, &c.elected_node) {
            (None, _) => "none yet".to_string(),
            (Some(id), None) => format!("node {id} (no longer listed)"),
            (Some(id), Some(n)) => format!(
                "node {id}, peer id {}{}",
                n.peer_id,
                if n.peer_id == peer_id {
                    " (this node)"
                } else {
                    ""
                }
            ),
        };
        outln!(
            "subnet {netuid} consensus: subnet epoch {epoch} (slot {slot}), elected validator {elected}, proposal submitted: {}",
            if c.submitted { "yes" } else { "no" }
        );
    }
}

/// The first head of a subscription and how long it took, within [`FIRST_HEAD_WAIT`].
async fn first_head(
    mut heads: futures::stream::BoxStream<'static, Result<u64, ChainError>>,
) -> Result<(u64, Duration), String> {
    let start = Instant::now();
    match tokio::time::timeout(FIRST_HEAD_WAIT, heads.next()).await {
        Ok(Some(Ok(n))) => Ok((n, start.elapsed())),
        Ok(Some(Err(e))) => Err(e.to_string()),
        Ok(None) => Err("the subscription ended without a head".into()),
        Err(_) => Err(format!(
            "no head within {}",
            humantime::format_duration(FIRST_HEAD_WAIT)
        )),
    }
}

fn report(cfg: &Config, registry: &Registry, hotkey: &hermes_proto::Hotkey, peer_id: &str) {
    outln!(
        "me: {} / {peer_id}",
        hotkey.to_ss58(cfg.identity.ss58_prefix)
    );
    for netuid in &cfg.subnets.netuids {
        let size = registry
            .entries()
            .iter()
            .filter(|e| e.netuid == *netuid)
            .count();
        outln!("subnet {netuid}: {size} node(s)");
        // On Subtensor the chain knows our hotkey; on Hypertensor our peer id.
        let mine = registry
            .by_hotkey(hotkey)
            .chain(registry.by_peer(peer_id))
            .find(|e| e.netuid == *netuid);
        match mine {
            Some(e) => outln!(
                "  registered: yes, stake {}, class {}{}",
                e.stake,
                e.class.as_str(),
                if e.peer_id.is_empty() {
                    " (the chain lists no peer id)".to_string()
                } else {
                    format!(", peer id {}", e.peer_id)
                }
            ),
            None => outln!("  registered: no"),
        }
    }
}
