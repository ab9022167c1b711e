//! The embeddable runtime: a builder, a handle, and the thread that hosts the actors.
//!
//! Start-up, step by step:
//! 1. [`RuntimeBuilder::start`] validates the config and spawns the `hermes-runtime` thread.
//! 2. That thread creates an actix `System`, opens the [`Store`] (taking the data-dir lock), loads
//!    the identity and starts each actor under `actix::Supervisor`.
//! 3. It reports ready (or the first error) through a oneshot channel; `start` returns the handle.
//!
//! Shutdown reverses it: the handle signals the thread, the System stops (dropping every actor and
//! with it their database handles), the store flushes and releases the lock, the thread reports
//! done, and `shutdown` joins it. Because the runtime owns its thread, it works the same whether the
//! host is a tokio application, a plain `main` using a tiny executor, or Python.

use crate::config::Config;
use crate::config::{ChainKind, SubnetMode};
use crate::messages::{Inbox, IncomingStreams, MessageId, OutboxEntry, SendOptions, Taken};
use crate::Error;
use actix::{Addr, Arbiter, Supervisor};
use hermes_actors::chain::{self, Chain, ChainActor, DevChain, StaticChain};
use hermes_actors::firewall::{self, FirewallActor, FirewallStats, PolicyBase};
use hermes_actors::identity::{self, IdentityActor, IdentityConfig, IdentityInfo};
use hermes_actors::network::directory::PeerDirectory;
use hermes_actors::network::gate::DenyCounters;
use hermes_actors::network::{self, Command, GossipMessage, NetConfig, NetHandle, PeerInfo};
use hermes_actors::stream::bulk::{IncomingStream, StreamOptions, StreamWriter};
use hermes_actors::stream::{
    self, DeliveryEvent, Inbound, MessageStats, StreamActor, StreamConfig, StreamDeps,
};
use hermes_actors::sync::{self as sync_engine, SyncActor};
use hermes_actors::{Store, StoreOptions};
use hermes_proto::firewall::{Acl, Limits, Scope};
use hermes_proto::msglink::SessionLimits;
use hermes_proto::outbox::OutboxLimits;
use hermes_proto::{Hotkey, SignedBinding};
use libp2p::{Multiaddr, PeerId};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::{broadcast, mpsc, oneshot};

/// The public view of an outbox entry.
fn entry(m: hermes_proto::outbox::Meta, last_error: Option<String>, prefix: u16) -> OutboxEntry {
    OutboxEntry {
        id: m.id,
        to: m.to.to_ss58(prefix),
        netuid: m.netuid,
        len: m.len,
        created_at: m.created_at,
        expires_at: m.expires_at,
        last_error,
    }
}

/// Configures and starts a [`Runtime`].
#[derive(Debug)]
pub struct RuntimeBuilder {
    config: Config,
    install_logging: bool,
    network: bool,
    binding_override: Option<Vec<u8>>,
}

/// Namespace for [`Runtime::builder`].
#[derive(Debug)]
pub struct Runtime;

impl Runtime {
    /// A builder for a runtime with `config`.
    pub fn builder(config: Config) -> RuntimeBuilder {
        RuntimeBuilder {
            config,
            install_logging: true,
            network: true,
            binding_override: None,
        }
    }
}

impl RuntimeBuilder {
    /// Whether to install Hermes' global tracing subscriber (default true; skipped anyway when the
    /// host already has one).
    pub fn with_logging(mut self, install: bool) -> Self {
        self.install_logging = install;
        self
    }

    /// Whether to start networking (default true). Without it the node has its identity, store
    /// and firewall but opens no sockets: what `hermes id` uses while another node may be
    /// listening on the configured ports.
    pub fn with_network(mut self, on: bool) -> Self {
        self.network = on;
        self
    }

    /// Test hook: present `bytes` to peers instead of this node's real binding record.
    #[cfg(feature = "fault-injection")]
    pub fn with_binding_override(mut self, bytes: Vec<u8>) -> Self {
        self.binding_override = Some(bytes);
        self
    }

    /// Starts the runtime and waits until every actor is ready.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config, [`Error::DataDirInUse`] when another runtime holds
    /// the data dir, [`Error::Identity`] when keys cannot be loaded, [`Error::Startup`] if the
    /// runtime thread could not be created.
    pub async fn start(self) -> Result<RuntimeHandle, Error> {
        let config = self.config;
        config.validate()?;
        if self.install_logging {
            crate::logging::init(&config.log);
        }
        let (ready_tx, ready_rx) = oneshot::channel::<Result<Parts, Error>>();
        let binding_override = self.binding_override;
        let network = self.network;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hermes-runtime".into())
            .spawn(move || {
                run_system(
                    config,
                    network,
                    binding_override,
                    ready_tx,
                    stop_rx,
                    done_tx,
                )
            })
            .map_err(|e| Error::Startup(format!("cannot spawn the runtime thread: {e}")))?;
        let parts = match ready_rx.await {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::Startup(
                    "the runtime thread exited during start-up".into(),
                ));
            }
        };
        let handle = RuntimeHandle {
            inner: Arc::new(Inner {
                parts,
                control: Mutex::new(Some(Control {
                    stop_tx,
                    done_rx,
                    thread,
                })),
            }),
        };
        let info = handle.identity().await?;
        tracing::info!(ss58 = %info.ss58, peer_id = %info.peer_id, "hermes runtime started");
        Ok(handle)
    }
}

/// The addresses of everything a handle talks to.
pub(crate) struct Parts {
    identity: Addr<IdentityActor>,
    firewall: Addr<FirewallActor>,
    chain: Addr<ChainActor>,
    net: Option<NetHandle>,
    stream: Option<StreamParts>,
    /// The Sync Engine, when networking is on and `sync.enabled`.
    pub(crate) sync: Option<Addr<SyncActor>>,
    sync_backend: hermes_actors::sync::Backend,
    ss58_prefix: u16,
    arbiters: Vec<Arbiter>,
}

/// The stream layer's actor and the application-facing ends it created.
struct StreamParts {
    actor: Addr<StreamActor>,
    inbox: Arc<Mutex<Option<mpsc::Receiver<Inbound>>>>,
    incoming: Arc<Mutex<Option<mpsc::Receiver<IncomingStream>>>>,
    /// Give the sending peer's budget back as the application takes each item.
    inbox_taken: crate::messages::OnTake<Inbound>,
    incoming_taken: crate::messages::OnTake<IncomingStream>,
    events: broadcast::Sender<DeliveryEvent>,
    ss58_prefix: u16,
    chunk_size: usize,
}

fn scope_of(config: &Config) -> Scope {
    let n = &config.subnets.netuids;
    match config.subnets.mode {
        SubnetMode::Open => Scope::Open,
        SubnetMode::Single => n.first().map(|x| Scope::Single(*x)).unwrap_or(Scope::Open),
        SubnetMode::Whitelist => Scope::Whitelist(n.iter().copied().collect()),
    }
}

async fn start_actors(
    config: Config,
    network: bool,
    binding_override: Option<Vec<u8>>,
) -> Result<(Parts, Store), Error> {
    // The S3 store is checked before anything starts: a node whose default store cannot be
    // used (missing credentials) refuses to start with the reason.
    let s3 = config.sync.s3.as_ref().map(s3_store);
    if let Some(Err(why)) = &s3 {
        if config.sync.backend == crate::config::SyncBackend::S3 {
            return Err(Error::Startup(format!(
                "sync.backend is s3, but the store cannot be used: {why}"
            )));
        }
        tracing::warn!("sync.s3 cannot be used; offers through S3 will be refused: {why}");
    }
    let sync_backend = match config.sync.backend {
        crate::config::SyncBackend::Embedded => hermes_actors::sync::Backend::Embedded,
        crate::config::SyncBackend::S3 => hermes_actors::sync::Backend::S3,
    };
    let store = Store::open(
        &config.data_dir,
        &StoreOptions {
            cache_capacity: config.storage.cache_size.0,
            flush_every: config.storage.flush_every.0,
        },
    )?;
    let id_cfg = IdentityConfig {
        hotkey_file: config.identity.hotkey_file.clone(),
        generate_transport_key: config.identity.transport_key_file.is_none(),
        transport_key_file: config
            .identity
            .transport_key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join("transport.key")),
        ss58_prefix: config.identity.ss58_prefix,
        netuids: config.subnets.netuids.clone(),
        binding_ttl: config.identity.binding_ttl.0,
        prekey_dir: config.data_dir.clone(),
        prekey_rotation: config.encryption.prekey_rotation.0,
        prekey_grace: config.encryption.prekey_grace.0,
    };
    let actor = IdentityActor::load(id_cfg, store.clone())?;
    let keypair = actor.transport_keypair();
    let shared_binding = actor.shared_binding();
    let identity = Supervisor::start(move |_| actor);
    let me = identity
        .send(identity::GetIdentity)
        .await
        .map_err(|_| Error::Startup("identity actor stopped during start".into()))??;

    // Chain: read the registry once so the firewall starts with it.
    let backend: Arc<dyn Chain> = match config.chain.kind {
        ChainKind::Dev => Arc::new(DevChain::new(&config.chain.path)),
        ChainKind::Static => Arc::new(StaticChain::new(&config.chain.path)),
        // The subnets read are the ones this node serves.
        ChainKind::Subtensor | ChainKind::Hypertensor => Arc::new(
            chain::rpc::RpcChain::for_config(
                &config.chain.url,
                config.chain.kind.rpc(),
                config.subnets.netuids.clone(),
            )
            .map_err(|e| Error::Startup(e.to_string()))?,
        ),
    };
    // A chain that cannot be read at all fails closed: the node starts (the chain may come
    // back in a moment) but refuses every new peer as `chain_stale` until it reads.
    let initial = match backend.registry().await {
        Ok(r) => Some(r),
        // A snapshot or entry that does not parse is a mistake to fix, best said at once; an
        // unreachable or unreadable backend is an outage, ridden out closed.
        Err(e @ chain::ChainError::Format { .. }) => {
            return Err(Error::Startup(format!(
                "cannot read the chain registry: {e}"
            )))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the chain registry; refusing new peers (chain_stale) until it reads");
            None
        }
    };
    let registry = Arc::new(initial.clone().unwrap_or_default());
    let base = PolicyBase {
        enabled: config.firewall.enabled,
        acl: config.acl.to_acl(),
        scope: scope_of(&config),
        require_stake: config.firewall.require_stake,
        min_stake: config.firewall.min_stake,
    };
    let mut policy = FirewallActor::initial_policy(&base, registry.clone());
    policy.chain_stale = initial.is_none();
    let shared = Arc::new(arc_swap::ArcSwap::from_pointee(policy));
    let counters = Arc::new(DenyCounters::default());
    let fw_actor = FirewallActor::new(base, shared.clone(), counters.clone());
    let firewall = Supervisor::start(move |_| fw_actor);

    // The dev chain may block briefly on its file lock, so the ChainActor gets its own thread.
    let chain_arbiter = Arbiter::new();
    let poll = config.chain.poll_interval.0;
    let max_staleness = config.chain.max_staleness.0;
    let subscriber = firewall.clone().recipient();
    let read_at_start = initial.is_some();
    let chain = Supervisor::start_in_arbiter(&chain_arbiter.handle(), move |_| {
        ChainActor::new(backend, initial, poll, max_staleness, subscriber)
    });

    if !network {
        return Ok((
            Parts {
                identity,
                firewall,
                chain,
                net: None,
                stream: None,
                sync: None,
                sync_backend,
                ss58_prefix: config.identity.ss58_prefix,
                arbiters: vec![chain_arbiter],
            },
            store,
        ));
    }
    // A registry that admits nobody (often a wrong or never-set chain.path) would otherwise only
    // show as every connection being refused.
    if let Some(warning) = read_at_start
        .then(|| config.registry_warning(&registry))
        .flatten()
    {
        tracing::warn!("{warning}");
    }
    // The swarm runs on its own arbiter; it is built there so the transports bind to that
    // thread's tokio runtime.
    let net_arbiter = Arbiter::new();
    let fw = &config.firewall;
    let directory = Arc::new(PeerDirectory::default());
    let (inbound_tx, inbound_rx) = mpsc::channel(stream::INBOUND_SUBSTREAM_QUEUE);
    let (sync_tx, sync_rx) = mpsc::channel(stream::INBOUND_SUBSTREAM_QUEUE);
    let sync_tx = config.sync.enabled.then_some(sync_tx);
    let policy = shared.clone();
    let net_cfg = NetConfig {
        listen: config.listen.iter().map(|a| a.0.clone()).collect(),
        bootstrap: config.bootstrap.iter().map(|a| a.0.clone()).collect(),
        keypair,
        hotkey: me.hotkey,
        binding: me.binding.clone(),
        netuids: config.subnets.netuids.clone(),
        ss58_prefix: config.identity.ss58_prefix,
        store: store.clone(),
        policy: shared,
        counters,
        limits: Limits {
            max_connections: fw.max_connections,
            max_per_ip: fw.max_conns_per_ip,
            rate_per_ip: fw.conn_rate_per_ip,
            burst_per_ip: fw.conn_burst_per_ip,
            ban_ms: u64::try_from(fw.ban_duration.0.as_millis()).unwrap_or(u64::MAX),
        },
        ban_after_failures: fw.ban_after_failures,
        binding_timeout: fw.binding_timeout.0,
        handshake_timeout: fw.handshake_timeout.0,
        accept_thread: fw.accept_thread,
        binding_override,
        directory: directory.clone(),
        inbound_substreams: inbound_tx,
        sync_substreams: sync_tx,
    };
    let (net_tx, net_rx) = oneshot::channel();
    net_arbiter.spawn(async move {
        match network::start(net_cfg) {
            Ok((handle, task)) => {
                let _ = net_tx.send(Ok(handle));
                task.await;
            }
            Err(e) => {
                let _ = net_tx.send(Err(e));
            }
        }
    });
    let net = match net_rx.await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            net_arbiter.stop();
            chain_arbiter.stop();
            return Err(Error::Network(e.to_string()));
        }
        Err(_) => {
            return Err(Error::Startup(
                "the network thread exited during start".into(),
            ))
        }
    };
    firewall
        .send(firewall::AttachNetwork(net.commands.clone()))
        .await
        .map_err(|_| Error::Startup("firewall stopped during start".into()))?;

    // The IdentityActor pushes every re-issued binding (half-life, prekey rotation) to the network.
    identity
        .send(identity::AttachNetwork(net.commands.clone()))
        .await
        .map_err(|_| Error::Startup("identity actor stopped during start".into()))?;

    // The stream layer shares the network thread: a message then crosses no thread between the
    // stream layer and its substreams (cross-thread wake-ups measured ~30 µs each here, and they
    // dominated round trips). Bulk stream encryption does not run here but in the application's
    // own tasks, inside `StreamWriter` and `StreamReader`.
    let m = &config.messages;
    let e = &config.encryption;
    let stream_cfg = StreamConfig {
        me: me.hotkey,
        ss58_prefix: config.identity.ss58_prefix,
        max_message: usize::try_from(m.max_size.0).unwrap_or(usize::MAX),
        default_ttl: m.ttl.0,
        outbox: OutboxLimits {
            max_bytes: m.outbox_max_bytes.0,
            retry_min_ms: u64::try_from(m.retry_min.0.as_millis()).unwrap_or(u64::MAX),
            retry_max_ms: u64::try_from(m.retry_max.0.as_millis()).unwrap_or(u64::MAX),
        },
        session: SessionLimits {
            max_messages: e.session_max_messages,
            max_age_secs: e.session_max_age.0.as_secs().max(1),
        },
        replay_window: e.replay_window.0,
        inbox_capacity: m.inbox_capacity,
        inbox_max_bytes_per_peer: m.inbox_max_bytes_per_peer.0,
        chunk_size: usize::try_from(config.streams.chunk_size.0).unwrap_or(1 << 18),
        max_incoming_streams: config.streams.max_incoming,
        max_incoming_per_peer: config.streams.max_incoming_per_peer,
        allow_plaintext_streams: config.streams.allow_plaintext,
        connect_timeout: m.connect_timeout.0,
        binding_timeout: fw.binding_timeout.0,
    };
    let sync_peer_net = sync_engine::PeerNet {
        commands: net.commands.clone(),
        directory: directory.clone(),
        substreams: net.substreams.clone(),
        ss58_prefix: config.identity.ss58_prefix,
    };
    let deps = StreamDeps {
        store: store.clone(),
        identity: identity.clone(),
        directory,
        substreams: net.substreams.clone(),
        net: net.commands.clone(),
        policy,
        binding: shared_binding,
    };
    let chunk_size = stream_cfg.chunk_size;
    let ss58_prefix = stream_cfg.ss58_prefix;
    let (stream_actor, ends) = StreamActor::new(stream_cfg, deps, inbound_rx)
        .map_err(|e| Error::Startup(format!("cannot open the message store: {e}")))?;
    // Supervised like the other actors: a panic restarts it (same address) instead of taking
    // the data plane down until the node restarts.
    let stream_addr = Supervisor::start_in_arbiter(&net_arbiter.handle(), move |_| stream_actor);
    let mut arbiters = vec![chain_arbiter, net_arbiter];
    let sync = if config.sync.enabled {
        // Its own thread: downloads decrypt and write on it, and the embedded store's server
        // drives its substreams from it (the sealing itself runs on the blocking pool).
        let sync_arbiter = Arbiter::new();
        let offers = Arc::new(sync_engine::OfferTable::default());
        let server = sync_engine::Server::new(
            offers.clone(),
            sync_peer_net.directory.clone(),
            fw.binding_timeout.0,
        );
        sync_arbiter.spawn(server.run(sync_rx));
        let s = &config.sync;
        let sync_cfg = sync_engine::SyncConfig {
            me: me.hotkey,
            peer_id: me.peer_id,
            ss58_prefix: config.identity.ss58_prefix,
            chunk_size: u32::try_from(s.chunk_size.0)
                .unwrap_or(hermes_proto::sync::DEFAULT_CHUNK_SIZE),
            ticket_ttl: s.ticket_ttl.0,
            fetch: sync_engine::FetchOptions {
                parallelism: s.parallelism,
                max_attempts: s.max_attempts,
                fetch_timeout: s.fetch_timeout.0,
                ..sync_engine::FetchOptions::default()
            },
            s3,
        };
        let actor = SyncActor::new(sync_cfg, &store, identity.clone(), sync_peer_net, offers)
            .map_err(|e| Error::Startup(format!("cannot open the transfer records: {e}")))?;
        let addr = Supervisor::start_in_arbiter(&sync_arbiter.handle(), move |_| actor);
        arbiters.push(sync_arbiter);
        Some(addr)
    } else {
        None
    };
    Ok((
        Parts {
            identity,
            firewall,
            chain,
            net: Some(net),
            stream: Some(StreamParts {
                actor: stream_addr,
                inbox: Arc::new(Mutex::new(Some(ends.inbox))),
                incoming: Arc::new(Mutex::new(Some(ends.incoming))),
                inbox_taken: {
                    let b = ends.inbox_bytes;
                    Arc::new(move |m: &Inbound| b.release(&m.hotkey, m.bytes.len() as u64))
                },
                incoming_taken: {
                    let b = ends.incoming_per_peer;
                    Arc::new(move |s: &IncomingStream| b.release(&s.hotkey, 1))
                },
                events: ends.events,
                ss58_prefix,
                chunk_size,
            }),
            sync,
            sync_backend,
            ss58_prefix: config.identity.ss58_prefix,
            arbiters,
        },
        store,
    ))
}

/// The S3 store of `sync.s3`, or why it cannot be used (credentials are read here, from the
/// environment or the credentials file, never from the config).
fn s3_store(c: &crate::config::S3Config) -> Result<sync_engine::S3Store, String> {
    let creds =
        sync_engine::S3Credentials::load(c.credentials_file.as_deref(), c.profile.as_deref())
            .map_err(|e| e.to_string())?;
    sync_engine::S3Store::new(
        sync_engine::S3Settings {
            endpoint: c.endpoint.clone(),
            bucket: c.bucket.clone(),
            region: c.region.clone(),
            prefix: c.prefix.clone(),
            path_style: c.path_style,
        },
        creds,
    )
    .map_err(|e| e.to_string())
}

fn run_system(
    config: Config,
    network: bool,
    binding_override: Option<Vec<u8>>,
    ready_tx: oneshot::Sender<Result<Parts, Error>>,
    stop_rx: oneshot::Receiver<()>,
    done_tx: oneshot::Sender<()>,
) {
    let system = actix::System::new();
    let started = system.block_on(async move {
        let started = start_actors(config, network, binding_override).await;
        actix::spawn(async move {
            // Either an explicit shutdown or every handle dropped stops the System.
            let _ = stop_rx.await;
            actix::System::current().stop();
        });
        started
    });
    let (store, arbiters) = match started {
        Ok((mut parts, store)) => {
            let arbiters = std::mem::take(&mut parts.arbiters);
            if ready_tx.send(Ok(parts)).is_err() {
                tracing::warn!("runtime start was abandoned by its caller; stopping");
                actix::System::current().stop();
            }
            (store, arbiters)
        }
        Err(e) => {
            let _ = ready_tx.send(Err(e));
            return;
        }
    };
    // `run` consumes the System; every actor (and its database handles) is dropped when it returns.
    if let Err(e) = system.run() {
        tracing::error!(error = %e, "actix system exited with an error");
    }
    for arbiter in arbiters {
        arbiter.stop();
        if arbiter.join().is_err() {
            tracing::error!("an actor thread panicked during shutdown");
        }
    }
    if let Err(e) = store.flush() {
        tracing::error!(error = %e, "final database flush failed");
    }
    drop(store);
    let _ = done_tx.send(());
}

struct Control {
    stop_tx: oneshot::Sender<()>,
    done_rx: oneshot::Receiver<()>,
    thread: JoinHandle<()>,
}

struct Inner {
    parts: Parts,
    control: Mutex<Option<Control>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone without `shutdown()`: stop the runtime anyway so the data dir
        // is released. Dropping `stop_tx` wakes the stop task; the thread finishes on its own.
        if let Ok(mut c) = self.control.lock() {
            if let Some(c) = c.take() {
                let _ = c.stop_tx.send(());
                let _ = c.thread.join();
            }
        }
    }
}

/// A handle to a running runtime. Cheap to clone, usable from any thread and any executor.
#[derive(Clone)]
pub struct RuntimeHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeHandle").finish_non_exhaustive()
    }
}

impl RuntimeHandle {
    /// The node's identity: SS58 address, hotkey, peer id and current binding record.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown; [`Error::Identity`] if the actor failed the request.
    pub async fn identity(&self) -> Result<IdentityInfo, Error> {
        Ok(Self::ask(&self.inner.parts.identity, identity::GetIdentity).await??)
    }

    /// Signs `message` with the hotkey for the application: sr25519 over
    /// `b"hermes/app/v1" || message`. The domain tag means that no bytes an application is asked
    /// to sign can yield a signature valid for a binding record, a session header or a chain
    /// extrinsic (there is deliberately no raw variant on the handle). Check it with
    /// [`RuntimeHandle::verify`] or `Hotkey::verify_app`, or `hermes verify`.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn sign(&self, message: &[u8]) -> Result<[u8; 64], Error> {
        Ok(Self::ask(&self.inner.parts.identity, identity::Sign(message.to_vec())).await??)
    }

    /// Whether `signature` is `signer`'s [`RuntimeHandle::sign`] signature over `message`.
    pub fn verify(&self, signer: &Hotkey, message: &[u8], signature: &[u8]) -> bool {
        signer.verify_app(message, signature)
    }

    /// Verifies a peer's binding record for a connection from `peer_id`.
    ///
    /// # Errors
    /// [`Error::Identity`] with the precise reason it was refused.
    pub async fn verify_binding(
        &self,
        bytes: Vec<u8>,
        peer_id: libp2p::PeerId,
        expected: Option<hermes_proto::Hotkey>,
    ) -> Result<hermes_proto::SignedBinding, Error> {
        Ok(Self::ask(
            &self.inner.parts.identity,
            identity::VerifyBinding {
                bytes,
                peer_id,
                expected,
            },
        )
        .await??)
    }

    /// Test hook: makes the IdentityActor panic inside a handler.
    ///
    /// # Errors
    /// Always an error: the request that panicked fails, and the actor restarts.
    #[cfg(feature = "fault-injection")]
    pub async fn inject_identity_panic(&self) -> Result<(), Error> {
        Ok(Self::ask(&self.inner.parts.identity, identity::InjectPanic).await??)
    }

    /// Test hook: makes the StreamActor panic inside a handler.
    ///
    /// # Errors
    /// Always an error: the request that panicked fails, and the actor restarts.
    #[cfg(feature = "fault-injection")]
    pub async fn inject_stream_panic(&self) -> Result<(), Error> {
        Ok(Self::ask(&self.stream_parts()?.actor, stream::InjectPanic).await??)
    }

    /// Test hook: a raw `/hermes/msg/1` (`messages`) or `/hermes/stream/1` substream to the
    /// verified peer `to`, for sending hand-made frames.
    ///
    /// # Errors
    /// [`Error::Stream`] when the peer cannot be reached.
    #[cfg(feature = "fault-injection")]
    pub async fn debug_raw_substream(
        &self,
        to: &str,
        messages: bool,
    ) -> Result<libp2p::Stream, Error> {
        let (hotkey, _) = Hotkey::from_ss58(to).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Self::ask(
            &self.stream_parts()?.actor,
            stream::RawSubstream {
                to: hotkey,
                messages,
            },
        )
        .await??)
    }

    /// Test hook: a copy of every message frame this node writes from now on.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    #[cfg(feature = "fault-injection")]
    pub async fn debug_wiretap(&self) -> Result<broadcast::Receiver<Vec<u8>>, Error> {
        Self::ask(&self.stream_parts()?.actor, stream::Wiretap).await
    }

    /// Sends `msg` to an actor and maps a stopped actor to [`Error::Stopped`].
    pub(crate) async fn ask<A, M>(addr: &Addr<A>, msg: M) -> Result<M::Result, Error>
    where
        A: actix::Handler<M>,
        A::Context: actix::dev::ToEnvelope<A, M>,
        M: actix::Message + Send + 'static,
        M::Result: Send,
    {
        addr.send(msg).await.map_err(|_| Error::Stopped)
    }

    async fn net<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let net = self.inner.parts.net.as_ref().ok_or_else(|| {
            Error::Network("networking is off for this runtime (with_network(false))".into())
        })?;
        let (tx, rx) = oneshot::channel();
        net.commands
            .send(make(tx))
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Addresses the node listens on (as bound: a port 0 in the config shows the real port).
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, Error> {
        self.net(Command::ListenAddrs).await
    }

    /// Admitted peers whose binding verified, with SS58, peer id, addresses and subnets.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, Error> {
        self.net(Command::Peers).await
    }

    /// Peers with an open connection, verified or not yet.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, Error> {
        self.net(Command::Connected).await
    }

    /// Finds a node's binding in the DHT by its wallet address alone, verified.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad address, [`Error::NotFound`] when no valid binding is found.
    pub async fn find(&self, ss58: &str) -> Result<SignedBinding, Error> {
        let (hotkey, _) = Hotkey::from_ss58(ss58).map_err(|e| Error::Invalid(e.to_string()))?;
        self.net(|tx| Command::Find(hotkey, tx))
            .await?
            .map_err(Error::NotFound)
    }

    /// Stores a record in the DHT (persisted in sled on every node that holds it).
    ///
    /// # Errors
    /// [`Error::Network`] when no peer accepted it.
    pub async fn dht_put(&self, key: &[u8], value: Vec<u8>) -> Result<(), Error> {
        self.net(|tx| Command::PutRecord(key.to_vec(), value, tx))
            .await?
            .map_err(Error::Network)
    }

    /// Reads a record from the DHT (local store first).
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn dht_get(&self, key: &[u8]) -> Result<Vec<u8>, Error> {
        self.net(|tx| Command::GetRecord(key.to_vec(), tx))
            .await?
            .map_err(Error::NotFound)
    }

    /// Publishes `data` on subnet `netuid`'s gossip topic.
    ///
    /// # Errors
    /// [`Error::Network`], e.g. when no verified peer is subscribed yet.
    pub async fn publish(&self, netuid: u16, data: Vec<u8>) -> Result<(), Error> {
        self.net(|tx| Command::Publish(netuid, data, tx))
            .await?
            .map_err(Error::Network)
    }

    /// Gossip accepted from verified peers on this node's subnets.
    ///
    /// # Errors
    /// [`Error::Network`] when networking is off.
    pub fn subscribe_gossip(
        &self,
    ) -> Result<tokio::sync::broadcast::Receiver<GossipMessage>, Error> {
        self.inner
            .parts
            .net
            .as_ref()
            .map(|n| n.gossip.subscribe())
            .ok_or_else(|| Error::Network("networking is off for this runtime".into()))
    }

    /// Peers in the Kademlia routing table.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn routing_table(&self) -> Result<Vec<PeerId>, Error> {
        self.net(Command::RoutingTable).await
    }

    /// Peers in any gossipsub mesh of this node.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn mesh_peers(&self) -> Result<Vec<PeerId>, Error> {
        self.net(Command::MeshPeers).await
    }

    /// Dials an address.
    ///
    /// # Errors
    /// [`Error::Network`] if the dial cannot start.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), Error> {
        self.net(|tx| Command::Dial(addr, tx))
            .await?
            .map_err(Error::Network)
    }

    pub(crate) fn parts(&self) -> &Parts {
        &self.inner.parts
    }

    /// The SS58 prefix addresses are shown with (`identity.ss58_prefix`).
    pub fn ss58_prefix(&self) -> u16 {
        self.inner.parts.ss58_prefix
    }

    /// The default store of offers (`sync.backend`).
    pub(crate) fn sync_backend(&self) -> hermes_actors::sync::Backend {
        self.inner.parts.sync_backend
    }

    fn stream_parts(&self) -> Result<&StreamParts, Error> {
        self.inner.parts.stream.as_ref().ok_or_else(|| {
            Error::Network("networking is off for this runtime (with_network(false))".into())
        })
    }

    /// Sends `bytes` to the node of wallet address `to` on subnet `netuid`, end-to-end encrypted.
    /// Returns once the message is in the durable outbox; it is delivered (and de-duplicated by
    /// its id, see `docs/SECURITY.md`) as soon as the recipient is reachable, and retried with backoff until `messages.ttl` ends. Watch
    /// [`RuntimeHandle::delivery_events`] for the outcome.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad address; [`Error::Stream`] with [`StreamError::TooLarge`]
    /// beyond `messages.max_size` (nothing is sent), or a full outbox.
    pub async fn send(
        &self,
        to: &str,
        netuid: u16,
        bytes: impl Into<Vec<u8>>,
    ) -> Result<MessageId, Error> {
        self.send_with(to, netuid, bytes, SendOptions::default())
            .await
    }

    /// [`RuntimeHandle::send`] with options (e.g. a TTL).
    ///
    /// # Errors
    /// As [`RuntimeHandle::send`].
    pub async fn send_with(
        &self,
        to: &str,
        netuid: u16,
        bytes: impl Into<Vec<u8>>,
        opts: SendOptions,
    ) -> Result<MessageId, Error> {
        let (hotkey, _) = Hotkey::from_ss58(to).map_err(|e| Error::Invalid(e.to_string()))?;
        let sp = self.stream_parts()?;
        Ok(Self::ask(
            &sp.actor,
            stream::SendMessage {
                to: hotkey,
                netuid,
                payload: bytes.into(),
                ttl: opts.ttl,
            },
        )
        .await??)
    }

    /// The inbox: every message delivered to this node. Each is acknowledged to its sender once
    /// the application drops it (or calls [`Inbound::ack`]), so hold it until it is handled; a
    /// crash before that delivers it again, with the same id. One consumer at a time;
    /// dropping it gives it back (messages keep waiting meanwhile).
    ///
    /// # Errors
    /// [`Error::Invalid`] while another `Inbox` is alive; [`Error::Network`] with networking off.
    pub fn subscribe(&self) -> Result<Inbox, Error> {
        let parts = self.stream_parts()?;
        Taken::take(&parts.inbox, &parts.inbox_taken).ok_or_else(|| {
            Error::Invalid("the inbox is already taken; drop the other Inbox first".into())
        })
    }

    /// Outcomes of sent messages: delivered, expired, or refused by the recipient.
    ///
    /// # Errors
    /// [`Error::Network`] with networking off.
    pub fn delivery_events(&self) -> Result<broadcast::Receiver<DeliveryEvent>, Error> {
        Ok(self.stream_parts()?.events.subscribe())
    }

    /// Message and stream counters, including refusals per reason.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn message_stats(&self) -> Result<MessageStats, Error> {
        Self::ask(&self.stream_parts()?.actor, stream::GetStats).await
    }

    /// Messages waiting in the outbox.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn outbox(&self) -> Result<Vec<OutboxEntry>, Error> {
        let sp = self.stream_parts()?;
        let prefix = sp.ss58_prefix;
        Ok(Self::ask(&sp.actor, stream::GetOutbox)
            .await?
            .into_iter()
            .map(|w| entry(w.meta, w.last_error, prefix))
            .collect())
    }

    /// Drops message `id` from the outbox: it is not sent, or retried, any more. Returns what
    /// was dropped. A message being written to its recipient at this moment may already have
    /// arrived and cannot be called back.
    ///
    /// # Errors
    /// [`Error::Stream`] with [`StreamError::NotInOutbox`](crate::StreamError::NotInOutbox) when
    /// no such message waits (delivered, refused, expired, cancelled, or never sent from here),
    /// or [`StreamError::Invalid`](crate::StreamError::Invalid) while it is in flight.
    pub async fn cancel(&self, id: MessageId) -> Result<OutboxEntry, Error> {
        let sp = self.stream_parts()?;
        let meta = Self::ask(&sp.actor, stream::CancelMessage(id)).await??;
        Ok(entry(meta, None, sp.ss58_prefix))
    }

    /// Opens an end-to-end encrypted stream to the node of `to` on `netuid`. Write to it (it
    /// implements the `futures` and `tokio` write traits), then call
    /// [`StreamWriter::finish`] to close it and wait for the recipient's confirmation.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad address; [`Error::Stream`] when the recipient is unreachable
    /// or refuses.
    pub async fn open_stream(&self, to: &str, netuid: u16) -> Result<StreamWriter, Error> {
        let chunk = self.stream_parts()?.chunk_size;
        self.open_stream_with(to, netuid, StreamOptions::new(chunk))
            .await
    }

    /// [`RuntimeHandle::open_stream`] with a name for the stream (e.g. the file's name, at most
    /// 255 bytes), sealed end to end with the data; the recipient sees it sanitized as
    /// [`IncomingStream::name`](crate::IncomingStream::name).
    ///
    /// # Errors
    /// As [`RuntimeHandle::open_stream`]; [`Error::Stream`] with `Invalid` for an empty or
    /// over-long name.
    pub async fn open_stream_named(
        &self,
        to: &str,
        netuid: u16,
        name: Option<&str>,
    ) -> Result<StreamWriter, Error> {
        let chunk = self.stream_parts()?.chunk_size;
        let mut opts = StreamOptions::new(chunk);
        opts.name = name.map(str::to_string);
        self.open_stream_with(to, netuid, opts).await
    }

    /// [`RuntimeHandle::open_stream`] with options (chunk size, name, or no end-to-end
    /// encryption).
    ///
    /// # Errors
    /// As [`RuntimeHandle::open_stream`].
    pub async fn open_stream_with(
        &self,
        to: &str,
        netuid: u16,
        opts: StreamOptions,
    ) -> Result<StreamWriter, Error> {
        let (hotkey, _) = Hotkey::from_ss58(to).map_err(|e| Error::Invalid(e.to_string()))?;
        let sp = self.stream_parts()?;
        Ok(Self::ask(
            &sp.actor,
            stream::OpenStream {
                to: hotkey,
                netuid,
                opts,
            },
        )
        .await??)
    }

    /// Streams opened to this node. One consumer at a time, like [`RuntimeHandle::subscribe`];
    /// while nobody takes them, up to `streams.max_incoming` wait and further ones are refused.
    ///
    /// # Errors
    /// [`Error::Invalid`] while another consumer is alive; [`Error::Network`] with networking off.
    pub fn incoming_streams(&self) -> Result<IncomingStreams, Error> {
        let parts = self.stream_parts()?;
        Taken::take(&parts.incoming, &parts.incoming_taken).ok_or_else(|| {
            Error::Invalid(
                "incoming streams are already taken; drop the other consumer first".into(),
            )
        })
    }

    /// Replaces the prekey now and pushes the new binding to every peer. With `erase_previous`,
    /// retired prekeys are erased at once (after a suspected key theft: sessions sealed to them
    /// can then never be opened again, here or anywhere).
    ///
    /// # Errors
    /// [`Error::Identity`] when the prekey file cannot be written.
    pub async fn rotate_prekey(&self, erase_previous: bool) -> Result<IdentityInfo, Error> {
        Ok(Self::ask(
            &self.inner.parts.identity,
            identity::RotatePrekey { erase_previous },
        )
        .await??)
    }

    /// Denial counters per reason and a summary of the policy in force.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn firewall_stats(&self) -> Result<FirewallStats, Error> {
        Self::ask(&self.inner.parts.firewall, firewall::GetStats).await
    }

    /// Replaces the ACL; connected peers it now refuses are disconnected.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn update_acl(&self, acl: Acl) -> Result<(), Error> {
        Self::ask(&self.inner.parts.firewall, firewall::UpdateAcl(acl)).await
    }

    /// Replaces the subnet scope; connected peers it now refuses are disconnected.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn set_subnet_scope(&self, scope: Scope) -> Result<(), Error> {
        Self::ask(&self.inner.parts.firewall, firewall::SetSubnetScope(scope)).await
    }

    /// Re-reads the chain registry now instead of waiting for the next poll.
    ///
    /// # Errors
    /// [`Error::Network`] if the backend could not be read.
    pub async fn refresh_chain(&self) -> Result<usize, Error> {
        Self::ask(&self.inner.parts.chain, chain::Refresh)
            .await?
            .map(|r| r.len())
            .map_err(Error::Network)
    }

    /// Stops every actor, flushes and closes the database, releases the data dir and joins the
    /// runtime thread. Idempotent: later calls (from any clone) return `Ok` at once.
    ///
    /// # Errors
    /// [`Error::Startup`] if the runtime thread panicked.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let control = match self.inner.control.lock() {
            Ok(mut c) => c.take(),
            Err(_) => None,
        };
        let Some(control) = control else {
            return Ok(());
        };
        let _ = control.stop_tx.send(());
        // Wait without blocking the caller's executor; the join after `done` is immediate.
        let _ = control.done_rx.await;
        control
            .thread
            .join()
            .map_err(|_| Error::Startup("the runtime thread panicked".into()))
    }
}
