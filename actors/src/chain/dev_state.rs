//! The dev chain's state as stored in its sled directory, and its block and epoch engine.
//!
//! Trees:
//! - `devchain/nodes`: `netuid (BE) ‖ hotkey` → [`NodeJson`] (the registry; classes kept current).
//! - `devchain/state`: `params` → parameters, `head` → latest block, `st ‖ netuid ‖ hotkey` →
//!   standing (progress, penalties, reputation), `ep ‖ netuid ‖ epoch (BE)` → one epoch's round
//!   (snapshot, signed proposal(s) and attestations as their wire bytes, and the outcome).
//!
//! Every operation loads what it needs, advances the chain to the block the clock implies (timer
//! mode), applies the operation and writes everything it changed in one transaction over both
//! trees, so a crash leaves either the old or the new state.

use super::{ChainError, ChainHead, EpochView, Finalized, NodeJson, NodeStanding};
use hermes_proto::chain::{NodeClass, NodeEntry};
use hermes_proto::consensus::{
    apply_epoch, epoch_seed, Candidate, Change, ClassRules, ElectionMode, EpochSchedule, Removal,
    Round, RoundParams, SignedAttestation, SignedProposal, Standing, StandingModel, Tally, Verdict,
};
use hermes_proto::Hotkey;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

pub(super) const NODES_TREE: &str = "devchain/nodes";
pub(super) const STATE_TREE: &str = "devchain/state";
const BLOCK_CONTEXT: &str = "hermes/devchain-block/v1";

/// The dev chain's parameters, fixed for the chain by `hermes devchain init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevParams {
    /// Blocks per epoch (≥ 1).
    pub blocks_per_epoch: u64,
    /// Time per block; `None`: blocks only advance when stepped (`hermes devchain step`).
    pub block_time: Option<Duration>,
    /// How each epoch's validator is drawn.
    pub election: ElectionMode,
    /// Class and punishment rules.
    pub rules: ClassRules,
}

impl Default for DevParams {
    /// 20 blocks per epoch, stepped by hand: a chain made by a plain `register` never changes on
    /// its own, as before epochs existed; `hermes devchain init --block-time 1s` starts the clock.
    fn default() -> Self {
        DevParams {
            blocks_per_epoch: 20,
            block_time: None,
            election: ElectionMode::Uniform,
            rules: ClassRules::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamsJson {
    blocks_per_epoch: u64,
    block_time_ms: u64,
    election: String,
    queue_epochs: u64,
    idle_epochs: u64,
    included_epochs: u64,
    model: String,
    max_penalties: u32,
    decrease_ppm: u32,
    increase_ppm: u32,
    floor_ppm: u32,
}

impl ParamsJson {
    fn from(p: &DevParams) -> Self {
        let (max_penalties, decrease_ppm, increase_ppm, floor_ppm) = match p.rules.model {
            StandingModel::Penalty { max_penalties } => (max_penalties, 0, 0, 0),
            StandingModel::Reputation {
                decrease_ppm,
                increase_ppm,
                floor_ppm,
            } => (0, decrease_ppm, increase_ppm, floor_ppm),
        };
        ParamsJson {
            blocks_per_epoch: p.blocks_per_epoch,
            block_time_ms: p
                .block_time
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            election: p.election.as_str().into(),
            queue_epochs: p.rules.queue_epochs,
            idle_epochs: p.rules.idle_epochs,
            included_epochs: p.rules.included_epochs,
            model: p.rules.model.name().into(),
            max_penalties,
            decrease_ppm,
            increase_ppm,
            floor_ppm,
        }
    }

    fn to_params(&self) -> Result<DevParams, String> {
        let model = match self.model.as_str() {
            "penalty" => StandingModel::Penalty {
                max_penalties: self.max_penalties,
            },
            "reputation" => StandingModel::Reputation {
                decrease_ppm: self.decrease_ppm,
                increase_ppm: self.increase_ppm,
                floor_ppm: self.floor_ppm,
            },
            m => return Err(format!("unknown model `{m}`")),
        };
        if self.blocks_per_epoch == 0 {
            return Err("blocks_per_epoch is 0".into());
        }
        Ok(DevParams {
            blocks_per_epoch: self.blocks_per_epoch,
            block_time: (self.block_time_ms > 0).then(|| Duration::from_millis(self.block_time_ms)),
            election: ElectionMode::parse(&self.election)
                .ok_or_else(|| format!("unknown election `{}`", self.election))?,
            rules: ClassRules {
                queue_epochs: self.queue_epochs,
                idle_epochs: self.idle_epochs,
                included_epochs: self.included_epochs,
                model,
            },
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeadJson {
    block: u64,
    hash: String,
    /// Unix milliseconds of block 0 in timer mode (moved back by manual steps).
    genesis_ms: u64,
    /// Subnets with a round open in the current epoch.
    open: Vec<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StandingJson {
    registered_epoch: u64,
    progress: u64,
    penalties: u32,
    reputation_ppm: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateJson {
    hotkey: String,
    stake: u128,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeJson {
    kind: String,
    hotkey: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    penalties: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reputation_ppm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FinalizedJson {
    verdict: String,
    attestations: u64,
    validators: u64,
    changes: Vec<ChangeJson>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EpochJson {
    netuid: u16,
    epoch: u64,
    seed: String,
    election: String,
    validators: Vec<CandidateJson>,
    eligible: Vec<String>,
    /// Signed proposals, wire bytes in hex: one, or two after an equivocation.
    proposals: Vec<String>,
    /// Signed attestations, wire bytes in hex.
    attestations: Vec<String>,
    finalized: Option<FinalizedJson>,
}

fn hex32(s: &str) -> Result<[u8; 32], String> {
    let v = hex::decode(s).map_err(|e| e.to_string())?;
    <[u8; 32]>::try_from(v.as_slice()).map_err(|_| format!("`{s}` is not 32 bytes"))
}

fn class(s: &str) -> Result<NodeClass, String> {
    NodeClass::parse(s).ok_or_else(|| format!("unknown class `{s}`"))
}

fn change_json(c: &Change) -> ChangeJson {
    let mut j = ChangeJson {
        kind: String::new(),
        hotkey: String::new(),
        from: None,
        to: None,
        penalties: None,
        reputation_ppm: None,
        reason: None,
    };
    match *c {
        Change::Promoted { hotkey, from, to } => {
            j.kind = "promoted".into();
            j.hotkey = hex::encode(hotkey.0);
            j.from = Some(from.as_str().into());
            j.to = Some(to.as_str().into());
        }
        Change::Punished {
            hotkey,
            penalties,
            reputation_ppm,
        } => {
            j.kind = "punished".into();
            j.hotkey = hex::encode(hotkey.0);
            j.penalties = Some(penalties);
            j.reputation_ppm = Some(reputation_ppm);
        }
        Change::Removed { hotkey, reason } => {
            j.kind = "removed".into();
            j.hotkey = hex::encode(hotkey.0);
            j.reason = Some(
                match reason {
                    Removal::MaxPenalties => "max_penalties",
                    Removal::ReputationFloor => "reputation_floor",
                }
                .into(),
            );
        }
    }
    j
}

fn change_from_json(j: &ChangeJson) -> Result<Change, String> {
    let hotkey = Hotkey(hex32(&j.hotkey)?);
    let missing = |f: &str| format!("change without {f}");
    Ok(match j.kind.as_str() {
        "promoted" => Change::Promoted {
            hotkey,
            from: class(j.from.as_deref().ok_or_else(|| missing("from"))?)?,
            to: class(j.to.as_deref().ok_or_else(|| missing("to"))?)?,
        },
        "punished" => Change::Punished {
            hotkey,
            penalties: j.penalties.ok_or_else(|| missing("penalties"))?,
            reputation_ppm: j.reputation_ppm.ok_or_else(|| missing("reputation_ppm"))?,
        },
        "removed" => Change::Removed {
            hotkey,
            reason: match j.reason.as_deref() {
                Some("max_penalties") => Removal::MaxPenalties,
                Some("reputation_floor") => Removal::ReputationFloor,
                r => return Err(format!("unknown removal reason {r:?}")),
            },
        },
        k => return Err(format!("unknown change `{k}`")),
    })
}

fn verdict(s: &str) -> Result<Verdict, String> {
    [
        Verdict::NoValidators,
        Verdict::NoSubmission,
        Verdict::Equivocated,
        Verdict::NotAttested,
        Verdict::InConsensus,
    ]
    .into_iter()
    .find(|v| v.as_str() == s)
    .ok_or_else(|| format!("unknown verdict `{s}`"))
}

fn epoch_json(view: &EpochView) -> EpochJson {
    let p = view.round.params();
    let proposals = match (view.round.equivocation(), view.round.proposal()) {
        (Some((a, b)), _) => vec![a.encode(), b.encode()],
        (None, Some((a, _))) => vec![a.encode()],
        (None, None) => vec![],
    };
    EpochJson {
        netuid: p.netuid,
        epoch: p.epoch,
        seed: hex::encode(p.seed),
        election: p.election.as_str().into(),
        validators: p
            .validators
            .iter()
            .map(|c| CandidateJson {
                hotkey: hex::encode(c.hotkey.0),
                stake: c.stake,
            })
            .collect(),
        eligible: p.eligible.iter().map(|h| hex::encode(h.0)).collect(),
        proposals: proposals.iter().map(hex::encode).collect(),
        attestations: view
            .round
            .attestations()
            .map(|a| hex::encode(a.encode()))
            .collect(),
        finalized: view.finalized.as_ref().map(|f| FinalizedJson {
            verdict: f.verdict.as_str().into(),
            attestations: f.tally.attestations,
            validators: f.tally.validators,
            changes: f.changes.iter().map(change_json).collect(),
        }),
    }
}

/// Rebuilds a round by replaying its records through the same checks as when they arrived.
fn epoch_from_json(j: &EpochJson) -> Result<EpochView, String> {
    let validators = j
        .validators
        .iter()
        .map(|c| {
            Ok(Candidate {
                hotkey: Hotkey(hex32(&c.hotkey)?),
                stake: c.stake,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let eligible = j
        .eligible
        .iter()
        .map(|h| hex32(h).map(Hotkey))
        .collect::<Result<BTreeSet<_>, String>>()?;
    let mut round = Round::open(RoundParams {
        netuid: j.netuid,
        epoch: j.epoch,
        seed: hex32(&j.seed)?,
        election: ElectionMode::parse(&j.election)
            .ok_or_else(|| format!("unknown election `{}`", j.election))?,
        validators,
        eligible,
    });
    let proposal = |p: &String| -> Result<SignedProposal, String> {
        let bytes = hex::decode(p).map_err(|e| e.to_string())?;
        SignedProposal::decode(&bytes).map_err(|e| e.to_string())
    };
    // Replayed in arrival order: the proposal, its attestations, then a conflicting proposal,
    // which is refused as an equivocation (that is the point: the round keeps it as evidence).
    if let Some(first) = j.proposals.first() {
        let _ = round.submit(&proposal(first)?);
    }
    for a in &j.attestations {
        let bytes = hex::decode(a).map_err(|e| e.to_string())?;
        let sa = SignedAttestation::decode(&bytes).map_err(|e| e.to_string())?;
        let _ = round.attest(&sa);
    }
    for p in j.proposals.iter().skip(1) {
        let _ = round.submit(&proposal(p)?);
    }
    let finalized = match &j.finalized {
        None => None,
        Some(f) => Some(Finalized {
            verdict: verdict(&f.verdict)?,
            tally: Tally::new(f.attestations, f.validators),
            changes: f
                .changes
                .iter()
                .map(change_from_json)
                .collect::<Result<_, _>>()?,
        }),
    };
    Ok(EpochView { round, finalized })
}

/// A key and a value to write.
type Kv = (Vec<u8>, Vec<u8>);

fn node_key(netuid: u16, hotkey: &Hotkey) -> Vec<u8> {
    let mut k = Vec::with_capacity(34);
    k.extend_from_slice(&netuid.to_be_bytes());
    k.extend_from_slice(&hotkey.0);
    k
}

fn standing_key(netuid: u16, hotkey: &Hotkey) -> Vec<u8> {
    let mut k = b"st".to_vec();
    k.extend_from_slice(&node_key(netuid, hotkey));
    k
}

fn epoch_key(netuid: u16, epoch: u64) -> Vec<u8> {
    let mut k = b"ep".to_vec();
    k.extend_from_slice(&netuid.to_be_bytes());
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

fn block_hash(prev: &[u8; 32], block: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(BLOCK_CONTEXT);
    h.update(prev);
    h.update(&block.to_le_bytes());
    *h.finalize().as_bytes()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Everything one operation reads and changes.
#[derive(Debug)]
pub(super) struct State {
    pub(super) params: DevParams,
    schedule: EpochSchedule,
    block: u64,
    hash: [u8; 32],
    genesis_ms: u64,
    open: Vec<u16>,
    pub(super) nodes: BTreeMap<(u16, Hotkey), NodeStanding>,
    epochs: BTreeMap<(u16, u64), EpochView>,
    dirty_nodes: BTreeSet<(u16, Hotkey)>,
    dirty_epochs: BTreeSet<(u16, u64)>,
    dirty_meta: bool,
    nodes_tree: sled::Tree,
    state_tree: sled::Tree,
}

impl State {
    /// Loads the head, parameters and every node. A chain without parameters gets the defaults
    /// (written with the first change).
    pub(super) fn load(db: &sled::Db, path: &Path) -> Result<Self, ChainError> {
        let storage = |e: sled::Error| ChainError::Storage {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let format = |reason: String| ChainError::Format {
            path: path.to_path_buf(),
            reason,
        };
        let nodes_tree = db.open_tree(NODES_TREE).map_err(storage)?;
        let state_tree = db.open_tree(STATE_TREE).map_err(storage)?;
        let get = |key: &[u8]| state_tree.get(key).map_err(storage);
        let (params, fresh_params) = match get(b"params")? {
            Some(v) => (
                serde_json::from_slice::<ParamsJson>(&v)
                    .map_err(|e| format(format!("params: {e}")))?
                    .to_params()
                    .map_err(|e| format(format!("params: {e}")))?,
                false,
            ),
            None => (DevParams::default(), true),
        };
        let (block, hash, genesis_ms, open, fresh_head) = match get(b"head")? {
            Some(v) => {
                let h: HeadJson =
                    serde_json::from_slice(&v).map_err(|e| format(format!("head: {e}")))?;
                let hash = hex32(&h.hash).map_err(|e| format(format!("head: {e}")))?;
                (h.block, hash, h.genesis_ms, h.open, false)
            }
            None => (0, block_hash(&[0; 32], 0), now_ms(), vec![], true),
        };
        let schedule = EpochSchedule::new(params.blocks_per_epoch)
            .ok_or_else(|| format("params: blocks_per_epoch is 0".into()))?;
        let current = schedule.epoch_of(block);
        let mut nodes = BTreeMap::new();
        for item in nodes_tree.iter() {
            let (_, v) = item.map_err(storage)?;
            let node: NodeJson = serde_json::from_slice(&v).map_err(|e| format(e.to_string()))?;
            let entry = node.to_entry().map_err(format)?;
            let standing = match get(&standing_key(entry.netuid, &entry.hotkey))? {
                Some(v) => {
                    let s: StandingJson =
                        serde_json::from_slice(&v).map_err(|e| format(e.to_string()))?;
                    Standing {
                        class: entry.class,
                        registered_epoch: s.registered_epoch,
                        progress: s.progress,
                        penalties: s.penalties,
                        reputation_ppm: s.reputation_ppm,
                    }
                }
                // Registered before the chain kept standings.
                None => Standing::new(entry.class, current),
            };
            nodes.insert(
                (entry.netuid, entry.hotkey),
                NodeStanding { entry, standing },
            );
        }
        Ok(State {
            params,
            schedule,
            block,
            hash,
            genesis_ms,
            open,
            nodes,
            epochs: BTreeMap::new(),
            dirty_nodes: BTreeSet::new(),
            dirty_epochs: BTreeSet::new(),
            dirty_meta: fresh_params || fresh_head,
            nodes_tree,
            state_tree,
        })
    }

    fn schedule(&self) -> EpochSchedule {
        self.schedule
    }

    /// The head.
    pub(super) fn head(&self) -> ChainHead {
        ChainHead {
            block: self.block,
            epoch: self.schedule().epoch_of(self.block),
            blocks_per_epoch: self.params.blocks_per_epoch,
            block_hash: self.hash,
            block_time: self.params.block_time,
        }
    }

    /// Replaces the parameters (keeping blocks, nodes and epochs).
    pub(super) fn set_params(&mut self, params: DevParams) -> Result<(), String> {
        self.schedule = EpochSchedule::new(params.blocks_per_epoch)
            .ok_or_else(|| "blocks per epoch must be at least 1".to_string())?;
        if params.block_time != self.params.block_time {
            // Restart the clock at the current block.
            let ms = params
                .block_time
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            self.genesis_ms = now_ms().saturating_sub(self.block.saturating_mul(ms));
        }
        self.params = params;
        self.dirty_meta = true;
        Ok(())
    }

    /// Advances to the block the clock implies (timer mode only).
    pub(super) fn catch_up(&mut self) -> Result<(), String> {
        if let Some(t) = self.params.block_time {
            let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1);
            let target = now_ms().saturating_sub(self.genesis_ms) / ms;
            self.advance_to(target)?;
        }
        Ok(())
    }

    /// Steps `n` blocks past the current one; in timer mode the clock moves with them.
    pub(super) fn step(&mut self, n: u64) -> Result<(), String> {
        if let Some(t) = self.params.block_time {
            let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
            self.genesis_ms = self.genesis_ms.saturating_sub(n.saturating_mul(ms));
        }
        self.advance_to(self.block.saturating_add(n))
    }

    fn advance_to(&mut self, target: u64) -> Result<(), String> {
        let schedule = self.schedule();
        while self.block < target {
            let b = self.block + 1;
            if schedule.is_epoch_start(b) {
                let e = schedule.epoch_of(b);
                self.close_epoch(e - 1)?;
                self.open_epoch(e);
            }
            self.hash = block_hash(&self.hash, b);
            self.block = b;
            self.dirty_meta = true;
        }
        Ok(())
    }

    fn close_epoch(&mut self, epoch: u64) -> Result<(), String> {
        for netuid in std::mem::take(&mut self.open) {
            let Some(view) = self.epoch_mut(netuid, epoch)? else {
                continue;
            };
            let outcome = view.round.outcome();
            let eligible = view.round.params().eligible.clone();
            let mut standings: BTreeMap<Hotkey, Standing> = self
                .nodes
                .iter()
                .filter(|((n, _), _)| *n == netuid)
                .map(|((_, h), ns)| (*h, ns.standing))
                .collect();
            let changes = apply_epoch(&self.params.rules, &outcome, &eligible, &mut standings);
            tracing::debug!(
                netuid,
                epoch,
                verdict = outcome.verdict.as_str(),
                changes = changes.len(),
                "dev chain epoch closed"
            );
            let keys: Vec<(u16, Hotkey)> = self
                .nodes
                .keys()
                .filter(|(n, _)| *n == netuid)
                .copied()
                .collect();
            for key in keys {
                match standings.get(&key.1) {
                    Some(s) => {
                        if let Some(ns) = self.nodes.get_mut(&key) {
                            if ns.standing != *s {
                                ns.standing = *s;
                                ns.entry.class = s.class;
                                self.dirty_nodes.insert(key);
                            }
                        }
                    }
                    None => {
                        self.nodes.remove(&key);
                        self.dirty_nodes.insert(key);
                    }
                }
            }
            if let Some(view) = self.epochs.get_mut(&(netuid, epoch)) {
                view.finalized = Some(Finalized {
                    verdict: outcome.verdict,
                    tally: outcome.tally,
                    changes,
                });
            }
            self.dirty_epochs.insert((netuid, epoch));
        }
        Ok(())
    }

    fn open_epoch(&mut self, epoch: u64) {
        let netuids: BTreeSet<u16> = self.nodes.keys().map(|(n, _)| *n).collect();
        for netuid in netuids {
            let members = || {
                self.nodes
                    .iter()
                    .filter(move |((n, _), _)| *n == netuid)
                    .map(|(_, ns)| ns)
            };
            let params = RoundParams {
                netuid,
                epoch,
                // The hash of the block before the epoch's first block.
                seed: epoch_seed(&self.hash, epoch, netuid),
                election: self.params.election,
                validators: members()
                    .filter(|ns| ns.standing.class == NodeClass::Validator)
                    .map(|ns| Candidate {
                        hotkey: ns.entry.hotkey,
                        stake: ns.entry.stake,
                    })
                    .collect(),
                eligible: members()
                    .filter(|ns| ns.standing.class >= NodeClass::Included)
                    .map(|ns| ns.entry.hotkey)
                    .collect(),
            };
            self.epochs.insert(
                (netuid, epoch),
                EpochView {
                    round: Round::open(params),
                    finalized: None,
                },
            );
            self.dirty_epochs.insert((netuid, epoch));
            self.open.push(netuid);
        }
    }

    /// The stored epoch, loaded once per operation.
    pub(super) fn epoch_mut(
        &mut self,
        netuid: u16,
        epoch: u64,
    ) -> Result<Option<&mut EpochView>, String> {
        if !self.epochs.contains_key(&(netuid, epoch)) {
            let Some(v) = self
                .state_tree
                .get(epoch_key(netuid, epoch))
                .map_err(|e| e.to_string())?
            else {
                return Ok(None);
            };
            let j: EpochJson = serde_json::from_slice(&v).map_err(|e| e.to_string())?;
            self.epochs.insert((netuid, epoch), epoch_from_json(&j)?);
        }
        Ok(self.epochs.get_mut(&(netuid, epoch)))
    }

    /// Marks an epoch changed by a submission.
    pub(super) fn touch_epoch(&mut self, netuid: u16, epoch: u64) {
        self.dirty_epochs.insert((netuid, epoch));
    }

    /// Registers or updates a node; a new node, or one whose class is set anew, starts a fresh
    /// standing in the current epoch.
    pub(super) fn register(&mut self, entry: NodeEntry) {
        let current = self.head().epoch;
        let key = (entry.netuid, entry.hotkey);
        let standing = match self.nodes.get(&key) {
            Some(old) if old.standing.class == entry.class => old.standing,
            _ => Standing::new(entry.class, current),
        };
        self.nodes.insert(key, NodeStanding { entry, standing });
        self.dirty_nodes.insert(key);
        self.dirty_meta = true;
    }

    /// Writes everything changed, in one transaction over both trees.
    pub(super) fn commit(&mut self) -> Result<(), String> {
        let mut node_writes: Vec<(Vec<u8>, Vec<u8>, Option<Kv>)> = Vec::new();
        let mut node_removals: Vec<Kv> = Vec::new();
        for key in &self.dirty_nodes {
            let nk = node_key(key.0, &key.1);
            let sk = standing_key(key.0, &key.1);
            match self.nodes.get(key) {
                Some(ns) => {
                    let node = serde_json::to_vec(&NodeJson::from_entry(&ns.entry, 42))
                        .map_err(|e| e.to_string())?;
                    let st = serde_json::to_vec(&StandingJson {
                        registered_epoch: ns.standing.registered_epoch,
                        progress: ns.standing.progress,
                        penalties: ns.standing.penalties,
                        reputation_ppm: ns.standing.reputation_ppm,
                    })
                    .map_err(|e| e.to_string())?;
                    node_writes.push((nk, node, Some((sk, st))));
                }
                None => node_removals.push((nk, sk)),
            }
        }
        let mut state_writes: Vec<Kv> = Vec::new();
        for key in &self.dirty_epochs {
            if let Some(view) = self.epochs.get(key) {
                let j = serde_json::to_vec(&epoch_json(view)).map_err(|e| e.to_string())?;
                state_writes.push((epoch_key(key.0, key.1), j));
            }
        }
        if self.dirty_meta {
            let head = HeadJson {
                block: self.block,
                hash: hex::encode(self.hash),
                genesis_ms: self.genesis_ms,
                open: self.open.clone(),
            };
            state_writes.push((
                b"head".to_vec(),
                serde_json::to_vec(&head).map_err(|e| e.to_string())?,
            ));
            state_writes.push((
                b"params".to_vec(),
                serde_json::to_vec(&ParamsJson::from(&self.params)).map_err(|e| e.to_string())?,
            ));
        }
        if node_writes.is_empty() && node_removals.is_empty() && state_writes.is_empty() {
            return Ok(());
        }
        let res: Result<(), TransactionError<()>> = (&self.nodes_tree, &self.state_tree)
            .transaction(|(nodes, state)| {
                for (nk, node, st) in &node_writes {
                    nodes.insert(nk.as_slice(), node.as_slice())?;
                    if let Some((sk, sv)) = st {
                        state.insert(sk.as_slice(), sv.as_slice())?;
                    }
                }
                for (nk, sk) in &node_removals {
                    nodes.remove(nk.as_slice())?;
                    state.remove(sk.as_slice())?;
                }
                for (k, v) in &state_writes {
                    state.insert(k.as_slice(), v.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        res.map_err(|e| format!("{e:?}"))?;
        self.dirty_nodes.clear();
        self.dirty_epochs.clear();
        self.dirty_meta = false;
        Ok(())
    }
}
