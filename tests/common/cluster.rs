//! A consensus test cluster: real nodes over loopback, each registered in subnet 3 of one dev
//! chain in a temp dir whose epochs the test steps by hand, with a test hook per node. Included
//! by `#[path]` from the consensus test files only.
#![allow(dead_code, unreachable_pub, missing_docs)]

use crate::common::{addr, eventually, DevChainDir, NodeDir};
use hermes::config::HumanDuration;
use hermes::proto::chain::{NodeClass, NodeEntry};
use hermes::proto::consensus::{ClassRules, Proposal, Score};
use hermes::proto::Hotkey;
use hermes::{ConsensusHook, EpochOutcome, EqualScores, RuntimeHandle};
use hermes_actors::chain::{DevChain, DevParams, EpochView, NodeStanding};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

pub const NET: u16 = 3;
pub const BLOCKS_PER_EPOCH: u64 = 2;
pub const WAIT: Duration = Duration::from_secs(60);

/// The default hook with two switches: while `agree` is off it disagrees with every proposal;
/// the nodes in `omit` are left out of the data it produces, and a proposal is accepted only
/// when it scores exactly the eligible nodes minus those.
#[derive(Debug)]
pub struct Hook {
    pub agree: AtomicBool,
    pub omit: Mutex<BTreeSet<Hotkey>>,
}

impl Hook {
    pub fn new() -> Arc<Self> {
        Arc::new(Hook {
            agree: AtomicBool::new(true),
            omit: Mutex::new(BTreeSet::new()),
        })
    }

    pub fn set_agree(&self, on: bool) {
        self.agree.store(on, Ordering::SeqCst);
    }

    pub fn omit(&self, h: Hotkey) {
        self.omit.lock().unwrap().insert(h);
    }

    fn expected(&self, eligible: &BTreeSet<Hotkey>) -> BTreeSet<Hotkey> {
        let omit = self.omit.lock().unwrap();
        eligible.difference(&omit).copied().collect()
    }
}

impl ConsensusHook for Hook {
    fn produce(&self, n: u16, e: u64, eligible: &BTreeSet<Hotkey>) -> (Vec<Score>, Vec<u8>) {
        EqualScores.produce(n, e, &self.expected(eligible))
    }
    fn check(&self, p: &Proposal, eligible: &BTreeSet<Hotkey>) -> bool {
        self.agree.load(Ordering::SeqCst) && EqualScores.check(p, &self.expected(eligible))
    }
}

pub fn hotkey(n: &NodeDir) -> Hotkey {
    Hotkey::from_ss58(&n.ss58).unwrap().0
}

/// What a cluster is made of.
pub struct Spec {
    /// The class each node registers with, in node order.
    pub classes: Vec<NodeClass>,
    pub rules: ClassRules,
    /// An elected node only gossips its proposal (needs the `fault-injection` feature).
    pub withhold: bool,
    /// How often the nodes re-read the registry.
    pub registry_poll: Duration,
}

impl Default for Spec {
    /// Four validators, the default rules; nobody registers while the test runs, so the registry
    /// need not be re-read often.
    fn default() -> Self {
        Spec {
            classes: vec![NodeClass::Validator; 4],
            rules: ClassRules::default(),
            withhold: false,
            registry_poll: Duration::from_secs(1),
        }
    }
}

pub struct Cluster {
    pub chain: DevChainDir,
    pub dirs: Vec<NodeDir>,
    pub nodes: Vec<RuntimeHandle>,
    pub hooks: Vec<Arc<Hook>>,
    pub events: Vec<broadcast::Receiver<EpochOutcome>>,
    pub registry_poll: Duration,
}

pub fn config(n: &NodeDir, chain: &DevChainDir, registry_poll: Duration) -> hermes::Config {
    let mut c = n.cluster_config(chain, vec![NET]);
    c.chain.poll_interval = HumanDuration(registry_poll);
    c.consensus.poll_interval = HumanDuration(Duration::from_millis(100));
    c
}

/// Starts a node; with `withhold`, when elected it only gossips its proposal (test hook).
pub async fn start_with(cfg: hermes::Config, hook: Arc<Hook>, withhold: bool) -> RuntimeHandle {
    let b = hermes::Runtime::builder(cfg).with_consensus_hook(hook);
    #[cfg(feature = "fault-injection")]
    let b = if withhold {
        b.with_consensus_withholding()
    } else {
        b
    };
    assert!(cfg!(feature = "fault-injection") || !withhold);
    b.start().await.unwrap()
}

impl Cluster {
    /// Four validators of subnet 3, on a chain stepped by hand, still in epoch 0 (no round yet).
    pub async fn new() -> Self {
        Self::build(Spec::default()).await
    }

    /// The nodes of `spec`, registered with stake 1 000 in subnet 3 while the chain is in epoch
    /// 0, all bootstrapped to node 0.
    pub async fn build(spec: Spec) -> Self {
        let chain = DevChainDir::new();
        let dev = DevChain::new(chain.path());
        dev.init(DevParams {
            blocks_per_epoch: BLOCKS_PER_EPOCH,
            block_time: None,
            rules: spec.rules,
            ..DevParams::default()
        })
        .unwrap();
        let dirs: Vec<NodeDir> = spec.classes.iter().map(|_| NodeDir::new()).collect();
        for (d, class) in dirs.iter().zip(&spec.classes) {
            dev.register_sync(NodeEntry {
                netuid: NET,
                hotkey: hotkey(d),
                peer_id: d.peer_id().to_base58(),
                stake: 1_000,
                class: *class,
            })
            .unwrap();
        }
        let hooks: Vec<Arc<Hook>> = dirs.iter().map(|_| Hook::new()).collect();
        let mut nodes: Vec<RuntimeHandle> = Vec::new();
        for (i, d) in dirs.iter().enumerate() {
            let cfg = config(d, &chain, spec.registry_poll);
            let cfg = if i == 0 {
                cfg
            } else {
                cfg.with_bootstrap(vec![addr(&nodes[0]).await])
            };
            nodes.push(start_with(cfg, hooks[i].clone(), spec.withhold).await);
        }
        let events = nodes.iter().map(|n| n.consensus_events()).collect();
        Cluster {
            chain,
            dirs,
            nodes,
            hooks,
            events,
            registry_poll: spec.registry_poll,
        }
    }

    /// Node `i`'s config.
    pub fn config(&self, i: usize) -> hermes::Config {
        config(&self.dirs[i], &self.chain, self.registry_poll)
    }

    /// Starts node `i` again from its directory.
    pub async fn start(&self, i: usize) -> RuntimeHandle {
        start_with(self.config(i), self.hooks[i].clone(), false).await
    }

    pub fn hotkey(&self, i: usize) -> Hotkey {
        hotkey(&self.dirs[i])
    }

    pub fn dev(&self) -> DevChain {
        DevChain::new(self.chain.path())
    }

    /// Steps into the next epoch and returns its number.
    pub fn next_epoch(&self) -> u64 {
        self.dev().step(BLOCKS_PER_EPOCH).unwrap().epoch
    }

    pub fn current(&self) -> EpochView {
        self.dev().epoch_sync(NET, None).unwrap().unwrap()
    }

    /// Node `i`'s registration and standing on the chain; `None` once it is removed.
    pub fn standing(&self, i: usize) -> Option<NodeStanding> {
        let me = self.hotkey(i);
        self.dev()
            .standings_sync(NET)
            .unwrap()
            .into_iter()
            .find(|n| n.entry.hotkey == me)
    }

    /// The index of the node elected in the current epoch.
    pub fn elected(&self) -> usize {
        let elected = self.current().round.elected().expect("someone is elected");
        self.dirs
            .iter()
            .position(|d| hotkey(d) == elected)
            .expect("the elected validator is one of the nodes")
    }

    /// Waits until the chain counts `n` attestations (the proposer's own included) in the
    /// current epoch.
    pub async fn attested(&self, n: u64) -> bool {
        eventually(WAIT, || async {
            self.current().round.tally().attestations >= n
        })
        .await
    }

    /// Every node's next outcome, which must be of `epoch`.
    pub async fn outcomes(&mut self, epoch: u64) -> Vec<EpochOutcome> {
        let mut out = Vec::new();
        for (i, rx) in self.events.iter_mut().enumerate() {
            let o = tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("node {i} reported no outcome of epoch {epoch}"))
                .unwrap();
            assert_eq!(o.epoch, epoch, "node {i}: {o:?}");
            assert_eq!(o.netuid, NET);
            out.push(o);
        }
        out
    }

    pub async fn shutdown(&mut self) {
        for n in self.nodes.drain(..) {
            n.shutdown().await.unwrap();
        }
    }
}

/// Attesting validators per the chain's records: each at most once.
pub fn attesters(view: &EpochView) -> Vec<Hotkey> {
    view.round
        .attestations()
        .map(|a| a.attestation.attester)
        .collect()
}
