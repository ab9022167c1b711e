//! `hermes devchain`: the embedded development chain.

use crate::outln;
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use hermes::config::ChainKind;
use hermes::{Config, HotkeyPair};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub(crate) enum DevchainCmd {
    /// Register (or update) a node; the chain's peer-id rule applies.
    ///
    /// `--config FILE` takes the node's SS58 address, peer id, dev chain and subnet from its
    /// config and key files (the node may be running); explicit flags override them. Without
    /// it, give --chain, --netuid, --hotkey-ss58 and --peer-id.
    Register {
        /// The node's config file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// Dev chain directory (default with --config: its `chain.path`).
        #[arg(long, required_unless_present = "config")]
        chain: Option<PathBuf>,
        /// Subnet (default with --config: the node's subnet, when it serves exactly one).
        #[arg(long, required_unless_present = "config")]
        netuid: Option<u16>,
        /// The node's hotkey SS58 address.
        #[arg(long, required_unless_present = "config")]
        hotkey_ss58: Option<String>,
        /// The node's peer id.
        #[arg(long, required_unless_present = "config")]
        peer_id: Option<String>,
        /// Stake in the smallest unit.
        #[arg(long)]
        stake: u128,
        /// registered, idle, included or validator.
        #[arg(long, default_value = "registered")]
        class: String,
    },
    /// Print every registration as a JSON snapshot (usable as a `static` chain).
    ///
    /// Fails when PATH holds no dev chain: an empty list there would look like a valid, empty
    /// registry while the path is most likely mistyped.
    List {
        /// Dev chain directory.
        #[arg(long)]
        chain: PathBuf,
    },
}

/// What `register --config` reads from a node's files.
struct NodeFacts {
    chain: Option<PathBuf>,
    netuid: Option<u16>,
    ss58: String,
    peer_id: String,
}

fn node_facts(config: &Path) -> Result<NodeFacts> {
    let cfg = Config::load(config)?;
    // The identity the node itself would use (HERMES_HOTKEY_URI included), read from the key
    // files without the data dir's lock, so this works while the node runs.
    let (hotkey, _) = HotkeyPair::resolve(cfg.identity.hotkey_file.as_deref())?;
    let key = crate::identity::transport_key_of(&cfg, true)?;
    Ok(NodeFacts {
        chain: (cfg.chain.kind == ChainKind::Dev).then(|| cfg.chain.path.clone()),
        netuid: match cfg.subnets.netuids.as_slice() {
            [only] => Some(*only),
            _ => None,
        },
        ss58: hotkey.public().to_ss58(42),
        peer_id: key.public().to_peer_id().to_base58(),
    })
}

pub(crate) fn devchain(cmd: DevchainCmd) -> Result<()> {
    use hermes_actors::chain::{DevChain, NodeJson, SnapshotJson};
    match cmd {
        DevchainCmd::Register {
            config,
            chain,
            netuid,
            hotkey_ss58,
            peer_id,
            stake,
            class,
        } => {
            let facts = config.as_deref().map(node_facts).transpose()?;
            let from_config = |what: &str, hint: &str| {
                anyhow!(match &config {
                    Some(c) => format!("{what}: {} {hint}; give {what}", c.display()),
                    None => format!("{what} is required (or give --config FILE)"),
                })
            };
            let chain = chain
                .or_else(|| facts.as_ref().and_then(|f| f.chain.clone()))
                .ok_or_else(|| from_config("--chain", "uses a static chain, not a dev chain"))?;
            let netuid = netuid
                .or_else(|| facts.as_ref().and_then(|f| f.netuid))
                .ok_or_else(|| from_config("--netuid", "does not name exactly one subnet"))?;
            let hotkey_ss58 = hotkey_ss58
                .or_else(|| facts.as_ref().map(|f| f.ss58.clone()))
                .ok_or_else(|| from_config("--hotkey-ss58", "has no hotkey"))?;
            let peer_id = peer_id
                .or_else(|| facts.as_ref().map(|f| f.peer_id.clone()))
                .ok_or_else(|| from_config("--peer-id", "has no transport key"))?;
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
            outln!(
                "registered {} with peer id {} in subnet {} (stake {}) on {}",
                node.hotkey,
                node.peer_id,
                node.netuid,
                node.stake,
                chain.display()
            );
        }
        DevchainCmd::List { chain } => {
            check_chain_dir(&chain)?;
            let reg = DevChain::new(&chain).load()?;
            let snap = SnapshotJson {
                nodes: reg
                    .entries()
                    .iter()
                    .map(|e| NodeJson::from_entry(e, 42))
                    .collect(),
            };
            if snap.nodes.is_empty() {
                eprintln!(
                    "note: the dev chain at {} has no registrations",
                    chain.display()
                );
            }
            outln!("{}", serde_json::to_string_pretty(&snap)?);
        }
    }
    Ok(())
}

/// A dev chain is a directory holding a sled database (its `db` file), made by the first
/// `hermes devchain register`. Anything else is refused before sled would create a database
/// there.
fn check_chain_dir(chain: &Path) -> Result<()> {
    let meta = std::fs::metadata(chain).with_context(|| {
        format!(
            "no dev chain at {}: the directory does not exist (`hermes devchain register --chain {}` creates it)",
            chain.display(),
            chain.display()
        )
    })?;
    if !meta.is_dir() {
        bail!(
            "no dev chain at {}: it is a file, a dev chain is a directory",
            chain.display()
        );
    }
    if !chain.join("db").is_file() {
        bail!(
            "no dev chain at {}: the directory holds no chain database (nothing was registered there)",
            chain.display()
        );
    }
    Ok(())
}
