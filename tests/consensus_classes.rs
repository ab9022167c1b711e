//! Node classes and penalties as real nodes live them: five runtimes on one dev chain stepped by
//! hand, with short class queues. A newcomer climbs Registered → Idle → Included → Validator, and
//! a node the elected validators keep leaving out of the data is penalized until the chain
//! removes it, after which the other nodes no longer admit it; a validator silent while seven of
//! eight attest is penalized. Every step is checked against the
//! chain and against what the nodes themselves report.

#[path = "common/cluster.rs"]
mod cluster;
mod common;

use cluster::{Cluster, Spec, NET, WAIT};
use common::{denied, eventually, sees};
use hermes::proto::chain::NodeClass;
use hermes::proto::consensus::rules::FULL_REPUTATION;
use hermes::proto::consensus::{Change, ClassRules, Removal, StandingModel, Verdict};
use hermes::proto::firewall::DenyReason;
use hermes::proto::Hotkey;
use hermes::EpochOutcome;
use std::time::Duration;

/// The changes an outcome made to `who`.
fn changes_of(o: &EpochOutcome, who: Hotkey) -> Vec<Change> {
    o.changes
        .iter()
        .filter(|c| {
            let h = match c {
                Change::Promoted { hotkey, .. }
                | Change::Punished { hotkey, .. }
                | Change::Removed { hotkey, .. } => hotkey,
            };
            *h == who
        })
        .copied()
        .collect()
}

/// Four validators and a newcomer (node 4) registered in epoch 0. With one epoch in each queue,
/// it is Registered in epoch 1, Idle in 2, Included in 3 (and scored), Validator in 4, where it
/// takes part in the round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_node_climbs_to_validator_one_class_per_epoch() {
    use NodeClass::*;
    let mut classes = vec![Validator; 4];
    classes.push(Registered);
    let mut c = Cluster::build(Spec {
        classes,
        rules: ClassRules {
            queue_epochs: 1,
            idle_epochs: 1,
            included_epochs: 1,
            model: StandingModel::Penalty { max_penalties: 3 },
        },
        ..Spec::default()
    })
    .await;
    let new = 4;
    let me = c.hotkey(new);
    // The class the newcomer holds during each epoch.
    let during = [(1, Registered), (2, Idle), (3, Included), (4, Validator)];
    assert_eq!(c.next_epoch(), 1);
    for (epoch, class) in during {
        // The chain's word...
        assert_eq!(
            c.standing(new).unwrap().standing.class,
            class,
            "epoch {epoch}"
        );
        let view = c.current();
        let params = view.round.params();
        assert_eq!(
            params.eligible.contains(&me),
            class >= Included,
            "epoch {epoch}"
        );
        assert_eq!(view.round.is_validator(&me), class == Validator);
        // ...and the node's own.
        let s = c.nodes[new].poll_consensus(NET).await.unwrap();
        assert_eq!(s.epoch, Some(epoch));
        assert_eq!(
            s.standing.map(|st| st.class),
            Some(class),
            "epoch {epoch}: {s:?}"
        );
        assert_eq!(s.validator, class == Validator, "epoch {epoch}: {s:?}");
        let validators = if class == Validator { 5 } else { 4 };
        assert!(
            c.attested(validators).await,
            "epoch {epoch}: not every validator attested: {:?}",
            c.current().round.tally()
        );
        let view = c.current();
        let (sp, hash) = view.round.proposal().unwrap();
        // The data scores the newcomer once it is Included.
        assert_eq!(
            sp.proposal.score_of(&me).is_some(),
            class >= Included,
            "epoch {epoch}"
        );
        if class == Validator {
            // The newcomer proposed or attested this epoch's data.
            let s = c.nodes[new].consensus_status(NET).await.unwrap();
            assert!(
                s.duties.proposed == Some((epoch, hash))
                    || s.duties.attested == Some((epoch, hash)),
                "{s:?}"
            );
        }
        assert_eq!(c.next_epoch(), epoch + 1);
        // Every node, the newcomer included, reports the promotion the epoch's end made.
        let next = during
            .iter()
            .find(|(e, _)| *e == epoch + 1)
            .map(|(_, k)| *k);
        let expected: Vec<Change> = match next {
            Some(to) if to != class => vec![Change::Promoted {
                hotkey: me,
                from: class,
                to,
            }],
            _ => vec![],
        };
        for (i, o) in c.outcomes(epoch).await.into_iter().enumerate() {
            assert_eq!(o.verdict, Verdict::InConsensus, "node {i}: {o:?}");
            assert_eq!(o.validators, validators);
            assert_eq!(changes_of(&o, me), expected, "node {i}, epoch {epoch}");
        }
    }
    // It stays a Validator.
    assert_eq!(c.standing(new).unwrap().standing.class, Validator);
    c.shutdown().await;
}

/// Four validators and an Included node (node 4) that every validator leaves out of the data it
/// proposes (and accepts proposals without). Under the penalty model with a maximum of 3, each
/// epoch in consensus adds a penalty; the third removes it from the chain, and from then on the
/// validators drop it and refuse its connections as unregistered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_left_out_of_the_data_is_penalized_removed_and_refused() {
    left_out(StandingModel::Penalty { max_penalties: 3 }).await;
}

/// The same under the reputation model: × 0.8 per epoch left out (1.0 → 0.8 → 0.64 → 0.512),
/// removed once below the floor of 0.6, in the third epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_left_out_of_the_data_loses_reputation_is_removed_and_refused() {
    left_out(StandingModel::Reputation {
        decrease_ppm: 800_000,
        increase_ppm: 1_050_000,
        floor_ppm: 600_000,
    })
    .await;
}

/// Penalties and reputation of a node left out of `epochs` epochs in a row under `model`, and
/// whether the last of them removed it.
fn after_misses(model: StandingModel, epochs: u32) -> (u32, u32, Option<Removal>) {
    match model {
        StandingModel::Penalty { max_penalties } => (
            epochs,
            FULL_REPUTATION,
            (epochs >= max_penalties).then_some(Removal::MaxPenalties),
        ),
        StandingModel::Reputation {
            decrease_ppm,
            floor_ppm,
            ..
        } => {
            let mut rep = u64::from(FULL_REPUTATION);
            for _ in 0..epochs {
                rep = rep * u64::from(decrease_ppm) / 1_000_000;
            }
            let rep = u32::try_from(rep).unwrap();
            (
                0,
                rep,
                (rep < floor_ppm).then_some(Removal::ReputationFloor),
            )
        }
    }
}

async fn left_out(model: StandingModel) {
    use NodeClass::*;
    let mut classes = vec![Validator; 4];
    classes.push(Included);
    let mut c = Cluster::build(Spec {
        classes,
        rules: ClassRules {
            queue_epochs: 1,
            idle_epochs: 1,
            // Never reached here: a node that keeps missing never progresses.
            included_epochs: 10,
            model,
        },
        // The validators must notice the removal quickly.
        registry_poll: Duration::from_millis(200),
        ..Spec::default()
    })
    .await;
    let out = 4;
    let who = c.hotkey(out);
    for h in &c.hooks[..4] {
        h.omit(who);
    }
    // Positive control: before its removal every validator admits it.
    for i in 0..4 {
        assert!(sees(&c.nodes[i], &c.dirs[out].ss58).await, "node {i}");
    }
    assert_eq!(c.next_epoch(), 1);
    for epoch in 1..=3u64 {
        let misses = u32::try_from(epoch).unwrap();
        let (penalties, reputation, _) = after_misses(model, misses - 1);
        let st = c.standing(out).unwrap().standing;
        assert_eq!(
            (st.class, st.penalties, st.reputation_ppm),
            (Included, penalties, reputation),
            "epoch {epoch}"
        );
        assert!(c.current().round.params().eligible.contains(&who));
        let s = c.nodes[out].poll_consensus(NET).await.unwrap();
        let st = s.standing.expect("the node reports its standing");
        assert_eq!(
            (st.class, st.penalties, st.reputation_ppm),
            (Included, penalties, reputation),
            "{s:?}"
        );
        assert!(
            c.attested(4).await,
            "epoch {epoch}: not every validator attested: {:?}",
            c.current().round.tally()
        );
        let view = c.current();
        assert_eq!(
            view.round.proposal().unwrap().0.proposal.score_of(&who),
            None
        );
        assert_eq!(c.next_epoch(), epoch + 1);
        let (penalties, reputation_ppm, removed) = after_misses(model, misses);
        let mut expected = vec![Change::Punished {
            hotkey: who,
            penalties,
            reputation_ppm,
        }];
        // Removed exactly in the third epoch, under either model.
        assert_eq!(removed.is_some(), epoch == 3, "{model:?}");
        if let Some(reason) = removed {
            expected.push(Change::Removed {
                hotkey: who,
                reason,
            });
        }
        for (i, o) in c.outcomes(epoch).await.into_iter().enumerate() {
            assert_eq!(o.verdict, Verdict::InConsensus, "node {i}: {o:?}");
            assert_eq!(changes_of(&o, who), expected, "node {i}, epoch {epoch}");
        }
    }
    // Gone from the chain, and it says so itself.
    assert!(c.standing(out).is_none());
    assert!(!c.current().round.params().eligible.contains(&who));
    let s = c.nodes[out].poll_consensus(NET).await.unwrap();
    assert_eq!(s.standing, None, "{s:?}");

    // The validators drop it...
    let id = c.nodes[out].identity().await.unwrap().peer_id;
    for i in 0..4 {
        let n = c.nodes[i].clone();
        assert!(
            eventually(WAIT, || async {
                let verified = n.peers().await.unwrap().iter().any(|p| p.peer_id == id);
                !verified && !n.connected_peers().await.unwrap().contains(&id)
            })
            .await,
            "node {i} still has the removed node"
        );
    }
    // ...and a fresh connection attempt from it is refused as unregistered.
    let before = denied(&c.nodes[0], DenyReason::Unregistered).await;
    let to = common::addr(&c.nodes[0]).await;
    c.nodes[out].dial(to).await.unwrap();
    assert!(
        eventually(WAIT, || async {
            denied(&c.nodes[0], DenyReason::Unregistered).await > before
        })
        .await,
        "the removed node's connection was not refused: {:?}",
        c.nodes[0].firewall_stats().await.unwrap().denied
    );
    assert!(!c.nodes[0]
        .peers()
        .await
        .unwrap()
        .iter()
        .any(|p| p.peer_id == id));
    c.shutdown().await;
}

/// Eight validators; node 7 disagrees with every proposal it does not make itself. In an epoch
/// where another node is elected, seven of eight attest: in consensus and at the 7/8
/// supermajority, so the silent validator, though scored in the data, gets a penalty on the chain
/// and in every node's outcome, and nobody else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_silent_under_a_supermajority_is_penalized() {
    use NodeClass::*;
    let mut c = Cluster::build(Spec {
        classes: vec![Validator; 8],
        rules: ClassRules {
            model: StandingModel::Penalty { max_penalties: 3 },
            ..ClassRules::default()
        },
        ..Spec::default()
    })
    .await;
    let silent = 7;
    let who = c.hotkey(silent);
    c.hooks[silent].set_agree(false);
    let mut epoch = c.next_epoch();
    // An epoch it proposes has no silent validator: go on to one it does not.
    while c.elected() == silent {
        assert!(c.attested(8).await, "{:?}", c.current().round.tally());
        assert_eq!(c.next_epoch(), epoch + 1);
        c.outcomes(epoch).await;
        epoch += 1;
    }
    assert!(
        c.attested(7).await,
        "epoch {epoch}: {:?}",
        c.current().round.tally()
    );
    let view = c.current();
    assert!(!cluster::attesters(&view).contains(&who));
    assert!(view
        .round
        .proposal()
        .unwrap()
        .0
        .proposal
        .score_of(&who)
        .is_some());
    assert_eq!(c.next_epoch(), epoch + 1);
    let expected = vec![Change::Punished {
        hotkey: who,
        penalties: 1,
        reputation_ppm: FULL_REPUTATION,
    }];
    for (i, o) in c.outcomes(epoch).await.into_iter().enumerate() {
        assert_eq!(o.verdict, Verdict::InConsensus, "node {i}: {o:?}");
        assert_eq!(o.attestations, 7, "node {i}: {o:?}");
        assert_eq!(changes_of(&o, who), expected, "node {i}");
        assert!(
            o.changes
                .iter()
                .all(|ch| !matches!(ch, Change::Punished { hotkey, .. } if *hotkey != who)),
            "node {i}: {o:?}"
        );
    }
    assert_eq!(c.standing(silent).unwrap().standing.penalties, 1);
    c.shutdown().await;
}
