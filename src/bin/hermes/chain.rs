//! `hermes chain check`: what the node sees on its chain (block, subnet sizes, its own
//! registration, stake, class), the first thing to run against a real chain.

use crate::identity::transport_key_of;
use crate::{block_on, outln};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use hermes::{Config, HotkeyPair};
use hermes_actors::chain::rpc::RpcChain;
use hermes_actors::chain::Chain;
use hermes_proto::chain::Registry;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `hermes chain …`.
#[derive(Subcommand, Debug)]
pub(crate) enum ChainCmd {
    /// Read the configured chain once and print the block, each subnet's size and this node's
    /// registration, stake and class.
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
    let (registry, block) = block_on(async {
        if let Some(kind) = cfg.chain.kind.rpc() {
            let chain = RpcChain::new(&cfg.chain.url, kind, cfg.subnets.netuids.clone())?;
            let snap = chain.snapshot().await?;
            Ok::<_, hermes_actors::chain::ChainError>((
                snap.registry,
                Some((snap.block, snap.block_hash)),
            ))
        } else {
            let backend: Arc<dyn Chain> = match cfg.chain.kind {
                hermes::config::ChainKind::Static => {
                    Arc::new(hermes_actors::chain::StaticChain::new(&cfg.chain.path))
                }
                _ => Arc::new(hermes_actors::chain::DevChain::new(&cfg.chain.path)),
            };
            Ok((backend.registry().await?, None))
        }
    })
    .with_context(|| format!("reading the chain ({:?})", cfg.chain.kind))?;
    match block {
        Some((n, hash)) => outln!("block: {n} (finalized, 0x{})", hex::encode(hash)),
        None => outln!("block: - (a local chain)"),
    }
    report(&cfg, &registry, &hotkey, &peer_id);
    if !registry
        .by_hotkey(&hotkey)
        .chain(registry.by_peer(&peer_id))
        .any(|e| cfg.subnets.netuids.contains(&e.netuid))
    {
        bail!("this node is not registered in any of its subnets");
    }
    Ok(())
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
