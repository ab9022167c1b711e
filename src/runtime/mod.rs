//! The embeddable runtime: a builder, a handle, and the thread that hosts the actors.
//!
//! Start-up, step by step:
//! 1. [`RuntimeBuilder::start`] validates the config and spawns the `hermes-runtime` thread.
//! 2. That thread creates an actix `System`, opens the [`Store`](hermes_actors::Store) (taking the data-dir lock), loads
//!    the identity and starts each actor under `actix::Supervisor`.
//! 3. It reports ready (or the first error) through a oneshot channel; `start` returns the handle.
//!
//! Shutdown reverses it: the handle signals the thread, the System stops (dropping every actor and
//! with it their database handles), the store flushes and releases the lock, the thread reports
//! done, and `shutdown` joins it. Because the runtime owns its thread, it works the same whether the
//! host is a tokio application, a plain `main` using a tiny executor, or Python.
//!
//! Files: this one holds the builder, the shared types and the runtime thread; `start` starts the
//! actors; `handle` holds [`RuntimeHandle`]'s methods; `consensus` starts the ConsensusActors and
//! holds the consensus methods of the handle.

use crate::config::Config;
use crate::Error;
use actix::{Addr, Arbiter};
use hermes_actors::chain::ChainActor;
use hermes_actors::consensus::{ConsensusHook, EqualScores};
use hermes_actors::firewall::FirewallActor;
use hermes_actors::identity::IdentityActor;
use hermes_actors::network::NetHandle;
use hermes_actors::stream::bulk::IncomingStream;
use hermes_actors::stream::{DeliveryEvent, Inbound, StreamActor};
use hermes_actors::sync::SyncActor;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::{broadcast, mpsc, oneshot};

mod consensus;
mod handle;
mod start;

use start::start_actors;

/// Configures and starts a [`Runtime`].
#[derive(Debug)]
pub struct RuntimeBuilder {
    config: Config,
    install_logging: bool,
    network: bool,
    binding_override: Option<Vec<u8>>,
    consensus_hook: Option<Arc<dyn ConsensusHook>>,
    consensus_withhold: bool,
}

/// What the runtime thread starts with beside the config.
struct StartOptions {
    network: bool,
    binding_override: Option<Vec<u8>>,
    consensus_hook: Arc<dyn ConsensusHook>,
    /// Test hook: an elected node only gossips its proposal.
    consensus_withhold: bool,
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
            consensus_hook: None,
            consensus_withhold: false,
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

    /// What the application decides in consensus: the data it submits when this node is the
    /// epoch's elected validator, and whether it agrees with another's (default
    /// [`EqualScores`]: every eligible node scores 1, a proposal is accepted when it scores
    /// exactly the eligible nodes). Used when `consensus.enabled` and the chain has epochs.
    pub fn with_consensus_hook(mut self, hook: Arc<dyn ConsensusHook>) -> Self {
        self.consensus_hook = Some(hook);
        self
    }

    /// Test hook: when elected, this node only gossips its proposal and stores it in the DHT,
    /// never submits it to the chain; the epoch counts only if other validators relay it.
    #[cfg(feature = "fault-injection")]
    pub fn with_consensus_withholding(mut self) -> Self {
        self.consensus_withhold = true;
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
        let opts = StartOptions {
            network: self.network,
            binding_override: self.binding_override,
            consensus_hook: self.consensus_hook.unwrap_or_else(|| Arc::new(EqualScores)),
            consensus_withhold: self.consensus_withhold,
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hermes-runtime".into())
            .spawn(move || run_system(config, opts, ready_tx, stop_rx, done_tx))
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
    /// One ConsensusActor per subnet, and their outcomes.
    consensus: consensus::ConsensusParts,
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

fn run_system(
    config: Config,
    opts: StartOptions,
    ready_tx: oneshot::Sender<Result<Parts, Error>>,
    stop_rx: oneshot::Receiver<()>,
    done_tx: oneshot::Sender<()>,
) {
    let system = actix::System::new();
    let started = system.block_on(async move {
        let started = start_actors(config, opts).await;
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
