//! `hermes devchain`: the embedded development chain.

use crate::outln;
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use hermes::config::ChainKind;
use hermes::{Config, HotkeyPair};
use hermes_actors::chain::{DevChain, DevParams, NodeJson, SnapshotJson};
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
    /// Set the chain's parameters (creating it): block time, epoch length, election and class
    /// rules. Every node on the chain follows them; set them before the nodes start.
    Init {
        /// Dev chain directory.
        #[arg(long)]
        chain: PathBuf,
        /// Time per block (`1s`, `500ms`), or `manual`: blocks advance only with `step`.
        #[arg(long, default_value = "1s")]
        block_time: String,
        /// Blocks per epoch.
        #[arg(long, default_value_t = 20)]
        epoch_blocks: u64,
        /// Validator election: `uniform` (as the chain does) or `stake` (stake-weighted).
        #[arg(long, default_value = "uniform")]
        election: String,
        /// Punishment model: `penalty` (+1 when missing, -1 when included, removed at the
        /// maximum) or `reputation` (multiplicative, removed below the floor).
        #[arg(long, default_value = "penalty")]
        model: String,
        /// Penalty model: penalties at which a node is removed.
        #[arg(long, default_value_t = 3)]
        max_penalties: u32,
        /// Reputation model: factor on a miss.
        #[arg(long, default_value_t = 0.8)]
        reputation_decrease: f64,
        /// Reputation model: factor when included (capped at 1).
        #[arg(long, default_value_t = 1.05)]
        reputation_increase: f64,
        /// Reputation model: nodes below this are removed.
        #[arg(long, default_value_t = 0.5)]
        reputation_floor: f64,
        /// Full epochs a Registered node waits before it is Idle.
        #[arg(long, default_value_t = 1)]
        queue_epochs: u64,
        /// In-consensus epochs an Idle node waits before it is Included.
        #[arg(long, default_value_t = 1)]
        idle_epochs: u64,
        /// Epochs an Included node must be in the data with full standing to become Validator.
        #[arg(long, default_value_t = 2)]
        included_epochs: u64,
    },
    /// Advance the chain by BLOCKS blocks now (default 1), closing and opening epochs on the way.
    Step {
        /// Dev chain directory.
        #[arg(long)]
        chain: PathBuf,
        /// Blocks to advance.
        #[arg(default_value_t = 1)]
        blocks: u64,
    },
    /// Show epoch EPOCH (default: the current one) of a subnet: election, proposal,
    /// attestations, ratio, verdict and what it did to nodes, and every node's standing.
    Epoch {
        /// Dev chain directory.
        #[arg(long)]
        chain: PathBuf,
        /// Subnet.
        #[arg(long)]
        netuid: u16,
        /// Epoch number.
        epoch: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn ppm(what: &str, v: f64) -> Result<u32> {
    if !(0.0..=4000.0).contains(&v) {
        bail!("--{what}: {v} is not a factor between 0 and 4000");
    }
    // Rounded to parts per million, the chain's unit.
    Ok((v * 1_000_000.0).round() as u32)
}

#[allow(clippy::too_many_arguments)]
fn init_params(
    block_time: &str,
    epoch_blocks: u64,
    election: &str,
    model: &str,
    max_penalties: u32,
    decrease: f64,
    increase: f64,
    floor: f64,
    queue_epochs: u64,
    idle_epochs: u64,
    included_epochs: u64,
) -> Result<DevParams> {
    use hermes::proto::consensus::{ClassRules, ElectionMode, StandingModel};
    if epoch_blocks == 0 {
        bail!("--epoch-blocks: an epoch has at least one block");
    }
    let block_time = match block_time {
        "manual" => None,
        t => {
            let d = humantime::parse_duration(t)
                .map_err(|e| anyhow!("--block-time: `{t}`: {e} (e.g. 1s, 500ms, or manual)"))?;
            if d.as_millis() == 0 {
                bail!("--block-time: at least 1ms, or `manual`");
            }
            Some(d)
        }
    };
    let election = ElectionMode::parse(election)
        .ok_or_else(|| anyhow!("--election: `{election}` is not uniform or stake"))?;
    let model = match model {
        "penalty" => {
            if max_penalties == 0 {
                bail!("--max-penalties: at least 1");
            }
            StandingModel::Penalty { max_penalties }
        }
        "reputation" => StandingModel::Reputation {
            decrease_ppm: ppm("reputation-decrease", decrease)?,
            increase_ppm: ppm("reputation-increase", increase)?,
            floor_ppm: ppm("reputation-floor", floor)?,
        },
        m => bail!("--model: `{m}` is not penalty or reputation"),
    };
    Ok(DevParams {
        blocks_per_epoch: epoch_blocks,
        block_time,
        election,
        rules: ClassRules {
            queue_epochs,
            idle_epochs,
            included_epochs,
            model,
        },
    })
}

fn ss58(h: &hermes::proto::Hotkey) -> String {
    h.to_ss58(42)
}

fn change_json(c: &hermes::proto::consensus::Change) -> serde_json::Value {
    use hermes::proto::consensus::{Change, Removal};
    match c {
        Change::Promoted { hotkey, from, to } => serde_json::json!({
            "kind": "promoted", "hotkey": ss58(hotkey), "from": from.as_str(), "to": to.as_str(),
        }),
        Change::Punished {
            hotkey,
            penalties,
            reputation_ppm,
        } => serde_json::json!({
            "kind": "punished", "hotkey": ss58(hotkey), "penalties": penalties,
            "reputation": f64::from(*reputation_ppm) / 1e6,
        }),
        Change::Removed { hotkey, reason } => serde_json::json!({
            "kind": "removed", "hotkey": ss58(hotkey),
            "reason": match reason { Removal::MaxPenalties => "max_penalties", Removal::ReputationFloor => "reputation_floor" },
        }),
    }
}

/// The JSON form `hermes devchain epoch --json` prints.
fn epoch_report(chain: &DevChain, netuid: u16, epoch: Option<u64>) -> Result<serde_json::Value> {
    let head = chain.head_sync()?;
    let params = chain.params()?;
    let view = chain.epoch_sync(netuid, epoch)?;
    let standings = chain.standings_sync(netuid)?;
    let nodes: Vec<serde_json::Value> = standings
        .iter()
        .map(|n| {
            serde_json::json!({
                "hotkey": ss58(&n.entry.hotkey),
                "peer_id": n.entry.peer_id,
                "stake": n.entry.stake.to_string(),
                "class": n.standing.class.as_str(),
                "penalties": n.standing.penalties,
                "reputation": f64::from(n.standing.reputation_ppm) / 1e6,
                "registered_epoch": n.standing.registered_epoch,
            })
        })
        .collect();
    let mut out = serde_json::json!({
        "head": { "block": head.block, "epoch": head.epoch, "blocks_per_epoch": head.blocks_per_epoch,
                  "block_time_ms": head.block_time.map(|d| d.as_millis() as u64),
                  "model": params.rules.model.name(), "election": params.election.as_str() },
        "netuid": netuid,
        "epoch": epoch.unwrap_or(head.epoch),
        "round": null,
        "nodes": nodes,
    });
    if let Some(view) = view {
        let r = &view.round;
        let tally = r.tally();
        let proposal = r.proposal().map(|(p, hash)| {
            serde_json::json!({
                "hash": hex::encode(hash),
                "proposer": ss58(&p.proposal.proposer),
                "scores": p.proposal.scores.iter().map(|s| serde_json::json!({
                    "hotkey": ss58(&s.hotkey), "score": s.score.to_string(),
                })).collect::<Vec<_>>(),
                "args_len": p.proposal.args.len(),
            })
        });
        out["round"] = serde_json::json!({
            "seed": hex::encode(r.params().seed),
            "elected": r.elected().map(|h| ss58(&h)),
            "validators": r.params().validators.iter().map(|c| ss58(&c.hotkey)).collect::<Vec<_>>(),
            "proposal": proposal,
            "equivocation": r.equivocation().is_some(),
            "attestations": r.attestations().map(|a| ss58(&a.attestation.attester)).collect::<Vec<_>>(),
            "tally": { "attestations": tally.attestations, "validators": tally.validators,
                       "ratio": tally.ratio(), "in_consensus": tally.in_consensus,
                       "supermajority": tally.supermajority },
            "finalized": view.finalized.as_ref().map(|f| serde_json::json!({
                "verdict": f.verdict.as_str(),
                "attestations": f.tally.attestations,
                "validators": f.tally.validators,
                "changes": f.changes.iter().map(change_json).collect::<Vec<_>>(),
            })),
        });
    }
    Ok(out)
}

fn print_epoch(v: &serde_json::Value) {
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        v => v.to_string(),
    };
    let head = &v["head"];
    outln!(
        "block {} (epoch {}, {} blocks/epoch, {} model, {} election)",
        head["block"],
        head["epoch"],
        head["blocks_per_epoch"],
        s(&head["model"]),
        s(&head["election"])
    );
    let r = &v["round"];
    if r.is_null() {
        outln!(
            "subnet {} epoch {}: no round (the subnet had no nodes when the epoch started)",
            v["netuid"],
            v["epoch"]
        );
    } else {
        let t = &r["tally"];
        outln!("subnet {} epoch {}", v["netuid"], v["epoch"]);
        outln!("  elected       {}", s(&r["elected"]));
        outln!(
            "  validators    {}",
            r["validators"].as_array().map_or(0, |a| a.len())
        );
        match r["proposal"].as_object() {
            Some(p) => outln!(
                "  proposal      {} ({} scores, {} bytes of args)",
                s(&p["hash"]),
                p["scores"].as_array().map_or(0, |a| a.len()),
                p["args_len"]
            ),
            None if r["equivocation"] == true => {
                outln!("  proposal      refused: the elected validator equivocated")
            }
            None if r["finalized"].is_null() => outln!("  proposal      none yet"),
            None => outln!("  proposal      none"),
        }
        outln!(
            "  attestations  {}/{} ({:.2}){}{}",
            t["attestations"],
            t["validators"],
            t["ratio"].as_f64().unwrap_or(0.0),
            if t["in_consensus"] == true {
                ", in consensus"
            } else {
                ""
            },
            if t["supermajority"] == true {
                ", supermajority"
            } else {
                ""
            }
        );
        match r["finalized"].as_object() {
            Some(f) => {
                outln!("  verdict       {}", s(&f["verdict"]));
                for c in f["changes"].as_array().into_iter().flatten() {
                    outln!(
                        "    {} {}{}",
                        s(&c["kind"]),
                        s(&c["hotkey"]),
                        match s(&c["kind"]).as_str() {
                            "promoted" => format!(": {} -> {}", s(&c["from"]), s(&c["to"])),
                            "punished" => format!(
                                ": penalties {}, reputation {}",
                                c["penalties"], c["reputation"]
                            ),
                            _ => format!(": {}", s(&c["reason"])),
                        }
                    );
                }
            }
            None => outln!("  verdict       (epoch in progress)"),
        }
    }
    outln!("nodes");
    for n in v["nodes"].as_array().into_iter().flatten() {
        outln!(
            "  {} {:<10} penalties {} reputation {}",
            s(&n["hotkey"]),
            s(&n["class"]),
            n["penalties"],
            n["reputation"]
        );
    }
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
        DevchainCmd::Init {
            chain,
            block_time,
            epoch_blocks,
            election,
            model,
            max_penalties,
            reputation_decrease,
            reputation_increase,
            reputation_floor,
            queue_epochs,
            idle_epochs,
            included_epochs,
        } => {
            let params = init_params(
                &block_time,
                epoch_blocks,
                &election,
                &model,
                max_penalties,
                reputation_decrease,
                reputation_increase,
                reputation_floor,
                queue_epochs,
                idle_epochs,
                included_epochs,
            )?;
            let head = DevChain::new(&chain).init(params)?;
            outln!(
                "dev chain at {}: block {} (epoch {}), {} blocks per epoch, {}, {} election, {} model",
                chain.display(),
                head.block,
                head.epoch,
                params.blocks_per_epoch,
                match params.block_time {
                    Some(d) => format!("one block every {}", humantime::format_duration(d)),
                    None => "blocks advance with `hermes devchain step`".into(),
                },
                params.election.as_str(),
                params.rules.model.name()
            );
        }
        DevchainCmd::Step { chain, blocks } => {
            check_chain_dir(&chain)?;
            let dev = DevChain::new(&chain);
            let before = dev.head_sync()?;
            let head = dev.step(blocks)?;
            outln!(
                "block {} (epoch {}); {} epoch(s) closed",
                head.block,
                head.epoch,
                head.epoch - before.epoch
            );
        }
        DevchainCmd::Epoch {
            chain,
            netuid,
            epoch,
            json,
        } => {
            check_chain_dir(&chain)?;
            let report = epoch_report(&DevChain::new(&chain), netuid, epoch)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_epoch(&report);
            }
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
