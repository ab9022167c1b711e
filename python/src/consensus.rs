//! Consensus from Python: each subnet's epoch status, the stream of finished epochs and the
//! equivocation evidence the node records.
//!
//! Nothing here signs or submits by itself: the ConsensusActors do that on their own schedule;
//! `poll_consensus` (in `node.rs`) only makes one act now instead of at its next poll.

use crate::bridge::spawn;
use crate::data::next_counting;
use hermes::proto::consensus::{Change, Removal};
use hermes::proto::Hotkey;
use pyo3::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, Mutex};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ss58(h: &Option<Hotkey>, prefix: u16) -> Option<String> {
    h.as_ref().map(|h| h.to_ss58(prefix))
}

/// One change an epoch made to a node: `(kind, ss58, detail)`.
fn change(c: &Change, prefix: u16) -> (String, String, String) {
    match c {
        Change::Promoted { hotkey, from, to } => (
            "promoted".into(),
            hotkey.to_ss58(prefix),
            format!("{} -> {}", from.as_str(), to.as_str()),
        ),
        Change::Punished {
            hotkey,
            penalties,
            reputation_ppm,
        } => (
            "punished".into(),
            hotkey.to_ss58(prefix),
            format!("penalties {penalties}, reputation {reputation_ppm} ppm"),
        ),
        Change::Removed { hotkey, reason } => (
            "removed".into(),
            hotkey.to_ss58(prefix),
            match reason {
                Removal::MaxPenalties => "maximum penalties".into(),
                Removal::ReputationFloor => "reputation below the floor".into(),
            },
        ),
    }
}

/// A finished epoch of a subnet, as the chain recorded it.
#[pyclass(frozen, get_all, module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct EpochOutcome {
    /// Subnet.
    netuid: u16,
    /// Epoch.
    epoch: u64,
    /// The elected validator's SS58 address (None: the subnet had no validator).
    elected: Option<String>,
    /// The accepted proposal's hash (hex), if one was accepted.
    proposal: Option<String>,
    /// Attestations counted (the proposer's own included).
    attestations: u64,
    /// Validator-set size.
    validators: u64,
    /// `"no_validators"`, `"no_submission"`, `"equivocated"`, `"not_attested"` or
    /// `"in_consensus"`.
    verdict: String,
    /// What it did to nodes: `(kind, ss58, detail)` with kind `"promoted"`, `"punished"` or
    /// `"removed"`.
    changes: Vec<(String, String, String)>,
    /// Whether this node's proposal was the accepted one.
    proposed: bool,
    /// Whether the chain holds this node's attestation.
    attested: bool,
}

impl EpochOutcome {
    pub(crate) fn new(o: &hermes::EpochOutcome, prefix: u16) -> Self {
        EpochOutcome {
            netuid: o.netuid,
            epoch: o.epoch,
            elected: ss58(&o.elected, prefix),
            proposal: o.proposal.as_ref().map(|h| hex(h)),
            attestations: o.attestations,
            validators: o.validators,
            verdict: o.verdict.as_str().into(),
            changes: o.changes.iter().map(|c| change(c, prefix)).collect(),
            proposed: o.proposed,
            attested: o.attested,
        }
    }
}

#[pymethods]
impl EpochOutcome {
    fn __repr__(&self) -> String {
        format!(
            "EpochOutcome(netuid={}, epoch={}, verdict={:?}, {}/{} attested)",
            self.netuid, self.epoch, self.verdict, self.attestations, self.validators
        )
    }
}

/// A node's standing in a subnet as the chain holds it.
#[pyclass(frozen, get_all, module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct Standing {
    /// `"registered"`, `"idle"`, `"included"` or `"validator"`.
    node_class: String,
    /// Epoch in which it registered.
    registered_epoch: u64,
    /// Epochs counted toward the next class.
    progress: u64,
    /// Penalties (penalty model).
    penalties: u32,
    /// Reputation in parts per million (reputation model; 1,000,000 otherwise).
    reputation_ppm: u32,
}

#[pymethods]
impl Standing {
    fn __repr__(&self) -> String {
        format!(
            "Standing(node_class={:?}, penalties={}, reputation_ppm={})",
            self.node_class, self.penalties, self.reputation_ppm
        )
    }
}

/// One recent epoch as this node lived it. Times are seconds before the status was read (the
/// runtime's instants are monotonic and mean nothing outside the process).
#[pyclass(frozen, get_all, module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct EpochTrace {
    /// Epoch.
    epoch: u64,
    /// How long ago this node, elected, signed its proposal.
    proposed_ago: Option<f64>,
    /// How long ago this node first held the elected validator's proposal.
    proposal_ago: Option<f64>,
    /// How long ago this node's view of the round first counted ≥ 66 % of the validators.
    finalized_ago: Option<f64>,
    /// Consensus records published on the subnet's gossip topic: (messages, bytes).
    sent: (u64, u64),
    /// Consensus records received from it: (messages, bytes).
    received: (u64, u64),
}

impl EpochTrace {
    fn new(t: &hermes_actors::consensus::trace::EpochTrace, now: std::time::Instant) -> Self {
        let ago = |i: Option<std::time::Instant>| i.map(|i| now.duration_since(i).as_secs_f64());
        EpochTrace {
            epoch: t.epoch,
            proposed_ago: ago(t.proposed_at),
            proposal_ago: ago(t.proposal_at),
            finalized_ago: ago(t.finalized_at),
            sent: (t.sent.messages, t.sent.bytes),
            received: (t.received.messages, t.received.bytes),
        }
    }
}

#[pymethods]
impl EpochTrace {
    fn __repr__(&self) -> String {
        format!(
            "EpochTrace(epoch={}, sent={:?}, received={:?})",
            self.epoch, self.sent, self.received
        )
    }
}

/// What a node knows of a subnet's current epoch.
#[pyclass(frozen, get_all, module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct ConsensusStatus {
    /// Subnet.
    netuid: u16,
    /// The chain's latest block, once read.
    block: Option<u64>,
    /// The chain's current epoch, once read.
    epoch: Option<u64>,
    /// The current epoch's elected validator (SS58).
    elected: Option<String>,
    /// Attestations so far and the validator-set size of the current epoch.
    attestations: (u64, u64),
    /// Whether this node is a validator in the current epoch.
    validator: bool,
    /// This node's class, penalties and reputation as the chain holds them, read once per
    /// epoch; None while unread, when not registered, or when the chain keeps no standings.
    standing: Option<Standing>,
    /// The last finished epoch and its verdict.
    last: Option<(u64, String)>,
    /// The last finished epoch's outcome in full.
    last_outcome: Option<EpochOutcome>,
    /// The latest past epoch whose outcome has been read.
    followed: Option<u64>,
    /// This node's last proposal: epoch and statement hash (hex).
    proposed: Option<(u64, String)>,
    /// This node's last attestation: epoch and the proposal hash it named (hex).
    attested: Option<(u64, String)>,
    /// The last chain error or refusal seen.
    last_error: Option<String>,
    /// Bad consensus records heard in gossip since the node started, per reason (every
    /// reason is present, most at 0).
    bad_records: HashMap<String, u64>,
    /// Equivocations of this subnet's elected validators recorded as evidence.
    evidence: u64,
    /// The last few epochs as this node lived them, oldest first.
    traces: Vec<EpochTrace>,
}

impl ConsensusStatus {
    pub(crate) fn new(s: &hermes::ConsensusStatus, prefix: u16) -> Self {
        ConsensusStatus {
            netuid: s.netuid,
            block: s.block,
            epoch: s.epoch,
            elected: ss58(&s.elected, prefix),
            attestations: s.attestations,
            validator: s.validator,
            standing: s.standing.as_ref().map(|st| Standing {
                node_class: st.class.as_str().into(),
                registered_epoch: st.registered_epoch,
                progress: st.progress,
                penalties: st.penalties,
                reputation_ppm: st.reputation_ppm,
            }),
            last: s.last.map(|(e, v)| (e, v.as_str().to_string())),
            last_outcome: s
                .last_outcome
                .as_ref()
                .map(|o| EpochOutcome::new(o, prefix)),
            followed: s.followed,
            proposed: s.duties.proposed.map(|(e, h)| (e, hex(&h))),
            attested: s.duties.attested.map(|(e, h)| (e, hex(&h))),
            last_error: s.last_error.clone(),
            bad_records: s
                .bad_records
                .iter()
                .map(|(r, n)| (r.as_str().to_string(), n))
                .collect(),
            evidence: s.evidence,
            traces: {
                let now = std::time::Instant::now();
                s.traces.iter().map(|t| EpochTrace::new(t, now)).collect()
            },
        }
    }
}

#[pymethods]
impl ConsensusStatus {
    fn __repr__(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(|| "None".to_string(), |v| v.to_string());
        format!(
            "ConsensusStatus(netuid={}, block={}, epoch={}, validator={})",
            self.netuid,
            opt(self.block),
            opt(self.epoch),
            if self.validator { "True" } else { "False" }
        )
    }
}

/// Two different proposals an elected validator signed for one epoch, recorded as evidence.
#[pyclass(frozen, get_all, module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct Equivocation {
    /// Subnet.
    netuid: u16,
    /// Epoch.
    epoch: u64,
    /// The elected validator that signed both (SS58).
    proposer: String,
    /// The proposal known first: the signed record's bytes, and its hash (hex).
    first: (Vec<u8>, String),
    /// The different one heard next, in the same form.
    second: (Vec<u8>, String),
    /// SS58 of the gossip author that published the second.
    heard_from: String,
}

impl Equivocation {
    fn new(e: &hermes::Equivocation, prefix: u16) -> Self {
        Equivocation {
            netuid: e.netuid,
            epoch: e.epoch,
            proposer: e.proposer.to_ss58(prefix),
            first: (e.first.encode(), hex(&e.first.hash())),
            second: (e.second.encode(), hex(&e.second.hash())),
            heard_from: e.from.clone(),
        }
    }
}

#[pymethods]
impl Equivocation {
    fn __repr__(&self) -> String {
        format!(
            "Equivocation(netuid={}, epoch={}, proposer={:?})",
            self.netuid, self.epoch, self.proposer
        )
    }
}

/// A bounded broadcast channel read from Python one value at a time; what a consumer that
/// fell behind missed is counted in `skipped`.
struct Feed<T> {
    rx: Arc<Mutex<broadcast::Receiver<T>>>,
    skipped: Arc<AtomicU64>,
    prefix: u16,
}

impl<T: Clone + Send + 'static> Feed<T> {
    fn new(rx: broadcast::Receiver<T>, prefix: u16) -> Self {
        Feed {
            rx: Arc::new(Mutex::new(rx)),
            skipped: Arc::default(),
            prefix,
        }
    }

    /// An awaitable of the next value as `convert` makes it; `None` once the node has shut
    /// down.
    fn recv<'py, P>(
        &self,
        py: Python<'py>,
        convert: fn(&T, u16) -> P,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        P: for<'a> IntoPyObject<'a> + Send + 'static,
    {
        let rx = self.rx.clone();
        let skipped = self.skipped.clone();
        let prefix = self.prefix;
        spawn(py, async move {
            let mut rx = rx.lock().await;
            Ok(next_counting(&mut rx, &skipped)
                .await
                .map(|v| convert(&v, prefix)))
        })
    }

    fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

/// Finished epochs of the node's subnets. The channel is bounded
/// (`consensus.events_capacity`): a consumer that falls behind skips the oldest outcomes,
/// counted in `skipped`.
#[pyclass(frozen, module = "hermes_p2p._native")]
pub(crate) struct ConsensusEvents(Feed<hermes::EpochOutcome>);

impl ConsensusEvents {
    pub(crate) fn new(rx: broadcast::Receiver<hermes::EpochOutcome>, prefix: u16) -> Self {
        ConsensusEvents(Feed::new(rx, prefix))
    }
}

#[pymethods]
impl ConsensusEvents {
    /// The next finished epoch; `None` once the node has shut down.
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.0.recv(py, EpochOutcome::new)
    }

    /// Outcomes skipped because this consumer fell behind.
    #[getter]
    fn skipped(&self) -> u64 {
        self.0.skipped()
    }
}

/// Equivocation evidence as the node records it, bounded like [`ConsensusEvents`].
#[pyclass(frozen, module = "hermes_p2p._native")]
pub(crate) struct EvidenceEvents(Feed<hermes::Equivocation>);

impl EvidenceEvents {
    pub(crate) fn new(rx: broadcast::Receiver<hermes::Equivocation>, prefix: u16) -> Self {
        EvidenceEvents(Feed::new(rx, prefix))
    }
}

#[pymethods]
impl EvidenceEvents {
    /// The next equivocation recorded; `None` once the node has shut down.
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.0.recv(py, Equivocation::new)
    }

    /// Records skipped because this consumer fell behind.
    #[getter]
    fn skipped(&self) -> u64 {
        self.0.skipped()
    }
}
