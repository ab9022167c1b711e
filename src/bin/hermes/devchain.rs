//! `hermes devchain`: the embedded development chain.

use anyhow::{anyhow, Result};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub(crate) enum DevchainCmd {
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

pub(crate) fn devchain(cmd: DevchainCmd) -> Result<()> {
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
