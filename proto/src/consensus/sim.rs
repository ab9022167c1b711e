//! Property test of one epoch across many nodes: random validator sets, an honest or an
//! equivocating proposer, offline nodes, message loss, duplication and reordering, and crashes
//! with restarts: a crashed node loses everything but its persisted [`Duties`] (encoded and
//! decoded again, as the store does), including between recording a duty and sending the signed
//! record (the write-ahead window), and fetches the proposal from the chain when it is back.
//!
//! Nodes relay every distinct proposal they see once (as gossip floods it); the chain (the last
//! participant) gets the proposer's submissions and every attestation, and what it holds is
//! readable by every node (it relays too).
//!
//! Safety: the chain finalizes at most one proposal, no validator attests twice, and whatever a
//! node finalizes locally is the chain's proposal whenever the proposer is honest. With an
//! equivocating proposer and no loss, every online node and the chain detect it and nobody
//! finalizes. (A node's local tally is a forecast: with an equivocating proposer and lost
//! messages, two nodes may each count a quorum for another copy; only the chain's verdict, from
//! one arbiter, is final, which is why the outcome a node reports is the chain's.)
//! Liveness: an honest proposer with at least 66 % of validators online and no loss finalizes at
//! every online node and at the chain.

use super::election::{Candidate, ElectionMode};
use super::record::{Attestation, Proposal, Score, SignedAttestation, SignedProposal};
use super::round::{Refusal, Round, RoundParams};
use super::Duties;
use crate::hotkey::Hotkey;
use proptest::prelude::*;
use sp_core::{sr25519, Pair as _};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

#[derive(Debug, Clone)]
enum Msg {
    Proposal(SignedProposal),
    Attestation(SignedAttestation),
    /// A restarted node asks the chain for the epoch's proposal (retried until it has one).
    Fetch,
}

fn keys() -> &'static [sr25519::Pair] {
    static KEYS: OnceLock<Vec<sr25519::Pair>> = OnceLock::new();
    KEYS.get_or_init(|| {
        (0..12)
            .map(|i| sr25519::Pair::from_string(&format!("//sim{i}"), None).unwrap())
            .collect()
    })
}

struct Node {
    pair: sr25519::Pair,
    round: Round,
    duties: Duties,
    /// Attestations that arrived before any proposal, retried after one is accepted.
    early: Vec<SignedAttestation>,
    /// Proposals already relayed.
    relayed: BTreeSet<[u8; 32]>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn one_epoch_is_safe_and_live(
        n in 3usize..12,
        seed in any::<[u8; 32]>(),
        online_mask in any::<u16>(),
        equivocate in any::<bool>(),
        lossy in any::<bool>(),
        crashy in any::<bool>(),
        schedule in proptest::collection::vec((any::<usize>(), 0u8..10), 400),
    ) {
        let pairs = &keys()[..n];
        let params = RoundParams {
            netuid: 1,
            epoch: 9,
            seed,
            election: ElectionMode::Uniform,
            validators: pairs.iter().map(|p| Candidate { hotkey: Hotkey::of(p), stake: 1 }).collect(),
            eligible: pairs.iter().map(Hotkey::of).collect(),
        };
        // The last node is the chain: never elected, never attests.
        let mut nodes: Vec<Node> = pairs
            .iter()
            .chain(std::iter::once(&keys()[11]))
            .map(|p| Node { pair: p.clone(), round: Round::open(params.clone()), duties: Duties::default(), early: vec![], relayed: BTreeSet::new() })
            .collect();
        let elected = nodes[0].round.elected().unwrap();
        // Every node computes the same election.
        prop_assert!(nodes.iter().all(|x| x.round.elected() == Some(elected)));
        let proposer = nodes.iter().position(|x| Hotkey::of(&x.pair) == elected).unwrap();
        // The proposer is always online; others by the mask.
        let chain = n;
        let online: Vec<bool> = (0..=n).map(|i| i == proposer || i == chain || online_mask & (1 << i) != 0).collect();

        let make = |args: &[u8]| {
            Proposal {
                epoch: 9,
                netuid: 1,
                proposer: elected,
                scores: params.eligible.iter().map(|h| Score { hotkey: *h, score: 1 }).collect(),
                args: args.to_vec(),
            }
            .sign(&nodes[proposer].pair)
            .unwrap()
        };
        let a = make(b"a");
        let b = make(b"b");
        // (to, message) in flight.
        let mut flight: Vec<(usize, Msg)> = Vec::new();
        for to in 0..n {
            let p = if equivocate && to % 2 == 1 { &b } else { &a };
            flight.push((to, Msg::Proposal(p.clone())));
        }
        flight.push((chain, Msg::Proposal(a.clone())));
        if equivocate {
            flight.push((chain, Msg::Proposal(b.clone())));
        }
        let mut attested_by: BTreeMap<Hotkey, BTreeSet<[u8; 32]>> = BTreeMap::new();
        let mut crashed: BTreeSet<usize> = BTreeSet::new();
        // At most this many crashes a run (each one replays the proposal's relay to all).
        let mut crashes_left = 4u32;
        // A crash: everything in memory is lost; the persisted duties come back from their
        // encoding; once up, the node fetches the proposal from the chain.
        let restart = |node: &mut Node, flight: &mut Vec<(usize, Msg)>, to: usize| {
            let duties = Duties::decode(&node.duties.encode()).unwrap();
            *node = Node { pair: node.pair.clone(), round: Round::open(params.clone()), duties, early: vec![], relayed: BTreeSet::new() };
            flight.push((to, Msg::Fetch));
        };
        let mut steps = schedule.into_iter();
        let mut budget = 20_000;
        while !flight.is_empty() && budget > 0 {
            budget -= 1;
            // Random order while the schedule lasts, then first in, first out: an index that
            // stays fixed could keep picking requests that re-queue themselves (a fetch before
            // the chain holds a proposal) and never reach the message behind them.
            let (to, msg, fate) = match steps.next() {
                Some((r, fate)) => {
                    let (to, msg) = flight.swap_remove(r % flight.len());
                    (to, msg, fate)
                }
                None => {
                    let (to, msg) = flight.remove(0);
                    (to, msg, 9)
                }
            };
            if !online[to] { continue; }
            match fate {
                0 if lossy => continue, // lost
                1 => flight.push((to, msg.clone())), // duplicated
                _ => {}
            }
            // Crash on receipt (the message is lost with the node's memory); never the chain.
            if crashy && fate == 2 && to != chain && crashes_left > 0 {
                crashes_left -= 1;
                crashed.insert(to);
                restart(&mut nodes[to], &mut flight, to);
                continue;
            }
            let msg = match msg {
                // The chain answers with its proposal, or with both copies once it holds an
                // equivocation; with neither yet, the node asks again later.
                Msg::Fetch => match (nodes[chain].round.equivocation(), nodes[chain].round.proposal()) {
                    (Some((x, y)), _) => {
                        flight.push((to, Msg::Proposal(y.clone())));
                        Msg::Proposal(x.clone())
                    }
                    (None, Some((p, _))) => Msg::Proposal(p.clone()),
                    (None, None) => {
                        flight.push((to, Msg::Fetch));
                        continue;
                    }
                },
                m => m,
            };
            let node = &mut nodes[to];
            let mut accepted = None;
            match msg {
                Msg::Proposal(p) => {
                    if node.round.submit(&p).is_ok() {
                        accepted = Some(p.hash());
                    }
                    if node.relayed.insert(p.hash()) {
                        for other in 0..n {
                            flight.push((other, Msg::Proposal(p.clone())));
                        }
                    }
                }
                Msg::Attestation(att) => {
                    if node.round.attest(&att) == Err(Refusal::NoProposal) {
                        node.early.push(att);
                    }
                }
                Msg::Fetch => unreachable!("resolved above"),
            }
            if let Some(hash) = accepted {
                for att in std::mem::take(&mut node.early) {
                    let _ = node.round.attest(&att);
                }
                // Attest once, through the duty guard (write-ahead: record, then sign and
                // send), and broadcast. After a crash in between, the same statement is sent
                // again (`Resend`), never another one.
                let decision = node.duties.may_attest(9, &hash);
                if to != chain && decision != super::Decision::Refuse {
                    node.duties.record_attestation(9, hash);
                    if crashy && fate == 3 && crashes_left > 0 {
                        crashes_left -= 1;
                        crashed.insert(to);
                        restart(&mut nodes[to], &mut flight, to);
                        continue;
                    }
                    let me = Hotkey::of(&node.pair);
                    attested_by.entry(me).or_default().insert(hash);
                    let att = Attestation { epoch: 9, netuid: 1, proposal: hash, attester: me }
                        .sign(&node.pair)
                        .unwrap();
                    for other in 0..=n {
                        flight.push((other, Msg::Attestation(att)));
                    }
                }
            }
        }
        // No validator attested two different proposals.
        prop_assert!(attested_by.values().all(|s| s.len() == 1));
        let on_chain = nodes[chain].round.outcome();
        let finalized: BTreeSet<[u8; 32]> = nodes
            .iter()
            .filter(|x| x.round.tally().in_consensus)
            .filter_map(|x| x.round.proposal().map(|(_, h)| h))
            .collect();
        if !equivocate {
            // Honest proposer: one statement only, and it is the chain's.
            prop_assert!(finalized.iter().all(|h| *h == a.hash()), "{finalized:?}");
        }
        if equivocate && !lossy {
            for (i, x) in nodes.iter().enumerate() {
                if online[i] {
                    prop_assert!(x.round.equivocation().is_some(), "node {i} missed the equivocation");
                    prop_assert!(!x.round.tally().in_consensus);
                }
            }
            prop_assert_eq!(on_chain.verdict, super::Verdict::Equivocated);
        }
        // Liveness (the chain is not a validator: count validators only). A node that crashed
        // may have lost attestations it had counted; it learns the outcome from the chain.
        let up = online[..n].iter().filter(|o| **o).count() as u64;
        if !equivocate && !lossy && up * 100 >= n as u64 * 66 {
            for (i, x) in nodes.iter().enumerate() {
                if online[i] && !crashed.contains(&i) {
                    prop_assert!(x.round.tally().in_consensus, "node {i} did not finalize: {:?}, {} in flight, budget {budget}, crashed {crashed:?}", x.round.tally(), flight.len());
                }
            }
            prop_assert_eq!(on_chain.verdict, super::Verdict::InConsensus);
        }
    }
}
