//! `hermes consensus status`: this node's part in each subnet's epochs.
//!
//! Asks the running node through its control socket (what it signed, the last outcome it saw);
//! when no node runs, reads the dev chain directly (what the chain holds: election, proposal,
//! attestations). The node's class, penalties and reputation always come from the chain.

use crate::{block_on, outln};
use anyhow::{bail, Result};
use clap::Subcommand;
use hermes::config::ChainKind;
use hermes::proto::Hotkey;
use hermes::{Config, HotkeyPair};
use hermes_actors::chain::DevChain;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub(crate) enum ConsensusCmd {
    /// Per subnet: epoch and block, this node's class, the elected validator, whether this node
    /// proposed or attested in the current epoch, attestations so far, the last outcome, and
    /// (from a running node) the bad consensus records heard in gossip, per reason.
    Status {
        /// The node's config file.
        #[arg(long = "config", short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn consensus(cmd: ConsensusCmd) -> Result<()> {
    match cmd {
        ConsensusCmd::Status { config, json } => status(&config, json),
    }
}

fn status(config: &Path, json_out: bool) -> Result<()> {
    let cfg = Config::load(config)?;
    let (key, _) = HotkeyPair::resolve(cfg.identity.hotkey_file.as_deref())?;
    let me = key.public();
    let prefix = cfg.identity.ss58_prefix;
    let sock = hermes::control::socket_path(&cfg.data_dir);
    let mut report = if block_on(hermes::control::is_running(&sock)) {
        let mut v = block_on(hermes::control::request(&sock, "consensus"))?;
        v["source"] = "node".into();
        v
    } else {
        from_chain(&cfg, &me, prefix)?
    };
    // Class and standing: the chain's word.
    if cfg.chain.kind == ChainKind::Dev {
        let chain = DevChain::new(&cfg.chain.path);
        for s in report["consensus"].as_array_mut().into_iter().flatten() {
            let Some(netuid) = s["netuid"].as_u64().and_then(|n| u16::try_from(n).ok()) else {
                continue;
            };
            let standing = chain
                .standings_sync(netuid)?
                .into_iter()
                .find(|n| n.entry.hotkey == me);
            s["class"] = standing
                .as_ref()
                .map_or("unregistered", |n| n.standing.class.as_str())
                .into();
            s["penalties"] = standing.as_ref().map(|n| n.standing.penalties).into();
            s["reputation"] = standing
                .as_ref()
                .map(|n| f64::from(n.standing.reputation_ppm) / 1e6)
                .into();
        }
    }
    if json_out {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print(&report, &me.to_ss58(prefix));
    }
    Ok(())
}

/// The same report read from the dev chain, for a node that is not running.
fn from_chain(cfg: &Config, me: &Hotkey, prefix: u16) -> Result<Value> {
    let netuids = cfg.consensus.effective_netuids(&cfg.subnets.netuids);
    if cfg.chain.kind != ChainKind::Dev {
        bail!(
            "no running node at {} and the chain ({}) has no epochs to read",
            hermes::control::socket_path(&cfg.data_dir).display(),
            cfg.chain.path.display()
        );
    }
    let chain = DevChain::new(&cfg.chain.path);
    let head = chain.head_sync()?;
    let mut subnets = Vec::new();
    for netuid in netuids {
        let mut s = json!({
            "netuid": netuid, "block": head.block, "epoch": head.epoch, "validator": false,
            "elected": null, "attestations": 0, "validators": 0, "proposed": false,
            "attested": false, "last_outcome": null, "last_error": null,
        });
        if let Some(view) = chain.epoch_sync(netuid, Some(head.epoch))? {
            let r = &view.round;
            let t = r.tally();
            s["validator"] = r.is_validator(me).into();
            s["elected"] = r.elected().map(|h| h.to_ss58(prefix)).into();
            s["attestations"] = t.attestations.into();
            s["validators"] = t.validators.into();
            s["proposed"] = r
                .proposal()
                .is_some_and(|(p, _)| p.proposal.proposer == *me)
                .into();
            s["attested"] = r
                .attestations()
                .any(|a| a.attestation.attester == *me)
                .into();
        }
        if head.epoch > 0 {
            if let Some(view) = chain.epoch_sync(netuid, Some(head.epoch - 1))? {
                if let Some(o) = hermes::EpochOutcome::of(&view, me) {
                    s["last_outcome"] = hermes::control::consensus::outcome_json(&o, prefix);
                }
            }
        }
        subnets.push(s);
    }
    Ok(json!({ "source": "chain", "consensus": subnets, "off": null }))
}

fn print(v: &Value, me: &str) {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    if v["source"] == "chain" {
        outln!("(the node is not running: read from the chain)");
    }
    if let Some(off) = v["off"].as_str() {
        outln!("consensus is off: {off}");
    }
    let list = v["consensus"].as_array().cloned().unwrap_or_default();
    if list.is_empty() && v["off"].is_null() {
        outln!("this node takes part in no subnet's consensus");
    }
    for s in list {
        outln!(
            "subnet {}: epoch {} (block {}), class {} (penalties {}, reputation {})",
            s["netuid"],
            text(&s["epoch"]),
            text(&s["block"]),
            text(&s["class"]),
            text(&s["penalties"]),
            text(&s["reputation"])
        );
        let elected = text(&s["elected"]);
        outln!(
            "  elected       {}{}",
            elected,
            if elected == me { " (this node)" } else { "" }
        );
        let mine = if s["proposed"] == true {
            "proposed"
        } else if s["attested"] == true {
            "attested"
        } else if s["validator"] == true {
            "not yet proposed or attested"
        } else {
            "not a validator this epoch"
        };
        outln!("  this node     {mine}");
        outln!("  attestations  {}/{}", s["attestations"], s["validators"]);
        match s["last_outcome"].as_object() {
            Some(o) => outln!(
                "  last epoch    {}: {} ({}/{} attested{}{})",
                o["epoch"],
                text(&o["verdict"]),
                o["attestations"],
                o["validators"],
                if o["proposed"] == true {
                    ", proposed by this node"
                } else {
                    ""
                },
                if o["attested"] == true {
                    ", attested by this node"
                } else {
                    ""
                },
            ),
            None => outln!("  last epoch    -"),
        }
        if let Some(e) = s["last_error"].as_str() {
            outln!("  last error    {e}");
        }
        // Only a running node hears gossip.
        if let Some(bad) = s["bad_records"].as_object() {
            let seen: Vec<String> = bad
                .iter()
                .filter(|(_, n)| n.as_u64().is_some_and(|n| n > 0))
                .map(|(r, n)| format!("{r} {n}"))
                .collect();
            outln!(
                "  bad records   {}",
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            );
        }
    }
}
