//! The network task: owns the libp2p Swarm and turns its events into node behaviour.
//!
//! Runs on its own actix arbiter (a thread with a single-threaded tokio runtime). Nothing on the
//! swarm's path awaits an actor: admission reads the FirewallActor's policy snapshot, binding
//! verification is a pure function of the snapshot and the record.
//!
//! Per connection, step by step:
//! 1. The [`gate::Gate`] (first behaviour) admits or refuses by address, then by authenticated
//!    peer id, before any handler or substream exists.
//! 2. On the first connection to a peer, both sides exchange binding records over
//!    `/hermes/identity/1` ([`identity_proto`]). A record must verify for the connection's peer id,
//!    within `binding_timeout`, and the hotkey that signed it must have registered that peer id
//!    (in scope, with stake: the policy again, for that hotkey only); otherwise the peer is
//!    disconnected, the failure counted, and its IP banned after repeated identity failures.
//! 3. Only verified peers enter the Kademlia routing table (bucket inserts are manual). Gossip is
//!    accepted (manual gossipsub validation) only from a verified forwarder and when its author's
//!    binding verifies and the policy admits the author under the hotkey that signed it: the
//!    binding exchanged on a connection, or for relayed gossip the one published in the DHT under
//!    the author's peer id ([`authors`]).
//! 4. When the policy changes (ACL, scope, registry), every connected peer is checked again (a
//!    verified one under the hotkey that signed its binding) and those now refused are
//!    disconnected and removed from the routing table. A verified peer whose binding expires
//!    without a renewal is dropped the same way (`expired_binding`).
//!
//! 5. Verified peers are published in the [`directory::PeerDirectory`], which the stream layer
//!    reads; when this node's binding is re-issued (e.g. a prekey rotation), it is pushed to every
//!    verified peer over `/hermes/identity/1` so they seal new sessions to the new prekey.
//! 6. The data plane (`/hermes/msg/1`, `/hermes/stream/1`) uses raw substreams
//!    ([`substream`]) opened and accepted outside this task's event loop.
//! 7. When a peer cannot be reached (no connection, closed by the remote before it admitted us,
//!    or refused here), the last [`ReachFailure`] is kept until it is verified, so the stream
//!    layer can tell the user why (`Command::WhyUnreachable`).
//!
//! Each node publishes its binding in the DHT under `/hermes/binding/<hotkey>`, so any node can
//! find another by wallet address alone, and under `/hermes/peer/<peer id>`, so that relayed
//! gossip can be verified; inbound DHT writes to such keys are verified first
//! ([`kad_store::check_inbound`]). Identify messages feed a peer's address list only with
//! dialable addresses, a few at most ([`sensible_addrs`]).

pub mod accept;
pub mod authors;
pub mod directory;
pub mod filter;
pub mod gate;
pub mod handshake;
pub mod identity_proto;
pub mod kad_store;
pub mod listen;
pub mod muxer;
pub mod quic;
pub mod reach;
pub mod substream;

use crate::storage::Store;
use directory::PeerDirectory;
use futures::StreamExt;
use gate::{DenyCounters, Gate, SharedPolicy};
use hermes_proto::binding::BindingError;
use hermes_proto::firewall::{DenyReason, Limits, RateLimiter};
use hermes_proto::{Hotkey, SignedBinding};
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::kad::{
    self, store::RecordStore as _, GetRecordOk, QueryResult, Quorum, Record, RecordKey,
};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    identify, identity::Keypair, noise, ping, tcp, Multiaddr, PeerId, StreamProtocol, Swarm,
};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Kademlia protocol name.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/hermes/kad/1");
/// DHT key prefix of published bindings.
pub const BINDING_KEY_PREFIX: &[u8] = b"/hermes/binding/";
/// DHT key prefix of bindings published by peer id (how a relayed gossip author is verified).
pub const PEER_KEY_PREFIX: &[u8] = b"/hermes/peer/";
/// Capacity of the command queue: API calls beyond it wait (bounded on purpose).
pub const COMMAND_QUEUE: usize = 256;
/// Capacity of the inbound gossip broadcast; slow subscribers lose the oldest messages.
pub const GOSSIP_QUEUE: usize = 1024;

/// The DHT key under which `hotkey`'s binding is published.
pub fn binding_key(hotkey: &Hotkey) -> RecordKey {
    let mut k = BINDING_KEY_PREFIX.to_vec();
    k.extend_from_slice(&hotkey.0);
    RecordKey::new(&k)
}

/// The DHT key under which the node with transport key `peer` publishes its binding.
pub fn peer_binding_key(peer: &PeerId) -> RecordKey {
    let mut k = PEER_KEY_PREFIX.to_vec();
    k.extend_from_slice(&peer.to_bytes());
    RecordKey::new(&k)
}

/// The gossipsub topic of a subnet.
pub fn topic(netuid: u16) -> IdentTopic {
    IdentTopic::new(format!("hermes/{netuid}/consensus"))
}

/// Everything the network task needs.
#[derive(Debug)]
pub struct NetConfig {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Addresses to dial at start.
    pub bootstrap: Vec<Multiaddr>,
    /// Transport key.
    pub keypair: Keypair,
    /// This node's hotkey.
    pub hotkey: Hotkey,
    /// This node's signed binding (refreshed through [`Command::SetBinding`]).
    pub binding: SignedBinding,
    /// Subnets whose gossip topics to join.
    pub netuids: Vec<u16>,
    /// SS58 prefix for printing.
    pub ss58_prefix: u16,
    /// The node's database (for the DHT store).
    pub store: Store,
    /// The firewall's policy snapshot.
    pub policy: SharedPolicy,
    /// Denial counters.
    pub counters: Arc<DenyCounters>,
    /// Address limits.
    pub limits: Limits,
    /// Identity-exchange failures from one IP before it is banned.
    pub ban_after_failures: u32,
    /// How long a new peer has to present a valid binding.
    pub binding_timeout: Duration,
    /// How long a new connection's transport handshake may take (TCP and QUIC).
    pub handshake_timeout: Duration,
    /// Accept and refuse TCP connections on a thread of their own ([`accept`]); false keeps
    /// libp2p's listener on the network thread (with [`filter`] refusing there).
    pub accept_thread: bool,
    /// Test hook: present these bytes instead of the real binding.
    pub binding_override: Option<Vec<u8>>,
    /// Verified peers, shared with the stream layer.
    pub directory: Arc<PeerDirectory>,
    /// Where negotiated inbound data-plane substreams go.
    pub inbound_substreams: mpsc::Sender<substream::InboundSubstream>,
    /// Where inbound `/hermes/sync/1` substreams go (the Sync Engine's server); `None` does not
    /// offer the protocol.
    pub sync_substreams: Option<mpsc::Sender<substream::InboundSubstream>>,
}

/// Gossipsub application score of a connected peer whose binding is not verified yet. With the
/// default weight (10) and thresholds it lands at -60: below 0 (never grafted into a mesh, grafts
/// it asks for are refused), below the gossip (-10) and publish (-50) thresholds (it is sent
/// nothing), above the graylist (-80), so its subscriptions are still recorded for when it is
/// verified. Its messages are dropped by validation meanwhile.
const UNVERIFIED_SCORE: f64 = -6.0;

/// How long before a verified peer's binding expires it is asked for its current one (at least
/// `binding_timeout`), in case the binding it renewed and pushed was lost.
const RENEW_ASK_SECS: u64 = 60;

/// An admitted, verified peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Peer id.
    pub peer_id: PeerId,
    /// SS58 address of its hotkey.
    pub ss58: String,
    /// Its hotkey.
    pub hotkey: Hotkey,
    /// Known addresses (from identify and the connection).
    pub addresses: Vec<Multiaddr>,
    /// In-scope subnets it is registered in.
    pub netuids: Vec<u16>,
    /// Its current verified binding (naming its current prekey).
    pub binding: SignedBinding,
}

/// A gossip message accepted from a verified peer.
#[derive(Debug, Clone)]
pub struct GossipMessage {
    /// Author's SS58 address.
    pub from: String,
    /// Author's peer id.
    pub peer_id: PeerId,
    /// Subnet of the topic.
    pub netuid: u16,
    /// Payload.
    pub data: Vec<u8>,
}

/// Requests to the network task. Every request carries its own reply channel.
#[derive(Debug)]
#[non_exhaustive]
pub enum Command {
    /// Verified peers.
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    /// Addresses the node listens on.
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    /// Find a hotkey's binding in the DHT.
    Find(Hotkey, oneshot::Sender<Result<SignedBinding, String>>),
    /// Store a record in the DHT.
    PutRecord(Vec<u8>, Vec<u8>, oneshot::Sender<Result<(), String>>),
    /// Read a record from the DHT.
    GetRecord(Vec<u8>, oneshot::Sender<Result<Vec<u8>, String>>),
    /// Publish gossip on a subnet's topic.
    Publish(u16, Vec<u8>, oneshot::Sender<Result<(), String>>),
    /// Dial an address.
    Dial(Multiaddr, oneshot::Sender<Result<(), String>>),
    /// The policy changed: re-check every connected peer.
    Recheck,
    /// Replace the binding this node presents.
    SetBinding(SignedBinding),
    /// Peers in the Kademlia routing table.
    RoutingTable(oneshot::Sender<Vec<PeerId>>),
    /// Peers in any gossipsub mesh.
    MeshPeers(oneshot::Sender<Vec<PeerId>>),
    /// Peers with an open connection (verified or not).
    Connected(oneshot::Sender<Vec<PeerId>>),
    /// Make sure a connection to the node of `hotkey` is being established: answers with its
    /// peer id once a dial is under way (or at once when already connected). The caller then
    /// waits for the peer to appear in the directory. The error text names the cause in words
    /// for a user (e.g. an unknown address).
    Connect(Hotkey, oneshot::Sender<Result<PeerId, String>>),
    /// Why the last attempt to reach the node of this hotkey failed, if one did and nothing
    /// succeeded since. Its peer id is the one given, else the one the chain registered.
    WhyUnreachable(
        Hotkey,
        Option<PeerId>,
        oneshot::Sender<Option<ReachFailure>>,
    ),
}

/// Why a peer this node tried to reach is not (yet) a verified connection, as far as this node
/// can tell. A remote's refusal is reported without its reason: a node never tells a peer which
/// of its checks failed, and this one does not guess.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReachFailure {
    /// No connection could be made (the detail is the transport's reason).
    Offline(String),
    /// A connection was made, then the remote closed it before admitting this node.
    RefusedByRemote,
    /// This node's own firewall refused the remote (the reason is this node's own).
    RefusedHere(DenyReason),
}

impl std::fmt::Display for ReachFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReachFailure::Offline(d) => {
                write!(f, "recipient offline: no connection could be made ({d})")
            }
            ReachFailure::RefusedByRemote => f.write_str(
                "our connection is refused: the recipient's node closed it without admitting \
                 this node (its operator can tell why: registration, stake, subnets or ACL)",
            ),
            ReachFailure::RefusedHere(r) => write!(
                f,
                "this node's own firewall refuses the recipient ({r}); see `hermes stats`"
            ),
        }
    }
}

/// Most peers whose last failure is remembered; the table is cleared when it is full (the
/// entries only improve error messages, so losing them is harmless).
const MAX_REACH_FAILURES: usize = 4096;

/// Handle to the network task.
#[derive(Debug, Clone)]
pub struct NetHandle {
    /// Command queue.
    pub commands: mpsc::Sender<Command>,
    /// Inbound gossip.
    pub gossip: broadcast::Sender<GossipMessage>,
    /// Opens data-plane substreams.
    pub substreams: substream::Substreams,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    // First, so that a denial happens before any other behaviour creates a handler.
    gate: Gate,
    identity: request_response::Behaviour<identity_proto::BindingCodec>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad_store::SledStore>,
    gossipsub: gossipsub::Behaviour,
    substream: substream::Behaviour,
}

#[derive(Debug, Default)]
struct PeerState {
    verified: Option<PeerInfo>,
    /// A plain libp2p peer that does not speak `/hermes/identity/1`, tolerated only while the
    /// firewall is disabled (open mode). Never verified, so never in `peers()` or the DHT table.
    foreign: bool,
    since: Option<Instant>,
    ip: Option<IpAddr>,
    listen_addrs: Vec<Multiaddr>,
    dialed_addr: Option<Multiaddr>,
    /// The `expires_at` of the binding for which the peer was last asked to renew.
    renew_asked: u64,
}

/// Errors building the swarm.
#[derive(Debug, thiserror::Error)]
#[error("network start failed: {0}")]
pub struct NetError(pub String);

/// Builds the swarm, starts listening and returns the task future plus its handle.
///
/// # Errors
/// [`NetError`] if a transport cannot be built, the DHT store cannot be opened or a listen
/// address cannot be bound.
pub fn start(
    cfg: NetConfig,
) -> Result<(NetHandle, impl std::future::Future<Output = ()>), NetError> {
    let err = |e: &dyn std::fmt::Display| NetError(e.to_string());
    let local = cfg.keypair.public().to_peer_id();
    let records = cfg
        .store
        .tree(crate::storage::TREE_KAD_RECORDS)
        .map_err(|e| err(&e))?;
    let providers = cfg
        .store
        .tree(crate::storage::TREE_KAD_PROVIDERS)
        .map_err(|e| err(&e))?;
    let policy = cfg.policy.clone();
    let counters = cfg.counters.clone();
    let limits = cfg.limits;
    let guard = Arc::new(filter::AddressGuard::new(
        RateLimiter::new(limits),
        cfg.counters.clone(),
    ));
    let g2 = guard.clone();
    let handshake_timeout = cfg.handshake_timeout;
    let accept_thread = cfg.accept_thread;
    let (substream_behaviour, substreams) = substream::Behaviour::new(
        cfg.inbound_substreams.clone(),
        cfg.sync_substreams
            .iter()
            .map(|q| (substream::SYNC_PROTOCOL, q.clone()))
            .collect(),
    );
    let mut substream_behaviour = Some(substream_behaviour);
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(cfg.keypair.clone())
        .with_tokio()
        .with_other_transport(move |key| {
            use libp2p::core::muxing::StreamMuxerBox;
            use libp2p::core::upgrade::Version;
            use libp2p::core::Transport as _;
            let noise = noise::Config::new(key)?;
            let tcp = if accept_thread {
                accept::TcpTransport::new(true, g2.clone())
                    .upgrade(Version::V1Lazy)
                    .authenticate(noise)
                    .multiplex(muxer::Config)
                    .map(|(p, m), _| (p, StreamMuxerBox::new(m)))
                    .boxed()
            } else {
                filter::AddressFilter::with_reject(
                    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)),
                    g2.clone(),
                    filter::reset_tcp,
                )
                .upgrade(Version::V1Lazy)
                .authenticate(noise)
                .multiplex(muxer::Config)
                .map(|(p, m), _| (p, StreamMuxerBox::new(m)))
                .boxed()
            };
            let quic = filter::AddressFilter::new(
                quic::QuicTransport::new(
                    key,
                    quic::QuicConfig {
                        handshake_timeout,
                        ..quic::QuicConfig::default()
                    },
                )?,
                g2,
            )
            .map(|(p, c), _| (p, StreamMuxerBox::new(c)));
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(tcp.or_transport(quic).map(
                |either, _| match either {
                    futures::future::Either::Left(x) | futures::future::Either::Right(x) => x,
                },
            ))
        })
        .map_err(|e| err(&e))?
        .with_behaviour(|key| {
            let mut kcfg = kad::Config::new(KAD_PROTOCOL);
            kcfg.set_record_filtering(kad::StoreInserts::FilterBoth);
            kcfg.set_kbucket_inserts(kad::BucketInserts::Manual);
            // Bootstrapping is triggered by the task once a verified peer exists; libp2p's own
            // timer would only warn "no known peers" before that.
            kcfg.set_periodic_bootstrap_interval(None);
            let mut kad = kad::Behaviour::with_config(
                local,
                kad_store::SledStore::new(local, records, providers),
                kcfg,
            );
            kad.set_mode(Some(kad::Mode::Server));
            let gcfg = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .validate_messages()
                .max_transmit_size(1 << 20)
                .build()
                .map_err(|e| e.to_string())?;
            let mut gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gcfg,
            )?;
            // Peer scores keep unverified peers out of the mesh: see `UNVERIFIED_SCORE`. Only
            // the application score is used; the other penalties are off (per-IP limits are
            // the firewall's job, and a slow verified peer stays a member).
            gossipsub.with_peer_score(
                gossipsub::PeerScoreParams {
                    ip_colocation_factor_weight: 0.0,
                    slow_peer_weight: 0.0,
                    behaviour_penalty_weight: 0.0,
                    ..Default::default()
                },
                gossipsub::PeerScoreThresholds::default(),
            )?;
            Ok(Behaviour {
                gate: Gate::new(policy, counters, limits),
                identity: request_response::Behaviour::new(
                    [(identity_proto::PROTOCOL, ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(10)),
                ),
                identify: identify::Behaviour::new(
                    identify::Config::new("/hermes/id/1".into(), key.public())
                        .with_agent_version(format!("hermes/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::default(),
                kad,
                gossipsub,
                substream: substream_behaviour.take().ok_or("behaviour built twice")?,
            })
        })
        .map_err(|e| err(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        // Bounds every transport upgrade (TCP: multistream, noise, yamux): a silent socket holds
        // a connection slot until then.
        .with_connection_timeout(handshake_timeout)
        .build();
    for addr in &cfg.listen {
        listen::check_tcp_free(addr)
            .map_err(|e| NetError(format!("cannot listen on {addr}: {e}")))?;
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError(format!("cannot listen on {addr}: {}", listen::describe(&e))))?;
    }
    for n in &cfg.netuids {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic(*n))
            .map_err(|e| err(&e))?;
    }
    for addr in &cfg.bootstrap {
        if let Err(e) = swarm.dial(addr.clone()) {
            tracing::warn!(%addr, error = %e, "cannot dial bootstrap address");
        }
    }
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let (gossip, _) = broadcast::channel(GOSSIP_QUEUE);
    let handle = NetHandle {
        commands: tx,
        gossip: gossip.clone(),
        substreams,
    };
    let task = Task {
        swarm,
        cfg,
        peers: HashMap::new(),
        listen_addrs: Vec::new(),
        pending_get: HashMap::new(),
        bad_answers: HashMap::new(),
        authors: authors::Authors::default(),
        pending_put: HashMap::new(),
        pending_closest: HashMap::new(),
        reach_failures: HashMap::new(),
        gossip,
        last_publish: None,
        guard,
        failed_handshakes: handshake::FailedHandshakes::default(),
    };
    Ok((handle, task.run(rx)))
}

enum Pending {
    Find(Hotkey, oneshot::Sender<Result<SignedBinding, String>>),
    Get(oneshot::Sender<Result<Vec<u8>, String>>),
    Connect(Hotkey, oneshot::Sender<Result<PeerId, String>>),
    /// The binding of a relayed gossip author (see [`authors`]).
    Author(PeerId),
}

impl Pending {
    /// Answers the waiting caller: nothing valid was found in the DHT (`why` says more when the
    /// lookup did not simply come back empty).
    fn not_found(self, why: Option<&str>) {
        let why = why.map(|w| format!(" ({w})")).unwrap_or_default();
        match self {
            Pending::Get(reply) => {
                let _ = reply.send(Err(format!("no such record in the DHT{why}")));
            }
            Pending::Find(_, reply) => {
                let _ = reply.send(Err(format!(
                    "no node has published a binding for this address in the DHT{why}"
                )));
            }
            Pending::Connect(_, reply) => {
                let _ = reply.send(Err(format!("{UNKNOWN_ADDRESS}{why}")));
            }
            // Answered by the task itself (`Task::lookup_failed`).
            Pending::Author(_) => {}
        }
    }
}

/// Why a destination cannot even be looked up.
pub const UNKNOWN_ADDRESS: &str = "unknown address: it is not registered on this node's chain \
     and no node has published a binding for it in the DHT";

/// A DHT lookup failure in words (libp2p's `Debug` dumps the key bytes).
fn get_error(e: &kad::GetRecordError) -> Option<&'static str> {
    match e {
        kad::GetRecordError::NotFound { .. } => None,
        kad::GetRecordError::Timeout { .. } => Some("the DHT lookup timed out"),
    }
}

struct Task {
    swarm: Swarm<Behaviour>,
    cfg: NetConfig,
    peers: HashMap<PeerId, PeerState>,
    listen_addrs: Vec<Multiaddr>,
    pending_get: HashMap<kad::QueryId, Pending>,
    /// Why the last answer to a pending lookup was refused (see `Task::on_found`).
    bad_answers: HashMap<kad::QueryId, String>,
    /// Bindings of relayed gossip authors.
    authors: authors::Authors,
    pending_put: HashMap<kad::QueryId, oneshot::Sender<Result<(), String>>>,
    pending_closest: HashMap<kad::QueryId, (PeerId, oneshot::Sender<Result<PeerId, String>>)>,
    /// The last reason each peer could not be reached (see [`ReachFailure`]).
    reach_failures: HashMap<PeerId, ReachFailure>,
    gossip: broadcast::Sender<GossipMessage>,
    last_publish: Option<Instant>,
    guard: Arc<filter::AddressGuard>,
    failed_handshakes: handshake::FailedHandshakes,
}

fn now() -> u64 {
    crate::unix_now()
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut republish = tokio::time::interval(Duration::from_secs(600));
        let mut redial = tokio::time::interval(Duration::from_secs(2));
        let mut sweep = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                ev = self.swarm.select_next_some() => self.on_event(ev),
                _ = tick.tick() => {
                    self.expire_unverified();
                    self.expire_bindings();
                }
                _ = republish.tick() => {
                    self.publish_binding(true);
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
                _ = redial.tick() => self.redial_bootstrap(),
                _ = sweep.tick() => self.swarm.behaviour_mut().kad.store_mut().sweep_expired(),
            }
        }
        tracing::debug!("network task stopped");
    }

    /// While the node has no connection at all, keeps dialing its bootstrap addresses: nodes of
    /// a cluster often start together, before the bootstrap node listens.
    fn redial_bootstrap(&mut self) {
        if self.swarm.connected_peers().next().is_some() {
            return;
        }
        for addr in self.cfg.bootstrap.clone() {
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, error = %e, "bootstrap redial failed");
            }
        }
    }

    fn own_binding_bytes(&self) -> Vec<u8> {
        self.cfg
            .binding_override
            .clone()
            .unwrap_or_else(|| self.cfg.binding.encode())
    }

    fn deny(&mut self, peer: PeerId, reason: DenyReason, detail: &dyn std::fmt::Display) {
        // One refusal per connection episode: a second failure report for a peer already refused
        // (its request and its response can both fail) must not count twice or skip the ban.
        let Some(state) = self.peers.get(&peer) else {
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        };
        let ip = state.ip;
        // Only a failed identity exchange counts toward a ban: a peer once verified whose binding
        // ran out, or is replaced by a bad one, is dropped but does not get its address banned.
        let was_verified = state.verified.is_some();
        self.cfg.counters.inc(reason);
        self.note_failure(peer, ReachFailure::RefusedHere(reason));
        tracing::debug!(%peer, %reason, %detail, "peer refused");
        if let (Some(ip), false) = (ip, was_verified) {
            if matches!(
                reason,
                DenyReason::BadBinding | DenyReason::Impersonation | DenyReason::ExpiredBinding
            ) && self.guard.record_failure(ip, self.cfg.ban_after_failures)
            {
                tracing::info!(%ip, "banned after repeated identity failures");
            }
        }
        self.forget(&peer);
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// Remembers why `peer` could not be reached, for [`Command::WhyUnreachable`].
    fn note_failure(&mut self, peer: PeerId, why: ReachFailure) {
        if self.reach_failures.len() >= MAX_REACH_FAILURES {
            self.reach_failures.clear();
        }
        self.reach_failures.insert(peer, why);
    }

    fn forget(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
        self.cfg.directory.remove(peer);
        let b = self.swarm.behaviour_mut();
        b.kad.remove_peer(peer);
        b.gossipsub.remove_explicit_peer(peer);
    }

    /// Verifies a peer's binding against its connection, then asks the policy about the hotkey
    /// that signed it. The binding comes first: which registrations count depends on who signed
    /// (a registration of this peer id by any other hotkey is ignored, see
    /// [`hermes_proto::firewall::Policy::admit_signed`]).
    fn verify(
        &self,
        peer: &PeerId,
        bytes: &[u8],
    ) -> Result<(SignedBinding, Vec<u16>), (DenyReason, String)> {
        let binding =
            SignedBinding::decode(bytes).map_err(|e| (DenyReason::BadBinding, e.to_string()))?;
        binding.verify(&peer.to_bytes(), None, now()).map_err(|e| {
            let reason = match e {
                BindingError::WrongSigner { .. } | BindingError::PeerIdMismatch { .. } => {
                    DenyReason::Impersonation
                }
                BindingError::Expired { .. } => DenyReason::ExpiredBinding,
                _ => DenyReason::BadBinding,
            };
            (reason, e.to_string())
        })?;
        let policy = self.cfg.policy.load();
        // A re-issued binding from an admitted peer is not a new admission (a stale registry
        // refuses newcomers only).
        let admission = if self.is_verified(peer) {
            policy.readmit_signed(&peer.to_base58(), &binding.record.hotkey)
        } else {
            policy.admit_signed(&peer.to_base58(), &binding.record.hotkey)
        }
        .map_err(|r| (r, "policy".to_string()))?;
        Ok((binding, admission.netuids))
    }

    fn accept_binding(&mut self, peer: PeerId, bytes: &[u8]) -> bool {
        match self.verify(&peer, bytes) {
            Ok((binding, netuids)) => {
                let hotkey = binding.record.hotkey;
                let state = self.peers.entry(peer).or_default();
                let mut addresses = state.listen_addrs.clone();
                if let Some(a) = &state.dialed_addr {
                    if !addresses.contains(a) {
                        addresses.push(a.clone());
                    }
                }
                let first = state.verified.is_none();
                let info = PeerInfo {
                    peer_id: peer,
                    ss58: hotkey.to_ss58(self.cfg.ss58_prefix),
                    hotkey,
                    addresses: addresses.clone(),
                    netuids,
                    binding,
                };
                let binding = info.binding.clone();
                state.verified = Some(info.clone());
                self.cfg.directory.upsert(info);
                self.cache_peer_binding(peer, &binding);
                self.reach_failures.remove(&peer);
                if first {
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .set_application_score(&peer, 0.0);
                    tracing::info!(%peer, ss58 = %hotkey.to_ss58(self.cfg.ss58_prefix), "peer admitted");
                    for a in addresses {
                        self.swarm.behaviour_mut().kad.add_address(&peer, a);
                    }
                    self.publish_binding(false);
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
                true
            }
            Err((reason, detail)) => {
                self.deny(peer, reason, &detail);
                false
            }
        }
    }

    fn is_verified(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.verified.is_some())
    }

    fn expire_unverified(&mut self) {
        let timeout = self.cfg.binding_timeout;
        let late: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.verified.is_none() && !p.foreign && p.since.is_some_and(|s| s.elapsed() > timeout)
            })
            .map(|(id, _)| *id)
            .collect();
        for peer in late {
            self.deny(
                peer,
                DenyReason::BadBinding,
                &"no valid binding within the timeout",
            );
        }
    }

    fn publish_binding(&mut self, force: bool) {
        if !force
            && self
                .last_publish
                .is_some_and(|t| t.elapsed() < Duration::from_secs(30))
        {
            return;
        }
        // A publication with an empty routing table reaches no other node (e.g. the first peer
        // dialled us and its addresses are not known before identify): it does not count, so the
        // next occasion (identify from a verified peer) publishes again.
        let has_peers = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .any(|b| b.num_entries() > 0);
        self.last_publish = has_peers.then(Instant::now);
        let b = &self.cfg.binding;
        let left = b.record.expires_at.saturating_sub(now());
        let local = *self.swarm.local_peer_id();
        // By hotkey (to find a node by wallet address) and by peer id (to verify the author of
        // relayed gossip, who is known by peer id only).
        for key in [binding_key(&self.cfg.hotkey), peer_binding_key(&local)] {
            let mut record = Record::new(key, b.encode());
            record.publisher = Some(local);
            record.expires = Some(Instant::now() + Duration::from_secs(left));
            if let Err(e) = self
                .swarm
                .behaviour_mut()
                .kad
                .put_record(record, Quorum::One)
            {
                tracing::debug!(error = ?e, "binding not published in the DHT");
            }
        }
    }

    fn recheck(&mut self) {
        let policy = self.cfg.policy.load_full();
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in connected {
            if policy.enabled && self.peers.get(&peer).is_some_and(|p| p.foreign) {
                self.deny(
                    peer,
                    DenyReason::BadBinding,
                    &"no Hermes identity and the firewall is on",
                );
                continue;
            }
            // A verified peer is judged under the hotkey that signed its binding, as at
            // admission; a peer still in its binding exchange only by its peer id.
            let signer = self
                .peers
                .get(&peer)
                .and_then(|p| p.verified.as_ref())
                .map(|v| v.hotkey);
            let decision = match signer {
                Some(hotkey) => policy
                    .readmit_signed(&peer.to_base58(), &hotkey)
                    .map(|a| Some(a.netuids)),
                None => policy.admit_connection(&peer.to_base58()).map(|()| None),
            };
            match decision {
                Err(reason) => self.deny(peer, reason, &"policy changed"),
                Ok(Some(netuids)) => {
                    if let Some(info) = self.peers.get_mut(&peer).and_then(|p| p.verified.as_mut())
                    {
                        if info.netuids != netuids {
                            info.netuids = netuids;
                            self.cfg.directory.upsert(info.clone());
                        }
                    }
                }
                Ok(None) => {}
            }
        }
    }

    /// Verified peers whose binding has expired are dropped (a peer renews its binding at half
    /// its lifetime and pushes it to us; one that does not is no longer vouched for by its
    /// hotkey). Shortly before expiry, the peer is asked once for its current binding, in case
    /// its push was lost.
    fn expire_bindings(&mut self) {
        let now = now();
        let margin = self.cfg.binding_timeout.as_secs().max(RENEW_ASK_SECS);
        let mut expired = Vec::new();
        let mut ask = Vec::new();
        for (id, st) in self.peers.iter_mut() {
            let Some(v) = &st.verified else { continue };
            let expires_at = v.binding.record.expires_at;
            if expires_at <= now {
                expired.push((*id, expires_at));
            } else if expires_at <= now.saturating_add(margin) && st.renew_asked != expires_at {
                st.renew_asked = expires_at;
                ask.push(*id);
            }
        }
        for (peer, expires_at) in expired {
            self.deny(
                peer,
                DenyReason::ExpiredBinding,
                &format_args!("its binding expired at {expires_at} and was not renewed"),
            );
        }
        if !ask.is_empty() {
            let bytes = self.own_binding_bytes();
            for peer in ask {
                self.swarm
                    .behaviour_mut()
                    .identity
                    .send_request(&peer, bytes.clone());
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Peers(reply) => {
                let mut v: Vec<PeerInfo> = self
                    .peers
                    .values()
                    .filter_map(|p| p.verified.clone())
                    .collect();
                v.sort_by(|a, b| a.ss58.cmp(&b.ss58));
                let _ = reply.send(v);
            }
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::Find(hotkey, reply) => {
                let key = binding_key(&hotkey);
                if hotkey == self.cfg.hotkey {
                    let _ = reply.send(Ok(self.cfg.binding.clone()));
                    return;
                }
                let id = self.swarm.behaviour_mut().kad.get_record(key);
                self.pending_get.insert(id, Pending::Find(hotkey, reply));
            }
            Command::PutRecord(key, value, reply) => {
                let mut record = Record::new(RecordKey::new(&key), value);
                record.publisher = Some(*self.swarm.local_peer_id());
                match self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .put_record(record, Quorum::One)
                {
                    Ok(id) => {
                        self.pending_put.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(format!("cannot store the record: {e}")));
                    }
                }
            }
            Command::GetRecord(key, reply) => {
                let key = RecordKey::new(&key);
                if let Some(r) = self.swarm.behaviour_mut().kad.store_mut().get(&key) {
                    let _ = reply.send(Ok(r.value.clone()));
                    return;
                }
                let id = self.swarm.behaviour_mut().kad.get_record(key);
                self.pending_get.insert(id, Pending::Get(reply));
            }
            Command::Publish(netuid, data, reply) => {
                let r = self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic(netuid), data)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Command::Dial(addr, reply) => {
                let _ = reply.send(self.swarm.dial(addr).map_err(|e| e.to_string()));
            }
            Command::Recheck => self.recheck(),
            Command::SetBinding(b) => {
                if b == self.cfg.binding {
                    return;
                }
                self.cfg.binding = b;
                self.publish_binding(true);
                // Verified peers learn the new binding (and prekey) at once; each answers with its
                // own, which refreshes our view of it too.
                let bytes = self.own_binding_bytes();
                let verified: Vec<PeerId> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.verified.is_some())
                    .map(|(id, _)| *id)
                    .collect();
                for peer in verified {
                    self.swarm
                        .behaviour_mut()
                        .identity
                        .send_request(&peer, bytes.clone());
                }
            }
            Command::Connect(hotkey, reply) => self.connect(hotkey, reply),
            Command::WhyUnreachable(hotkey, peer, reply) => {
                let peer = peer.or_else(|| {
                    self.cfg
                        .policy
                        .load()
                        .registry
                        .by_hotkey(&hotkey)
                        .find_map(|e| e.peer_id.parse::<PeerId>().ok())
                });
                let _ = reply.send(peer.and_then(|p| self.reach_failures.get(&p).cloned()));
            }
            Command::RoutingTable(reply) => {
                let mut v = Vec::new();
                for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
                    for e in bucket.iter() {
                        v.push(*e.node.key.preimage());
                    }
                }
                let _ = reply.send(v);
            }
            Command::MeshPeers(reply) => {
                let v = self
                    .swarm
                    .behaviour()
                    .gossipsub
                    .all_mesh_peers()
                    .copied()
                    .collect();
                let _ = reply.send(v);
            }
            Command::Connected(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
        }
    }

    fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listen_addrs.push(address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                let state = self.peers.entry(peer_id).or_default();
                state.ip = gate::ip_of(endpoint.get_remote_address());
                if endpoint.is_dialer() {
                    state.dialed_addr = Some(endpoint.get_remote_address().clone());
                }
                if state.since.is_none() {
                    state.since = Some(Instant::now());
                }
                if num_established.get() == 1 && state.verified.is_none() {
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .set_application_score(&peer_id, UNVERIFIED_SCORE);
                    let bytes = self.own_binding_bytes();
                    self.swarm
                        .behaviour_mut()
                        .identity
                        .send_request(&peer_id, bytes);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                // A connection this node dialled, closed before either side refused it here:
                // the remote did not admit us. (A refusal by this node forgets the peer first.)
                if let Some(state) = self.peers.remove(&peer_id) {
                    if state.verified.is_none() && state.dialed_addr.is_some() && !state.foreign {
                        self.note_failure(peer_id, ReachFailure::RefusedByRemote);
                    }
                }
                self.cfg.directory.remove(&peer_id);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if !self.swarm.is_connected(&peer) => {
                self.note_failure(peer, ReachFailure::Offline(dial_error(&error)));
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => self
                .failed_handshakes
                .record(&self.cfg.counters, &send_back_addr, &error),
            SwarmEvent::Behaviour(BehaviourEvent::Identity(ev)) => self.on_identity(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identify(peer_id, &info.listen_addrs),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => self.on_kad(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, message_id, message),
            _ => {}
        }
    }

    fn on_identity(&mut self, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    if self.accept_binding(peer, &request) {
                        let bytes = self.own_binding_bytes();
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .identity
                            .send_response(channel, bytes);
                    }
                }
                request_response::Message::Response { response, .. } => {
                    self.accept_binding(peer, &response);
                }
            },
            request_response::Event::OutboundFailure { peer, error, .. }
                if !self.is_verified(&peer) && self.swarm.is_connected(&peer) =>
            {
                match error {
                    // The connection carrying the request went away (e.g. a simultaneous dial was
                    // deduplicated): not the peer's fault. Ask again on a remaining connection;
                    // `binding_timeout` still bounds how long the peer may stay unverified.
                    request_response::OutboundFailure::ConnectionClosed
                    | request_response::OutboundFailure::DialFailure => {
                        let bytes = self.own_binding_bytes();
                        self.swarm
                            .behaviour_mut()
                            .identity
                            .send_request(&peer, bytes);
                    }
                    // Open mode: other libp2p implementations may connect without a binding.
                    request_response::OutboundFailure::UnsupportedProtocols
                        if !self.cfg.policy.load().enabled =>
                    {
                        tracing::debug!(%peer, "peer has no Hermes identity; kept because the firewall is off");
                        if let Some(st) = self.peers.get_mut(&peer) {
                            st.foreign = true;
                        }
                    }
                    other => self.deny(peer, DenyReason::BadBinding, &other),
                }
            }
            _ => {}
        }
    }

    fn on_kad(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => {
                if !self.is_verified(&source) {
                    return;
                }
                if let Err(e) = kad_store::check_inbound(record.key.as_ref(), &record.value, now())
                {
                    tracing::debug!(%source, error = %e, "refused a DHT record");
                    return;
                }
                if let Err(e) = self.swarm.behaviour_mut().kad.store_mut().put(record) {
                    tracing::debug!(error = ?e, "DHT record not stored");
                }
            }
            // Provider records offered by peers are not stored: Hermes never looks providers up,
            // so keeping them would only be room for others' data.
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => match result {
                QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(found))) => {
                    self.on_found(id, found.record.value);
                }
                QueryResult::GetRecord(Err(e)) => self.lookup_failed(id, get_error(&e)),
                QueryResult::GetRecord(Ok(_)) if step.last => self.lookup_failed(id, None),
                QueryResult::GetClosestPeers(r) if step.last || r.is_err() => {
                    if let Some((peer, reply)) = self.pending_closest.remove(&id) {
                        let found = match &r {
                            Ok(ok) => ok.peers.iter().find(|p| p.peer_id == peer).cloned(),
                            Err(kad::GetClosestPeersError::Timeout { peers, .. }) => {
                                peers.iter().find(|p| p.peer_id == peer).cloned()
                            }
                        };
                        match found {
                            Some(info) if !info.addrs.is_empty() => {
                                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                                    .addresses(info.addrs)
                                    .build();
                                let r = self
                                    .swarm
                                    .dial(opts)
                                    .map(|_| peer)
                                    .map_err(|e| format!("cannot dial {peer}: {e}"));
                                let _ = reply.send(r);
                            }
                            _ => {
                                // An earlier attempt (e.g. the bootstrap dial) may know more.
                                let why = match self.reach_failures.get(&peer) {
                                    Some(f) => f.to_string(),
                                    None => format!(
                                        "recipient offline: it is registered (peer {peer}) but \
                                         no node we know has an address for it"
                                    ),
                                };
                                let _ = reply.send(Err(why));
                            }
                        }
                    }
                }
                QueryResult::PutRecord(r) => {
                    if let Some(reply) = self.pending_put.remove(&id) {
                        let _ = reply.send(r.map(|_| ()).map_err(|e| match e {
                            kad::PutRecordError::QuorumFailed { .. } => {
                                "no DHT node accepted the record".to_string()
                            }
                            kad::PutRecordError::Timeout { .. } => {
                                "storing the record in the DHT timed out".to_string()
                            }
                        }));
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
}

/// A failed dial in a few words: the first transport error's cause, not libp2p's list of every
/// address with nested debug output.
fn dial_error(e: &libp2p::swarm::DialError) -> String {
    use libp2p::swarm::DialError;
    match e {
        DialError::Transport(errors) => errors
            .first()
            .map(|(addr, e)| format!("{addr}: {}", listen::describe(e)))
            .unwrap_or_else(|| "no address could be dialled".into()),
        DialError::NoAddresses => "no address known".into(),
        DialError::Denied { .. } => "this node refused the connection".into(),
        DialError::WrongPeerId { .. } => "another node answered at its address".into(),
        other => other.to_string(),
    }
}

/// Decodes and verifies a binding read from the DHT for the node with transport key `peer`
/// (signed by any hotkey: the policy judges the signer afterwards).
fn verify_peer_found(peer: &PeerId, value: &[u8]) -> Result<SignedBinding, String> {
    let b = SignedBinding::decode(value).map_err(|e| e.to_string())?;
    b.verify(&peer.to_bytes(), None, now())
        .map_err(|e| e.to_string())?;
    Ok(b)
}

/// The subnet of one of our gossip topics (`hermes/<netuid>/consensus`).
fn netuid_of(topic: &gossipsub::TopicHash) -> Option<u16> {
    topic
        .as_str()
        .strip_prefix("hermes/")
        .and_then(|s| s.split('/').next())
        .and_then(|n| n.parse().ok())
}

/// Most addresses kept for a peer from its identify messages (plus the one dialled, if any).
/// Identify pushes are unsolicited: without a bound a peer could make us keep, and hand to the
/// routing table (and so to every node that asks us), any number of addresses.
pub const MAX_PEER_ADDRS: usize = 8;

/// The announced addresses worth keeping: ones this node could dial (TCP, or QUIC v1 over UDP, on
/// a unicast IP with a port, optionally ending in the peer's own id), deduplicated, at most
/// [`MAX_PEER_ADDRS`], in the peer's order.
pub fn sensible_addrs(peer: &PeerId, announced: &[Multiaddr]) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    for a in announced {
        if out.len() >= MAX_PEER_ADDRS {
            break;
        }
        if is_dialable(peer, a) && !out.contains(a) {
            out.push(a.clone());
        }
    }
    out
}

fn is_dialable(peer: &PeerId, a: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    let parts: Vec<Protocol<'_>> = a.iter().collect();
    let rest = match parts.as_slice() {
        [rest @ .., Protocol::P2p(id)] if id == peer => rest,
        [.., Protocol::P2p(_)] => return false,
        rest => rest,
    };
    let (ip_ok, transport) = match rest {
        [Protocol::Ip4(ip), t @ ..] => (
            !ip.is_unspecified() && !ip.is_multicast() && !ip.is_broadcast(),
            t,
        ),
        [Protocol::Ip6(ip), t @ ..] => (!ip.is_unspecified() && !ip.is_multicast(), t),
        _ => return false,
    };
    ip_ok
        && match transport {
            [Protocol::Tcp(port)] => *port != 0,
            [Protocol::Udp(port), Protocol::QuicV1] => *port != 0,
            _ => false,
        }
}

/// Decodes and verifies a binding read from the DHT for `hotkey`.
fn verify_found(hotkey: &Hotkey, value: &[u8]) -> Result<SignedBinding, String> {
    let b = SignedBinding::decode(value).map_err(|e| e.to_string())?;
    let peer = b.record.peer_id.clone();
    b.verify(&peer, Some(hotkey), now())
        .map_err(|e| e.to_string())?;
    Ok(b)
}

impl Task {
    /// Starts connecting to the node of `hotkey`: at once when its peer id is known, otherwise
    /// after finding its binding in the DHT.
    fn connect(&mut self, hotkey: Hotkey, reply: oneshot::Sender<Result<PeerId, String>>) {
        if let Some(p) = self.cfg.directory.by_hotkey(&hotkey) {
            let _ = reply.send(Ok(p.peer_id));
            return;
        }
        // The registry names the peer id of a registered hotkey; otherwise ask the DHT.
        let registered = self
            .cfg
            .policy
            .load()
            .registry
            .by_hotkey(&hotkey)
            .find_map(|e| e.peer_id.parse::<PeerId>().ok());
        match registered {
            Some(peer) => self.dial_peer(peer, reply),
            None => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_record(binding_key(&hotkey));
                self.pending_get.insert(id, Pending::Connect(hotkey, reply));
            }
        }
    }

    /// Dials `peer` by id with the addresses the behaviours know (the routing table); when none
    /// are known, looks the peer up in the DHT first.
    fn dial_peer(&mut self, peer: PeerId, reply: oneshot::Sender<Result<PeerId, String>>) {
        use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(peer));
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) => {
                let _ = reply.send(Ok(peer));
            }
            Err(libp2p::swarm::DialError::NoAddresses) => {
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                self.pending_closest.insert(id, (peer, reply));
            }
            Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {
                let _ = reply.send(Ok(peer));
            }
            Err(e) => {
                let _ = reply.send(Err(format!("cannot dial {peer}: {e}")));
            }
        }
    }
}

/// Gossip validation and DHT answers.
impl Task {
    /// Validates a gossip message. It must come from a verified peer and be authored by a peer
    /// whose binding verifies and whom the policy admits under the hotkey that signed it: a
    /// directly connected peer (its binding was exchanged), or one further away whose binding is
    /// read from the DHT ([`authors`]). Until that lookup answers, the message is neither
    /// delivered nor forwarded.
    fn on_gossip(&mut self, source: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        let waiting = authors::Waiting {
            id,
            source,
            netuid: netuid_of(&message.topic),
            data: message.data,
        };
        let author = match message.source {
            Some(a) if self.is_verified(&source) => a,
            _ => {
                tracing::debug!(peer = %source, "gossip from an unverified peer dropped");
                self.refuse_gossip(&waiting, DenyReason::Unregistered);
                return;
            }
        };
        if let Some(ss58) = self
            .peers
            .get(&author)
            .and_then(|p| p.verified.as_ref())
            .map(|v| v.ss58.clone())
        {
            self.accept_gossip(author, ss58, waiting);
            return;
        }
        if author == *self.swarm.local_peer_id() {
            let ss58 = self.cfg.hotkey.to_ss58(self.cfg.ss58_prefix);
            self.accept_gossip(author, ss58, waiting);
            return;
        }
        match self.authors.lookup(&author, now()) {
            authors::Lookup::Known(b) => {
                let b = b.clone();
                self.judge_relayed(author, &b, waiting);
            }
            authors::Lookup::Failed => self.refuse_gossip(&waiting, DenyReason::Unregistered),
            authors::Lookup::Unknown => {
                // Cheap first: an author the policy refuses under every hotkey that registered it
                // is not worth a DHT lookup.
                if let Err(r) = self.cfg.policy.load().admit_connection(&author.to_base58()) {
                    self.refuse_gossip(&waiting, r);
                    return;
                }
                match self.authors.hold(author, waiting) {
                    authors::Queued::StartLookup => {
                        let q = self
                            .swarm
                            .behaviour_mut()
                            .kad
                            .get_record(peer_binding_key(&author));
                        self.pending_get.insert(q, Pending::Author(author));
                    }
                    authors::Queued::Behind => {}
                    authors::Queued::Full(w) => {
                        // Neither accepted nor held against the relay: too much is waiting.
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .gossipsub
                            .report_message_validation_result(
                                &w.id,
                                &w.source,
                                MessageAcceptance::Ignore,
                            );
                    }
                }
            }
        }
    }

    /// Judges a relayed message by its author's verified binding: the policy, under the hotkey
    /// that signed the binding, as for a direct peer.
    fn judge_relayed(&mut self, author: PeerId, b: &SignedBinding, w: authors::Waiting) {
        let hotkey = b.record.hotkey;
        match self
            .cfg
            .policy
            .load()
            .admit_signed(&author.to_base58(), &hotkey)
        {
            Ok(_) => {
                let ss58 = hotkey.to_ss58(self.cfg.ss58_prefix);
                self.accept_gossip(author, ss58, w);
            }
            Err(r) => {
                tracing::debug!(%author, reason = %r, "relayed gossip from a refused author dropped");
                self.refuse_gossip(&w, r);
            }
        }
    }

    fn accept_gossip(&mut self, author: PeerId, from: String, w: authors::Waiting) {
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&w.id, &w.source, MessageAcceptance::Accept);
        if let Some(netuid) = w.netuid {
            let _ = self.gossip.send(GossipMessage {
                from,
                peer_id: author,
                netuid,
                data: w.data,
            });
        }
    }

    fn refuse_gossip(&mut self, w: &authors::Waiting, reason: DenyReason) {
        let _ = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&w.id, &w.source, MessageAcceptance::Reject);
        self.cfg.counters.inc(reason);
    }

    /// A record found by a lookup. A binding that does not verify (a faulty or hostile DHT node
    /// answered) does not end the lookup: the other nodes' answers are still awaited.
    fn on_found(&mut self, id: kad::QueryId, value: Vec<u8>) {
        let Some(p) = self.pending_get.remove(&id) else {
            return;
        };
        let verdict = match &p {
            Pending::Get(_) => Ok(None),
            Pending::Find(h, _) | Pending::Connect(h, _) => verify_found(h, &value).map(Some),
            Pending::Author(a) => verify_peer_found(a, &value).map(Some),
        };
        let binding = match verdict {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, "a DHT answer does not verify; waiting for others");
                self.bad_answers.insert(id, e);
                self.pending_get.insert(id, p);
                return;
            }
        };
        self.bad_answers.remove(&id);
        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
            q.finish();
        }
        match (p, binding) {
            (Pending::Get(reply), _) => {
                let _ = reply.send(Ok(value));
            }
            (Pending::Find(_, reply), Some(b)) => {
                let _ = reply.send(Ok(b));
            }
            (Pending::Connect(_, reply), Some(b)) => match PeerId::from_bytes(&b.record.peer_id) {
                Ok(peer) => self.dial_peer(peer, reply),
                Err(e) => {
                    let _ = reply.send(Err(e.to_string()));
                }
            },
            (Pending::Author(author), Some(b)) => {
                self.cache_peer_binding(author, &b);
                for w in self.authors.found(author, b.clone()) {
                    self.judge_relayed(author, &b, w);
                }
            }
            (_, None) => {}
        }
    }

    /// Keeps a binding verified for `peer` in the local DHT store, so that the next node on a
    /// gossip path, which asks its neighbours (us among them) for the author's binding, finds it
    /// even when the nodes that hold the published copy are out of its reach.
    fn cache_peer_binding(&mut self, peer: PeerId, b: &SignedBinding) {
        let left = b.record.expires_at.saturating_sub(now());
        let mut record = Record::new(peer_binding_key(&peer), b.encode());
        record.publisher = Some(peer);
        record.expires = Some(Instant::now() + Duration::from_secs(left));
        if let Err(e) = self.swarm.behaviour_mut().kad.store_mut().put(record) {
            tracing::debug!(error = ?e, "binding not cached");
        }
    }

    /// A lookup ended without a record that verifies.
    fn lookup_failed(&mut self, id: kad::QueryId, why: Option<&str>) {
        let Some(p) = self.pending_get.remove(&id) else {
            return;
        };
        let bad = self
            .bad_answers
            .remove(&id)
            .map(|e| format!("the only records found do not verify: {e}"));
        match p {
            Pending::Author(author) => {
                tracing::debug!(%author, why = ?bad.as_deref().or(why), "no valid binding for a relayed gossip author");
                for w in self.authors.not_found(author) {
                    self.refuse_gossip(&w, DenyReason::Unregistered);
                }
            }
            p => p.not_found(bad.as_deref().or(why)),
        }
    }
}

impl Task {
    /// A peer's identify message (on connection, or pushed later): its addresses replace the
    /// ones it announced before, after [`sensible_addrs`]; a verified peer's go to the routing
    /// table (ones it no longer announces are removed from it).
    fn on_identify(&mut self, peer: PeerId, announced: &[Multiaddr]) {
        let addrs = sensible_addrs(&peer, announced);
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        let old = std::mem::replace(&mut state.listen_addrs, addrs.clone());
        let mut all = addrs;
        if let Some(d) = &state.dialed_addr {
            if !all.contains(d) {
                all.push(d.clone());
            }
        }
        let Some(v) = state.verified.as_mut() else {
            return;
        };
        if v.addresses != all {
            v.addresses = all.clone();
            self.cfg.directory.upsert(v.clone());
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        for a in &all {
            kad.add_address(&peer, a.clone());
        }
        for a in old.iter().filter(|a| !all.contains(a)) {
            kad.remove_address(&peer, a);
        }
        self.publish_binding(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dialable_addresses_are_kept() {
        let me = PeerId::random();
        let ok = [
            "/ip4/192.0.2.1/tcp/4001".to_string(),
            format!("/ip4/192.0.2.1/tcp/4002/p2p/{me}"),
            "/ip6/2001:db8::1/udp/4001/quic-v1".to_string(),
            "/ip4/127.0.0.1/tcp/1".to_string(),
        ];
        let bad = [
            "/ip4/0.0.0.0/tcp/4001".to_string(),
            "/ip6/::/tcp/4001".to_string(),
            "/ip4/239.1.1.1/tcp/4001".to_string(),
            "/ip4/255.255.255.255/tcp/4001".to_string(),
            "/ip4/192.0.2.1/tcp/0".to_string(),
            "/ip4/192.0.2.1/udp/4001".to_string(),
            "/dns4/example.com/tcp/4001".to_string(),
            format!("/ip4/192.0.2.1/tcp/4001/p2p/{}", PeerId::random()),
            format!("/ip4/192.0.2.1/tcp/4001/p2p/{me}/p2p-circuit"),
        ];
        let parse =
            |v: &[String]| -> Vec<Multiaddr> { v.iter().map(|a| a.parse().unwrap()).collect() };
        assert_eq!(sensible_addrs(&me, &parse(&ok)), parse(&ok));
        assert!(sensible_addrs(&me, &parse(&bad)).is_empty());
        let many: Vec<Multiaddr> = (0..100u16)
            .map(|p| format!("/ip4/192.0.2.1/tcp/{}", p + 1).parse().unwrap())
            .collect();
        let mut twice = many.clone();
        twice.extend(many.clone());
        assert_eq!(sensible_addrs(&me, &twice), many[..MAX_PEER_ADDRS].to_vec());
    }
}
