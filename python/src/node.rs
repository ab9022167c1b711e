//! `NativeNode`: the `RuntimeHandle` as a Python class. Every I/O method returns an awaitable
//! made by [`crate::bridge::spawn`]; the idiomatic wrapper is `hermes_p2p.Node`.

use crate::bridge::{block_on, spawn};
use crate::consensus::{ConsensusEvents, ConsensusStatus, EvidenceEvents};
use crate::data::{self, Events, Gossip, Inbox, Incoming, Writer};
use crate::errors::Failure;
use crate::firewall::{parse_acl, parse_scope, FirewallStats};
use crate::sync::{parse_ticket, parse_transfer_id, Ticket, Transfer, TransferInfo};
use crate::values::{parse_id, Binding, Identity, OutboxEntry, Peer, Stats};
use hermes::proto::Hotkey;
use hermes::sync::{Backend, OfferOptions};
use hermes::{RuntimeHandle, StreamOptions};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Nodes not yet shut down, so that interpreter exit can shut them down cleanly.
static LIVE: Mutex<Vec<(u64, RuntimeHandle)>> = Mutex::new(Vec::new());
/// Keys of [`LIVE`] entries.
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);
/// How long interpreter exit waits for one node to shut down (stop actors, flush the store).
const EXIT_SHUTDOWN: Duration = Duration::from_secs(10);

/// Shuts every live node down (GIL released); called at interpreter exit.
pub(crate) fn shutdown_all(py: Python<'_>) {
    let nodes: Vec<(u64, RuntimeHandle)> = match LIVE.lock() {
        Ok(mut l) => std::mem::take(&mut *l),
        Err(_) => return,
    };
    let _ = block_on(py, async move {
        for (_, h) in nodes {
            let _ = tokio::time::timeout(EXIT_SHUTDOWN, h.shutdown()).await;
        }
        Ok::<(), Failure>(())
    });
}

fn forget_live(key: u64) {
    if let Ok(mut l) = LIVE.lock() {
        l.retain(|(k, _)| *k != key);
    }
}

/// Parses an SS58 address (the runtime checks it again; this gives the error before any I/O).
fn hotkey(ss58: &str) -> Result<Hotkey, Failure> {
    Hotkey::from_ss58(ss58)
        .map(|(h, _)| h)
        .map_err(|e| Failure::invalid(format!("invalid argument: {e}")))
}

/// Seconds from Python as a duration.
///
/// # Errors
/// `InvalidArgument` for a negative, infinite or NaN number.
fn seconds(s: Option<f64>, what: &str) -> Result<Option<Duration>, Failure> {
    s.map(|s| {
        Duration::try_from_secs_f64(s).map_err(|_| {
            Failure::invalid(format!(
                "invalid argument: {what} {s} is not a duration in seconds"
            ))
        })
    })
    .transpose()
}

/// A running node (see `hermes_p2p.Node`).
#[pyclass(frozen, module = "hermes_p2p._native")]
pub(crate) struct NativeNode {
    handle: RuntimeHandle,
    /// Key in [`LIVE`].
    key: u64,
    /// `streams.chunk_size`: the chunk size of streams opened without one.
    chunk_size: usize,
}

impl Drop for NativeNode {
    fn drop(&mut self) {
        forget_live(self.key);
    }
}

#[pymethods]
impl NativeNode {
    /// Loads the JSON config at `config` and starts a node from it.
    #[staticmethod]
    #[pyo3(signature = (config, *, network = true, logging = false))]
    fn start(
        py: Python<'_>,
        config: PathBuf,
        network: bool,
        logging: bool,
    ) -> PyResult<Bound<'_, PyAny>> {
        spawn(py, async move {
            let cfg = hermes::Config::load(&config)?;
            let chunk_size = usize::try_from(cfg.streams.chunk_size.0).unwrap_or(usize::MAX);
            let handle = hermes::Runtime::builder(cfg)
                .with_network(network)
                .with_logging(logging)
                .start()
                .await?;
            let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut l) = LIVE.lock() {
                l.push((key, handle.clone()));
            }
            Ok(NativeNode {
                handle,
                key,
                chunk_size,
            })
        })
    }

    fn identity<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move { Ok(Identity::from(h.identity().await?)) })
    }

    fn sign<'py>(
        &self,
        py: Python<'py>,
        message: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let message = data::bytes_of(message)?;
        let h = self.handle.clone();
        spawn(py, async move { Ok(h.sign(&message).await?.to_vec()) })
    }

    fn verify(
        &self,
        signer: &str,
        message: &Bound<'_, PyAny>,
        signature: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let py = message.py();
        let key = hotkey(signer).map_err(|f| f.into_pyerr(py))?;
        let message = data::bytes_of(message)?;
        let signature = data::bytes_of(signature)?;
        Ok(self.handle.verify(&key, &message, &signature))
    }

    fn ss58_prefix(&self) -> u16 {
        self.handle.ss58_prefix()
    }

    fn listen_addrs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move {
            Ok(h.listen_addrs()
                .await?
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>())
        })
    }

    fn peers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move {
            Ok(h.peers()
                .await?
                .into_iter()
                .map(Peer::from)
                .collect::<Vec<_>>())
        })
    }

    fn connected_peers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move {
            Ok(h.connected_peers()
                .await?
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>())
        })
    }

    fn routing_table<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move {
            Ok(h.routing_table()
                .await?
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>())
        })
    }

    fn mesh_peers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move {
            Ok(h.mesh_peers()
                .await?
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>())
        })
    }

    fn find<'py>(&self, py: Python<'py>, ss58: String) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move {
            let b = h.find(&ss58).await?;
            Ok(Binding::new(&b, h.ss58_prefix()))
        })
    }

    fn dial<'py>(&self, py: Python<'py>, addr: String) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move {
            let addr = addr.parse().map_err(|e| {
                Failure::invalid(format!("invalid argument: address {addr:?}: {e}"))
            })?;
            Ok(h.dial(addr).await?)
        })
    }

    fn dht_put<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = data::bytes_of(key)?;
        let value = data::bytes_of(value)?;
        let h = self.handle.clone();
        spawn(py, async move { Ok(h.dht_put(&key, value).await?) })
    }

    fn dht_get<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = data::bytes_of(key)?;
        let h = self.handle.clone();
        spawn(py, async move { Ok(h.dht_get(&key).await?) })
    }

    fn publish<'py>(
        &self,
        py: Python<'py>,
        netuid: u16,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let data = data::bytes_of(data)?;
        let h = self.handle.clone();
        spawn(py, async move { Ok(h.publish(netuid, data).await?) })
    }

    fn subscribe_gossip(&self, py: Python<'_>) -> PyResult<Gossip> {
        let rx = self
            .handle
            .subscribe_gossip()
            .map_err(|e| Failure::from(e).into_pyerr(py))?;
        Ok(Gossip::new(rx))
    }

    /// Sends `data`; resolves to the message id (hex) once it is in the durable outbox.
    #[pyo3(signature = (to, netuid, data, *, ttl = None))]
    fn send<'py>(
        &self,
        py: Python<'py>,
        to: String,
        netuid: u16,
        data: &Bound<'py, PyAny>,
        ttl: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let data = data::bytes_of(data)?;
        let ttl = seconds(ttl, "ttl").map_err(|f| f.into_pyerr(py))?;
        let h = self.handle.clone();
        spawn(py, async move {
            let opts = hermes::SendOptions { ttl };
            Ok(h.send_with(&to, netuid, data, opts).await?.to_hex())
        })
    }

    fn subscribe(&self, py: Python<'_>) -> PyResult<Inbox> {
        let inbox = self
            .handle
            .subscribe()
            .map_err(|e| Failure::from(e).into_pyerr(py))?;
        Ok(Inbox::new(inbox))
    }

    fn delivery_events(&self, py: Python<'_>) -> PyResult<Events> {
        let rx = self
            .handle
            .delivery_events()
            .map_err(|e| Failure::from(e).into_pyerr(py))?;
        Ok(Events::new(rx, self.handle.ss58_prefix()))
    }

    fn message_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move { Ok(Stats::from(h.message_stats().await?)) })
    }

    fn outbox<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move {
            Ok(h.outbox()
                .await?
                .into_iter()
                .map(OutboxEntry::from)
                .collect::<Vec<_>>())
        })
    }

    fn cancel<'py>(&self, py: Python<'py>, id: String) -> PyResult<Bound<'py, PyAny>> {
        let id = parse_id(&id).map_err(|f| f.into_pyerr(py))?;
        let h = self.handle.clone();
        spawn(
            py,
            async move { Ok(OutboxEntry::from(h.cancel(id).await?)) },
        )
    }

    /// Opens a stream; resolves to a writer.
    #[pyo3(signature = (to, netuid, *, name = None, chunk_size = None, e2e = true))]
    fn open_stream<'py>(
        &self,
        py: Python<'py>,
        to: String,
        netuid: u16,
        name: Option<String>,
        chunk_size: Option<usize>,
        e2e: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        let mut opts = StreamOptions::new(chunk_size.unwrap_or(self.chunk_size));
        opts.name = name;
        opts.e2e = e2e;
        spawn(py, async move {
            let w = h.open_stream_with(&to, netuid, opts).await?;
            Ok(Writer::new(w))
        })
    }

    fn incoming_streams(&self, py: Python<'_>) -> PyResult<Incoming> {
        let incoming = self
            .handle
            .incoming_streams()
            .map_err(|e| Failure::from(e).into_pyerr(py))?;
        Ok(Incoming::new(incoming))
    }

    /// Offers the file at `path` to `to` on `netuid`; resolves to its `Ticket`.
    #[pyo3(signature = (path, to, netuid, *, ttl = None, chunk_size = None, file_name = None, via = None, deliver = true))]
    #[allow(clippy::too_many_arguments)]
    fn offer<'py>(
        &self,
        py: Python<'py>,
        path: PathBuf,
        to: String,
        netuid: u16,
        ttl: Option<f64>,
        chunk_size: Option<u32>,
        file_name: Option<String>,
        via: Option<String>,
        deliver: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ttl = seconds(ttl, "ttl").map_err(|f| f.into_pyerr(py))?;
        let via = match via.as_deref() {
            None => None,
            Some("embedded") => Some(Backend::Embedded),
            Some("s3") => Some(Backend::S3),
            Some(other) => {
                return Err(Failure::invalid(format!(
                    "invalid argument: via {other:?}: expected \"embedded\" or \"s3\""
                ))
                .into_pyerr(py))
            }
        };
        let opts = OfferOptions {
            via,
            ttl,
            chunk_size,
            file_name,
            no_delivery: !deliver,
        };
        let h = self.handle.clone();
        spawn(py, async move {
            let t = h.offer(&path, &to, netuid, opts).await?;
            Ok(Ticket::new(t, h.ss58_prefix()))
        })
    }

    /// Starts downloading what `ticket` (a `Ticket` or its string form) names into `dest`;
    /// resolves to the running `Transfer`.
    fn fetch<'py>(
        &self,
        py: Python<'py>,
        ticket: &Bound<'py, PyAny>,
        dest: PathBuf,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ticket = match ticket.cast::<Ticket>() {
            Ok(t) => t.get().inner.clone(),
            Err(_) => {
                let text: String = ticket.extract()?;
                parse_ticket(&text).map_err(|f| f.into_pyerr(py))?
            }
        };
        let h = self.handle.clone();
        spawn(py, async move {
            Ok(Transfer::new(h.fetch_ticket(ticket, &dest).await?))
        })
    }

    fn transfers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move {
            let prefix = h.ss58_prefix();
            Ok(h.transfers()
                .await?
                .into_iter()
                .map(|t| TransferInfo::new(t, prefix))
                .collect::<Vec<_>>())
        })
    }

    fn transfer<'py>(&self, py: Python<'py>, id: String) -> PyResult<Bound<'py, PyAny>> {
        let id = parse_transfer_id(&id).map_err(|f| f.into_pyerr(py))?;
        let h = self.handle.clone();
        spawn(
            py,
            async move { Ok(h.transfer(id).await?.map(Transfer::new)) },
        )
    }

    fn revoke<'py>(&self, py: Python<'py>, id: String) -> PyResult<Bound<'py, PyAny>> {
        let id = parse_transfer_id(&id).map_err(|f| f.into_pyerr(py))?;
        let h = self.handle.clone();
        spawn(py, async move {
            let prefix = h.ss58_prefix();
            Ok(TransferInfo::new(h.revoke(id).await?, prefix))
        })
    }

    fn consensus_status<'py>(&self, py: Python<'py>, netuid: u16) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move {
            let s = h.consensus_status(netuid).await?;
            Ok(ConsensusStatus::new(&s, h.ss58_prefix()))
        })
    }

    fn consensus_statuses<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move {
            let prefix = h.ss58_prefix();
            Ok(h.consensus_statuses()
                .await?
                .iter()
                .map(|s| ConsensusStatus::new(s, prefix))
                .collect::<Vec<_>>())
        })
    }

    fn poll_consensus<'py>(&self, py: Python<'py>, netuid: u16) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move {
            let s = h.poll_consensus(netuid).await?;
            Ok(ConsensusStatus::new(&s, h.ss58_prefix()))
        })
    }

    fn consensus_events(&self) -> ConsensusEvents {
        ConsensusEvents::new(self.handle.consensus_events(), self.handle.ss58_prefix())
    }

    fn consensus_evidence(&self) -> EvidenceEvents {
        EvidenceEvents::new(self.handle.consensus_evidence(), self.handle.ss58_prefix())
    }

    fn firewall_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move {
            Ok(FirewallStats::new(&h.firewall_stats().await?))
        })
    }

    #[pyo3(signature = (allow, deny))]
    fn update_acl<'py>(
        &self,
        py: Python<'py>,
        allow: Vec<String>,
        deny: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let acl = parse_acl(&allow, &deny).map_err(|f| f.into_pyerr(py))?;
        let h = self.handle.clone();
        spawn(py, async move { Ok(h.update_acl(acl).await?) })
    }

    #[pyo3(signature = (mode, netuids))]
    fn set_subnet_scope<'py>(
        &self,
        py: Python<'py>,
        mode: String,
        netuids: Vec<u16>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let scope = parse_scope(&mode, &netuids).map_err(|f| f.into_pyerr(py))?;
        let h = self.handle.clone();
        spawn(py, async move { Ok(h.set_subnet_scope(scope).await?) })
    }

    fn consensus_off(&self) -> Option<String> {
        self.handle.consensus_off().map(str::to_string)
    }

    #[pyo3(signature = (erase_previous = false))]
    fn rotate_prekey<'py>(
        &self,
        py: Python<'py>,
        erase_previous: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move {
            Ok(Identity::from(h.rotate_prekey(erase_previous).await?))
        })
    }

    fn refresh_chain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move { Ok(h.refresh_chain().await?) })
    }

    fn shutdown<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        let key = self.key;
        spawn(py, async move {
            let r = h.shutdown().await;
            forget_live(key);
            Ok(r?)
        })
    }

    /// Shuts the node down from synchronous code (GIL released while waiting).
    fn shutdown_blocking(&self, py: Python<'_>) -> PyResult<()> {
        let h = self.handle.clone();
        let r = block_on(py, async move { Ok(h.shutdown().await?) });
        forget_live(self.key);
        r.map_err(|f| f.into_pyerr(py))
    }

    fn __repr__(&self) -> String {
        format!("<NativeNode {}>", self.key)
    }
}
