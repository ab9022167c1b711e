//! The Subtensor and Hypertensor RPC backends against an in-process JSON-RPC node
//! (chain_rpc_support): whole-subnet reads in three round trips, block changes, the node down
//! at start and at runtime (fail closed, recovery), metadata drift, garbage and oversized answers.

mod chain_rpc_support;

use actix::prelude::*;
use chain_rpc_support::metadata::{self as meta, Drift};
use chain_rpc_support::storage::{self, st_hotkey, st_stake_key, subtensor_storage, Storage};
use chain_rpc_support::{Mode, Node, Push};
use hermes_actors::chain::rpc::transport::MAX_ANSWER;
use hermes_actors::chain::rpc::{RpcChain, RpcClient, RpcError, RpcKind};
use hermes_actors::chain::{ChainActor, ChainError, Refresh, RegistryUpdated};
use hermes_proto::chain::NodeClass;
use hermes_proto::firewall::{Acl, DenyReason, Policy, Scope};
use hermes_proto::Hotkey;
use parity_scale_codec::Encode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const PEERS: [&str; 3] = [
    "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
    "12D3KooWHvzV8ABbBnmPRWmUDDXbxgpSVTb5eTa9ZGEJWuCP7D5a",
    "12D3KooWRBaDjKHbLNNj8tRQRnd3Cm6EqU7A5v9iv8XiU8Sm7m4f",
];

/// Node `i` of the tests: account `[i; 20]`, peer id `PEERS[i]`.
fn ht_node(i: u8, class: meta::SubnetNodeClass) -> meta::SubnetNode {
    storage::ht_node(u32::from(i), [i; 20], PEERS[usize::from(i)], class)
}

fn ht_stake_key(i: u8, subnet: u32) -> Vec<u8> {
    storage::ht_stake_key([i; 20], subnet)
}

fn ht_node_key(subnet: u32, i: u8) -> Vec<u8> {
    storage::ht_node_key(subnet, u32::from(i))
}

/// Hypertensor storage: nodes 0 (Validator) and 1 (Idle) in subnet 2, staked 500 and 700.
fn hypertensor_storage() -> Storage {
    let mut s = Storage::new();
    for (i, class, stake) in [
        (0u8, meta::SubnetNodeClass::Validator, 500u128),
        (1, meta::SubnetNodeClass::Idle, 700),
    ] {
        s.insert(ht_node_key(2, i), ht_node(i, class).encode());
        s.insert(ht_stake_key(i, 2), stake.encode());
    }
    // Another subnet's node, which a node serving subnet 2 does not read.
    s.insert(
        ht_node_key(3, 2),
        ht_node(2, meta::SubnetNodeClass::Included).encode(),
    );
    s
}

fn run<F: std::future::Future<Output = ()>>(f: F) {
    actix::System::new().block_on(f);
}

#[test]
fn a_256_neuron_subnet_is_read_in_three_round_trips() {
    run(async {
        let mut storage = subtensor_storage(5, 256);
        // Neurons of another subnet are not read.
        storage.extend(subtensor_storage(6, 3));
        let node = Node::start(meta::subtensor(Drift::None), storage).await;
        let chain = RpcChain::new(&node.url(), RpcKind::Subtensor, vec![5]).unwrap();
        let snap = chain.snapshot().await.unwrap();
        assert_eq!(node.requests(), 3, "round trips for a cold read");
        assert_eq!(snap.block, 1);
        let reg = &snap.registry;
        assert_eq!(reg.len(), 256);
        for uid in [0u16, 17, 255] {
            let e: Vec<_> = reg.by_hotkey(&Hotkey(st_hotkey(uid))).collect();
            assert_eq!(e.len(), 1);
            assert_eq!(e[0].netuid, 5);
            assert_eq!(e[0].stake, 1000 + u128::from(uid));
            assert_eq!(e[0].peer_id, "", "subtensor knows no peer ids");
        }
        assert!(!reg.chain_binds_peers());
        // Admission by the hotkey that signed a peer's verified binding: any peer id may present
        // one, a registered hotkey with enough stake is admitted, others are not.
        let p = Policy {
            enabled: true,
            acl: Acl::default(),
            scope: Scope::Single(5),
            require_stake: true,
            min_stake: 1010,
            registry: Arc::new(reg.clone()),
            chain_stale: false,
        };
        assert_eq!(p.admit_connection(PEERS[0]), Ok(()));
        assert_eq!(
            p.admit_signed(PEERS[0], &Hotkey(st_hotkey(17)))
                .unwrap()
                .netuids,
            vec![5]
        );
        assert_eq!(
            p.admit_signed(PEERS[0], &Hotkey(st_hotkey(3))),
            Err(DenyReason::InsufficientStake)
        );
        assert_eq!(
            p.admit_signed(PEERS[0], &Hotkey([1; 32])),
            Err(DenyReason::Unregistered)
        );
        // An unchanged head costs one round trip and gives the same registry.
        let again = chain.snapshot().await.unwrap();
        assert_eq!(node.requests(), 4);
        assert_eq!(again.registry.entries(), reg.entries());
    });
}

/// Forwards registry updates to the test.
struct Sink(mpsc::UnboundedSender<RegistryUpdated>);
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<RegistryUpdated> for Sink {
    type Result = ();
    fn handle(&mut self, m: RegistryUpdated, _: &mut Context<Self>) {
        let _ = self.0.send(m);
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<RegistryUpdated>) -> RegistryUpdated {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("no registry update")
        .expect("sink gone")
}

fn actor(
    chain: RpcChain,
    initial: Option<hermes_proto::chain::Registry>,
    max_staleness: Duration,
) -> (Addr<ChainActor>, mpsc::UnboundedReceiver<RegistryUpdated>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = Sink(tx).start();
    // An hour between polls: only the test's Refresh messages read the chain.
    let a = ChainActor::new(
        Arc::new(chain),
        initial,
        Duration::from_secs(3600),
        max_staleness,
        sink.recipient(),
    )
    .start();
    (a, rx)
}

#[test]
fn hypertensor_peer_ids_classes_and_a_new_block_changing_stake() {
    run(async {
        // The node serves the metadata recorded from the real runtime.
        let recorded = storage::recorded_hypertensor_metadata();
        let node = Node::start(recorded, hypertensor_storage()).await;
        let chain = RpcChain::new(&node.url(), RpcKind::Hypertensor, vec![2]).unwrap();
        let first = chain.snapshot().await.unwrap().registry;
        assert_eq!(first.len(), 2);
        let v: Vec<_> = first.by_peer(PEERS[0]).collect();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].class, NodeClass::Validator);
        assert_eq!(v[0].stake, 500);
        assert_eq!(v[0].netuid, 2);
        assert_eq!(&v[0].hotkey.0[..20], &[0u8; 20]);
        let idle: Vec<_> = first.by_peer(PEERS[1]).collect();
        assert_eq!((idle[0].class, idle[0].stake), (NodeClass::Idle, 700));
        assert_eq!(first.by_peer(PEERS[2]).count(), 0, "subnet 3 is not ours");
        // The firewall admits a registered peer id whatever sr25519 hotkey signed its binding
        // (the chain binds peer id to its 20-byte account itself), with the stake rule intact.
        let policy = |registry, min_stake| Policy {
            enabled: true,
            acl: Acl::default(),
            scope: Scope::Single(2),
            require_stake: true,
            min_stake,
            registry: Arc::new(registry),
            chain_stale: false,
        };
        let signer = Hotkey([9; 32]);
        let p = policy(first.clone(), 600);
        assert_eq!(p.admit_signed(PEERS[1], &signer).unwrap().netuids, vec![2]);
        assert_eq!(
            p.admit_signed(PEERS[0], &signer),
            Err(DenyReason::InsufficientStake)
        );
        assert_eq!(
            p.admit_signed(PEERS[2], &signer),
            Err(DenyReason::Unregistered)
        );

        let (actor, mut rx) = actor(chain, Some(first), Duration::from_secs(3600));
        node.new_block(|s| {
            s.insert(ht_stake_key(1, 2), 3u128.encode());
        });
        actor.send(Refresh).await.unwrap().unwrap();
        let up = next(&mut rx).await;
        assert!(!up.stale);
        let idle: Vec<_> = up.registry.by_peer(PEERS[1]).collect();
        assert_eq!(idle[0].stake, 3, "the new block's stake");
        // A block that removes the node removes its entry.
        node.new_block(|s| {
            s.remove(&ht_node_key(2, 1));
        });
        actor.send(Refresh).await.unwrap().unwrap();
        let up = next(&mut rx).await;
        assert_eq!(up.registry.by_peer(PEERS[1]).count(), 0);
        assert_eq!(up.registry.len(), 1);
    });
}

#[test]
fn hypertensor_epochs_and_elected_validators_are_read_and_hermes_rounds_are_not_offered() {
    use hermes_actors::chain::Chain;
    use storage::{ht_epoch_key, ht_slot_key};
    const ELECTED: &str = "SubnetElectedValidator";
    const SUBMITTED: &str = "SubnetConsensusSubmission";
    run(async {
        // Subnet 2's epochs start at block 1; in its epoch 0 node 1 was elected and submitted.
        let mut s = hypertensor_storage();
        s.insert(ht_slot_key(2), 1u32.encode());
        s.insert(ht_epoch_key(ELECTED, 2, 0), 1u32.encode());
        s.insert(
            ht_epoch_key(SUBMITTED, 2, 0),
            meta::ConsensusData(vec![1, 2, 3]).encode(),
        );
        let node = Node::start(meta::hypertensor(Drift::None), s).await;
        let chain = RpcChain::new(&node.url(), RpcKind::Hypertensor, vec![2]).unwrap();
        let head = chain.head().await.unwrap();
        assert_eq!(
            (head.block, head.epoch, head.blocks_per_epoch),
            (1, 0, u64::from(meta::HT_EPOCH_LENGTH))
        );
        let c = chain.subnet_consensus(2).await.unwrap();
        assert_eq!(
            (c.block, c.epoch, c.epoch_length),
            (1, 0, meta::HT_EPOCH_LENGTH)
        );
        assert_eq!(
            (c.slot, c.subnet_epoch, c.elected),
            (Some(1), Some(0), Some(1))
        );
        let elected = c.elected_node.unwrap();
        assert_eq!(
            (elected.peer_id.as_str(), elected.class),
            (PEERS[1], NodeClass::Idle)
        );
        assert!(c.submitted);
        // Subnet 3 has no slot: no epoch of its own, nothing elected.
        let c = chain.subnet_consensus(3).await.unwrap();
        assert_eq!(
            (c.slot, c.subnet_epoch, c.elected, c.submitted),
            (None, None, None, false)
        );

        // Four blocks later: epoch 1 of the chain and of the subnet, nobody elected yet.
        for _ in 0..meta::HT_EPOCH_LENGTH {
            node.new_block(|_| {});
        }
        assert_eq!(chain.head().await.unwrap().epoch, 1);
        let c = chain.subnet_consensus(2).await.unwrap();
        assert_eq!((c.block, c.subnet_epoch, c.elected), (5, Some(1), None));
        assert!(!c.submitted && c.elected_node.is_none());
        // An elected node id the subnet no longer lists: the id without a node.
        node.new_block(|s| {
            s.insert(ht_epoch_key(ELECTED, 2, 1), 7u32.encode());
        });
        let c = chain.subnet_consensus(2).await.unwrap();
        assert_eq!((c.elected, c.elected_node), (Some(7), None));
        // A value that is not a u32 is an error, not a guess.
        node.new_block(|s| {
            s.insert(ht_epoch_key(ELECTED, 2, 1), vec![1, 2, 3]);
        });
        let err = chain.subnet_consensus(2).await.unwrap_err().to_string();
        assert!(err.contains("SubnetElectedValidator"), "{err}");

        // Hermes' own rounds are not offered (Hypertensor runs its own), so a node keeps its
        // consensus off; nor is anything on Subtensor.
        let err = chain.epoch(2, None).await.unwrap_err();
        assert!(matches!(err, ChainError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("Hypertensor elects"), "{err}");
        let st = RpcChain::new("http://127.0.0.1:9", RpcKind::Subtensor, vec![2]).unwrap();
        assert!(matches!(
            st.head().await.unwrap_err(),
            ChainError::Unsupported(_)
        ));
        assert!(matches!(
            st.subnet_consensus(2).await.unwrap_err(),
            ChainError::Unsupported(_)
        ));
    });
}

#[test]
fn rpc_down_at_start_fails_closed_until_it_answers() {
    run(async {
        // A port nothing listens on.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let chain = RpcChain::new(&format!("ws://{addr}"), RpcKind::Subtensor, vec![5]).unwrap();
        let err = chain.snapshot().await.unwrap_err();
        assert!(
            matches!(err, ChainError::Rpc(RpcError::Unreachable(_))),
            "{err}"
        );

        // Down at start through the ChainActor: stale from the start, fresh once it reads.
        let node = Node::start(meta::subtensor(Drift::None), subtensor_storage(5, 4)).await;
        node.set_mode(Mode::Down);
        let chain = RpcChain::new(&node.url(), RpcKind::Subtensor, vec![5]).unwrap();
        let (actor, mut rx) = actor(chain, None, Duration::from_secs(3600));
        assert!(actor.send(Refresh).await.unwrap().is_err());
        node.set_mode(Mode::Up);
        actor.send(Refresh).await.unwrap().unwrap();
        let up = next(&mut rx).await;
        assert!(!up.stale);
        assert_eq!(up.registry.len(), 4);
    });
}

#[test]
fn rpc_down_at_runtime_goes_stale_after_the_limit_and_recovers() {
    run(async {
        let node = Node::start(meta::subtensor(Drift::None), subtensor_storage(5, 4)).await;
        // A limit far away: one failure keeps the registry fresh.
        let chain = RpcChain::new(&node.url(), RpcKind::Subtensor, vec![5]).unwrap();
        let initial = chain.snapshot().await.unwrap().registry;
        let (patient, mut patient_rx) =
            actor(chain, Some(initial.clone()), Duration::from_secs(3600));
        // No limit: the first failure makes it stale.
        let chain = RpcChain::new(&node.url(), RpcKind::Subtensor, vec![5]).unwrap();
        let (strict, mut rx) = actor(chain, Some(initial), Duration::ZERO);

        node.set_mode(Mode::Down);
        assert!(strict.send(Refresh).await.unwrap().is_err());
        assert!(patient.send(Refresh).await.unwrap().is_err());
        let up = next(&mut rx).await;
        assert!(up.stale, "stale once the limit has passed");
        assert_eq!(up.registry.len(), 4, "the last registry is kept");
        assert!(patient_rx.try_recv().is_err(), "stale before the limit");

        node.set_mode(Mode::Up);
        node.new_block(|_| {});
        strict.send(Refresh).await.unwrap().unwrap();
        let up = next(&mut rx).await;
        assert!(!up.stale, "fresh again after reconnecting");
    });
}

#[test]
fn metadata_drift_is_an_error_naming_the_item() {
    run(async {
        for (kind, drift, item) in [
            (
                RpcKind::Subtensor,
                Drift::StakeHasher,
                "SubtensorModule.TotalHotkeyAlpha",
            ),
            (
                RpcKind::Subtensor,
                Drift::StakeValue,
                "SubtensorModule.TotalHotkeyAlpha",
            ),
            (RpcKind::Subtensor, Drift::NoKeys, "SubtensorModule.Keys"),
            (
                RpcKind::Hypertensor,
                Drift::OldSubnetNode,
                "Network.SubnetNodesData",
            ),
            (
                RpcKind::Hypertensor,
                Drift::NoEpochLength,
                "Network.EpochLength",
            ),
            (
                RpcKind::Hypertensor,
                Drift::ElectedHasher,
                "Network.SubnetElectedValidator",
            ),
        ] {
            let (metadata, storage) = match kind {
                RpcKind::Subtensor => (meta::subtensor(drift), subtensor_storage(5, 4)),
                _ => (meta::hypertensor(drift), hypertensor_storage()),
            };
            let node = Node::start(metadata, storage).await;
            let chain = RpcChain::new(&node.url(), kind, vec![5, 2]).unwrap();
            let err = chain.snapshot().await.unwrap_err();
            assert!(matches!(err, ChainError::Metadata(_)), "{drift:?}: {err}");
            assert!(err.to_string().contains(item), "{drift:?}: {err}");
            // Nothing past the metadata was read.
            assert_eq!(node.requests(), 1);
        }
        // A runtime upgrade that changes a layout is caught at the next read.
        let node = Node::start(meta::subtensor(Drift::None), subtensor_storage(5, 4)).await;
        let chain = RpcChain::new(&node.url(), RpcKind::Subtensor, vec![5]).unwrap();
        chain.snapshot().await.unwrap();
        node.upgrade(meta::subtensor(Drift::StakeValue));
        node.new_block(|_| {});
        let err = chain.snapshot().await.unwrap_err().to_string();
        assert!(err.contains("SubtensorModule.TotalHotkeyAlpha"), "{err}");
        // The wrong chain's metadata: Subtensor's pallet is missing.
        let node = Node::start(meta::hypertensor(Drift::None), hypertensor_storage()).await;
        let chain = RpcChain::new(&node.url(), RpcKind::Subtensor, vec![2]).unwrap();
        let err = chain.snapshot().await.unwrap_err().to_string();
        assert!(
            err.contains("SubtensorModule.Keys") && err.contains("no such pallet"),
            "{err}"
        );
    });
}

/// Metadata recorded from real Subtensor runtimes (actors/tests/fixtures/metadata/README.md):
/// the current layout passes the check and a whole subnet reads through it; the 2024 layout,
/// from before stake was kept per subnet, fails closed naming the item.
#[test]
fn real_subtensor_metadata_current_passes_and_pre_dtao_fails_closed() {
    use hermes_actors::chain::rpc::{metadata, subtensor};
    let current = storage::recorded_subtensor_metadata();
    metadata::check(&current, subtensor::EXPECTED).unwrap();
    let old = storage::recorded_metadata("subtensor-finney-2024-07.scale");
    let err = metadata::check(&old, subtensor::EXPECTED)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SubtensorModule.TotalHotkeyAlpha") && err.contains("no such storage item"),
        "{err}"
    );
    // Each is also refused by the other chain's backend: its pallet is not there.
    let err = metadata::check(&current, hermes_actors::chain::rpc::hypertensor::EXPECTED)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such pallet"), "{err}");

    run(async {
        // The node serves the recorded metadata: the registry is read through it.
        let node = Node::start(current.clone(), subtensor_storage(5, 4)).await;
        let chain = RpcChain::new(&node.url(), RpcKind::Subtensor, vec![5]).unwrap();
        let reg = chain.snapshot().await.unwrap().registry;
        assert_eq!(reg.len(), 4);
        let node = Node::start(old.clone(), subtensor_storage(5, 4)).await;
        let chain = RpcChain::new(&node.url(), RpcKind::Subtensor, vec![5]).unwrap();
        let err = chain.snapshot().await.unwrap_err();
        assert!(matches!(err, ChainError::Metadata(_)), "{err}");
    });
}

/// Metadata recorded by executing the Hypertensor testnet runtime held in its repository's raw
/// chain spec (actors/tests/fixtures/metadata/README.md): every item we read has the layout we
/// decode, `EpochLength` is the runtime's, and the epoch and elected-validator reads go through
/// it (the registry read does in `hypertensor_peer_ids_classes_and_a_new_block_changing_stake`).
#[test]
fn real_hypertensor_metadata_passes_and_the_consensus_read_goes_through_it() {
    use hermes_actors::chain::rpc::{hypertensor, metadata, subtensor};
    use hermes_actors::chain::Chain;
    use storage::{ht_epoch_key, ht_slot_key, HT_RECORDED_EPOCH_LENGTH};
    let recorded = storage::recorded_hypertensor_metadata();
    let constants =
        metadata::check_and_read(&recorded, hypertensor::EXPECTED, hypertensor::CONSTANTS).unwrap();
    assert_eq!(constants, vec![HT_RECORDED_EPOCH_LENGTH]);
    // The other chain's backend refuses it: its pallet is not there.
    let err = metadata::check(&recorded, subtensor::EXPECTED)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SubtensorModule.Keys") && err.contains("no such pallet"),
        "{err}"
    );

    run(async {
        // Subnet 2's epochs start at block 1; node 0 is elected in its epoch 0.
        let mut s = hypertensor_storage();
        s.insert(ht_slot_key(2), 1u32.encode());
        s.insert(ht_epoch_key("SubnetElectedValidator", 2, 0), 0u32.encode());
        let node = Node::start(recorded, s).await;
        let chain = RpcChain::new(&node.url(), RpcKind::Hypertensor, vec![2]).unwrap();
        let head = chain.head().await.unwrap();
        assert_eq!(
            (head.block, head.epoch, head.blocks_per_epoch),
            (1, 0, u64::from(HT_RECORDED_EPOCH_LENGTH))
        );
        let c = chain.subnet_consensus(2).await.unwrap();
        assert_eq!(
            (c.epoch_length, c.slot, c.subnet_epoch, c.elected),
            (HT_RECORDED_EPOCH_LENGTH, Some(1), Some(0), Some(0))
        );
        let elected = c.elected_node.unwrap();
        assert_eq!(
            (elected.peer_id.as_str(), elected.class),
            (PEERS[0], NodeClass::Validator)
        );
        assert!(!c.submitted);
    });
}

#[test]
fn garbage_and_oversized_answers_are_errors() {
    run(async {
        let node = Node::start(meta::hypertensor(Drift::None), hypertensor_storage()).await;
        let chain = RpcChain::new(&node.url(), RpcKind::Hypertensor, vec![2]).unwrap();
        for body in [
            b"not json".to_vec(),
            b"{}".to_vec(),
            b"[]".to_vec(),
            br#"[{"jsonrpc":"2.0","id":999999,"result":"0x00"}]"#.to_vec(),
            br#"[{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"no"}}]"#.to_vec(),
            vec![b'['; 100_000],
        ] {
            node.set_mode(Mode::Raw(body.clone()));
            let err = chain.snapshot().await.unwrap_err();
            assert!(
                matches!(
                    err,
                    ChainError::Rpc(RpcError::Garbage(_) | RpcError::Server { .. })
                ),
                "{}: {err}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
        }
        // A stored value that is not a SubnetNode (trailing bytes) fails the read.
        node.set_mode(Mode::Up);
        node.new_block(|s| {
            let mut v = ht_node(0, meta::SubnetNodeClass::Idle).encode();
            v.push(0);
            s.insert(ht_node_key(2, 0), v);
        });
        let err = chain.snapshot().await.unwrap_err().to_string();
        assert!(err.contains("trailing"), "{err}");
        // A peer id longer than the chain allows.
        node.new_block(|s| {
            let mut n = ht_node(0, meta::SubnetNodeClass::Idle);
            n.peer_id = meta::OpaquePeerId(vec![b'1'; 10_000]);
            s.insert(ht_node_key(2, 0), n.encode());
        });
        let err = chain.snapshot().await.unwrap_err().to_string();
        assert!(err.contains("peer_id"), "{err}");

        // Oversized: a 256-neuron subnet through a client that reads at most 4 KiB.
        let node = Node::start(meta::subtensor(Drift::None), subtensor_storage(5, 256)).await;
        let client = RpcClient::new(&node.url()).unwrap().with_max_answer(4096);
        let chain = RpcChain::with_client(client, RpcKind::Subtensor, vec![5]);
        let err = chain.snapshot().await.unwrap_err();
        assert!(
            matches!(err, ChainError::Rpc(RpcError::TooLarge(4096))),
            "{err}"
        );
    });
}

/// An actor over a `ws://` backend that polls every ten minutes and starts with no registry:
/// within the tests' bounded waits, only a head notification can make it read.
fn following(
    node: &Node,
    max_answer: usize,
) -> (Addr<ChainActor>, mpsc::UnboundedReceiver<RegistryUpdated>) {
    let client = RpcClient::new(&node.url())
        .unwrap()
        .with_max_answer(max_answer);
    following_client(client)
}

fn following_client(
    client: RpcClient,
) -> (Addr<ChainActor>, mpsc::UnboundedReceiver<RegistryUpdated>) {
    let chain = RpcChain::with_client(client, RpcKind::Subtensor, vec![5]);
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = Sink(tx).start();
    let a = ChainActor::new(
        Arc::new(chain),
        None,
        Duration::from_secs(600),
        Duration::from_secs(3600),
        sink.recipient(),
    )
    .start();
    (a, rx)
}

fn stake_of(up: &RegistryUpdated, uid: u16) -> u128 {
    let e: Vec<_> = up.registry.by_hotkey(&Hotkey(st_hotkey(uid))).collect();
    assert_eq!(e.len(), 1, "neuron {uid}");
    e[0].stake
}

/// Sets neuron `uid`'s stake in a new block.
fn stake_block(node: &Node, uid: u16, stake: u64) {
    node.new_block(|s| {
        s.insert(
            st_stake_key(st_hotkey(uid), 5),
            meta::AlphaCurrency(stake).encode(),
        );
    });
}

#[test]
fn a_new_head_is_read_at_once_not_at_the_next_poll() {
    run(async {
        let node = Node::start(meta::subtensor(Drift::None), subtensor_storage(5, 4)).await;
        let (_actor, mut rx) = following(&node, MAX_ANSWER);
        // The subscription's first notification (the current head) reads the registry.
        let up = next(&mut rx).await;
        assert!(!up.stale);
        assert_eq!(up.registry.len(), 4);
        assert_eq!(stake_of(&up, 2), 1002);
        stake_block(&node, 2, 77);
        let up = next(&mut rx).await;
        assert_eq!(stake_of(&up, 2), 77, "the new head's stake");
        assert_eq!(node.subscriptions(), 1);
    });
}

#[test]
fn a_dropped_subscription_is_taken_again() {
    run(async {
        let node = Node::start(meta::subtensor(Drift::None), subtensor_storage(5, 4)).await;
        let (_actor, mut rx) = following(&node, MAX_ANSWER);
        assert!(!next(&mut rx).await.stale);
        for round in 0..2u16 {
            node.push(Push::Drop);
            assert!(
                node.wait_subscriptions(usize::from(round) + 2).await,
                "not subscribed again after drop {round}"
            );
            stake_block(&node, 1, 500 + u64::from(round));
            let up = next(&mut rx).await;
            assert_eq!(stake_of(&up, 1), 500 + u128::from(round));
        }
    });
}

#[test]
fn garbage_notifications_end_the_subscription_and_reads_go_on() {
    run(async {
        let node = Node::start(meta::subtensor(Drift::None), subtensor_storage(5, 4)).await;
        let max = 64 << 10;
        let (actor, mut rx) = following(&node, max);
        assert!(!next(&mut rx).await.stale);
        let note = |sub: &str, header: serde_json::Value| {
            serde_json::json!({"jsonrpc": "2.0", "method": "chain_finalizedHead",
                "params": {"subscription": sub, "result": header}})
            .to_string()
        };
        // The server numbers its subscriptions sub1, sub2, …: garbage `i` goes to sub{i+1}.
        for i in 0..8usize {
            let sub = format!("sub{}", i + 1);
            let p = match i {
                0 => Push::Text("not json".into()),
                1 => Push::Text("{}".into()),
                // Another subscription's notification, and headers without a usable number.
                2 => Push::Text(note(
                    "sub-of-someone-else",
                    serde_json::json!({"number": "0x9"}),
                )),
                3 => Push::Text(note(&sub, serde_json::json!({"parentHash": "0x00"}))),
                4 => Push::Text(note(&sub, serde_json::json!({"number": "0xnothex"}))),
                5 => Push::Text(
                    serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": "again"}).to_string(),
                ),
                6 => Push::Binary(vec![0xff; 64]),
                // Larger than the client's answer limit.
                _ => Push::Text(format!("\"{}\"", "x".repeat(max + 1))),
            };
            node.push(p);
            assert!(
                node.wait_subscriptions(i + 2).await,
                "not subscribed again after garbage {i}"
            );
        }
        stake_block(&node, 3, 9);
        let up = next(&mut rx).await;
        assert_eq!(stake_of(&up, 3), 9, "reads went on");
        assert!(actor.connected());
    });
}

/// `wss://` and `https://` go through the client's TLS configuration: with the built-in roots the
/// self-signed node is refused for reads and the subscription alike; trusting its certificate,
/// heads notified over WSS are read over HTTPS.
#[test]
fn wss_subscription_and_https_reads_share_the_tls_configuration() {
    use futures::StreamExt;
    use hermes_actors::chain::Chain;
    run(async {
        let (node, cert) =
            Node::start_tls(meta::subtensor(Drift::None), subtensor_storage(5, 4)).await;
        let url = node.tls_url();
        let untrusting = RpcChain::new(&url, RpcKind::Subtensor, vec![5]).unwrap();
        let err = untrusting.snapshot().await.unwrap_err();
        assert!(
            matches!(err, ChainError::Rpc(RpcError::Unreachable(_))),
            "{err}"
        );
        let head = untrusting.follow_heads().unwrap().next().await;
        assert!(
            matches!(head, Some(Err(ChainError::Rpc(RpcError::Unreachable(_))))),
            "{head:?}"
        );
        assert_eq!(node.subscriptions(), 0);

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let (_actor, mut rx) = following_client(RpcClient::with_roots(&url, roots).unwrap());
        let up = next(&mut rx).await;
        assert!(!up.stale);
        assert_eq!(up.registry.len(), 4);
        stake_block(&node, 2, 55);
        assert_eq!(stake_of(&next(&mut rx).await, 2), 55);
        assert_eq!(node.subscriptions(), 1);
    });
}
