//! Node classes, penalties and reputation: what an epoch's [`Outcome`] does to each node.
//!
//! At the end of epoch `e`, [`apply_epoch`] updates every node of the subnet, in this order:
//!
//! 1. **In consensus** (the data counts): each node that was Included or above when the epoch
//!    opened is *included* if the data scores it, *missing* otherwise.
//!    - Penalty model: missing → penalties + 1; included → penalties − 1 (not below 0).
//!    - Reputation model: missing → reputation × `decrease`; included → reputation × `increase`
//!      (capped at 1).
//!    - A Validator the data includes but that did not attest it is punished once more (+1
//!      penalty, or reputation × `decrease`) when the attestations reached the 7/8 supermajority
//!      ([`super::round::SUPERMAJORITY_THRESHOLD`]): with so many validators attesting, its silence
//!      is its own fault (offline, or it disagreed with what nearly everyone accepted). Below the
//!      supermajority nobody is punished for not attesting. Being included first (−1 penalty, or
//!      × `increase`) and then punished is the chain's order, so a non-attester with penalties
//!      keeps their number, and one without gets one.
//!    - An Included node included with full standing (no penalties / full reputation) counts one
//!      epoch toward Validator and is promoted after `included_epochs` of them; a missing one
//!      starts over.
//!    - Each Idle node counts one in-consensus epoch and becomes Included after `idle_epochs`.
//! 2. **Not in consensus** (no submission, equivocation, < 66 % attested): the data does not count
//!    and nobody progresses; the elected validator gets a penalty (or its reputation decreases).
//! 3. Registered nodes become Idle once `queue_epochs` full epochs have passed since the epoch of
//!    their registration, whatever the consensus.
//! 4. A node at `max_penalties`, or below the reputation floor, is removed.

use super::round::{Outcome, Verdict};
use crate::chain::NodeClass;
use crate::hotkey::Hotkey;
use std::collections::{BTreeMap, BTreeSet};

/// Full reputation, in parts per million.
pub const FULL_REPUTATION: u32 = 1_000_000;

/// How nodes that fail are punished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandingModel {
    /// The seed's model: +1 penalty when missing, −1 when included, removed at the maximum.
    Penalty {
        /// Penalties at which a node is removed (≥ 1).
        max_penalties: u32,
    },
    /// The chain's current model: multiplicative reputation, removed below a floor.
    Reputation {
        /// Factor on a miss (and on a Validator's missing attestation), in ppm (e.g. 900 000 =
        /// × 0.9).
        decrease_ppm: u32,
        /// Factor on an inclusion, in ppm (e.g. 1 050 000 = × 1.05), capped at full reputation.
        increase_ppm: u32,
        /// Nodes whose reputation falls below this (ppm) are removed.
        floor_ppm: u32,
    },
}

impl StandingModel {
    /// `penalty` or `reputation`.
    pub fn name(&self) -> &'static str {
        match self {
            StandingModel::Penalty { .. } => "penalty",
            StandingModel::Reputation { .. } => "reputation",
        }
    }

    /// The penalty model with its usual maximum.
    pub const DEFAULT_PENALTY: StandingModel = StandingModel::Penalty { max_penalties: 3 };
    /// The reputation model with usual factors: × 0.8 on a miss, × 1.05 when included, removal
    /// below 0.5.
    pub const DEFAULT_REPUTATION: StandingModel = StandingModel::Reputation {
        decrease_ppm: 800_000,
        increase_ppm: 1_050_000,
        floor_ppm: 500_000,
    };
}

/// The rule set of a subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassRules {
    /// Full epochs a Registered node waits before it is Idle.
    pub queue_epochs: u64,
    /// In-consensus epochs an Idle node waits before it is Included.
    pub idle_epochs: u64,
    /// Epochs an Included node must be in the data with full standing before it is Validator.
    pub included_epochs: u64,
    /// Penalties or reputation.
    pub model: StandingModel,
}

impl Default for ClassRules {
    /// Short queues, so that a local network climbs in a few epochs; the penalty model.
    fn default() -> Self {
        ClassRules {
            queue_epochs: 1,
            idle_epochs: 1,
            included_epochs: 2,
            model: StandingModel::DEFAULT_PENALTY,
        }
    }
}

/// A node's standing in its subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Class.
    pub class: NodeClass,
    /// Epoch in which it registered.
    pub registered_epoch: u64,
    /// Epochs counted toward the next class.
    pub progress: u64,
    /// Penalties (penalty model).
    pub penalties: u32,
    /// Reputation in ppm (reputation model); [`FULL_REPUTATION`] otherwise.
    pub reputation_ppm: u32,
}

impl Standing {
    /// A node registering in `epoch` with `class`.
    pub fn new(class: NodeClass, epoch: u64) -> Self {
        Standing {
            class,
            registered_epoch: epoch,
            progress: 0,
            penalties: 0,
            reputation_ppm: FULL_REPUTATION,
        }
    }

    fn full(&self) -> bool {
        self.penalties == 0 && self.reputation_ppm >= FULL_REPUTATION
    }
}

/// Why a node was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// It reached the maximum penalties.
    MaxPenalties,
    /// Its reputation fell below the floor.
    ReputationFloor,
}

/// What an epoch did to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Moved up a class.
    Promoted {
        /// The node.
        hotkey: Hotkey,
        /// Its class before.
        from: NodeClass,
        /// Its class now.
        to: NodeClass,
    },
    /// Got a penalty or lost reputation.
    Punished {
        /// The node.
        hotkey: Hotkey,
        /// Penalties now.
        penalties: u32,
        /// Reputation now (ppm).
        reputation_ppm: u32,
    },
    /// Removed from the subnet.
    Removed {
        /// The node.
        hotkey: Hotkey,
        /// Why.
        reason: Removal,
    },
}

fn scale(rep: u32, factor_ppm: u32) -> u32 {
    let v = u64::from(rep) * u64::from(factor_ppm) / u64::from(FULL_REPUTATION);
    u32::try_from(v.min(u64::from(FULL_REPUTATION))).unwrap_or(FULL_REPUTATION)
}

/// Punishes one node under `model`; returns the removal it earned, if any.
fn punish(model: &StandingModel, s: &mut Standing) -> Option<Removal> {
    match *model {
        StandingModel::Penalty { max_penalties } => {
            s.penalties = s.penalties.saturating_add(1);
            (s.penalties >= max_penalties).then_some(Removal::MaxPenalties)
        }
        StandingModel::Reputation {
            decrease_ppm,
            floor_ppm,
            ..
        } => {
            s.reputation_ppm = scale(s.reputation_ppm, decrease_ppm);
            (s.reputation_ppm < floor_ppm).then_some(Removal::ReputationFloor)
        }
    }
}

fn reward(model: &StandingModel, s: &mut Standing) {
    match *model {
        StandingModel::Penalty { .. } => s.penalties = s.penalties.saturating_sub(1),
        StandingModel::Reputation { increase_ppm, .. } => {
            s.reputation_ppm = scale(s.reputation_ppm, increase_ppm)
        }
    }
}

/// Applies the end of `outcome.epoch` to `nodes` (one subnet's nodes by hotkey), given the nodes
/// that were Included or above when the epoch opened (`eligible`). Removed nodes leave the map.
/// Returns every change, in hotkey order within each step.
pub fn apply_epoch(
    rules: &ClassRules,
    outcome: &Outcome,
    eligible: &BTreeSet<Hotkey>,
    nodes: &mut BTreeMap<Hotkey, Standing>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    let mut removed = Vec::new();
    let data = match (&outcome.verdict, &outcome.proposal) {
        (Verdict::InConsensus, Some(p)) => Some(&p.proposal),
        _ => None,
    };
    let mut punished = |hotkey: Hotkey, s: &mut Standing, changes: &mut Vec<Change>| {
        let removal = punish(&rules.model, s);
        changes.push(Change::Punished {
            hotkey,
            penalties: s.penalties,
            reputation_ppm: s.reputation_ppm,
        });
        if let Some(reason) = removal {
            removed.push((hotkey, reason));
        }
    };
    match data {
        Some(data) => {
            for (hotkey, s) in nodes.iter_mut() {
                if eligible.contains(hotkey) && s.class >= NodeClass::Included {
                    if data.score_of(hotkey).is_some() {
                        reward(&rules.model, s);
                        if s.class == NodeClass::Included && s.full() {
                            s.progress += 1;
                        }
                        if s.class == NodeClass::Validator
                            && outcome.tally.supermajority
                            && outcome.non_attesters.contains(hotkey)
                        {
                            punished(*hotkey, s, &mut changes);
                        }
                    } else {
                        s.progress = 0;
                        punished(*hotkey, s, &mut changes);
                    }
                    if s.class == NodeClass::Included && s.progress >= rules.included_epochs {
                        changes.push(promote(*hotkey, s, NodeClass::Validator));
                    }
                } else if s.class == NodeClass::Idle {
                    s.progress += 1;
                    if s.progress >= rules.idle_epochs {
                        changes.push(promote(*hotkey, s, NodeClass::Included));
                    }
                }
            }
        }
        None => {
            if let Some(v) = outcome.elected {
                if let Some(s) = nodes.get_mut(&v) {
                    punished(v, s, &mut changes);
                }
            }
        }
    }
    for (hotkey, s) in nodes.iter_mut() {
        if s.class == NodeClass::Registered
            && outcome.epoch >= s.registered_epoch.saturating_add(rules.queue_epochs)
        {
            changes.push(promote(*hotkey, s, NodeClass::Idle));
        }
    }
    for (hotkey, reason) in removed {
        if nodes.remove(&hotkey).is_some() {
            changes.push(Change::Removed { hotkey, reason });
        }
    }
    changes
}

fn promote(hotkey: Hotkey, s: &mut Standing, to: NodeClass) -> Change {
    let from = s.class;
    s.class = to;
    s.progress = 0;
    Change::Promoted { hotkey, from, to }
}

#[cfg(test)]
mod tests {
    use super::super::record::{Proposal, Score, SignedProposal};
    use super::super::round::Tally;
    use super::*;

    fn hk(b: u8) -> Hotkey {
        Hotkey([b; 32])
    }

    fn outcome(epoch: u64, verdict: Verdict, scored: &[u8], elected: u8) -> Outcome {
        let proposal = Proposal {
            epoch,
            netuid: 1,
            proposer: hk(elected),
            scores: scored
                .iter()
                .map(|b| Score {
                    hotkey: hk(*b),
                    score: 1,
                })
                .collect(),
            args: vec![],
        };
        Outcome {
            netuid: 1,
            epoch,
            elected: Some(hk(elected)),
            verdict,
            tally: Tally::new(3, 3),
            proposal: Some(SignedProposal {
                proposal,
                signature: [0; 64],
            }),
            non_attesters: BTreeSet::new(),
        }
    }

    fn eligible(nodes: &BTreeMap<Hotkey, Standing>) -> BTreeSet<Hotkey> {
        nodes
            .iter()
            .filter(|(_, s)| s.class >= NodeClass::Included)
            .map(|(h, _)| *h)
            .collect()
    }

    #[test]
    fn a_node_climbs_every_class() {
        let rules = ClassRules {
            queue_epochs: 2,
            idle_epochs: 2,
            included_epochs: 2,
            model: StandingModel::DEFAULT_PENALTY,
        };
        let mut nodes = BTreeMap::new();
        nodes.insert(hk(1), Standing::new(NodeClass::Validator, 0));
        nodes.insert(hk(9), Standing::new(NodeClass::Registered, 3));
        let mut classes = vec![];
        for e in 3..12 {
            let el = eligible(&nodes);
            let scored: Vec<u8> = el.iter().map(|h| h.0[0]).collect();
            apply_epoch(
                &rules,
                &outcome(e, Verdict::InConsensus, &scored, 1),
                &el,
                &mut nodes,
            );
            classes.push(nodes[&hk(9)].class);
        }
        use NodeClass::*;
        // Registered in 3: idle after epochs 4 and 5 have passed; two in-consensus epochs as Idle;
        // two included epochs.
        assert_eq!(
            classes,
            [
                Registered, Registered, Idle, Idle, Included, Included, Validator, Validator,
                Validator
            ]
        );
    }

    #[test]
    fn idle_nodes_wait_for_consensus() {
        let rules = ClassRules::default();
        let mut nodes = BTreeMap::new();
        nodes.insert(hk(1), Standing::new(NodeClass::Validator, 0));
        nodes.insert(hk(2), Standing::new(NodeClass::Idle, 0));
        for e in 0..5 {
            apply_epoch(
                &rules,
                &outcome(e, Verdict::NotAttested, &[1], 1),
                &eligible(&nodes),
                &mut nodes,
            );
        }
        assert_eq!(nodes[&hk(2)].class, NodeClass::Idle);
    }

    #[test]
    fn penalty_model_punishes_missing_nodes_and_failed_validators() {
        let rules = ClassRules {
            model: StandingModel::Penalty { max_penalties: 3 },
            ..ClassRules::default()
        };
        let mut nodes = BTreeMap::new();
        nodes.insert(hk(1), Standing::new(NodeClass::Validator, 0));
        nodes.insert(hk(2), Standing::new(NodeClass::Included, 0));
        nodes.insert(hk(3), Standing::new(NodeClass::Validator, 0));
        // Missing twice, included once: 1, 2, 1.
        for (e, scored) in [(0, &[1, 3][..]), (1, &[1, 3]), (2, &[1, 2, 3])] {
            let el = eligible(&nodes);
            apply_epoch(
                &rules,
                &outcome(e, Verdict::InConsensus, scored, 1),
                &el,
                &mut nodes,
            );
        }
        assert_eq!(nodes[&hk(2)].penalties, 1);
        assert_eq!(nodes[&hk(2)].class, NodeClass::Included);
        // Two more misses: removed at 3.
        for e in 3..5 {
            let el = eligible(&nodes);
            let ch = apply_epoch(
                &rules,
                &outcome(e, Verdict::InConsensus, &[1, 3], 1),
                &el,
                &mut nodes,
            );
            if e == 4 {
                assert!(ch.contains(&Change::Removed {
                    hotkey: hk(2),
                    reason: Removal::MaxPenalties
                }));
            }
        }
        assert!(!nodes.contains_key(&hk(2)));
        // A failed epoch punishes only the elected validator.
        for verdict in [
            Verdict::NoSubmission,
            Verdict::Equivocated,
            Verdict::NotAttested,
        ] {
            let before = nodes[&hk(3)];
            let el = eligible(&nodes);
            apply_epoch(&rules, &outcome(9, verdict, &[], 1), &el, &mut nodes);
            assert_eq!(nodes[&hk(3)], before);
            if !nodes.contains_key(&hk(1)) {
                break;
            }
        }
        assert!(!nodes.contains_key(&hk(1)), "validator 1 failed 3 times");
    }

    #[test]
    fn reputation_model_is_multiplicative_with_a_floor() {
        let rules = ClassRules {
            model: StandingModel::Reputation {
                decrease_ppm: 800_000,
                increase_ppm: 1_100_000,
                floor_ppm: 500_000,
            },
            ..ClassRules::default()
        };
        let mut nodes = BTreeMap::new();
        nodes.insert(hk(1), Standing::new(NodeClass::Validator, 0));
        nodes.insert(hk(2), Standing::new(NodeClass::Included, 0));
        let run = |nodes: &mut BTreeMap<Hotkey, Standing>, e, scored: &[u8]| {
            let el = eligible(nodes);
            apply_epoch(
                &rules,
                &outcome(e, Verdict::InConsensus, scored, 1),
                &el,
                nodes,
            )
        };
        run(&mut nodes, 0, &[1]);
        assert_eq!(nodes[&hk(2)].reputation_ppm, 800_000);
        run(&mut nodes, 1, &[1, 2]);
        assert_eq!(nodes[&hk(2)].reputation_ppm, 880_000);
        // Not at full reputation: included epochs do not count toward Validator yet.
        assert_eq!(nodes[&hk(2)].progress, 0);
        run(&mut nodes, 2, &[1, 2]);
        assert_eq!(nodes[&hk(2)].reputation_ppm, 968_000);
        run(&mut nodes, 3, &[1, 2]);
        assert_eq!(nodes[&hk(2)].reputation_ppm, FULL_REPUTATION);
        assert_eq!(nodes[&hk(2)].progress, 1);
        // 0.8^4 = 0.41 < 0.5: removed on the 4th miss in a row.
        for e in 4..7 {
            run(&mut nodes, e, &[1]);
            assert!(nodes.contains_key(&hk(2)));
        }
        let ch = run(&mut nodes, 7, &[1]);
        assert!(ch.contains(&Change::Removed {
            hotkey: hk(2),
            reason: Removal::ReputationFloor
        }));
    }

    #[test]
    fn nodes_not_eligible_at_the_epoch_start_are_not_judged() {
        let rules = ClassRules::default();
        let mut nodes = BTreeMap::new();
        nodes.insert(hk(1), Standing::new(NodeClass::Validator, 0));
        // Set to Included after the epoch opened: not in `eligible`, so not penalized as missing.
        nodes.insert(hk(2), Standing::new(NodeClass::Included, 0));
        let el: BTreeSet<Hotkey> = [hk(1)].into();
        apply_epoch(
            &rules,
            &outcome(0, Verdict::InConsensus, &[1], 1),
            &el,
            &mut nodes,
        );
        assert_eq!(nodes[&hk(2)].penalties, 0);
    }

    /// Validators 1 (the proposer), 2 and 3, all in the data; 2 does not attest. With 7 of 8
    /// attesting it is punished after being rewarded for its inclusion; with 6 of 8 (in
    /// consensus, below the supermajority) it is not. Included node 4 is never judged on
    /// attestations.
    #[test]
    fn a_validator_that_does_not_attest_is_punished_under_a_supermajority() {
        let silent = |e, attested| {
            let mut o = outcome(e, Verdict::InConsensus, &[1, 2, 3, 4], 1);
            o.tally = Tally::new(attested, 8);
            o.non_attesters = [hk(2)].into();
            o
        };
        let start = || {
            let mut nodes = BTreeMap::new();
            for b in 1..=3 {
                nodes.insert(hk(b), Standing::new(NodeClass::Validator, 0));
            }
            nodes.insert(hk(4), Standing::new(NodeClass::Included, 0));
            nodes
        };
        // Penalty model: one penalty when it had none; one taken for the inclusion and one given
        // back when it had some, so its count stays.
        let rules = ClassRules {
            model: StandingModel::Penalty { max_penalties: 3 },
            included_epochs: 10,
            ..ClassRules::default()
        };
        let mut nodes = start();
        let run = |nodes: &mut BTreeMap<Hotkey, Standing>, o: &Outcome| {
            let el = eligible(nodes);
            apply_epoch(&rules, o, &el, nodes)
        };
        let ch = run(&mut nodes, &silent(1, 7));
        assert_eq!(
            ch,
            vec![Change::Punished {
                hotkey: hk(2),
                penalties: 1,
                reputation_ppm: FULL_REPUTATION
            }]
        );
        assert_eq!(nodes[&hk(2)].penalties, 1);
        run(&mut nodes, &silent(2, 7));
        assert_eq!(nodes[&hk(2)].penalties, 1);
        // Below the supermajority: rewarded for the inclusion only.
        assert!(run(&mut nodes, &silent(3, 6)).is_empty());
        assert_eq!(nodes[&hk(2)].penalties, 0);
        for b in [1, 3, 4] {
            assert_eq!(nodes[&hk(b)].penalties, 0);
        }

        // Reputation model: × 1.1 for the inclusion (capped), then × 0.8; below 0.5 on the fifth
        // silent epoch in a row.
        let rules = ClassRules {
            model: StandingModel::Reputation {
                decrease_ppm: 800_000,
                increase_ppm: 1_100_000,
                floor_ppm: 500_000,
            },
            included_epochs: 10,
            ..ClassRules::default()
        };
        let mut nodes = start();
        let run = |nodes: &mut BTreeMap<Hotkey, Standing>, o: &Outcome| {
            let el = eligible(nodes);
            apply_epoch(&rules, o, &el, nodes)
        };
        assert!(run(&mut nodes, &silent(1, 6)).is_empty());
        assert_eq!(nodes[&hk(2)].reputation_ppm, FULL_REPUTATION);
        let expected = [800_000, 704_000, 619_520, 545_177];
        for (e, rep) in (2..).zip(expected) {
            run(&mut nodes, &silent(e, 7));
            assert_eq!(nodes[&hk(2)].reputation_ppm, rep, "epoch {e}");
        }
        let ch = run(&mut nodes, &silent(6, 7));
        assert!(ch.contains(&Change::Removed {
            hotkey: hk(2),
            reason: Removal::ReputationFloor
        }));
        assert!(!nodes.contains_key(&hk(2)));
        for b in [1, 3, 4] {
            assert_eq!(nodes[&hk(b)].reputation_ppm, FULL_REPUTATION);
        }
    }
}
