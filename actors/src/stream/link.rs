//! The tasks behind message links: a writer per destination, a reader per inbound substream, and
//! the acceptor that routes inbound substreams from verified peers.
//!
//! Writer, step by step:
//! 1. Find the destination among verified peers, or ask the network to connect and wait for it.
//! 2. Open `/hermes/msg/1`; start an answer task on the read half.
//! 3. Pull batches from the actor; before the first message, and whenever the session reaches
//!    its limits, have the IdentityActor seal a new session; seal each message and write it.
//! 4. The answer task maps acknowledgements and refusals back to message ids and reports them; a
//!    stale-prekey refusal carries the recipient's fresh binding, which is verified and used for
//!    the next session.
//! 5. The actor hands back acknowledged ids once their deletion from the outbox is durable; the
//!    writer releases them at the receiver (`Release`), which then forgets them.
//!
//! The answer task runs apart from the writer so that acknowledgements keep being read while the
//! writer waits for flow control: otherwise two nodes writing to each other could each wait for
//! the other to read.
//!
//! Reader, step by step: reserve room in the application's inbox (backpressure: a full inbox stops
//! reading, and flow control then slows the sender), read a frame, let [`LinkReceiver`] interpret
//! it, and act: open sessions through the IdentityActor, hand messages to the actor for
//! de-duplication and delivery. A task beside it writes the answers: a message is acknowledged
//! only once the application acknowledged it (dropped its `Inbound`) and the seen-set holding
//! its id is flushed (the actor's group commit), in batches of whatever is ready together.

use super::wire::{self, ReadFrame};
use super::{
    Accept, AcceptOutcome, CloseSession, MakeCurrent, NoteSession, Pull, ReleaseIds, Shared,
    StreamActor, StreamCounters, StreamError, WriterClosed, WriterEvent, WriterReady,
};
use crate::identity::{OpenSession, SealSession};
use crate::network::reach::{reach, ReachError};
use crate::network::substream::{InboundSubstream, MSG_PROTOCOL};
use crate::network::PeerInfo;
use actix::Addr;
use futures::io::{BufReader, BufWriter, ReadHalf};
use futures::{AsyncReadExt, AsyncWriteExt};
use hermes_proto::envelope::{
    SessionKind, SessionReject, SessionRequest, BODY_HEADER_LEN, MAX_CLOCK_SKEW_SECS, TAG_LEN,
};
use hermes_proto::frame::{
    parse_msg_prefix, MsgFrame, RefuseCode, MAX_CONTROL_FRAME, MAX_IDS, MSG_PREFIX_LEN,
};
use hermes_proto::msglink::{
    release_frames, LinkReceiver, LinkSender, ReceiverStep, Refusal, SenderEvent,
};
use hermes_proto::reason::RejectReason;
use hermes_proto::{Hotkey, Id128, SignedBinding};
use libp2p::{PeerId, Stream};
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

fn io_err(e: io::Error) -> StreamError {
    StreamError::Io(e.to_string())
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// The verified peer behind `to`, connecting first if needed ([`crate::network::reach::reach`]
/// within `connect_timeout`).
pub(crate) async fn ensure_peer(
    shared: &Shared,
    to: &Hotkey,
) -> Result<Arc<PeerInfo>, StreamError> {
    let d = &shared.deps;
    reach(
        &d.net,
        &d.directory,
        to,
        shared.cfg.ss58_prefix,
        shared.cfg.connect_timeout,
    )
    .await
    .map_err(|e| match e {
        ReachError::Stopped => StreamError::Stopped,
        ReachError::Unreachable(why) => StreamError::Unreachable(why),
    })
}

/// Checks a binding a recipient sent with a stale-prekey refusal and returns its prekey.
pub(crate) fn prekey_from_refusal(
    bytes: &[u8],
    peer: &PeerId,
    hotkey: &Hotkey,
) -> Result<[u8; 32], StreamError> {
    let b = SignedBinding::decode(bytes)
        .map_err(|e| StreamError::Refused(format!("undecodable binding in a refusal: {e}")))?;
    b.verify(&peer.to_bytes(), Some(hotkey), crate::unix_now())
        .map_err(|e| StreamError::Refused(format!("invalid binding in a refusal: {e}")))?;
    Ok(b.record.prekey)
}

/// Runs a writer for `to` until its link ends, then tells the actor why.
pub(crate) async fn run_writer(
    to: Hotkey,
    gen: u64,
    shared: Arc<Shared>,
    actor: Addr<StreamActor>,
    releases: mpsc::UnboundedReceiver<Vec<Id128>>,
) {
    let sessions = Rc::new(Cell::new(0u64));
    let reason = writer(to, gen, &shared, &actor, &sessions, releases)
        .await
        .err()
        .map(|e| match e {
            // The outbox lists the recipient beside the reason; do not repeat it.
            StreamError::Unreachable(why) => {
                let name = to.to_ss58(shared.cfg.ss58_prefix);
                why.strip_prefix(&format!("{name}: "))
                    .map(str::to_string)
                    .unwrap_or(why)
            }
            other => other.to_string(),
        });
    // Sent once per writer, so `do_send` cannot pile up.
    actor.do_send(WriterClosed {
        to,
        gen,
        reason,
        sessions: sessions.get(),
    });
}

async fn writer(
    to: Hotkey,
    gen: u64,
    shared: &Arc<Shared>,
    actor: &Addr<StreamActor>,
    sessions: &Rc<Cell<u64>>,
    mut releases: mpsc::UnboundedReceiver<Vec<Id128>>,
) -> Result<(), StreamError> {
    let peer = ensure_peer(shared, &to).await?;
    let stream = shared
        .deps
        .substreams
        .open(peer.peer_id, MSG_PROTOCOL)
        .await
        .map_err(|e| StreamError::Unreachable(e.to_string()))?;
    // Once per writer.
    actor.do_send(WriterReady { to, gen });
    let (rd, wr) = stream.split();
    let link = Rc::new(RefCell::new(LinkSender::new(shared.cfg.session)));
    let prekey = Rc::new(Cell::new(peer.binding.record.prekey));
    let mut answers = actix::spawn(answer_loop(
        rd,
        link.clone(),
        prekey.clone(),
        to,
        peer.peer_id,
        actor.clone(),
    ));
    let mut w = BufWriter::with_capacity(64 << 10, wr);
    let mut seen_issue = peer.binding.record.issued_at;
    let result = async {
        let mut pull = Box::pin(actor.send(Pull { to, gen }));
        loop {
            tokio::select! {
                batch = &mut pull => {
                    let batch = batch.map_err(|_| StreamError::Stopped)?;
                    if batch.is_empty() {
                        // This writer was replaced, or the actor is stopping.
                        return Ok(());
                    }
                    let now = crate::unix_now();
                    for m in &batch {
                        if link.borrow().needs_session(now) {
                            // A binding pushed since (e.g. after a rotation) names a newer prekey.
                            if let Some(p) = shared.deps.directory.get(&peer.peer_id) {
                                if p.binding.record.issued_at > seen_issue {
                                    seen_issue = p.binding.record.issued_at;
                                    prekey.set(p.binding.record.prekey);
                                }
                            }
                            let req = SessionRequest {
                                kind: SessionKind::Messages,
                                recipient: to,
                                prekey: prekey.get(),
                                netuid: 0,
                            };
                            let (header, secret) = shared
                                .deps
                                .identity
                                .send(SealSession(req))
                                .await
                                .map_err(|_| StreamError::Stopped)?
                                .map_err(|e| StreamError::Refused(e.to_string()))?;
                            let init = link.borrow_mut().start_session(&header, secret, now);
                            sessions.set(sessions.get() + 1);
                            shared.tap(&init);
                            w.write_all(&init).await.map_err(io_err)?;
                        }
                        let frame = link
                            .borrow_mut()
                            .seal(m, now)
                            .map_err(|e| StreamError::Io(e.to_string()))?;
                        shared.tap(&frame);
                        w.write_all(&frame).await.map_err(io_err)?;
                    }
                    w.flush().await.map_err(io_err)?;
                    pull = Box::pin(actor.send(Pull { to, gen }));
                }
                Some(ids) = releases.recv() => {
                    for f in release_frames(&ids) {
                        w.write_all(&f).await.map_err(io_err)?;
                    }
                    w.flush().await.map_err(io_err)?;
                }
                done = &mut answers => {
                    return done.unwrap_or(Err(StreamError::Stopped));
                }
            }
        }
    }
    .await;
    answers.abort();
    let _ = w.close().await;
    result
}

/// Reads the recipient's answers and reports them; ends when the substream does.
async fn answer_loop(
    rd: ReadHalf<Stream>,
    link: Rc<RefCell<LinkSender>>,
    prekey: Rc<Cell<[u8; 32]>>,
    to: Hotkey,
    peer: PeerId,
    actor: Addr<StreamActor>,
) -> Result<(), StreamError> {
    let mut rd = BufReader::new(rd);
    loop {
        let body = wire::read_frame(&mut rd, MAX_CONTROL_FRAME)
            .await
            .map_err(io_err)?
            .ok_or_else(|| StreamError::Io("the recipient closed the link".into()))?;
        let frame = MsgFrame::decode_body(body).map_err(|e| StreamError::Io(e.to_string()))?;
        let ev = link.borrow_mut().on_frame(frame);
        let mut fatal = None;
        match &ev {
            SenderEvent::SessionRefused {
                code: RefuseCode::StalePrekey,
                binding: Some(b),
                ..
            } => match prekey_from_refusal(b, &peer, &to) {
                Ok(pk) => prekey.set(pk),
                Err(e) => fatal = Some(e),
            },
            SenderEvent::SessionRefused { code, .. } => {
                fatal = Some(StreamError::Refused(format!("session refused ({code:?})")));
            }
            _ => {}
        }
        // One event per frame this writer sent, so these cannot pile up beyond what it sent.
        actor.do_send(WriterEvent { to, ev });
        if let Some(e) = fatal {
            return Err(e);
        }
    }
}

/// Inbound data-plane substreams served at once for one peer (message links, plus streams until
/// they are accepted). An honest peer uses one message link and a few streams being set up; a peer
/// opening hundreds would have each hold a 256 KiB read buffer and a task.
const MAX_SUBSTREAMS_PER_PEER: u32 = 32;

/// Routes inbound substreams: only verified peers are served, each on its own task, at most
/// [`MAX_SUBSTREAMS_PER_PEER`] at once per peer.
pub(crate) async fn run_acceptor(
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<InboundSubstream>>>,
    shared: Arc<Shared>,
    actor: Addr<StreamActor>,
) {
    // Held for as long as this task runs; dropped with it when the actor restarts, so that the
    // restarted actor's acceptor takes the same queue over.
    let mut rx = rx.lock_owned().await;
    // Substreams being served per peer. Every task here runs on this thread.
    let active: Rc<RefCell<std::collections::HashMap<PeerId, u32>>> = Rc::default();
    while let Some(sub) = rx.recv().await {
        {
            let mut a = active.borrow_mut();
            let n = a.entry(sub.peer).or_insert(0);
            if *n >= MAX_SUBSTREAMS_PER_PEER {
                shared.counters.reject(RejectReason::Busy);
                tracing::debug!(peer = %sub.peer, protocol = %sub.protocol, "too many substreams from one peer; dropped");
                continue;
            }
            *n += 1;
        }
        let shared = shared.clone();
        let actor = actor.clone();
        let active = active.clone();
        actix::spawn(async move {
            let peer_id = sub.peer;
            serve_substream(sub, shared, actor).await;
            let mut a = active.borrow_mut();
            if let Some(n) = a.get_mut(&peer_id) {
                *n -= 1;
                if *n == 0 {
                    a.remove(&peer_id);
                }
            }
        });
    }
}

/// Serves one inbound substream of a verified peer (waits for its verification first).
async fn serve_substream(sub: InboundSubstream, shared: Arc<Shared>, actor: Addr<StreamActor>) {
    let peer = shared
        .deps
        .directory
        .wait_for(shared.cfg.binding_timeout, |d| d.get(&sub.peer))
        .await;
    let Some(peer) = peer else {
        tracing::debug!(peer = %sub.peer, protocol = %sub.protocol, "substream from an unverified peer dropped");
        return;
    };
    if sub.protocol == MSG_PROTOCOL {
        if shared.refused_sessions.over(&peer.hotkey) {
            // Too many refused session headers lately: no new link (and no signature check)
            // until the window passes.
            shared.counters.reject(RejectReason::Busy);
            tracing::debug!(peer = %sub.peer, "message substream dropped: too many refused session headers");
            return;
        }
        run_reader(sub.stream, peer, shared, actor).await;
    } else {
        super::bulk::accept(sub.stream, peer, shared, actor).await;
    }
}

/// Whether `peer` may send on `netuid`: the subnet must be in this node's scope, and a
/// registered peer must be registered (and admitted) in it.
pub(crate) fn in_scope(shared: &Shared, peer: &PeerInfo, netuid: u16) -> bool {
    let policy = shared.deps.policy.load();
    if !policy.enabled {
        return true;
    }
    if peer.netuids.is_empty() {
        // Admitted by an explicit allow-list entry rather than a registration.
        return policy.scope.contains(netuid);
    }
    peer.netuids.contains(&netuid)
}

/// Counts a refusal, sends its answer; returns whether the substream must close.
async fn refuse<W: futures::AsyncWrite + Unpin>(
    w: &mut W,
    counters: &StreamCounters,
    r: Refusal,
) -> io::Result<bool> {
    counters.reject(r.reason);
    if let Some(a) = r.answer {
        wire::write_flush(w, &a.encode()).await?;
    }
    Ok(r.close)
}

/// Refused session headers (other than for a stale prekey) after which a message substream is
/// closed: an honest sender's header is refused at most once or twice (a clock off, a rotation
/// race), and each one costs this node a signature check and a seen-set lookup.
const MAX_REFUSED_SESSIONS: u32 = 3;
/// Session ids remembered per message substream (16 bytes each).
const MAX_SESSIONS_PER_SUBSTREAM: usize = 1024;

/// What the answer half of a reader writes back to the sender.
enum Answer {
    /// Acknowledge at once (the application acknowledged this id before).
    Now(Id128),
    /// Acknowledge once the application's acknowledgement is durable; a failed receiver means
    /// it will not be (the message goes back to the sender's queue when the substream closes).
    Later(Id128, oneshot::Receiver<()>),
    /// Refuse a frame (boxed: refusals are rare, acknowledgements are not).
    Refuse(Box<Refusal>),
}

/// Writes a reader's answers in order of arrival, acknowledgements in batches: everything that
/// is ready when one becomes ready goes out in one `Ack` frame. Runs beside the reader so that
/// reading never waits for an application's acknowledgement. Returns when the reader is gone
/// (after writing what it queued) or a refusal closes the substream.
async fn answer<W: futures::AsyncWrite + Unpin>(
    w: &mut W,
    counters: &StreamCounters,
    mut rx: mpsc::UnboundedReceiver<Answer>,
) -> io::Result<()> {
    use futures::stream::{FuturesUnordered, StreamExt};
    use futures::FutureExt;
    // In whatever order the application acknowledges: one message it holds on to must not hold
    // back the acknowledgements of those after it.
    let mut waiting = FuturesUnordered::new();
    let mut acks: Vec<Id128> = Vec::new();
    let mut refusal: Option<Refusal> = None;
    let mut ended = false;
    let lost = || io::Error::other("the application's acknowledgement was not recorded");
    loop {
        let mut item = None;
        tokio::select! {
            got = rx.recv(), if !ended => match got {
                Some(a) => item = Some(a),
                None => ended = true,
            },
            Some((id, r)) = waiting.next(), if !waiting.is_empty() => {
                let r: Result<(), oneshot::error::RecvError> = r;
                r.map_err(|_| lost())?;
                acks.push(id);
            }
            else => return Ok(()),
        }
        // Take everything else already waiting into the same answer, up to a refusal.
        loop {
            match item.take() {
                Some(Answer::Now(id)) => acks.push(id),
                Some(Answer::Later(id, done)) => {
                    waiting.push(async move { (id, done.await) });
                }
                Some(Answer::Refuse(r)) => {
                    refusal = Some(*r);
                    break;
                }
                None => {}
            }
            if ended {
                break;
            }
            match rx.try_recv() {
                Ok(a) => item = Some(a),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => ended = true,
            }
        }
        while let Some(Some((id, r))) = waiting.next().now_or_never() {
            r.map_err(|_| lost())?;
            acks.push(id);
        }
        if !acks.is_empty() {
            for c in acks.chunks(MAX_IDS) {
                w.write_all(&MsgFrame::Ack(c.to_vec()).encode()).await?;
            }
            acks.clear();
            w.flush().await?;
        }
        if let Some(r) = refusal.take() {
            if refuse(w, counters, r).await? {
                return Ok(());
            }
        }
        if ended {
            // The reader is gone: messages still with the application go back to the sender's
            // queue when the substream closes, and their retries are acknowledged (not
            // delivered) once the application's acknowledgement is recorded.
            return Ok(());
        }
    }
}

/// Serves one inbound message substream from `peer` until it ends.
pub(crate) async fn run_reader(
    stream: Stream,
    peer: Arc<PeerInfo>,
    shared: Arc<Shared>,
    actor: Addr<StreamActor>,
) {
    let (rd, wr) = stream.split();
    let mut rd = BufReader::with_capacity(256 << 10, rd);
    let mut w = BufWriter::with_capacity(16 << 10, wr);
    let window = shared.cfg.replay_window.as_secs();
    let mut link = LinkReceiver::new(shared.cfg.me, peer.hotkey, window);
    let max_frame = MSG_PREFIX_LEN + BODY_HEADER_LEN + shared.cfg.max_message + TAG_LEN;
    let counters = shared.counters.clone();
    // Session ids already presented on this substream, and session headers refused on it: a
    // repeated header is refused before any signature check, seen-set lookup or HPKE work, and a
    // substream that keeps presenting refused headers is closed.
    let mut sessions_here: std::collections::HashSet<Id128> = std::collections::HashSet::new();
    let mut refused_sessions = 0u32;
    // Unbounded, but each entry is a message this substream carried: the sender's window and
    // the inbox's capacity bound how many wait.
    let (answers, answers_rx) = mpsc::unbounded_channel();
    let reading = async {
        // Owned here, so the answer writer sees the end when the reader ends.
        let answers = answers;
        loop {
            // This peer's share of the inbox first: one peer must not hold the whole of it.
            shared.inbox_bytes.wait_room(&peer.hotkey).await;
            let Ok(permit) = shared.inbox.clone().reserve_owned().await else {
                return Ok(());
            };
            let frame = match wire::read_msg_frame(&mut rd, max_frame).await? {
                ReadFrame::Eof => return Ok(()),
                ReadFrame::TooLarge(prefix) => {
                    let (sid, counter) = parse_msg_prefix(&prefix).map_err(invalid)?;
                    let r = link.too_large(sid, counter);
                    let close = r.close;
                    let _ = answers.send(Answer::Refuse(Box::new(r)));
                    if close {
                        return Ok(());
                    }
                    continue;
                }
                ReadFrame::Body(b) => match MsgFrame::decode_body(b) {
                    Ok(f) => f,
                    Err(e) => {
                        counters.reject(RejectReason::Malformed);
                        return Err(invalid(e));
                    }
                },
            };
            let now = crate::unix_now();
            if let MsgFrame::SessionInit(h) = &frame {
                if !sessions_here.insert(h.session_id) {
                    // The same header again on one substream: a replay, known without any work.
                    let mut r = link.refuse_session(h, RejectReason::Replay, None);
                    refused_sessions += 1;
                    let over = shared.refused_sessions.note(peer.hotkey);
                    r.close = over || refused_sessions >= MAX_REFUSED_SESSIONS;
                    let close = r.close;
                    let _ = answers.send(Answer::Refuse(Box::new(r)));
                    if close {
                        return Ok(());
                    }
                    continue;
                }
                if sessions_here.len() > MAX_SESSIONS_PER_SUBSTREAM {
                    // Bounded memory on a link that lives for weeks; older ids are still in the
                    // seen-set.
                    sessions_here.clear();
                    sessions_here.insert(h.session_id);
                }
            }
            let refusal = match link.on_frame(frame, now) {
                ReceiverStep::Session(h) => {
                    let keep = h.created_at + window + MAX_CLOCK_SKEW_SECS;
                    let fresh = actor
                        .send(NoteSession {
                            session_id: h.session_id,
                            keep_until: keep,
                        })
                        .await
                        .map_err(|_| io::Error::other("stopping"))?;
                    if !fresh {
                        Some(link.refuse_session(&h, RejectReason::Replay, None))
                    } else {
                        match shared.deps.identity.send(OpenSession(h.clone())).await {
                            Ok(Ok(secret)) => {
                                link.install(&h, secret);
                                let _ = actor
                                    .send(MakeCurrent {
                                        from: peer.hotkey,
                                        session_id: h.session_id,
                                    })
                                    .await;
                                None
                            }
                            Ok(Err(SessionReject::StalePrekey)) => {
                                let mine = shared.deps.binding.load().encode();
                                Some(link.refuse_session(&h, RejectReason::StalePrekey, Some(mine)))
                            }
                            Ok(Err(r)) => Some(link.refuse_session(&h, r.into(), None)),
                            Err(_) => return Ok(()),
                        }
                    }
                }
                ReceiverStep::Message {
                    session_id,
                    counter,
                    body,
                } => {
                    let Some(current) = shared.deps.directory.get(&peer.peer_id) else {
                        // Refused by the firewall meanwhile: its connection is going away.
                        return Ok(());
                    };
                    let in_scope = in_scope(&shared, &current, body.netuid);
                    let outcome = actor
                        .send(Accept {
                            from: current,
                            session_id,
                            counter,
                            body,
                            in_scope,
                            permit,
                        })
                        .await
                        .map_err(|_| io::Error::other("stopping"))?;
                    match outcome {
                        AcceptOutcome::Ack(id) => {
                            let _ = answers.send(Answer::Now(id));
                            None
                        }
                        AcceptOutcome::Deliver(id, durable) => {
                            let _ = answers.send(Answer::Later(id, durable));
                            None
                        }
                        AcceptOutcome::Refused(r) => Some(*r),
                    }
                }
                ReceiverStep::Release(ids) => {
                    actor
                        .send(ReleaseIds {
                            from: peer.hotkey,
                            ids,
                        })
                        .await
                        .map_err(|_| io::Error::other("stopping"))?;
                    None
                }
                ReceiverStep::Refuse(r) => Some(r),
            };
            if let Some(mut r) = refusal {
                let session_refused = matches!(r.answer, Some(MsgFrame::SessionRefused { .. }));
                // A stale prekey is an honest sender's normal way to learn the new one, and the
                // one answer to messages of a session not open here follows a refusal already
                // counted (or a header this link replaced).
                if session_refused
                    && r.reason != RejectReason::StalePrekey
                    && r.reason != RejectReason::NoSession
                {
                    refused_sessions += 1;
                    let over = shared.refused_sessions.note(peer.hotkey);
                    r.close |= over || refused_sessions >= MAX_REFUSED_SESSIONS;
                }
                let close = r.close;
                let _ = answers.send(Answer::Refuse(Box::new(r)));
                if close {
                    return Ok(());
                }
            }
        }
    };
    let result: io::Result<()> = {
        let writing = answer(&mut w, &counters, answers_rx);
        futures::pin_mut!(reading, writing);
        match futures::future::select(reading, writing).await {
            // The reader is done: what it queued still goes out (the writer then ends).
            futures::future::Either::Left((r, writing)) => {
                let w = writing.await;
                r.and(w)
            }
            futures::future::Either::Right((w, _)) => w,
        }
    };
    if let Some(s) = link.session_id() {
        actor.do_send(CloseSession {
            from: peer.hotkey,
            session_id: s,
        });
    }
    if let Err(e) = result {
        tracing::debug!(peer = %peer.peer_id, error = %e, "message link closed");
    }
    let _ = w.close().await;
}
