//! ConsensusActors of four validators on one dev chain (real sled directories for the chain and
//! for each node): the elected one proposes, the others attest, the epoch finalizes; a node whose
//! hook disagrees does not attest; a restarted actor keeps its duties and signs nothing twice.

use actix::prelude::*;
use hermes_actors::chain::{Chain, DevChain, DevParams};
use hermes_actors::consensus::{
    ConsensusActor, ConsensusHook, EqualScores, GetConsensusStatus, Tick,
};
use hermes_proto::chain::{NodeClass, NodeEntry};
use hermes_proto::consensus::{ClassRules, Decision, Proposal, Score, Verdict};
use hermes_proto::Hotkey;
use sp_core::{sr25519, Pair as _};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const NET: u16 = 4;

/// Disagrees with everything (and proposes like the default when elected).
#[derive(Debug)]
struct Never;
impl ConsensusHook for Never {
    fn produce(&self, n: u16, e: u64, eligible: &BTreeSet<Hotkey>) -> (Vec<Score>, Vec<u8>) {
        EqualScores.produce(n, e, eligible)
    }
    fn check(&self, _: &Proposal, _: &BTreeSet<Hotkey>) -> bool {
        false
    }
}

fn pair(i: usize) -> sr25519::Pair {
    sr25519::Pair::from_string(&format!("//ca{i}"), None).unwrap()
}

fn setup(dir: &tempfile::TempDir, n: usize) -> DevChain {
    let chain = DevChain::new(dir.path().join("chain"));
    chain
        .init(DevParams {
            blocks_per_epoch: 4,
            block_time: None,
            rules: ClassRules::default(),
            ..DevParams::default()
        })
        .unwrap();
    for i in 0..n {
        chain
            .register_sync(NodeEntry {
                netuid: NET,
                hotkey: Hotkey::of(&pair(i)),
                peer_id: libp2p::identity::Keypair::ed25519_from_bytes([i as u8 + 1; 32])
                    .unwrap()
                    .public()
                    .to_peer_id()
                    .to_base58(),
                stake: 10,
                class: NodeClass::Validator,
            })
            .unwrap();
    }
    chain.step(4).unwrap();
    chain
}

fn actor(
    chain: &DevChain,
    i: usize,
    db: &sled::Db,
    hook: Arc<dyn ConsensusHook>,
) -> Addr<ConsensusActor> {
    ConsensusActor::new(
        Arc::new(chain.clone()),
        pair(i),
        NET,
        hook,
        db.open_tree("consensus").unwrap(),
        // Driven by Tick in this test.
        Duration::from_secs(3600),
    )
    .unwrap()
    .start()
}

#[test]
fn validators_propose_attest_and_finalize() {
    System::new().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let chain = setup(&dir, 4);
        let dbs: Vec<sled::Db> = (0..4)
            .map(|i| sled::open(dir.path().join(format!("node{i}"))).unwrap())
            .collect();
        // Node 3 disagrees with every proposal (unless it is the proposer).
        let hooks: Vec<Arc<dyn ConsensusHook>> = vec![
            Arc::new(EqualScores),
            Arc::new(EqualScores),
            Arc::new(EqualScores),
            Arc::new(Never),
        ];
        let actors: Vec<_> = (0..4)
            .map(|i| actor(&chain, i, &dbs[i], hooks[i].clone()))
            .collect();
        let elected = chain
            .epoch(NET, None)
            .await
            .unwrap()
            .unwrap()
            .round
            .elected()
            .unwrap();
        let e = (0..4).find(|i| Hotkey::of(&pair(*i)) == elected).unwrap();
        // The elected node proposes.
        let st = actors[e].send(Tick).await.unwrap();
        assert_eq!(st.elected, Some(elected));
        assert_eq!(st.attestations, (1, 4));
        assert!(st.duties.proposed.is_some_and(|(ep, _)| ep == 1));
        // The others attest when their hook agrees; ticking twice changes nothing.
        for _ in 0..2 {
            for (i, a) in actors.iter().enumerate() {
                if i != e {
                    a.send(Tick).await.unwrap();
                }
            }
        }
        let view = chain.epoch(NET, None).await.unwrap().unwrap();
        let expected = if e == 3 { 4 } else { 3 };
        assert_eq!(view.round.tally().attestations, expected);
        assert!(view.round.tally().in_consensus);
        if e != 3 {
            assert!(!view.round.has_attested(&Hotkey::of(&pair(3))));
        }
        // Restart one attester: the duties come back from its tree, and it signs nothing more.
        let a = (0..4).find(|i| *i != e && *i != 3).unwrap();
        let before = actors[a].send(GetConsensusStatus).await.unwrap();
        assert!(before.duties.attested.is_some_and(|(ep, _)| ep == 1));
        let restarted = actor(&chain, a, &dbs[a], hooks[a].clone());
        let after = restarted.send(Tick).await.unwrap();
        assert_eq!(after.duties, before.duties);
        let (_, hash) = view.round.proposal().map(|(p, h)| (p.clone(), h)).unwrap();
        assert_eq!(after.duties.may_attest(1, &[9; 32]), Decision::Refuse);
        assert_eq!(after.duties.may_attest(1, &hash), Decision::Resend);
        assert_eq!(
            chain
                .epoch(NET, None)
                .await
                .unwrap()
                .unwrap()
                .round
                .tally()
                .attestations,
            expected
        );
        // The epoch ends; every actor reports the chain's verdict.
        chain.step(4).unwrap();
        for a in &actors {
            let st = a.send(Tick).await.unwrap();
            assert_eq!(st.last, Some((1, Verdict::InConsensus)));
            assert_eq!(st.epoch, Some(2));
        }
    });
}
