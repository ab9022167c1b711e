//! Streams (`/hermes/stream/1`): one substream per stream, one HPKE encapsulation per stream, then
//! AES-256-GCM chunks (the STREAM construction of [`hermes_proto::chunk`]).
//!
//! Opening, step by step:
//! 1. The opener connects to the recipient if needed and opens a substream.
//! 2. It has the IdentityActor seal a stream session to the recipient's prekey and writes `Open`
//!    (the signed header, the E2E flag, its chunk size, and an optional name sealed with the
//!    stream's key).
//! 3. The recipient checks the header exactly as for message sessions (recipient, sender against
//!    the connection's binding, signature, age, replay, subnet), opens it with its prekey, and
//!    answers `Accept` once the application has room for another incoming stream, `Refuse`
//!    otherwise. A stale prekey is refused with the current binding and the opener retries once.
//! 4. [`StreamWriter`] seals chunks as the application writes; [`StreamReader`] opens them as the
//!    application reads. Tasks on the network thread move the sealed chunks between them and the
//!    substream ([`super::pump`]). At most a few chunks wait on each side, so a slow reader slows
//!    the writer through the transport's flow control, and memory stays bounded whatever the
//!    stream's length.
//! 5. Closing the writer seals the final chunk. When the reader has opened it and sees the end of
//!    the substream, it writes `Done` with the byte count; [`StreamWriter::finish`] waits for it,
//!    at most [`FINISH_TIMEOUT`]. Anything after the final chunk, even a stray byte, is
//!    `stream_extended`. By default `Done` goes as soon as the application has read the end: the
//!    bytes arrived whole and authentic and were handed over. An application that stores the data
//!    first calls [`StreamReader::confirm_later`] and then [`StreamReader::confirm`] once it is
//!    stored, so the sender's confirmation means "in place"; dropping the reader unconfirmed makes
//!    the sender's `finish` fail.
//!
//! Both ends implement the `futures` and the `tokio` I/O traits.

use super::link::{ensure_peer, in_scope, prekey_from_refusal};
use super::pump::{Item, Pool, WriteState, QUEUE};
use super::wire;
use super::{NoteSession, Shared, StreamActor, StreamCounters, StreamError};
use crate::identity::{OpenSession, SealSession};
use crate::network::substream::STREAM_PROTOCOL;
use crate::network::PeerInfo;
use actix::Addr;
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use futures::{AsyncRead, AsyncWrite};
use hermes_proto::chunk::{
    encode_chunk_header, open_name, seal_name, ChunkOpener, ChunkSealer, PlainChunks,
    CHUNK_HEADER_LEN, FLAG_FINAL, MAX_CHUNK,
};
use hermes_proto::envelope::{
    SessionKind, SessionReject, SessionRequest, SessionSecret, MAX_CLOCK_SKEW_SECS, TAG_LEN,
};
use hermes_proto::filename::{sanitize, MAX_NAME_LEN};
use hermes_proto::frame::{RefuseCode, StreamControl, MAX_CONTROL_FRAME};
use hermes_proto::reason::RejectReason;
use hermes_proto::{Hotkey, Id128};
use libp2p::{PeerId, Stream};
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

/// Smallest chunk size accepted.
pub const MIN_CHUNK: usize = 1024;

/// How long [`StreamWriter::finish`] waits for the last chunks to be written and the recipient
/// to confirm the stream. A recipient confirms once its application has read everything, so this
/// also bounds how far a reader may lag behind at the end; use
/// [`StreamWriter::finish_within`] for another bound.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

/// How a stream is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    /// End-to-end encryption (default on). Off, only the transport encrypts the chunks; the
    /// recipient must allow that (`streams.allow_plaintext`).
    pub e2e: bool,
    /// Plaintext bytes per chunk.
    pub chunk_size: usize,
    /// A name for the stream (e.g. the file's), at most [`MAX_NAME_LEN`] bytes; sealed like the
    /// data when `e2e`. The recipient sees it sanitized ([`IncomingStream::name`]).
    pub name: Option<String>,
}

impl StreamOptions {
    /// End-to-end encrypted, with `chunk_size` chunks, unnamed.
    pub fn new(chunk_size: usize) -> Self {
        StreamOptions {
            e2e: true,
            chunk_size,
            name: None,
        }
    }

    /// The same options with a name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// A stream offered by a peer and accepted for the application.
#[derive(Debug)]
pub struct IncomingStream {
    /// Sender's SS58 address.
    pub from: String,
    /// Sender's hotkey.
    pub hotkey: Hotkey,
    /// Sender's peer id.
    pub peer_id: PeerId,
    /// Subnet.
    pub netuid: u16,
    /// Stream id (the session id).
    pub id: Id128,
    /// Whether the chunks are end-to-end encrypted.
    pub e2e: bool,
    /// The name the sender gave the stream, made safe to use as a file name in a directory of
    /// the receiver's choosing ([`hermes_proto::filename::sanitize`]): one path component, no
    /// separators, no `..`, no leading dot, no control characters, bounded length. `None` when
    /// the sender gave none (or nothing usable was left).
    pub name: Option<String>,
    /// The data.
    pub reader: StreamReader,
}

/// What [`StreamWriter::finish`] reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamReport {
    /// Bytes written (and confirmed by the recipient).
    pub bytes: u64,
    /// Time from open to confirmation.
    pub elapsed: Duration,
}

/// The writing end of a stream. Seals chunks on the caller's thread and hands them to a task on
/// the network thread that writes them (see [`super::pump`]).
pub struct StreamWriter {
    tx: mpsc::Sender<Vec<u8>>,
    state: Arc<WriteState>,
    pool: Arc<Pool>,
    done: Option<oneshot::Receiver<Result<u64, String>>>,
    sealer: Option<ChunkSealer>,
    chunk: usize,
    /// Chunk being filled: header room, then plaintext.
    buf: Vec<u8>,
    /// Frames handed to the pump.
    sent: u64,
    final_sealed: bool,
    id: Id128,
    bytes: u64,
    counters: Arc<StreamCounters>,
    started: Instant,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWriter")
            .field("id", &self.id)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

fn broken(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, msg.to_string())
}

impl StreamWriter {
    /// Starts the write pump for `inner` on the current (network) thread.
    fn start(
        inner: Stream,
        id: Id128,
        sealer: Option<ChunkSealer>,
        chunk: usize,
        counters: Arc<StreamCounters>,
        started: Instant,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (done_tx, done_rx) = oneshot::channel();
        let state = Arc::new(WriteState::default());
        let pool = Arc::new(Pool::default());
        actix::spawn(super::pump::write_pump(
            inner,
            rx,
            state.clone(),
            pool.clone(),
            done_tx,
        ));
        let mut buf = pool.get(CHUNK_HEADER_LEN + chunk + TAG_LEN);
        buf.resize(CHUNK_HEADER_LEN, 0);
        StreamWriter {
            tx,
            state,
            pool,
            done: Some(done_rx),
            sealer,
            chunk,
            buf,
            sent: 0,
            final_sealed: false,
            id,
            bytes: 0,
            counters,
            started,
        }
    }

    /// The stream id.
    pub fn id(&self) -> Id128 {
        self.id
    }

    /// Bytes accepted so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn pump_error(&self) -> io::Error {
        broken(
            &self
                .state
                .error()
                .unwrap_or_else(|| "the stream's connection closed".into()),
        )
    }

    /// Seals the chunk being filled and hands it to the pump; the caller has checked that the
    /// channel has room (`poll_ready`).
    fn seal_and_send(&mut self, final_chunk: bool) -> io::Result<()> {
        let mut frame = std::mem::replace(
            &mut self.buf,
            self.pool.get(CHUNK_HEADER_LEN + self.chunk + TAG_LEN),
        );
        self.buf.resize(CHUNK_HEADER_LEN, 0);
        match self.sealer.as_mut() {
            Some(s) => s
                .seal_frame(&mut frame, final_chunk)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
            None => {
                let body = frame.len() - CHUNK_HEADER_LEN;
                frame[..CHUNK_HEADER_LEN].copy_from_slice(&encode_chunk_header(body, final_chunk));
            }
        }
        self.final_sealed = final_chunk;
        self.tx.start_send(frame).map_err(|_| self.pump_error())?;
        self.sent += 1;
        Ok(())
    }

    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(self.tx.poll_ready(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(_) => Poll::Ready(Err(self.pump_error())),
        }
    }

    /// Waits until the pump has written and flushed everything handed to it.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.state.waker.register(cx.waker());
        if self.state.written.load(Ordering::Acquire) >= self.sent {
            return Poll::Ready(Ok(()));
        }
        if self.state.error().is_some() || self.tx.is_closed() {
            return Poll::Ready(Err(self.pump_error()));
        }
        Poll::Pending
    }

    fn poll_write_inner(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        if self.final_sealed {
            return Poll::Ready(Err(broken("write after the stream was closed")));
        }
        if self.buf.len() - CHUNK_HEADER_LEN >= self.chunk {
            ready!(self.poll_room(cx))?;
            self.seal_and_send(false)?;
        }
        let filled = self.buf.len() - CHUNK_HEADER_LEN;
        let n = (self.chunk - filled).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        self.bytes += n as u64;
        self.counters
            .stream_bytes_out
            .fetch_add(n as u64, Ordering::Relaxed);
        Poll::Ready(Ok(n))
    }

    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.final_sealed && self.buf.len() > CHUNK_HEADER_LEN {
            ready!(self.poll_room(cx))?;
            self.seal_and_send(false)?;
        }
        self.poll_written(cx)
    }

    fn poll_close_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.final_sealed {
            ready!(self.poll_room(cx))?;
            self.seal_and_send(true)?;
        }
        self.poll_written(cx)
    }

    /// Closes the stream (sealing the final chunk) and waits until the recipient confirms that
    /// every byte arrived and authenticated and its application read them to the end (or, when
    /// it chose [`StreamReader::confirm_later`], until it confirms it stored them); it waits at
    /// most [`FINISH_TIMEOUT`].
    ///
    /// # Errors
    /// [`StreamError::Io`] when the stream broke, or the recipient closed without confirming,
    /// confirmed another byte count, or did not confirm in time.
    pub async fn finish(self) -> Result<StreamReport, StreamError> {
        self.finish_within(FINISH_TIMEOUT).await
    }

    /// [`StreamWriter::finish`] with another deadline: `limit` bounds the whole wait, writing the
    /// last chunks included. A recipient confirms once its application has read the stream to
    /// its end, so allow for how fast it reads.
    ///
    /// # Errors
    /// As [`StreamWriter::finish`].
    pub async fn finish_within(mut self, limit: Duration) -> Result<StreamReport, StreamError> {
        let late = || {
            StreamError::Io(format!(
                "the recipient did not confirm the stream within {limit:?}"
            ))
        };
        let deadline = tokio::time::Instant::now() + limit;
        tokio::time::timeout_at(deadline, futures::AsyncWriteExt::close(&mut self))
            .await
            .map_err(|_| late())?
            .map_err(|e| StreamError::Io(e.to_string()))?;
        let done = self
            .done
            .take()
            .ok_or_else(|| StreamError::Io("stream already finished".into()))?;
        // On timeout `done` is dropped, which tells the pump to stop waiting and drop the
        // substream.
        let answer = tokio::time::timeout_at(deadline, done)
            .await
            .map_err(|_| late())?;
        match answer {
            Ok(Ok(bytes)) if bytes == self.bytes => Ok(StreamReport {
                bytes,
                elapsed: self.started.elapsed(),
            }),
            Ok(Ok(bytes)) => Err(StreamError::Io(format!(
                "the recipient confirmed {bytes} bytes, {} were sent",
                self.bytes
            ))),
            Ok(Err(e)) => Err(StreamError::Io(e)),
            Err(_) => Err(StreamError::Stopped),
        }
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_inner(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_inner(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close_inner(cx)
    }
}

impl tokio::io::AsyncWrite for StreamWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_inner(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_flush_inner(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_close_inner(cx)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    /// Waiting for the next chunk from the pump.
    Next,
    /// Plaintext `pos..len` of `body` is ready.
    Ready { pos: usize, len: usize },
    /// Complete and confirmed.
    Finished,
    /// Refused for this reason.
    Failed(RejectReason),
    /// The transport failed.
    Broken,
}

/// The reading end of a stream. A task on the network thread reads whole chunks (see
/// [`super::pump`]); they are opened on the caller's thread as it reads.
pub struct StreamReader {
    rx: mpsc::Receiver<Item>,
    confirm: Option<oneshot::Sender<u64>>,
    /// The application confirms with [`StreamReader::confirm`] instead of at the end of reading.
    confirm_later: bool,
    pool: Arc<Pool>,
    opener: Option<ChunkOpener>,
    plain: PlainChunks,
    body: Vec<u8>,
    final_seen: bool,
    state: ReadState,
    error: String,
    bytes: u64,
    id: Id128,
    counters: Arc<StreamCounters>,
}

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("id", &self.id)
            .field("bytes", &self.bytes)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl StreamReader {
    /// Starts the read pump for `inner` on the current (network) thread.
    fn start(
        inner: Stream,
        id: Id128,
        opener: Option<ChunkOpener>,
        chunk_max: usize,
        counters: Arc<StreamCounters>,
    ) -> Self {
        let max_body = chunk_max + if opener.is_some() { TAG_LEN } else { 0 };
        let (tx, rx) = mpsc::channel(QUEUE);
        let (confirm_tx, confirm_rx) = oneshot::channel();
        let pool = Arc::new(Pool::default());
        actix::spawn(super::pump::read_pump(
            inner,
            tx,
            pool.clone(),
            max_body,
            confirm_rx,
        ));
        StreamReader {
            rx,
            confirm: Some(confirm_tx),
            confirm_later: false,
            pool,
            opener,
            plain: PlainChunks::default(),
            body: Vec::new(),
            final_seen: false,
            state: ReadState::Next,
            error: String::new(),
            bytes: 0,
            id,
            counters,
        }
    }

    /// Verified bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Holds the confirmation back until [`StreamReader::confirm`]: for an application that
    /// stores the data and wants the sender's [`StreamWriter::finish`] to mean "stored" rather
    /// than "received and authentic". Call it before reading the end. If the reader is then
    /// dropped unconfirmed, the sender's `finish` fails ("closed without confirming").
    pub fn confirm_later(&mut self) {
        self.confirm_later = true;
    }

    /// Sends the confirmation held back by [`StreamReader::confirm_later`] (with the verified
    /// byte count); returns that count. Only once the stream has been read to its end.
    ///
    /// # Errors
    /// [`StreamError::Invalid`] before the end was read, or when already confirmed.
    pub fn confirm(&mut self) -> Result<u64, StreamError> {
        if self.state != ReadState::Finished {
            return Err(StreamError::Invalid(
                "the stream has not been read to its end".into(),
            ));
        }
        let c = self
            .confirm
            .take()
            .ok_or_else(|| StreamError::Invalid("the stream was already confirmed".into()))?;
        // Best effort: the sender learns of a lost confirmation as a failed `finish`.
        let _ = c.send(self.bytes);
        Ok(self.bytes)
    }

    /// The stream id.
    pub fn id(&self) -> Id128 {
        self.id
    }

    fn refused(&self, reason: RejectReason) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("stream {} refused: {reason}", self.id),
        )
    }

    fn fail(&mut self, reason: RejectReason) -> io::Error {
        if !matches!(self.state, ReadState::Failed(_)) {
            self.counters.reject(reason);
            tracing::debug!(stream = %self.id, %reason, "stream refused");
        }
        self.state = ReadState::Failed(reason);
        // Dropping the channel stops the pump, which drops the substream.
        self.rx.close();
        self.refused(reason)
    }

    fn poll_read_inner(&mut self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.state {
                ReadState::Failed(reason) => return Poll::Ready(Err(self.refused(reason))),
                ReadState::Broken => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionReset,
                        self.error.clone(),
                    )))
                }
                ReadState::Finished => return Poll::Ready(Ok(0)),
                ReadState::Ready { pos, len } => {
                    if out.is_empty() {
                        return Poll::Ready(Ok(0));
                    }
                    let n = (len - pos).min(out.len());
                    out[..n].copy_from_slice(&self.body[pos..pos + n]);
                    if pos + n == len {
                        self.pool.put(std::mem::take(&mut self.body));
                        self.state = ReadState::Next;
                    } else {
                        self.state = ReadState::Ready { pos: pos + n, len };
                    }
                    return Poll::Ready(Ok(n));
                }
                ReadState::Next => match ready!(self.rx.poll_next_unpin(cx)) {
                    Some(Item::Chunk(flags, mut body)) => {
                        if self.final_seen {
                            return Poll::Ready(Err(self.fail(RejectReason::StreamExtended)));
                        }
                        let opened = match self.opener.as_mut() {
                            Some(o) => o.open(flags, &mut body),
                            None => self.plain.next(flags).map(|()| body.len()),
                        };
                        match opened {
                            Ok(len) => {
                                self.bytes += len as u64;
                                self.counters
                                    .stream_bytes_in
                                    .fetch_add(len as u64, Ordering::Relaxed);
                                self.final_seen = flags & FLAG_FINAL != 0;
                                self.body = body;
                                self.state = if len == 0 {
                                    ReadState::Next
                                } else {
                                    ReadState::Ready { pos: 0, len }
                                };
                            }
                            Err(e) => return Poll::Ready(Err(self.fail(RejectReason::from(e)))),
                        }
                    }
                    Some(Item::End) | None => {
                        if !self.final_seen {
                            return Poll::Ready(Err(self.fail(RejectReason::StreamTruncated)));
                        }
                        if !self.confirm_later {
                            if let Some(c) = self.confirm.take() {
                                // Best effort: the data verified here is complete either way.
                                let _ = c.send(self.bytes);
                            }
                        }
                        self.state = ReadState::Finished;
                    }
                    Some(Item::Malformed) => {
                        return Poll::Ready(Err(self.fail(RejectReason::Malformed)))
                    }
                    Some(Item::Extended) => {
                        return Poll::Ready(Err(self.fail(RejectReason::StreamExtended)))
                    }
                    Some(Item::Failed(e)) => {
                        self.error = e;
                        self.state = ReadState::Broken;
                    }
                },
            }
        }
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_read_inner(cx, buf)
    }
}

impl tokio::io::AsyncRead for StreamReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ready!(self
            .get_mut()
            .poll_read_inner(cx, buf.initialize_unfilled()))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

fn refused_text(code: RefuseCode) -> &'static str {
    match code {
        RefuseCode::StalePrekey => "the recipient no longer holds the prekey",
        RefuseCode::Busy => "the recipient is not accepting more streams right now",
        RefuseCode::Refused => "the recipient refused the stream",
    }
}

/// Opens a stream to `to` on `netuid`.
///
/// # Errors
/// [`StreamError`]: unreachable recipient, refusal, or a transport failure.
pub(crate) async fn open(
    shared: &Shared,
    to: Hotkey,
    netuid: u16,
    opts: StreamOptions,
) -> Result<StreamWriter, StreamError> {
    if !(MIN_CHUNK..=MAX_CHUNK).contains(&opts.chunk_size) {
        return Err(StreamError::Invalid(format!(
            "chunk size {} is outside {MIN_CHUNK}..={MAX_CHUNK}",
            opts.chunk_size
        )));
    }
    if to == shared.cfg.me {
        return Err(StreamError::Invalid(
            "the recipient is this node's own hotkey".into(),
        ));
    }
    if let Some(n) = &opts.name {
        if n.is_empty() || n.len() > MAX_NAME_LEN {
            return Err(StreamError::Invalid(format!(
                "a stream name has 1..={MAX_NAME_LEN} bytes; this one has {}",
                n.len()
            )));
        }
    }
    let started = Instant::now();
    let peer = ensure_peer(shared, &to).await?;
    let mut s = shared
        .deps
        .substreams
        .open(peer.peer_id, STREAM_PROTOCOL)
        .await
        .map_err(|e| StreamError::Unreachable(e.to_string()))?;
    let io = |e: io::Error| StreamError::Io(e.to_string());
    let mut prekey = peer.binding.record.prekey;
    for attempt in 0..2 {
        let (header, secret) = shared
            .deps
            .identity
            .send(SealSession(SessionRequest {
                kind: SessionKind::Stream,
                recipient: to,
                prekey,
                netuid,
            }))
            .await
            .map_err(|_| StreamError::Stopped)?
            .map_err(|e| StreamError::Refused(e.to_string()))?;
        let id = header.session_id;
        let chunk_max = u32::try_from(opts.chunk_size).unwrap_or(u32::MAX);
        let name = match (&opts.name, opts.e2e) {
            (None, _) => None,
            (Some(n), true) => Some(
                seal_name(&id, &secret, n.as_bytes())
                    .map_err(|e| StreamError::Io(e.to_string()))?,
            ),
            (Some(n), false) => Some(n.as_bytes().to_vec()),
        };
        let frame = StreamControl::Open {
            header: Box::new(header),
            e2e: opts.e2e,
            chunk_max,
            name,
        }
        .encode();
        wire::write_flush(&mut s, &frame).await.map_err(io)?;
        let answer = tokio::time::timeout(
            shared.cfg.connect_timeout,
            wire::read_frame(&mut s, MAX_CONTROL_FRAME),
        )
        .await
        .map_err(|_| StreamError::Unreachable("the recipient did not answer the stream".into()))?
        .map_err(io)?
        .ok_or_else(|| StreamError::Refused("the recipient closed the stream".into()))?;
        match StreamControl::decode_body(&answer).map_err(|e| StreamError::Io(e.to_string()))? {
            StreamControl::Accept => {
                let sealer = match opts.e2e {
                    true => Some(
                        ChunkSealer::new(id, &secret)
                            .map_err(|e| StreamError::Io(e.to_string()))?,
                    ),
                    false => None,
                };
                shared.counters.streams_out.fetch_add(1, Ordering::Relaxed);
                return Ok(StreamWriter::start(
                    s,
                    id,
                    sealer,
                    opts.chunk_size,
                    shared.counters.clone(),
                    started,
                ));
            }
            StreamControl::Refuse {
                code: RefuseCode::StalePrekey,
                binding: Some(b),
            } if attempt == 0 => {
                prekey = prekey_from_refusal(&b, &peer.peer_id, &to)?;
            }
            StreamControl::Refuse { code, .. } => {
                return Err(StreamError::Refused(refused_text(code).into()))
            }
            _ => return Err(StreamError::Io("unexpected answer to a stream open".into())),
        }
    }
    Err(StreamError::Refused(
        refused_text(RefuseCode::StalePrekey).into(),
    ))
}

/// Why an `Open` was refused: the counter, and what the opener is told.
type Refusal = (RejectReason, RefuseCode, Option<Vec<u8>>);

async fn check_open(
    shared: &Shared,
    actor: &Addr<StreamActor>,
    peer: &PeerInfo,
    header: &hermes_proto::envelope::SessionHeader,
    e2e: bool,
    chunk_max: u32,
) -> Result<SessionSecret, Refusal> {
    let refused = |r: RejectReason| (r, RefuseCode::Refused, None);
    let window = shared.cfg.replay_window.as_secs();
    header
        .check(
            &shared.cfg.me,
            &peer.hotkey,
            SessionKind::Stream,
            crate::unix_now(),
            window,
        )
        .map_err(|r| refused(r.into()))?;
    if (!e2e && !shared.cfg.allow_plaintext_streams)
        || !(MIN_CHUNK..=MAX_CHUNK).contains(&(chunk_max as usize))
    {
        return Err(refused(RejectReason::Malformed));
    }
    if !in_scope(shared, peer, header.netuid) {
        return Err(refused(RejectReason::OutOfScope));
    }
    let fresh = actor
        .send(NoteSession {
            session_id: header.session_id,
            keep_until: header.created_at + window + MAX_CLOCK_SKEW_SECS,
        })
        .await
        .unwrap_or(false);
    if !fresh {
        return Err(refused(RejectReason::Replay));
    }
    match shared.deps.identity.send(OpenSession(header.clone())).await {
        Ok(Ok(secret)) => Ok(secret),
        Ok(Err(SessionReject::StalePrekey)) => Err((
            RejectReason::StalePrekey,
            RefuseCode::StalePrekey,
            Some(shared.deps.binding.load().encode()),
        )),
        Ok(Err(r)) => Err(refused(r.into())),
        Err(_) => Err(refused(RejectReason::Undecryptable)),
    }
}

/// Serves an inbound `/hermes/stream/1` substream from a verified peer: checks its `Open` and
/// hands the stream to the application.
pub(crate) async fn accept(
    mut s: Stream,
    peer: Arc<PeerInfo>,
    shared: Arc<Shared>,
    actor: Addr<StreamActor>,
) {
    for attempt in 0..2 {
        let body = match tokio::time::timeout(
            shared.cfg.binding_timeout,
            wire::read_frame(&mut s, MAX_CONTROL_FRAME),
        )
        .await
        {
            Ok(Ok(Some(b))) => b,
            _ => return,
        };
        let Ok(StreamControl::Open {
            header,
            e2e,
            chunk_max,
            name,
        }) = StreamControl::decode_body(&body)
        else {
            shared.counters.reject(RejectReason::Malformed);
            return;
        };
        let checked = match check_open(&shared, &actor, &peer, &header, e2e, chunk_max).await {
            Ok(secret) => match name.as_deref().map(|n| match e2e {
                true => open_name(&header.session_id, &secret, n),
                false => Ok(n.to_vec()),
            }) {
                Some(Err(_)) => Err((RejectReason::BadChunk, RefuseCode::Refused, None)),
                Some(Ok(n)) => Ok((secret, sanitize(&n))),
                None => Ok((secret, None)),
            },
            Err(e) => Err(e),
        };
        let (secret, name) = match checked {
            Ok(x) => x,
            Err((reason, code, binding)) => {
                shared.counters.reject(reason);
                let frame = StreamControl::Refuse { code, binding }.encode();
                if wire::write_flush(&mut s, &frame).await.is_err()
                    || code != RefuseCode::StalePrekey
                    || attempt > 0
                {
                    return;
                }
                continue;
            }
        };
        // This peer's share of the queue first: one peer must not take every slot.
        let Some(permit) = shared
            .incoming_per_peer
            .try_charge(peer.hotkey, 1)
            .then(|| {
                let p = shared.incoming.clone().try_reserve_owned().ok();
                if p.is_none() {
                    shared.incoming_per_peer.release(&peer.hotkey, 1);
                }
                p
            })
            .flatten()
        else {
            shared.counters.reject(RejectReason::Busy);
            let frame = StreamControl::Refuse {
                code: RefuseCode::Busy,
                binding: None,
            }
            .encode();
            let _ = wire::write_flush(&mut s, &frame).await;
            return;
        };
        if wire::write_flush(&mut s, &StreamControl::Accept.encode())
            .await
            .is_err()
        {
            shared.incoming_per_peer.release(&peer.hotkey, 1);
            return;
        }
        let id = header.session_id;
        let opener = if e2e {
            match ChunkOpener::new(id, &secret) {
                Ok(o) => Some(o),
                Err(_) => {
                    shared.incoming_per_peer.release(&peer.hotkey, 1);
                    return;
                }
            }
        } else {
            None
        };
        shared.counters.streams_in.fetch_add(1, Ordering::Relaxed);
        permit.send(IncomingStream {
            from: peer.ss58.clone(),
            hotkey: peer.hotkey,
            peer_id: peer.peer_id,
            netuid: header.netuid,
            id,
            e2e,
            name,
            reader: StreamReader::start(s, id, opener, chunk_max as usize, shared.counters.clone()),
        });
        return;
    }
}
