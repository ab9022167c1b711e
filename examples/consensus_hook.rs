//! A subnet's consensus on the dev chain, with an application hook of its own.
//!
//! Four validators and one newcomer share a dev chain in a temporary directory. Each validator
//! runs a ConsensusActor with `ActivityScores`, a hook that scores nodes by how much work the
//! application saw from them and accepts a proposal only when it scores the same nodes. The
//! example steps blocks by hand (a real setup uses `hermes devchain init --block-time 1s`) and
//! prints each epoch's verdict and the newcomer's class as it climbs.
//!
//! Run with `cargo run --example consensus_hook`.

use actix::prelude::*;
use hermes_actors::chain::{DevChain, DevParams};
use hermes_actors::consensus::{ConsensusActor, ConsensusHook, Tick};
use hermes_actors::{Store, StoreOptions};
use hermes_proto::chain::{NodeClass, NodeEntry};
use hermes_proto::consensus::{ClassRules, Proposal, Score};
use hermes_proto::Hotkey;
use sp_core::{sr25519, Pair as _};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Scores nodes by the work this node saw from them (messages, bytes streamed…: whatever the
/// subnet measures); here a shared table stands in for the application's own counters.
#[derive(Debug, Default)]
struct ActivityScores {
    work: Mutex<BTreeMap<Hotkey, u128>>,
}

impl ConsensusHook for ActivityScores {
    fn produce(&self, _: u16, _: u64, eligible: &BTreeSet<Hotkey>) -> (Vec<Score>, Vec<u8>) {
        let work = self.work.lock().map(|w| w.clone()).unwrap_or_default();
        let scores = eligible
            .iter()
            .map(|h| Score {
                hotkey: *h,
                score: work.get(h).copied().unwrap_or(1),
            })
            .collect();
        (scores, b"activity-v1".to_vec())
    }

    fn check(&self, proposal: &Proposal, eligible: &BTreeSet<Hotkey>) -> bool {
        proposal.args == b"activity-v1"
            && proposal.scores.len() == eligible.len()
            && proposal.scores.iter().all(|s| eligible.contains(&s.hotkey))
    }
}

fn main() -> anyhow::Result<()> {
    System::new().block_on(async {
        let dir = tempfile::tempdir()?;
        let chain = DevChain::new(dir.path().join("chain"));
        chain.init(DevParams {
            blocks_per_epoch: 10,
            block_time: None,
            rules: ClassRules::default(),
            ..DevParams::default()
        })?;
        let pairs: Vec<sr25519::Pair> = (0..5)
            .map(|i| sr25519::Pair::from_string(&format!("//example{i}"), None))
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for (i, p) in pairs.iter().enumerate() {
            let peer = libp2p::identity::Keypair::ed25519_from_bytes([i as u8 + 1; 32])?
                .public()
                .to_peer_id()
                .to_base58();
            chain.register_sync(NodeEntry {
                netuid: 1,
                hotkey: Hotkey::of(p),
                peer_id: peer,
                stake: 100,
                // Four validators to start with, and a newcomer.
                class: if i < 4 {
                    NodeClass::Validator
                } else {
                    NodeClass::Registered
                },
            })?;
        }
        chain.step(10)?;
        let hook = Arc::new(ActivityScores::default());
        let mut actors = Vec::new();
        let mut stores = Vec::new();
        for (i, p) in pairs.iter().enumerate() {
            // Each node's own data directory, as a runtime opens it.
            let store = Store::open(
                &dir.path().join(format!("node{i}")),
                &StoreOptions::default(),
            )?;
            actors.push(
                ConsensusActor::new(
                    Arc::new(chain.clone()),
                    p.clone(),
                    1,
                    hook.clone(),
                    store.tree("consensus")?,
                    Duration::from_secs(3600),
                )
                .map_err(anyhow::Error::msg)?
                .start(),
            );
            stores.push(store);
        }
        let newcomer = Hotkey::of(&pairs[4]);
        for _ in 0..5 {
            // Two rounds of polls: the elected node proposes, the others attest.
            for _ in 0..2 {
                for a in &actors {
                    a.send(Tick).await?;
                }
            }
            let head = chain.step(10)?;
            let ended = head.epoch - 1;
            let view = chain.epoch_sync(1, Some(ended))?;
            let verdict = view
                .and_then(|v| v.finalized)
                .map(|f| {
                    format!(
                        "{} ({}/{})",
                        f.verdict.as_str(),
                        f.tally.attestations,
                        f.tally.validators
                    )
                })
                .unwrap_or_else(|| "no round".into());
            let class = chain
                .standings_sync(1)?
                .into_iter()
                .find(|s| s.entry.hotkey == newcomer)
                .map(|s| s.standing.class.as_str())
                .unwrap_or("removed");
            println!("epoch {ended}: {verdict}; newcomer is {class}");
        }
        Ok(())
    })
}
