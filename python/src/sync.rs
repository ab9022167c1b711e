//! The Sync Engine as Python objects: tickets, running downloads, their progress, and the
//! listing of transfers.
//!
//! A download's progress is a `tokio::sync::watch` value: each reader sees the latest report,
//! never a backlog, so a Python consumer slower than the download skips intermediate reports
//! instead of piling them up (the iterator is bounded by construction).

use crate::bridge::spawn;
use crate::errors::Failure;
use hermes::sync::{Direction, State, Ticket as RustTicket, Transfer as Handle, TransferId};
use pyo3::prelude::*;
use std::sync::Arc;
use tokio::sync::{watch, Mutex};

/// A transfer id from its hex text.
///
/// # Errors
/// `InvalidArgument` for anything but 32 hex digits.
pub(crate) fn parse_transfer_id(text: &str) -> Result<TransferId, Failure> {
    TransferId::from_hex(text).map_err(|e| hermes::Error::Invalid(e).into())
}

/// Parses a ticket's one-line string form, with the runtime's error text.
///
/// # Errors
/// `InvalidArgument` naming what is wrong with the text (not a ticket, truncated, a bad
/// character and where, damaged).
pub(crate) fn parse_ticket(text: &str) -> Result<RustTicket, Failure> {
    RustTicket::parse(text).map_err(|e| hermes::Error::Invalid(e.to_string()).into())
}

/// A signed ticket: what a receiver needs to download an offer. `str(ticket)` is its one-line
/// string form (`hermes-ticket1:…`), which `Ticket.parse` reads back.
#[pyclass(frozen, module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    pub(crate) inner: RustTicket,
    /// SS58 prefix the addresses are shown with.
    prefix: u16,
}

impl Ticket {
    pub(crate) fn new(inner: RustTicket, prefix: u16) -> Self {
        Ticket { inner, prefix }
    }
}

#[pymethods]
impl Ticket {
    /// Parses the one-line string form (surrounding whitespace is ignored).
    #[staticmethod]
    #[pyo3(signature = (text, ss58_prefix = 42))]
    fn parse(py: Python<'_>, text: &str, ss58_prefix: u16) -> PyResult<Ticket> {
        parse_ticket(text)
            .map(|t| Ticket::new(t, ss58_prefix))
            .map_err(|f| f.into_pyerr(py))
    }

    /// The transfer id (hex).
    #[getter]
    fn transfer_id(&self) -> String {
        self.inner.body.transfer_id.to_hex()
    }

    /// The sender's SS58 address (it signed the ticket).
    #[getter]
    fn sender(&self) -> String {
        self.inner.body.sender.to_ss58(self.prefix)
    }

    /// The only receiver's SS58 address.
    #[getter]
    fn receiver(&self) -> String {
        self.inner.body.receiver.to_ss58(self.prefix)
    }

    /// The subnet.
    #[getter]
    fn netuid(&self) -> u16 {
        self.inner.body.netuid
    }

    /// Payload size in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.inner.body.layout.size()
    }

    /// Chunk size in bytes.
    #[getter]
    fn chunk_size(&self) -> u32 {
        self.inner.body.layout.chunk_size()
    }

    /// The file name the sender gives (its word, not a path).
    #[getter]
    fn file_name(&self) -> Option<String> {
        self.inner.body.file_name.clone()
    }

    /// Start of validity (unix seconds).
    #[getter]
    fn issued_at(&self) -> u64 {
        self.inner.body.issued_at
    }

    /// End of validity (unix seconds, exclusive).
    #[getter]
    fn expires_at(&self) -> u64 {
        self.inner.body.expires_at
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<Ticket>()
            .map(|o| o.get().inner == self.inner)
            .unwrap_or(false)
    }

    fn __hash__(&self) -> u64 {
        u64::from_le_bytes(
            self.inner.body.transfer_id.0[..8]
                .try_into()
                .unwrap_or([0; 8]),
        )
    }

    fn __repr__(&self) -> String {
        format!(
            "Ticket(transfer_id={:?}, size={}, file_name={:?})",
            self.transfer_id(),
            self.size(),
            self.inner.body.file_name
        )
    }
}

/// A progress report of a download.
#[pyclass(frozen, get_all, module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// Bytes in place (journaled or about to be), resumed ones included.
    done_bytes: u64,
    /// Payload size.
    total_bytes: u64,
    /// Bytes per second over this run (resumed bytes excluded).
    rate: f64,
    /// Estimated seconds left at that rate; None before the first chunk.
    eta: Option<f64>,
    /// Whether the file is complete, verified and renamed into place.
    finished: bool,
}

impl From<&hermes::sync::Progress> for Progress {
    fn from(p: &hermes::sync::Progress) -> Self {
        Progress {
            done_bytes: p.done_bytes,
            total_bytes: p.total_bytes,
            rate: p.rate,
            eta: p.eta.map(|d| d.as_secs_f64()),
            finished: p.finished,
        }
    }
}

#[pymethods]
impl Progress {
    fn __repr__(&self) -> String {
        format!(
            "Progress({}/{} bytes, {:.0} B/s, finished={})",
            self.done_bytes, self.total_bytes, self.rate, self.finished
        )
    }
}

/// A running (or finished) download.
#[pyclass(frozen, module = "hermes_p2p._native")]
pub(crate) struct Transfer {
    handle: Handle,
}

impl Transfer {
    pub(crate) fn new(handle: Handle) -> Self {
        Transfer { handle }
    }
}

#[pymethods]
impl Transfer {
    /// The transfer id (hex).
    #[getter]
    fn id(&self) -> String {
        self.handle.id.to_hex()
    }

    /// The destination path.
    #[getter]
    fn dest(&self) -> String {
        self.handle.dest.display().to_string()
    }

    /// The latest progress report.
    #[getter]
    fn progress(&self) -> Progress {
        Progress::from(&*self.handle.progress.borrow())
    }

    /// Whether the download has ended (completed, failed or cancelled).
    #[getter]
    fn done(&self) -> bool {
        self.handle.outcome.borrow().is_some()
    }

    /// Resolves to the final progress once the download completed; raises `SyncError` with the
    /// runtime's text when it failed or was cancelled (the partial file is kept for a resume).
    fn wait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let h = self.handle.clone();
        spawn(py, async move {
            h.wait().await.map_err(hermes::Error::Sync)?;
            let p = Progress::from(&*h.progress.borrow());
            Ok(p)
        })
    }

    /// Asks the download to stop; it journals what it wrote (fetching again resumes it).
    fn cancel(&self) {
        self.handle.cancel();
    }

    /// Progress reports from the current one on (see [`ProgressIter`]).
    fn updates(&self) -> ProgressIter {
        let mut progress = self.handle.progress.clone();
        // The current report is the first one a new reader sees.
        progress.mark_changed();
        ProgressIter {
            state: Arc::new(Mutex::new(Follow {
                progress,
                outcome: self.handle.outcome.clone(),
                ended: false,
            })),
        }
    }

    fn __repr__(&self) -> String {
        format!("Transfer(id={:?}, dest={:?})", self.id(), self.dest())
    }
}

/// What a [`ProgressIter`] keeps between calls.
struct Follow {
    progress: watch::Receiver<hermes::sync::Progress>,
    outcome: watch::Receiver<Option<Result<(), String>>>,
    ended: bool,
}

impl Follow {
    /// The next report not yet seen; `None` once the download has ended and its last report
    /// was returned.
    async fn next(&mut self) -> Option<Progress> {
        while !self.ended {
            if self.progress.has_changed().unwrap_or(false) {
                return Some(Progress::from(&*self.progress.borrow_and_update()));
            }
            if self.outcome.borrow().is_some() {
                // The last report is published before the outcome, so nothing is left.
                self.ended = true;
                break;
            }
            tokio::select! {
                r = self.progress.changed() => {
                    if r.is_err() {
                        self.ended = true;
                    } else {
                        return Some(Progress::from(&*self.progress.borrow_and_update()));
                    }
                }
                r = self.outcome.changed() => {
                    if r.is_err() {
                        self.ended = true;
                    }
                }
            }
        }
        None
    }
}

/// Progress reports of one download, one per `next()`: the latest report each time (reports
/// are coalesced, never queued), `None` once the download has ended.
#[pyclass(frozen, module = "hermes_p2p._native")]
pub(crate) struct ProgressIter {
    state: Arc<Mutex<Follow>>,
}

#[pymethods]
impl ProgressIter {
    /// Resolves to the next report, or None at the end of the download.
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let state = Arc::clone(&self.state);
        spawn(py, async move { Ok(state.lock().await.next().await) })
    }
}

/// A transfer as listed by `Node.transfers()`.
#[pyclass(frozen, get_all, module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct TransferInfo {
    /// Transfer id (hex).
    id: String,
    /// `"offer"` or `"download"`.
    direction: String,
    /// The other side's SS58 address: the receiver of an offer, the sender of a download.
    peer: String,
    /// Source file (offer) or destination (download).
    path: String,
    /// Payload size.
    size: u64,
    /// Download: bytes in place; offer: sealed bytes served so far (repeats included).
    done_bytes: u64,
    /// `"preparing"`, `"serving"`, `"fetching"`, `"done"`, `"cancelled"`, `"revoked"`,
    /// `"expired"` or `"failed"`.
    state: String,
    /// Why it failed, for `"failed"`.
    error: Option<String>,
    /// Offer: where its chunks are stored (`"embedded"` or `"s3"`).
    backend: Option<String>,
    /// Ticket expiry (unix seconds).
    expires_at: u64,
    /// Download: bytes per second over this run; offer: 0.
    rate: f64,
}

impl TransferInfo {
    pub(crate) fn new(t: hermes::sync::TransferInfo, prefix: u16) -> Self {
        let (state, error) = match &t.state {
            State::Failed(why) => ("failed".to_string(), Some(why.clone())),
            s => (s.to_string(), None),
        };
        TransferInfo {
            id: t.id.to_hex(),
            direction: match t.direction {
                Direction::Offer => "offer",
                Direction::Download => "download",
            }
            .into(),
            peer: t.peer.to_ss58(prefix),
            path: t.path.display().to_string(),
            size: t.size,
            done_bytes: t.done_bytes,
            state,
            error,
            backend: t.backend.map(|b| b.to_string()),
            expires_at: t.expires_at,
            rate: t.rate,
        }
    }
}

#[pymethods]
impl TransferInfo {
    fn __repr__(&self) -> String {
        format!(
            "TransferInfo(id={:?}, {}, state={:?}, {}/{} bytes)",
            self.id, self.direction, self.state, self.done_bytes, self.size
        )
    }
}
