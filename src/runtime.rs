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
use crate::Error;
use actix::{Addr, Supervisor};
use hermes_actors::identity::{self, IdentityActor, IdentityConfig, IdentityInfo};
use hermes_actors::{Store, StoreOptions};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

/// Configures and starts a [`Runtime`].
#[derive(Debug)]
pub struct RuntimeBuilder {
    config: Config,
    install_logging: bool,
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
        let (ready_tx, ready_rx) = oneshot::channel::<Result<Addr<IdentityActor>, Error>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hermes-runtime".into())
            .spawn(move || run_system(config, ready_tx, stop_rx, done_tx))
            .map_err(|e| Error::Startup(format!("cannot spawn the runtime thread: {e}")))?;
        let identity = match ready_rx.await {
            Ok(Ok(addr)) => addr,
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
                identity,
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

fn run_system(
    config: Config,
    ready_tx: oneshot::Sender<Result<Addr<IdentityActor>, Error>>,
    stop_rx: oneshot::Receiver<()>,
    done_tx: oneshot::Sender<()>,
) {
    let system = actix::System::new();
    let started = system.block_on(async move {
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
        };
        let actor = IdentityActor::load(id_cfg, store.clone())?;
        let addr = Supervisor::start(move |_| actor);
        actix::spawn(async move {
            // Either an explicit shutdown or every handle dropped stops the System.
            let _ = stop_rx.await;
            actix::System::current().stop();
        });
        Ok::<_, Error>((addr, store))
    });
    let store = match started {
        Ok((addr, store)) => {
            if ready_tx.send(Ok(addr)).is_err() {
                tracing::warn!("runtime start was abandoned by its caller; stopping");
                actix::System::current().stop();
            }
            store
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
    identity: Addr<IdentityActor>,
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
        Ok(self
            .inner
            .identity
            .send(identity::GetIdentity)
            .await
            .map_err(|_| Error::Stopped)??)
    }

    /// Signs `message` with the hotkey (sr25519, substrate context).
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn sign(&self, message: &[u8]) -> Result<[u8; 64], Error> {
        Ok(self
            .inner
            .identity
            .send(identity::Sign(message.to_vec()))
            .await
            .map_err(|_| Error::Stopped)??)
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
        Ok(self
            .inner
            .identity
            .send(identity::VerifyBinding {
                bytes,
                peer_id,
                expected,
            })
            .await
            .map_err(|_| Error::Stopped)??)
    }

    /// Test hook: makes the IdentityActor panic inside a handler.
    ///
    /// # Errors
    /// Always an error: the request that panicked fails, and the actor restarts.
    #[cfg(feature = "fault-injection")]
    pub async fn inject_identity_panic(&self) -> Result<(), Error> {
        Ok(self
            .inner
            .identity
            .send(identity::InjectPanic)
            .await
            .map_err(|_| Error::Stopped)??)
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
