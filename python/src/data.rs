//! The data plane as Python objects: the inbox and its messages, incoming streams and their
//! readers, stream writers, gossip and delivery events.
//!
//! Each queue is pulled one item per `await` (the Python layer turns that into `async for`), so
//! a slow consumer leaves items in the runtime's bounded queues and the runtime applies its own
//! backpressure (senders' outboxes wait, streams stop being read): nothing piles up in Python.

use crate::bridge::{spawn, with_python};
use crate::errors::{Failure, Kind};
use crate::values::{DeliveryEvent, StreamReport};
use futures::{AsyncReadExt, AsyncWriteExt};
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use tokio::sync::{broadcast, Mutex};

/// Largest single `read(n)`: bounds the buffer a caller can make us allocate.
pub(crate) const MAX_READ: usize = 16 << 20;
/// Default `read()` size, and the chunk size of `async for chunk in reader`.
pub(crate) const DEFAULT_READ: usize = 256 << 10;

/// The next value of a broadcast channel, adding to `skipped` the values this consumer missed by
/// falling behind; `None` once the channel is closed.
pub(crate) async fn next_counting<T: Clone>(
    rx: &mut broadcast::Receiver<T>,
    skipped: &AtomicU64,
) -> Option<T> {
    loop {
        match rx.recv().await {
            Ok(v) => return Some(v),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                skipped.fetch_add(n, Ordering::Relaxed);
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// A buffer-protocol view of `obj` as bytes. Typed buffers (e.g. a float64 numpy array) are
/// viewed as their raw bytes through `memoryview.cast("B")`, without a copy.
///
/// # Errors
/// `TypeError` for objects without the buffer protocol (e.g. `str`), or typed buffers that are
/// not contiguous.
pub(crate) fn byte_view(obj: &Bound<'_, PyAny>) -> PyResult<PyBuffer<u8>> {
    match PyBuffer::<u8>::get(obj) {
        Ok(b) => Ok(b),
        Err(first) => {
            let py = obj.py();
            let mv = py
                .import("builtins")?
                .getattr("memoryview")?
                .call1((obj,))
                .map_err(|_| first)?;
            PyBuffer::<u8>::get(&mv.call_method1("cast", ("B",))?)
        }
    }
}

/// The bytes of `obj` (bytes, bytearray, memoryview or any buffer), copied.
///
/// # Errors
/// As [`byte_view`].
pub(crate) fn bytes_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    byte_view(obj)?.to_vec(obj.py())
}

/// Bytes borrowed from a Python buffer for the duration of a write: the exporter keeps the
/// memory alive and in place until the view is released. The caller must not mutate the
/// buffer until the write returns (documented on `Writer.write`).
struct Lent {
    view: Option<PyBuffer<u8>>,
    /// Start of the contiguous bytes (an address, so that `Lent` is `Send` like the view).
    addr: usize,
    len: usize,
}

impl Lent {
    /// Borrows `obj`'s bytes; `None` when they are not C-contiguous (then copy instead).
    fn new(obj: &Bound<'_, PyAny>) -> PyResult<Option<Lent>> {
        let view = byte_view(obj)?;
        if !view.is_c_contiguous() {
            return Ok(None);
        }
        Ok(Some(Lent {
            addr: view.buf_ptr() as usize,
            len: view.len_bytes(),
            view: Some(view),
        }))
    }

    fn as_slice(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `view` is held until `self` drops, and a held buffer view keeps its memory
        // valid and in place (the buffer protocol's contract); `len_bytes` is its size.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // Released with the GIL; past interpreter exit the view is leaked instead.
        let mut view = self.view.take();
        with_python(|_py| drop(view.take()));
        if let Some(v) = view {
            std::mem::forget(v);
        }
    }
}

/// Bytes to write: borrowed when contiguous, copied otherwise.
enum Chunk {
    Lent(Lent),
    Owned(Vec<u8>),
}

impl Chunk {
    fn new(obj: &Bound<'_, PyAny>) -> PyResult<Chunk> {
        if let Some(lent) = Lent::new(obj)? {
            return Ok(Chunk::Lent(lent));
        }
        Ok(Chunk::Owned(byte_view(obj)?.to_vec(obj.py())?))
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Chunk::Lent(l) => l.as_slice(),
            Chunk::Owned(v) => v,
        }
    }
}

fn io_failure(e: std::io::Error) -> Failure {
    Failure::new(Kind::Stream, e.to_string())
}

/// A delivered message. Acknowledged to its sender when this object is garbage collected or
/// `ack()` is called; `give_back()` has the sender deliver it again later.
#[pyclass(frozen, module = "hermes_p2p._native")]
pub(crate) struct Message {
    /// Sender's SS58 address.
    #[pyo3(get)]
    sender: String,
    /// Subnet.
    #[pyo3(get)]
    netuid: u16,
    /// Message id (hex), the one `send` returned at the sender.
    #[pyo3(get)]
    id: String,
    /// When the delivered copy was sealed (sender's clock, unix seconds).
    #[pyo3(get)]
    sent_at: u64,
    data: Vec<u8>,
    /// The runtime's message (its receipt acknowledges on drop); `None` once acked or given back.
    inbound: StdMutex<Option<hermes::Inbound>>,
}

impl Message {
    fn new(mut m: hermes::Inbound) -> Self {
        let data = std::mem::take(&mut m.bytes);
        Message {
            sender: m.from.clone(),
            netuid: m.netuid,
            id: m.id.to_hex(),
            sent_at: m.sent_at,
            data,
            inbound: StdMutex::new(Some(m)),
        }
    }

    fn take(&self) -> Option<hermes::Inbound> {
        self.inbound.lock().ok().and_then(|mut g| g.take())
    }
}

#[pymethods]
impl Message {
    /// The payload.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.data)
    }

    /// Acknowledges the message now (dropping it does the same).
    fn ack(&self) {
        if let Some(m) = self.take() {
            m.ack();
        }
    }

    /// Gives the message back unacknowledged: the sender delivers it again later.
    fn give_back(&self) {
        if let Some(m) = self.take() {
            m.give_back();
        }
    }

    fn __repr__(&self) -> String {
        format!(
            "Message(sender={:?}, netuid={}, id={:?}, len={})",
            self.sender,
            self.netuid,
            self.id,
            self.data.len()
        )
    }
}

/// The inbox (one consumer per node; the Python layer shares one instance).
#[pyclass(frozen, module = "hermes_p2p._native")]
pub(crate) struct Inbox {
    rx: Arc<Mutex<hermes::Inbox>>,
}

impl Inbox {
    pub(crate) fn new(rx: hermes::Inbox) -> Self {
        Inbox {
            rx: Arc::new(Mutex::new(rx)),
        }
    }
}

/// A message taken from the inbox for a `recv` whose result is not set yet. It becomes a
/// [`Message`] only when handed to Python; dropped before that (the `recv` was cancelled after
/// the runtime handed the message over, before the event loop set the result), it is given back
/// to its sender, which delivers it again, instead of being acknowledged.
struct Unclaimed(Option<hermes::Inbound>);

impl<'py> IntoPyObject<'py> for Unclaimed {
    type Target = Message;
    type Output = Bound<'py, Message>;
    type Error = PyErr;

    fn into_pyobject(mut self, py: Python<'py>) -> PyResult<Bound<'py, Message>> {
        match self.0.take() {
            Some(m) => Bound::new(py, Message::new(m)),
            None => Err(pyo3::exceptions::PyRuntimeError::new_err(
                "message already handed over",
            )),
        }
    }
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            m.give_back();
        }
    }
}

#[pymethods]
impl Inbox {
    /// The next message; `None` once the node has shut down. Cancel-safe: a cancelled `recv`
    /// loses nothing (a message already taken for it is given back, see [`Unclaimed`]).
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rx = self.rx.clone();
        spawn(py, async move {
            let mut rx = rx.lock().await;
            Ok(rx.recv().await.map(|m| Unclaimed(Some(m))))
        })
    }

    /// The next message if one is already waiting, without awaiting: `None` when the inbox is
    /// empty, a `recv` is pending, or the node has shut down. Lets a consumer take a burst of
    /// waiting messages without a round trip through the event loop for each; a message stays
    /// in the runtime's inbox (unacknowledged) until it is handed out here.
    fn try_recv(&self, py: Python<'_>) -> PyResult<Option<Py<Message>>> {
        let Ok(mut rx) = self.rx.try_lock() else {
            return Ok(None);
        };
        match rx.try_recv() {
            Some(m) => Ok(Some(Py::new(py, Message::new(m))?)),
            None => Ok(None),
        }
    }
}

/// A stream opened to this node: who sent it, and its data.
#[pyclass(frozen, module = "hermes_p2p._native")]
pub(crate) struct IncomingStream {
    /// Sender's SS58 address.
    #[pyo3(get)]
    sender: String,
    /// Subnet.
    #[pyo3(get)]
    netuid: u16,
    /// Stream id (hex).
    #[pyo3(get)]
    id: String,
    /// Whether the chunks are end-to-end encrypted.
    #[pyo3(get)]
    e2e: bool,
    /// The sender's name for it, sanitized to a safe file name; `None` if none.
    #[pyo3(get)]
    name: Option<String>,
    reader: Arc<Mutex<hermes::StreamReader>>,
}

#[pymethods]
impl IncomingStream {
    /// Up to `n` bytes (at most 16 MiB per call); `b""` at the end of the stream. Reading the
    /// end confirms the stream to its sender.
    #[pyo3(signature = (n = DEFAULT_READ))]
    fn read<'py>(&self, py: Python<'py>, n: usize) -> PyResult<Bound<'py, PyAny>> {
        let reader = self.reader.clone();
        let n = n.min(MAX_READ);
        spawn(py, async move {
            let mut r = reader.lock().await;
            let mut buf = vec![0u8; n];
            let got = if n == 0 {
                0
            } else {
                r.read(&mut buf).await.map_err(io_failure)?
            };
            buf.truncate(got);
            Ok(buf)
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "IncomingStream(sender={:?}, netuid={}, id={:?}, name={:?})",
            self.sender, self.netuid, self.id, self.name
        )
    }
}

/// Incoming streams (one consumer per node; the Python layer shares one instance).
#[pyclass(frozen, module = "hermes_p2p._native")]
pub(crate) struct Incoming {
    rx: Arc<Mutex<hermes::IncomingStreams>>,
}

impl Incoming {
    pub(crate) fn new(rx: hermes::IncomingStreams) -> Self {
        Incoming {
            rx: Arc::new(Mutex::new(rx)),
        }
    }
}

#[pymethods]
impl Incoming {
    /// The next incoming stream; `None` once the node has shut down.
    fn accept<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rx = self.rx.clone();
        spawn(py, async move {
            let mut rx = rx.lock().await;
            Ok(rx.recv().await.map(|s| IncomingStream {
                sender: s.from,
                netuid: s.netuid,
                id: s.id.to_hex(),
                e2e: s.e2e,
                name: s.name,
                reader: Arc::new(Mutex::new(s.reader)),
            }))
        })
    }
}

/// Drops the stream writer unless the write it guards completed: a write cancelled half-way
/// has sent an unknown prefix, so the stream is aborted rather than left to be finished short.
struct AbortUnlessDone<'a> {
    slot: &'a mut Option<hermes::StreamWriter>,
    done: bool,
}

impl Drop for AbortUnlessDone<'_> {
    fn drop(&mut self) {
        if !self.done {
            *self.slot = None;
        }
    }
}

/// The writing end of a stream.
#[pyclass(frozen, name = "StreamWriter", module = "hermes_p2p._native")]
pub(crate) struct Writer {
    /// Stream id (hex).
    #[pyo3(get)]
    id: String,
    w: Arc<Mutex<Option<hermes::StreamWriter>>>,
    /// Bytes the stream has accepted from `write` calls (progress of a write under way too).
    accepted: Arc<AtomicU64>,
}

/// A write is handed to the stream in parts of this size, so that `bytes_written` shows the
/// progress of a large write.
const WRITE_PART: usize = 1 << 20;

impl Writer {
    pub(crate) fn new(w: hermes::StreamWriter) -> Self {
        Writer {
            id: w.id().to_hex(),
            w: Arc::new(Mutex::new(Some(w))),
            accepted: Arc::default(),
        }
    }
}

fn closed() -> Failure {
    Failure::new(
        Kind::Stream,
        "the stream is closed (finished, aborted, or a write to it was cancelled)",
    )
}

#[pymethods]
impl Writer {
    /// Writes all of `data` (any buffer: bytes, bytearray, memoryview, numpy array), read in
    /// place without a copy when contiguous; do not modify it until the write returns.
    /// Cancelling a write aborts the stream.
    fn write<'py>(&self, py: Python<'py>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let chunk = Chunk::new(data)?;
        let w = self.w.clone();
        let accepted = self.accepted.clone();
        spawn(py, async move {
            let mut slot = w.lock().await;
            let mut guard = AbortUnlessDone {
                slot: &mut slot,
                done: false,
            };
            let sw = guard.slot.as_mut().ok_or_else(closed)?;
            let mut r = Ok(());
            for part in chunk.as_slice().chunks(WRITE_PART) {
                r = sw.write_all(part).await;
                if r.is_err() {
                    break;
                }
                accepted.fetch_add(part.len() as u64, Ordering::Relaxed);
            }
            guard.done = true;
            drop(guard);
            drop(chunk);
            r.map_err(io_failure)
        })
    }

    /// Bytes the stream has accepted so far, a write under way included.
    #[getter]
    fn bytes_written(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Closes the stream and waits for the recipient's confirmation (at most `timeout`
    /// seconds, default 60); resolves to a `StreamReport`.
    #[pyo3(signature = (timeout = None))]
    fn close<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let limit = match timeout {
            None => hermes_actors::stream::bulk::FINISH_TIMEOUT,
            Some(s) => std::time::Duration::try_from_secs_f64(s).map_err(|_| {
                Failure::invalid(format!(
                    "invalid argument: timeout {s} is not a duration in seconds"
                ))
                .into_pyerr(py)
            })?,
        };
        let w = self.w.clone();
        spawn(py, async move {
            let sw = w.lock().await.take().ok_or_else(closed)?;
            let report = sw.finish_within(limit).await.map_err(Failure::stream)?;
            Ok(StreamReport::from(report))
        })
    }

    /// Aborts the stream now (the recipient sees it break). Resolves when done.
    fn abort<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let w = self.w.clone();
        spawn(py, async move {
            drop(w.lock().await.take());
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!("StreamWriter(id={:?})", self.id)
    }
}

/// A gossip message from a verified peer.
#[pyclass(frozen, module = "hermes_p2p._native")]
pub(crate) struct GossipMessage {
    /// Sender's SS58 address.
    #[pyo3(get)]
    sender: String,
    /// Sender's peer id.
    #[pyo3(get)]
    peer_id: String,
    /// Subnet.
    #[pyo3(get)]
    netuid: u16,
    data: Vec<u8>,
}

#[pymethods]
impl GossipMessage {
    /// The payload.
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.data)
    }
}

/// Gossip on this node's subnets. A consumer slower than the gossip skips the oldest
/// messages (the runtime's broadcast queue is bounded); `skipped` counts them.
#[pyclass(frozen, module = "hermes_p2p._native")]
pub(crate) struct Gossip {
    rx: Arc<Mutex<broadcast::Receiver<hermes_actors::network::GossipMessage>>>,
    skipped: Arc<AtomicU64>,
}

impl Gossip {
    pub(crate) fn new(rx: broadcast::Receiver<hermes_actors::network::GossipMessage>) -> Self {
        Gossip {
            rx: Arc::new(Mutex::new(rx)),
            skipped: Arc::default(),
        }
    }
}

#[pymethods]
impl Gossip {
    /// The next gossip message; `None` once the node has shut down.
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rx = self.rx.clone();
        let skipped = self.skipped.clone();
        spawn(py, async move {
            let mut rx = rx.lock().await;
            Ok(next_counting(&mut rx, &skipped)
                .await
                .map(|m| GossipMessage {
                    sender: m.from,
                    peer_id: m.peer_id.to_string(),
                    netuid: m.netuid,
                    data: m.data,
                }))
        })
    }

    /// Messages skipped because this consumer fell behind.
    #[getter]
    fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }
}

/// Outcomes of sent messages. A consumer slower than the events skips the oldest ones.
#[pyclass(frozen, module = "hermes_p2p._native")]
pub(crate) struct Events {
    rx: Arc<Mutex<broadcast::Receiver<hermes::DeliveryEvent>>>,
    prefix: u16,
}

impl Events {
    pub(crate) fn new(rx: broadcast::Receiver<hermes::DeliveryEvent>, prefix: u16) -> Self {
        Events {
            rx: Arc::new(Mutex::new(rx)),
            prefix,
        }
    }
}

#[pymethods]
impl Events {
    /// The next delivery event; `None` once the node has shut down.
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let rx = self.rx.clone();
        let prefix = self.prefix;
        spawn(py, async move {
            let mut rx = rx.lock().await;
            loop {
                match rx.recv().await {
                    Ok(e) => {
                        if let Some(e) = DeliveryEvent::new(e, prefix) {
                            return Ok(Some(e));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return Ok(None),
                }
            }
        })
    }
}
