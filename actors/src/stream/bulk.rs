//! Streams (`/hermes/stream/1`): one substream per stream, one HPKE encapsulation per stream, then
//! AES-256-GCM chunks (the STREAM construction of [`hermes_proto::chunk`]).
//!
//! Opening, step by step:
//! 1. The opener connects to the recipient if needed and opens a substream.
//! 2. It has the IdentityActor seal a stream session to the recipient's prekey and writes `Open`
//!    (the signed header, the E2E flag, its chunk size).
//! 3. The recipient checks the header exactly as for message sessions (recipient, sender against
//!    the connection's binding, signature, age, replay, subnet), opens it with its prekey, and
//!    answers `Accept` once the application has room for another incoming stream, `Refuse`
//!    otherwise. A stale prekey is refused with the current binding and the opener retries once.
//! 4. [`StreamWriter`] seals and writes chunks as the application writes; [`StreamReader`] reads
//!    and opens them as the application reads. Nothing is buffered beyond one chunk on each side,
//!    so a slow reader slows the writer through the transport's flow control, and memory stays
//!    bounded whatever the stream's length.
//! 5. Closing the writer seals the final chunk. When the reader has opened it and sees the end of
//!    the substream, it writes `Done` with the byte count; [`StreamWriter::finish`] waits for it.
//!
//! Both ends implement the `futures` and the `tokio` I/O traits.

use super::link::{ensure_peer, in_scope, prekey_from_refusal};
use super::wire;
use super::{NoteSession, Shared, StreamActor, StreamCounters, StreamError};
use crate::identity::{OpenSession, SealSession};
use crate::network::substream::STREAM_PROTOCOL;
use crate::network::PeerInfo;
use actix::Addr;
use futures::{AsyncRead, AsyncWrite};
use hermes_proto::chunk::{
    decode_chunk_header, encode_chunk_header, ChunkError, ChunkOpener, ChunkSealer, PlainChunks,
    CHUNK_HEADER_LEN, FLAG_FINAL, MAX_CHUNK,
};
use hermes_proto::envelope::{
    SessionKind, SessionReject, SessionRequest, SessionSecret, MAX_CLOCK_SKEW_SECS, TAG_LEN,
};
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

/// How a stream is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// End-to-end encryption (default on). Off, only the transport encrypts the chunks; the
    /// recipient must allow that (`streams.allow_plaintext`).
    pub e2e: bool,
    /// Plaintext bytes per chunk.
    pub chunk_size: usize,
}

impl StreamOptions {
    /// End-to-end encrypted, with `chunk_size` chunks.
    pub fn new(chunk_size: usize) -> Self {
        StreamOptions {
            e2e: true,
            chunk_size,
        }
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

/// The writing end of a stream.
pub struct StreamWriter {
    inner: Stream,
    sealer: Option<ChunkSealer>,
    chunk: usize,
    /// Chunk being filled: header room, then plaintext.
    buf: Vec<u8>,
    /// Sealed frame being written, and how much of it is written.
    out: Vec<u8>,
    out_pos: usize,
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
    fn new(
        inner: Stream,
        id: Id128,
        sealer: Option<ChunkSealer>,
        chunk: usize,
        counters: Arc<StreamCounters>,
        started: Instant,
    ) -> Self {
        let mut buf = Vec::with_capacity(CHUNK_HEADER_LEN + chunk + TAG_LEN);
        buf.resize(CHUNK_HEADER_LEN, 0);
        StreamWriter {
            inner,
            sealer,
            chunk,
            buf,
            out: Vec::with_capacity(CHUNK_HEADER_LEN + chunk + TAG_LEN),
            out_pos: 0,
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

    /// Seals the chunk being filled into `out` (which must be drained).
    fn seal(&mut self, final_chunk: bool) -> io::Result<()> {
        match self.sealer.as_mut() {
            Some(s) => s
                .seal_frame(&mut self.buf, final_chunk)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
            None => {
                let body = self.buf.len() - CHUNK_HEADER_LEN;
                self.buf[..CHUNK_HEADER_LEN]
                    .copy_from_slice(&encode_chunk_header(body, final_chunk));
            }
        }
        std::mem::swap(&mut self.buf, &mut self.out);
        self.out_pos = 0;
        self.buf.clear();
        self.buf.resize(CHUNK_HEADER_LEN, 0);
        self.final_sealed = final_chunk;
        Ok(())
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_write_inner(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_drain(cx))?;
            if self.final_sealed {
                return Poll::Ready(Err(broken("write after the stream was closed")));
            }
            let filled = self.buf.len() - CHUNK_HEADER_LEN;
            if filled >= self.chunk {
                self.seal(false)?;
                continue;
            }
            if data.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let n = (self.chunk - filled).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            self.bytes += n as u64;
            self.counters
                .stream_bytes_out
                .fetch_add(n as u64, Ordering::Relaxed);
            if filled + n == self.chunk {
                self.seal(false)?;
                // Start sending at once; the bytes are accepted either way.
                if let Poll::Ready(Err(e)) = self.poll_drain(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            return Poll::Ready(Ok(n));
        }
    }

    fn poll_flush_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        if !self.final_sealed && self.buf.len() > CHUNK_HEADER_LEN {
            self.seal(false)?;
            ready!(self.poll_drain(cx))?;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close_inner(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        if !self.final_sealed {
            self.seal(true)?;
        }
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_close(cx)
    }

    /// Closes the stream (sealing the final chunk) and waits until the recipient confirms that
    /// every byte arrived and authenticated.
    ///
    /// # Errors
    /// [`StreamError::Io`] when the stream broke, or the recipient closed without confirming or
    /// confirmed another byte count.
    pub async fn finish(mut self) -> Result<StreamReport, StreamError> {
        use futures::AsyncWriteExt;
        self.close()
            .await
            .map_err(|e| StreamError::Io(e.to_string()))?;
        let body = wire::read_frame(&mut self.inner, MAX_CONTROL_FRAME)
            .await
            .map_err(|e| StreamError::Io(e.to_string()))?
            .ok_or_else(|| {
                StreamError::Io("the recipient closed the stream without confirming it".into())
            })?;
        match StreamControl::decode_body(&body) {
            Ok(StreamControl::Done { bytes }) if bytes == self.bytes => Ok(StreamReport {
                bytes,
                elapsed: self.started.elapsed(),
            }),
            Ok(StreamControl::Done { bytes }) => Err(StreamError::Io(format!(
                "the recipient confirmed {bytes} bytes, {} were sent",
                self.bytes
            ))),
            _ => Err(StreamError::Io(
                "unexpected answer to the end of a stream".into(),
            )),
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
    /// Reading a chunk header (`got` bytes so far).
    Header,
    /// Reading a chunk body.
    Body { flags: u8 },
    /// Plaintext `pos..len` of `body` is ready.
    Ready { pos: usize, len: usize },
    /// The final chunk was consumed; the substream must end now.
    AfterFinal,
    /// Writing the `Done` confirmation.
    Confirming,
    /// Complete.
    Finished,
    /// Refused for this reason.
    Failed(RejectReason),
}

/// The reading end of a stream.
pub struct StreamReader {
    inner: Stream,
    opener: Option<ChunkOpener>,
    plain: PlainChunks,
    max_body: usize,
    header: [u8; CHUNK_HEADER_LEN],
    got: usize,
    body: Vec<u8>,
    final_seen: bool,
    state: ReadState,
    confirm: Vec<u8>,
    confirm_pos: usize,
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
    fn new(
        inner: Stream,
        id: Id128,
        opener: Option<ChunkOpener>,
        chunk_max: usize,
        counters: Arc<StreamCounters>,
    ) -> Self {
        StreamReader {
            inner,
            max_body: chunk_max + if opener.is_some() { TAG_LEN } else { 0 },
            opener,
            plain: PlainChunks::default(),
            header: [0; CHUNK_HEADER_LEN],
            got: 0,
            body: Vec::new(),
            final_seen: false,
            state: ReadState::Header,
            confirm: Vec::new(),
            confirm_pos: 0,
            bytes: 0,
            id,
            counters,
        }
    }

    /// Verified bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The stream id.
    pub fn id(&self) -> Id128 {
        self.id
    }

    fn fail(&mut self, reason: RejectReason) -> io::Error {
        if !matches!(self.state, ReadState::Failed(_)) {
            self.counters.reject(reason);
            tracing::debug!(stream = %self.id, %reason, "stream refused");
        }
        self.state = ReadState::Failed(reason);
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("stream {} refused: {reason}", self.id),
        )
    }

    /// Reads into `dst` from the substream; 0 means end of input.
    fn poll_fill(&mut self, cx: &mut Context<'_>, header: bool) -> Poll<io::Result<usize>> {
        let (buf, from) = if header {
            (&mut self.header[..], self.got)
        } else {
            (&mut self.body[..], self.got)
        };
        Pin::new(&mut self.inner).poll_read(cx, &mut buf[from..])
    }

    fn poll_read_inner(&mut self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.state {
                ReadState::Failed(reason) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("stream {} refused: {reason}", self.id),
                    )))
                }
                ReadState::Finished => return Poll::Ready(Ok(0)),
                ReadState::Ready { pos, len } => {
                    if out.is_empty() {
                        return Poll::Ready(Ok(0));
                    }
                    let n = (len - pos).min(out.len());
                    out[..n].copy_from_slice(&self.body[pos..pos + n]);
                    self.state = if pos + n == len {
                        self.got = 0;
                        if self.final_seen {
                            ReadState::AfterFinal
                        } else {
                            ReadState::Header
                        }
                    } else {
                        ReadState::Ready { pos: pos + n, len }
                    };
                    return Poll::Ready(Ok(n));
                }
                ReadState::Header => {
                    let n = match ready!(self.poll_fill(cx, true)) {
                        Ok(n) => n,
                        Err(e) => return Poll::Ready(Err(e)),
                    };
                    if n == 0 {
                        // The substream ended: fine only after a final chunk, which would have
                        // moved us to `AfterFinal`; here it is a cut.
                        return Poll::Ready(Err(self.fail(RejectReason::StreamTruncated)));
                    }
                    self.got += n;
                    if self.got < CHUNK_HEADER_LEN {
                        continue;
                    }
                    match decode_chunk_header(&self.header, self.max_body) {
                        Ok((len, flags)) => {
                            self.body.resize(len, 0);
                            self.got = 0;
                            self.state = ReadState::Body { flags };
                        }
                        Err(_) => return Poll::Ready(Err(self.fail(RejectReason::Malformed))),
                    }
                }
                ReadState::Body { flags } => {
                    if self.got < self.body.len() {
                        let n = match ready!(self.poll_fill(cx, false)) {
                            Ok(n) => n,
                            Err(e) => return Poll::Ready(Err(e)),
                        };
                        if n == 0 {
                            return Poll::Ready(Err(self.fail(RejectReason::StreamTruncated)));
                        }
                        self.got += n;
                        continue;
                    }
                    let opened = match self.opener.as_mut() {
                        Some(o) => o.open(flags, &mut self.body),
                        None => self.plain.next(flags).map(|()| self.body.len()),
                    };
                    match opened {
                        Ok(len) => {
                            self.bytes += len as u64;
                            self.counters
                                .stream_bytes_in
                                .fetch_add(len as u64, Ordering::Relaxed);
                            self.final_seen = flags & FLAG_FINAL != 0;
                            self.state = ReadState::Ready { pos: 0, len };
                            if len == 0 {
                                // An empty chunk (typically the final one): nothing to hand out.
                                self.got = 0;
                                self.state = if self.final_seen {
                                    ReadState::AfterFinal
                                } else {
                                    ReadState::Header
                                };
                            }
                        }
                        Err(e) => {
                            return Poll::Ready(Err(self.fail(RejectReason::from(e))));
                        }
                    }
                }
                ReadState::AfterFinal => {
                    let mut probe = [0u8; 1];
                    let n = match ready!(Pin::new(&mut self.inner).poll_read(cx, &mut probe)) {
                        Ok(n) => n,
                        Err(e) => return Poll::Ready(Err(e)),
                    };
                    if n != 0 {
                        return Poll::Ready(Err(self.fail(ChunkError::AfterFinal.into())));
                    }
                    self.confirm = StreamControl::Done { bytes: self.bytes }.encode();
                    self.confirm_pos = 0;
                    self.state = ReadState::Confirming;
                }
                ReadState::Confirming => {
                    while self.confirm_pos < self.confirm.len() {
                        let n = ready!(Pin::new(&mut self.inner)
                            .poll_write(cx, &self.confirm[self.confirm_pos..]))?;
                        if n == 0 {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        self.confirm_pos += n;
                    }
                    // The confirmation is best effort once written: a sender that has gone away
                    // does not make the data we verified any less complete.
                    let _ = ready!(Pin::new(&mut self.inner).poll_close(cx));
                    self.state = ReadState::Finished;
                }
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
        let frame = StreamControl::Open {
            header: Box::new(header),
            e2e: opts.e2e,
            chunk_max,
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
                return Ok(StreamWriter::new(
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
        }) = StreamControl::decode_body(&body)
        else {
            shared.counters.reject(RejectReason::Malformed);
            return;
        };
        let secret = match check_open(&shared, &actor, &peer, &header, e2e, chunk_max).await {
            Ok(secret) => secret,
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
        let Ok(permit) = shared.incoming.clone().try_reserve_owned() else {
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
            return;
        }
        let id = header.session_id;
        let opener = if e2e {
            match ChunkOpener::new(id, &secret) {
                Ok(o) => Some(o),
                Err(_) => return,
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
            reader: StreamReader::new(s, id, opener, chunk_max as usize, shared.counters.clone()),
        });
        return;
    }
}
