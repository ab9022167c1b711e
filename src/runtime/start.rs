//! Start-up: opens the store, loads the identity and starts every actor in dependency order.

use super::consensus::{start_consensus, ConsensusNet, ConsensusParts};
use super::{Parts, StartOptions, StreamParts};

use crate::config::Config;
use crate::config::{ChainKind, SubnetMode};
use crate::Error;
use actix::{Arbiter, Supervisor};
use hermes_actors::chain::{self, Chain, ChainActor, DevChain, StaticChain};
use hermes_actors::firewall::{self, FirewallActor, PolicyBase};
use hermes_actors::identity::{self, IdentityActor, IdentityConfig};
use hermes_actors::network::directory::PeerDirectory;
use hermes_actors::network::gate::DenyCounters;
use hermes_actors::network::{self, NetConfig};
use hermes_actors::stream::bulk::IncomingStream;
use hermes_actors::stream::{self, Inbound, StreamActor, StreamConfig, StreamDeps};
use hermes_actors::sync::{self as sync_engine, SyncActor};
use hermes_actors::{Store, StoreOptions};
use hermes_proto::firewall::{Limits, Scope};
use hermes_proto::msglink::SessionLimits;
use hermes_proto::outbox::OutboxLimits;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

fn scope_of(config: &Config) -> Scope {
    let n = &config.subnets.netuids;
    match config.subnets.mode {
        SubnetMode::Open => Scope::Open,
        SubnetMode::Single => n.first().map(|x| Scope::Single(*x)).unwrap_or(Scope::Open),
        SubnetMode::Whitelist => Scope::Whitelist(n.iter().copied().collect()),
    }
}

pub(super) async fn start_actors(
    config: Config,
    opts: StartOptions,
) -> Result<(Parts, Store), Error> {
    let StartOptions {
        network,
        binding_override,
        consensus_hook,
        consensus_withhold,
    } = opts;
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
    let hotkey_pair = actor.hotkey_pair();
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
    let consensus_chain = backend.clone();
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
                // Offline runtimes (`hermes id`) sign nothing.
                consensus: ConsensusParts::off(&config, "networking is off for this runtime"),
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
                preallocate: s.preallocate,
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
    // Last: a ConsensusActor may sign as soon as it starts, once everything else runs.
    let mut consensus = start_consensus(
        &config,
        consensus_chain,
        hotkey_pair,
        consensus_hook,
        &store,
        ConsensusNet {
            commands: net.commands.clone(),
            gossip: net.gossip.clone(),
            withhold: consensus_withhold,
        },
    )
    .await?;
    arbiters.extend(consensus.arbiter.take());
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
            consensus,
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
