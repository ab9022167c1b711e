//! Chain backends over a node's JSON-RPC interface: Subtensor (Bittensor) and Hypertensor.
//!
//! A registry read, for every configured subnet at once:
//! 1. one batch: `state_getMetadata` (only on the first read and after any failure, i.e. once
//!    per connection: the metadata is checked against what we decode, drift fails closed with
//!    an error naming the item), `state_getRuntimeVersion` (a new `specVersion` fetches and
//!    checks the metadata again, one extra round trip per runtime upgrade),
//!    `chain_getFinalizedHead`, and `state_getKeysPaged` over each subnet's node list (more
//!    pages only past 1,000 nodes);
//! 2. if the finalized head is the one last read, the previous registry is returned: a poll
//!    of an unchanged chain costs this one round trip;
//! 3. one batch: `chain_getHeader` of that head and `state_queryStorageAt` of every listed key
//!    at that head (hotkeys, and on Hypertensor peer ids and classes);
//! 4. one `state_queryStorageAt` of every node's stake at the same head.
//!
//! So a subnet of any size up to 1,000 nodes is read in three round trips, never one per peer.
//! Failures of any kind (unreachable, timeout, garbage, oversized answers, drift) are errors:
//! the ChainActor keeps the last registry and marks it stale after `max_staleness`, so new
//! peers are refused; HTTP connections are re-established on the next read, which the
//! ChainActor backs off exponentially while reads fail (`ChainActor::next_delay`).
//!
//! Subtensor entries carry no peer id: the firewall admits a peer once its verified binding is
//! signed by a registered hotkey. Hypertensor registries are marked `with_chain_bound_peers`.
//!
//! New heads: on a `ws://` or `wss://` URL the backend also follows finalized heads over one
//! WebSocket subscription (`chain_subscribeFinalizedHeads`, see [`heads`]), and the ChainActor
//! reads each new head at once; on `http(s)://`, and while the subscription is down, heads are
//! polled (one cheap round trip per `poll_interval`). Never anything per peer.
//!
//! Consensus, Hypertensor only and read only: [`Chain::head`] (block, and epoch from the
//! runtime's `EpochLength` constant) and [`RpcChain::subnet_consensus`] (the subnet's epoch, its
//! elected validator, whether a proposal was submitted). Hermes' own consensus rounds
//! ([`Chain::epoch`], [`Chain::standings`]) and submitting or attesting stay
//! [`ChainError::Unsupported`]: Hypertensor elects and records its own, and takes proposals and
//! attestations as extrinsics signed by the node's ECDSA account, which Hermes does not hold.

use super::{Chain, ChainError, ChainHead, EpochView};
use futures::future::BoxFuture;
use futures::stream::{BoxStream, StreamExt};
use hermes_proto::chain::{NodeClass, NodeEntry, Registry};
use hermes_proto::consensus::{Accepted, SignedAttestation, SignedProposal};
use hermes_proto::Hotkey;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

mod decode;
pub mod heads;
pub mod hypertensor;
pub mod keys;
pub mod metadata;
pub mod subtensor;
pub mod transport;

pub use decode::{Reader, ValueError};
pub use metadata::MetadataError;
pub use transport::{RpcClient, RpcError};

/// Keys asked for per `state_getKeysPaged` page (Substrate's maximum).
const PAGE: usize = 1000;
/// Most nodes read per subnet: a bound on what a hostile endpoint can make us hold.
pub const MAX_NODES_PER_SUBNET: usize = 16 * PAGE;
/// Largest single storage value read (a Hypertensor `SubnetNode` is well under 1 KiB).
const MAX_VALUE: usize = 64 << 10;
/// Largest metadata blob read.
const MAX_METADATA: usize = 16 << 20;

/// Which chain an endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcKind {
    /// Bittensor's subtensor (`SubtensorModule`).
    Subtensor,
    /// Hypertensor (`Network`).
    Hypertensor,
}

impl RpcKind {
    fn expected(self) -> &'static [metadata::Expected] {
        match self {
            RpcKind::Subtensor => subtensor::EXPECTED,
            RpcKind::Hypertensor => hypertensor::EXPECTED,
        }
    }
    fn constants(self) -> &'static [metadata::Constant] {
        match self {
            RpcKind::Subtensor => &[],
            RpcKind::Hypertensor => hypertensor::CONSTANTS,
        }
    }
    fn list_prefix(self, netuid: u16) -> Vec<u8> {
        match self {
            RpcKind::Subtensor => subtensor::list_prefix(netuid),
            RpcKind::Hypertensor => hypertensor::list_prefix(netuid),
        }
    }
    fn decode_listed(self, v: &[u8]) -> Result<Listed, ValueError> {
        match self {
            RpcKind::Subtensor => subtensor::decode_listed(v),
            RpcKind::Hypertensor => hypertensor::decode_listed(v),
        }
    }
    fn stake_key(self, account: &[u8], netuid: u16) -> Vec<u8> {
        match self {
            RpcKind::Subtensor => subtensor::stake_key(account, netuid),
            RpcKind::Hypertensor => hypertensor::stake_key(account, netuid),
        }
    }
    fn decode_stake(self, v: &[u8]) -> Result<u128, ValueError> {
        match self {
            RpcKind::Subtensor => subtensor::decode_stake(v),
            RpcKind::Hypertensor => hypertensor::decode_stake(v),
        }
    }
}

/// What a node-list value says about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The account's SCALE bytes (32 on Subtensor, 20 on Hypertensor), for the stake key.
    pub account: Vec<u8>,
    /// The hotkey as the registry holds it.
    pub hotkey: Hotkey,
    /// The peer id's text, empty when the chain does not know it (Subtensor).
    pub peer_id: String,
    /// The node's class.
    pub class: NodeClass,
}

/// One read of the chain.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The finalized block read.
    pub block: u64,
    /// Its hash.
    pub block_hash: [u8; 32],
    /// Every node of the configured subnets.
    pub registry: Registry,
}

#[derive(Debug, Default)]
struct State {
    /// The metadata was checked since the last failure.
    metadata_ok: bool,
    /// The runtime's `specVersion` when it was checked: an upgrade re-checks it.
    spec_version: Option<u64>,
    /// The last successful read.
    last: Option<Snapshot>,
    /// Blocks per epoch (Hypertensor's `EpochLength`), read with the metadata.
    epoch_length: Option<u32>,
}

/// A Hypertensor subnet's consensus at the finalized head, as the chain records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetConsensus {
    /// The finalized block read.
    pub block: u64,
    /// Blocks per epoch (`EpochLength`).
    pub epoch_length: u32,
    /// The chain's epoch, `block / epoch_length`.
    pub epoch: u64,
    /// The block offset of the subnet's epochs (`SubnetSlot`); `None` when it has none.
    pub slot: Option<u32>,
    /// The subnet's epoch, `(block - slot) / epoch_length`; `None` without a slot or before it.
    pub subnet_epoch: Option<u32>,
    /// The subnet node id elected validator for that epoch (`SubnetElectedValidator`).
    pub elected: Option<u32>,
    /// That node as listed (`SubnetNodesData`), when it still is.
    pub elected_node: Option<Listed>,
    /// Whether the elected validator's proposal is on chain (`SubnetConsensusSubmission`).
    pub submitted: bool,
}

/// A [`Chain`] read over JSON-RPC.
#[derive(Debug, Clone)]
pub struct RpcChain {
    client: RpcClient,
    kind: RpcKind,
    netuids: Vec<u16>,
    state: Arc<tokio::sync::Mutex<State>>,
}

impl RpcChain {
    /// A backend reading subnets `netuids` of a `kind` chain at `url` (`ws(s)://` or
    /// `http(s)://`). Nothing is sent until the first read.
    ///
    /// # Errors
    /// [`ChainError::Rpc`] for a bad URL.
    pub fn new(url: &str, kind: RpcKind, netuids: Vec<u16>) -> Result<Self, ChainError> {
        Ok(Self::with_client(RpcClient::new(url)?, kind, netuids))
    }

    /// [`RpcChain::new`] for a configured kind, which must be an RPC one.
    ///
    /// # Errors
    /// [`ChainError::Rpc`] for a bad URL, [`ChainError::Unsupported`] for `None`.
    pub fn for_config(
        url: &str,
        kind: Option<RpcKind>,
        netuids: Vec<u16>,
    ) -> Result<Self, ChainError> {
        let kind = kind.ok_or(ChainError::Unsupported("RPC access to a local chain"))?;
        Self::new(url, kind, netuids)
    }

    /// The same over a prepared client (tests lower its answer limit).
    pub fn with_client(client: RpcClient, kind: RpcKind, netuids: Vec<u16>) -> Self {
        RpcChain {
            client,
            kind,
            netuids,
            state: Arc::default(),
        }
    }

    /// Reads the configured subnets at the finalized head (see the module header).
    ///
    /// # Errors
    /// [`ChainError::Rpc`] or [`ChainError::Metadata`]; the next read re-checks the metadata.
    pub async fn snapshot(&self) -> Result<Snapshot, ChainError> {
        let mut state = self.state.lock().await;
        let res = self.read(&mut state).await;
        if res.is_err() {
            state.metadata_ok = false;
        }
        res
    }

    /// Hypertensor: the finalized block with the chain's epoch, and the epoch length.
    async fn hypertensor_head(&self) -> Result<(Snapshot, u32), ChainError> {
        if self.kind != RpcKind::Hypertensor {
            return Err(ChainError::Unsupported(
                "blocks and epochs (Subtensor's are not read)",
            ));
        }
        let snap = self.snapshot().await?;
        let length = self
            .state
            .lock()
            .await
            .epoch_length
            .filter(|l| *l > 0)
            .ok_or_else(|| garbage("the runtime's EpochLength is 0"))?;
        Ok((snap, length))
    }

    /// Hypertensor: subnet `netuid`'s consensus at the finalized head: its epoch, the elected
    /// validator and whether its proposal was submitted (read only; see the module header).
    /// Three round trips after the registry read (one when the subnet has no epoch yet).
    ///
    /// # Errors
    /// [`ChainError::Unsupported`] on Subtensor; [`ChainError::Rpc`] or
    /// [`ChainError::Metadata`] as for [`RpcChain::snapshot`].
    pub async fn subnet_consensus(&self, netuid: u16) -> Result<SubnetConsensus, ChainError> {
        let (snap, epoch_length) = self.hypertensor_head().await?;
        let at = transport::to_hex(&snap.block_hash);
        let slot = self
            .read_u32(&hypertensor::slot_key(netuid), &at, "SubnetSlot")
            .await?;
        let mut out = SubnetConsensus {
            block: snap.block,
            epoch_length,
            epoch: snap.block / u64::from(epoch_length),
            slot,
            subnet_epoch: hypertensor::subnet_epoch(snap.block, slot, epoch_length),
            elected: None,
            elected_node: None,
            submitted: false,
        };
        let Some(epoch) = out.subnet_epoch else {
            return Ok(out);
        };
        let elected_key = hypertensor::epoch_key("SubnetElectedValidator", netuid, epoch);
        let submission = transport::to_hex(&hypertensor::epoch_key(
            "SubnetConsensusSubmission",
            netuid,
            epoch,
        ));
        let answers = self
            .client
            .batch(&[
                (
                    "state_queryStorageAt",
                    json!([[transport::to_hex(&elected_key)], at]),
                ),
                // Whether the submission exists, without reading it: the key as its own prefix.
                (
                    "state_getKeysPaged",
                    json!([submission, 1, Value::Null, at]),
                ),
            ])
            .await?;
        let [elected, keys] =
            <[Value; 2]>::try_from(answers).map_err(|_| garbage("expected two answers"))?;
        out.elected = decode_one(changes_of(elected)?, &elected_key, "SubnetElectedValidator")?;
        out.submitted = keys_of(keys)?.contains(&submission);
        if let Some(id) = out.elected {
            let key = hypertensor::node_key(netuid, id);
            let values = changes_of(
                self.client
                    .call(
                        "state_queryStorageAt",
                        json!([[transport::to_hex(&key)], at]),
                    )
                    .await?,
            )?;
            if let Some(Some(v)) = values.get(&transport::to_hex(&key)) {
                out.elected_node = Some(
                    hypertensor::decode_listed(v)
                        .map_err(|e| garbage(&format!("SubnetNodesData: {e}")))?,
                );
            }
        }
        Ok(out)
    }

    /// One `u32` storage value at block `at`; `None` when absent.
    async fn read_u32(&self, key: &[u8], at: &str, what: &str) -> Result<Option<u32>, ChainError> {
        let values = changes_of(
            self.client
                .call(
                    "state_queryStorageAt",
                    json!([[transport::to_hex(key)], at]),
                )
                .await?,
        )?;
        Ok(decode_one(values, key, what)?)
    }

    async fn read(&self, state: &mut State) -> Result<Snapshot, ChainError> {
        // Round trip 1: metadata (once), finalized head, node lists.
        let mut calls: Vec<(&str, Value)> = Vec::new();
        if !state.metadata_ok {
            calls.push(("state_getMetadata", json!([])));
        }
        calls.push(("state_getRuntimeVersion", json!([])));
        calls.push(("chain_getFinalizedHead", json!([])));
        for n in &self.netuids {
            let prefix = transport::to_hex(&self.kind.list_prefix(*n));
            calls.push(("state_getKeysPaged", json!([prefix, PAGE, prefix])));
        }
        let mut answers = self.client.batch(&calls).await?.into_iter();
        let mut next = || answers.next().ok_or_else(|| garbage("missing answer"));
        let meta = if state.metadata_ok {
            None
        } else {
            Some(transport::hex_bytes(&next()?, MAX_METADATA)?)
        };
        let spec = next()?
            .get("specVersion")
            .and_then(Value::as_u64)
            .ok_or_else(|| garbage("runtime version without specVersion"))?;
        // A runtime upgrade since the check: check the new runtime's metadata (one more round
        // trip, once per upgrade).
        let meta = match meta {
            None if state.spec_version != Some(spec) => Some(transport::hex_bytes(
                &self.client.call("state_getMetadata", json!([])).await?,
                MAX_METADATA,
            )?),
            m => m,
        };
        if let Some(meta) = meta {
            let constants =
                metadata::check_and_read(&meta, self.kind.expected(), self.kind.constants())?;
            state.epoch_length = constants.first().copied();
            state.metadata_ok = true;
            state.spec_version = Some(spec);
        }
        let head: [u8; 32] = transport::hex_bytes(&next()?, 32)?
            .try_into()
            .map_err(|_| garbage("block hash is not 32 bytes"))?;
        let mut lists: Vec<(u16, Vec<String>)> = Vec::new();
        for n in &self.netuids {
            lists.push((*n, keys_of(next()?)?));
        }
        if let Some(last) = &state.last {
            if last.block_hash == head {
                return Ok(last.clone());
            }
        }
        // Further pages, only for subnets past one page.
        let head_hex = transport::to_hex(&head);
        for (n, list) in &mut lists {
            let prefix = transport::to_hex(&self.kind.list_prefix(*n));
            let mut last_page = list.len();
            while last_page == PAGE {
                if list.len() >= MAX_NODES_PER_SUBNET {
                    return Err(garbage("subnet lists more nodes than we read").into());
                }
                let start = list.last().cloned().unwrap_or_default();
                let page = keys_of(
                    self.client
                        .call("state_getKeysPaged", json!([prefix, PAGE, start, head_hex]))
                        .await?,
                )?;
                last_page = page.len();
                list.extend(page);
            }
        }
        // Round trip 2: the head's number and every listed value.
        let all: Vec<&String> = lists.iter().flat_map(|(_, l)| l.iter()).collect();
        let answers = self
            .client
            .batch(&[
                ("chain_getHeader", json!([head_hex])),
                ("state_queryStorageAt", json!([all, head_hex])),
            ])
            .await?;
        let [header, values] =
            <[Value; 2]>::try_from(answers).map_err(|_| garbage("expected two answers"))?;
        let block =
            header_number(&header).ok_or_else(|| garbage("header without a block number"))?;
        let values = changes_of(values)?;
        let mut nodes: Vec<(u16, Listed)> = Vec::new();
        for (n, list) in &lists {
            for k in list {
                // A key listed at the best block may be gone at the finalized one: skip it.
                let Some(Some(v)) = values.get(k.as_str()) else {
                    continue;
                };
                let listed = self
                    .kind
                    .decode_listed(v)
                    .map_err(|e| garbage(&format!("{k}: {e}")))?;
                nodes.push((*n, listed));
            }
        }
        // Round trip 3: every node's stake.
        let stake_keys: Vec<String> = nodes
            .iter()
            .map(|(n, l)| transport::to_hex(&self.kind.stake_key(&l.account, *n)))
            .collect();
        let stakes = if stake_keys.is_empty() {
            HashMap::new()
        } else {
            changes_of(
                self.client
                    .call("state_queryStorageAt", json!([stake_keys, head_hex]))
                    .await?,
            )?
        };
        let mut entries = Vec::with_capacity(nodes.len());
        for ((netuid, l), k) in nodes.into_iter().zip(&stake_keys) {
            let stake = match stakes.get(k.as_str()) {
                Some(Some(v)) => self
                    .kind
                    .decode_stake(v)
                    .map_err(|e| garbage(&format!("{k}: {e}")))?,
                // Absent: the default of a ValueQuery map, zero.
                _ => 0,
            };
            entries.push(NodeEntry {
                netuid,
                hotkey: l.hotkey,
                peer_id: l.peer_id,
                stake,
                class: l.class,
            });
        }
        let mut registry = Registry::new(entries);
        if self.kind == RpcKind::Hypertensor {
            registry = registry.with_chain_bound_peers();
        }
        let snap = Snapshot {
            block,
            block_hash: head,
            registry,
        };
        state.last = Some(snap.clone());
        Ok(snap)
    }
}

/// The block number of a JSON header (`"number": "0x…"`).
fn header_number(header: &Value) -> Option<u64> {
    header
        .get("number")
        .and_then(Value::as_str)
        .and_then(|s| s.strip_prefix("0x"))
        .and_then(|s| u64::from_str_radix(s, 16).ok())
}

fn garbage(what: &str) -> RpcError {
    RpcError::Garbage(what.to_string())
}

/// The `u32` value of `key` among `values`; `None` when absent.
fn decode_one(
    values: HashMap<String, Option<Vec<u8>>>,
    key: &[u8],
    what: &str,
) -> Result<Option<u32>, RpcError> {
    match values.get(&transport::to_hex(key)) {
        Some(Some(v)) => hypertensor::decode_u32(v, what)
            .map(Some)
            .map_err(|e| garbage(&e.to_string())),
        _ => Ok(None),
    }
}

/// The keys of a `state_getKeysPaged` answer.
fn keys_of(v: Value) -> Result<Vec<String>, RpcError> {
    let Value::Array(a) = v else {
        return Err(garbage("state_getKeysPaged: not an array"));
    };
    if a.len() > PAGE {
        return Err(garbage("state_getKeysPaged: more keys than asked for"));
    }
    a.into_iter()
        .map(|k| {
            // Checked as hex here so that a bad key fails now, not when queried.
            transport::hex_bytes(&k, 1024)?;
            k.as_str()
                .map(str::to_string)
                .ok_or_else(|| garbage("key is not a string"))
        })
        .collect()
}

/// The `key → value` pairs of a `state_queryStorageAt` answer (`[{block, changes}]`).
fn changes_of(v: Value) -> Result<HashMap<String, Option<Vec<u8>>>, RpcError> {
    let sets = v
        .as_array()
        .ok_or_else(|| garbage("state_queryStorageAt: not an array"))?;
    let mut out = HashMap::new();
    for set in sets {
        let changes = set
            .get("changes")
            .and_then(Value::as_array)
            .ok_or_else(|| garbage("state_queryStorageAt: no changes"))?;
        for c in changes {
            let pair = c
                .as_array()
                .filter(|p| p.len() == 2)
                .ok_or_else(|| garbage("state_queryStorageAt: a change is not [key, value]"))?;
            let (Some(key), Some(value)) = (pair.first(), pair.get(1)) else {
                return Err(garbage("state_queryStorageAt: short change"));
            };
            let key = key
                .as_str()
                .ok_or_else(|| garbage("state_queryStorageAt: key is not a string"))?;
            let value = if value.is_null() {
                None
            } else {
                Some(transport::hex_bytes(value, MAX_VALUE)?)
            };
            out.insert(key.to_string(), value);
        }
    }
    Ok(out)
}

/// Decodes a node-list value of `kind` (the fuzz target's entry point).
///
/// # Errors
/// [`ValueError`].
pub fn decode_listed(kind: RpcKind, value: &[u8]) -> Result<Listed, ValueError> {
    kind.decode_listed(value)
}

/// Decodes a stake value of `kind` (the fuzz target's entry point).
///
/// # Errors
/// [`ValueError`].
pub fn decode_stake(kind: RpcKind, value: &[u8]) -> Result<u128, ValueError> {
    kind.decode_stake(value)
}

/// Parses a `state_queryStorageAt` answer (the fuzz target's entry point).
///
/// # Errors
/// [`RpcError::Garbage`].
pub fn parse_changes(answer: &[u8]) -> Result<usize, RpcError> {
    let v: Value = serde_json::from_slice(answer).map_err(|e| garbage(&e.to_string()))?;
    Ok(changes_of(v)?.len())
}

impl Chain for RpcChain {
    fn registry(&self) -> BoxFuture<'_, Result<Registry, ChainError>> {
        Box::pin(async move { Ok(self.snapshot().await?.registry) })
    }

    /// On a `ws://` or `wss://` URL: the subscription of [`heads`].
    fn follow_heads(&self) -> Option<BoxStream<'static, Result<u64, ChainError>>> {
        let sub = self.client.subscriber()?;
        Some(sub.follow().map(|h| h.map_err(ChainError::from)).boxed())
    }

    /// Hypertensor: the finalized block, its epoch (`block / EpochLength`) and the epoch length.
    /// The block time is not read (`None`).
    fn head(&self) -> BoxFuture<'_, Result<ChainHead, ChainError>> {
        Box::pin(async move {
            let (snap, length) = self.hypertensor_head().await?;
            Ok(ChainHead {
                block: snap.block,
                epoch: snap.block / u64::from(length),
                blocks_per_epoch: u64::from(length),
                block_hash: snap.block_hash,
                block_time: None,
            })
        })
    }

    fn epoch(
        &self,
        netuid: u16,
        epoch: Option<u64>,
    ) -> BoxFuture<'_, Result<Option<EpochView>, ChainError>> {
        let _ = (netuid, epoch);
        crate::chain::unsupported(
            "Hermes consensus rounds (Hypertensor elects and records its own: \
             `hermes chain check` shows them)",
        )
    }

    fn submit_proposal(
        &self,
        proposal: SignedProposal,
    ) -> BoxFuture<'_, Result<Accepted, ChainError>> {
        let _ = proposal;
        crate::chain::unsupported(NOT_SIGNED)
    }

    fn attest(
        &self,
        attestation: SignedAttestation,
    ) -> BoxFuture<'_, Result<Accepted, ChainError>> {
        let _ = attestation;
        crate::chain::unsupported(NOT_SIGNED)
    }
}

/// Why the RPC backends submit nothing.
const NOT_SIGNED: &str = "consensus submissions (on Hypertensor, proposals and attestations are \
     extrinsics signed by the node's ECDSA account, whose key Hermes does not hold; Subtensor's \
     are not implemented)";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // The fuzz target's entry points on random input: errors, never panics.
        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(l) = decode_listed(RpcKind::Subtensor, &data) {
                prop_assert_eq!(l.account.len(), 32);
            }
            if let Ok(l) = decode_listed(RpcKind::Hypertensor, &data) {
                prop_assert_eq!(l.account.len(), 20);
            }
            let _ = decode_stake(RpcKind::Subtensor, &data);
            let _ = decode_stake(RpcKind::Hypertensor, &data);
            let _ = parse_changes(&data);
            let _ = metadata::check(&data, subtensor::EXPECTED);
            let _ = metadata::check(&data, hypertensor::EXPECTED);
            let _ = metadata::check_and_read(&data, hypertensor::EXPECTED, hypertensor::CONSTANTS);
            if let Ok(v) = hypertensor::decode_u32(&data, "u32") {
                prop_assert_eq!(data.len(), 4);
                prop_assert_eq!(v.to_le_bytes().to_vec(), data.clone());
            }
        }
    }

    #[test]
    fn storage_answers_are_checked() {
        let ok = br#"[{"block":"0x00","changes":[["0x01","0x0203"],["0x02",null]]}]"#;
        assert_eq!(parse_changes(ok).unwrap(), 2);
        for bad in [
            &br#"{"changes":[]}"#[..],
            br#"[{"changes":[["0x01"]]}]"#,
            br#"[{"changes":[["0x01","0xzz"]]}]"#,
            br#"[{"changes":[["0x01","0102"]]}]"#,
            br#"[{"changes":[[1,"0x01"]]}]"#,
        ] {
            assert!(
                parse_changes(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let big = format!(
            r#"[{{"changes":[["0x01","0x{}"]]}}]"#,
            "00".repeat(MAX_VALUE + 1)
        );
        assert!(parse_changes(big.as_bytes()).is_err());
    }
}
