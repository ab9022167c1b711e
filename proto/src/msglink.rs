//! The two ends of one `/hermes/msg/1` substream, as state machines without I/O.
//!
//! [`LinkSender`] turns outbox messages into frames and the receiver's answers into outbox
//! updates; [`LinkReceiver`] turns frames into steps for its caller (open this session, deliver
//! this message, forget these ids, refuse this frame). The node's reader and writer tasks only
//! move bytes and call these; a deterministic simulation drives the same code in the tests.
//!
//! Sender, step by step:
//! 1. [`LinkSender::needs_session`] → the caller seals a session (it holds the signing key) and
//!    hands it to [`LinkSender::start_session`], which returns the `SessionInit` frame.
//! 2. [`LinkSender::seal`] seals each message under the next ratchet key.
//! 3. [`LinkSender::on_frame`] maps `Ack`, `Reject` and `SessionRefused` back to message ids.
//! 4. [`release_frames`] batches acknowledged ids, once their deletion at the sender is durable,
//!    into `Release` frames.
//!
//! Receiver, step by step ([`LinkReceiver::on_frame`]):
//! 1. `SessionInit` → header checks ([`SessionHeader::check`]) → [`ReceiverStep::Session`]; the
//!    caller checks the seen-set and its prekeys, then calls [`LinkReceiver::install`].
//! 2. `Msg` → ratchet → expiry → [`ReceiverStep::Message`]; the caller checks scope, offers the
//!    id, delivers, and acknowledges.
//! 3. `Release` → [`ReceiverStep::Release`].
//!
//! Anything else is refused with a [`RejectReason`], an optional answer for the peer, and whether
//! the substream must be closed (tampering never gets a second try on the same substream).

use crate::envelope::{
    EnvelopeError, Id128, MessageBody, RecvRatchet, SendRatchet, SessionHeader, SessionKind,
    SessionSecret, MAX_CLOCK_SKEW_SECS,
};
use crate::frame::{msg_prefix, MsgFrame, RefuseCode, RejectCode, MAX_IDS};
use crate::hotkey::Hotkey;
use crate::inbox::{Dedup, Offer, SeenStore};
use crate::outbox::Outgoing;
use crate::reason::RejectReason;
use std::collections::VecDeque;

/// When a sending session must be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Messages sealed in one session.
    pub max_messages: u64,
    /// Age of a session, seconds.
    pub max_age_secs: u64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_messages: 1 << 16,
            max_age_secs: 600,
        }
    }
}

/// What an answer from the receiver means for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderEvent {
    /// These messages were processed; drop them.
    Acked(Vec<Id128>),
    /// One message was refused.
    Rejected {
        /// The message.
        id: Id128,
        /// Why (terminal codes end its life).
        code: RejectCode,
    },
    /// The session was refused; these in-flight messages go back to the queue. With
    /// [`RefuseCode::StalePrekey`] the caller verifies `binding` and starts a new session with its
    /// prekey.
    SessionRefused {
        /// Why.
        code: RefuseCode,
        /// The receiver's current binding record, if sent.
        binding: Option<Vec<u8>>,
        /// Messages of the refused session, to queue again.
        requeue: Vec<Id128>,
    },
    /// A frame that makes no sense from a receiver (or names nothing in flight): ignored.
    Ignored,
}

/// The sending end of a message link.
#[derive(Debug)]
pub struct LinkSender {
    limits: SessionLimits,
    ratchet: Option<SendRatchet>,
    started_at: u64,
    /// Sent, not yet answered: (session, counter, message id), in sending order.
    in_flight: VecDeque<(Id128, u64, Id128)>,
}

impl LinkSender {
    /// A link with no session yet.
    pub fn new(limits: SessionLimits) -> Self {
        LinkSender {
            limits,
            ratchet: None,
            started_at: 0,
            in_flight: VecDeque::new(),
        }
    }

    /// Whether a (new) session must be started before the next message.
    pub fn needs_session(&self, now: u64) -> bool {
        match &self.ratchet {
            None => true,
            Some(r) => {
                r.sealed() >= self.limits.max_messages
                    || self.started_at.saturating_add(self.limits.max_age_secs) <= now
                    || self.started_at > now.saturating_add(MAX_CLOCK_SKEW_SECS)
            }
        }
    }

    /// The current session, if any.
    pub fn session_id(&self) -> Option<Id128> {
        self.ratchet.as_ref().map(SendRatchet::session_id)
    }

    /// Messages sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Installs a freshly sealed session (replacing and erasing the previous one) and returns its
    /// `SessionInit` frame.
    pub fn start_session(
        &mut self,
        header: &SessionHeader,
        secret: SessionSecret,
        now: u64,
    ) -> Vec<u8> {
        self.ratchet = Some(SendRatchet::new(header.session_id, secret));
        self.started_at = now;
        MsgFrame::SessionInit(header.clone()).encode()
    }

    /// Seals one message for sending at `now` and returns the complete `Msg` frame.
    ///
    /// # Errors
    /// [`EnvelopeError::Exhausted`] when there is no usable session (call
    /// [`LinkSender::needs_session`] first).
    pub fn seal(&mut self, msg: &Outgoing, now: u64) -> Result<Vec<u8>, EnvelopeError> {
        let ratchet = self.ratchet.as_mut().ok_or(EnvelopeError::Exhausted)?;
        let mut buf = Vec::new();
        MessageBody::encode_parts(
            &msg.meta.id,
            msg.meta.netuid,
            now,
            msg.meta.expires_at,
            &msg.payload,
            &mut buf,
        );
        let counter = ratchet.seal(&mut buf)?;
        let session = ratchet.session_id();
        self.in_flight.push_back((session, counter, msg.meta.id));
        let mut frame = Vec::with_capacity(30 + buf.len());
        frame.extend_from_slice(&msg_prefix(&session, counter, buf.len()));
        frame.extend_from_slice(&buf);
        Ok(frame)
    }

    /// Interprets a frame from the receiver.
    pub fn on_frame(&mut self, frame: MsgFrame) -> SenderEvent {
        match frame {
            MsgFrame::Ack(ids) => {
                // Acknowledgements arrive in sending order, so this is normally a prefix.
                let mut acked = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(pos) = self.in_flight.iter().position(|(_, _, m)| *m == id) {
                        self.in_flight.remove(pos);
                        acked.push(id);
                    }
                }
                if acked.is_empty() {
                    SenderEvent::Ignored
                } else {
                    SenderEvent::Acked(acked)
                }
            }
            MsgFrame::Reject {
                session_id,
                counter,
                code,
            } => match self
                .in_flight
                .iter()
                .position(|(s, c, _)| *s == session_id && *c == counter)
            {
                Some(pos) => {
                    let (_, _, id) = self.in_flight.remove(pos).unwrap_or_default();
                    SenderEvent::Rejected { id, code }
                }
                None => SenderEvent::Ignored,
            },
            MsgFrame::SessionRefused {
                session_id,
                code,
                binding,
            } => {
                // A refusal of a session this link already left behind, with nothing of it in
                // flight, changes nothing (the receiver answers the first message of any session
                // it does not hold, and those of an already refused session may still arrive).
                let current = self.session_id() == Some(session_id);
                if !current && !self.in_flight.iter().any(|(s, _, _)| *s == session_id) {
                    return SenderEvent::Ignored;
                }
                let requeue: Vec<Id128> = self
                    .in_flight
                    .iter()
                    .filter(|(s, _, _)| *s == session_id)
                    .map(|(_, _, m)| *m)
                    .collect();
                self.in_flight.retain(|(s, _, _)| *s != session_id);
                if self.session_id() == Some(session_id) {
                    self.ratchet = None;
                }
                SenderEvent::SessionRefused {
                    code,
                    binding,
                    requeue,
                }
            }
            _ => SenderEvent::Ignored,
        }
    }

    /// The link is gone: the ids still in flight (to queue again).
    pub fn into_unanswered(self) -> Vec<Id128> {
        self.in_flight.into_iter().map(|(_, _, m)| m).collect()
    }
}

/// `Release` frames for `ids` ([`MAX_IDS`] per frame). Only ids whose deletion from the outbox
/// is durable may be released (see [`crate::outbox::Outbox::take_unflushed`]).
pub fn release_frames(ids: &[Id128]) -> Vec<Vec<u8>> {
    ids.chunks(MAX_IDS)
        .map(|c| MsgFrame::Release(c.to_vec()).encode())
        .collect()
}

/// What the caller of [`LinkReceiver::on_frame`] must do next.
#[derive(Debug)]
pub enum ReceiverStep {
    /// The header passed its checks: look its session id up in the seen-set and its prekey in the
    /// ring, then call [`LinkReceiver::install`] or [`LinkReceiver::refuse_session`].
    Session(SessionHeader),
    /// A message opened: check scope, offer its id, deliver, then acknowledge it once the
    /// application acknowledged it and its id is durable.
    Message {
        /// Its session (the caller checks it is still the sender's current one).
        session_id: Id128,
        /// Its counter, for a `Reject`.
        counter: u64,
        /// The opened message.
        body: MessageBody,
    },
    /// The sender will not resend these ids.
    Release(Vec<Id128>),
    /// The frame is refused.
    Refuse(Refusal),
}

/// A refused frame: what to count, what to tell the peer, whether to close the substream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The counter to increment.
    pub reason: RejectReason,
    /// The frame to send back, if any.
    pub answer: Option<MsgFrame>,
    /// Whether the substream must be closed.
    pub close: bool,
}

/// The receiving end of a message link.
#[derive(Debug)]
pub struct LinkReceiver {
    me: Hotkey,
    peer: Hotkey,
    window: u64,
    ratchet: Option<RecvRatchet>,
    /// The last session whose messages arrived without it being the one open here, answered
    /// once with a `SessionRefused` (and its later messages with nothing).
    answered_unknown: Option<Id128>,
}

impl LinkReceiver {
    /// A link from `peer` (the connection's verified hotkey) to `me`; session headers older than
    /// `window` seconds are refused as replays.
    pub fn new(me: Hotkey, peer: Hotkey, window: u64) -> Self {
        LinkReceiver {
            me,
            peer,
            window,
            ratchet: None,
            answered_unknown: None,
        }
    }

    /// The sender's hotkey.
    pub fn peer(&self) -> &Hotkey {
        &self.peer
    }

    /// The session open on this link, if any.
    pub fn session_id(&self) -> Option<Id128> {
        self.ratchet.as_ref().map(RecvRatchet::session_id)
    }

    /// Installs the session of a header that passed every check.
    pub fn install(&mut self, header: &SessionHeader, secret: SessionSecret) {
        self.ratchet = Some(RecvRatchet::new(header.session_id, secret));
    }

    /// Refuses a session after [`ReceiverStep::Session`] (seen before, or no such prekey). With a
    /// stale prekey the answer carries `binding` so the sender can re-seal at once.
    pub fn refuse_session(
        &mut self,
        header: &SessionHeader,
        reason: RejectReason,
        binding: Option<Vec<u8>>,
    ) -> Refusal {
        // The session open before (if any) stays: a refused header must not let a replayed or
        // forged frame tear down the sender's live session.
        let (code, binding) = if reason == RejectReason::StalePrekey {
            (RefuseCode::StalePrekey, binding)
        } else {
            (RefuseCode::Refused, None)
        };
        Refusal {
            reason,
            answer: Some(MsgFrame::SessionRefused {
                session_id: header.session_id,
                code,
                binding,
            }),
            close: false,
        }
    }

    /// A `Msg` frame too large to read: steps the ratchet past it so later messages still open,
    /// and refuses it (terminally for the sender).
    pub fn too_large(&mut self, session_id: Id128, counter: u64) -> Refusal {
        let stepped = self
            .ratchet
            .as_mut()
            .is_some_and(|r| r.session_id() == session_id && r.skip(counter).is_ok());
        match stepped {
            true => Refusal {
                reason: RejectReason::TooLarge,
                answer: Some(MsgFrame::Reject {
                    session_id,
                    counter,
                    code: RejectCode::TooLarge,
                }),
                close: false,
            },
            false => Refusal {
                reason: RejectReason::TooLarge,
                answer: None,
                close: true,
            },
        }
    }

    /// Interprets one frame from the sender at `now` (unix seconds).
    pub fn on_frame(&mut self, frame: MsgFrame, now: u64) -> ReceiverStep {
        match frame {
            MsgFrame::SessionInit(h) => {
                match h.check(
                    &self.me,
                    &self.peer,
                    SessionKind::Messages,
                    now,
                    self.window,
                ) {
                    Ok(()) => ReceiverStep::Session(h),
                    Err(r) => ReceiverStep::Refuse(self.refuse_session(&h, r.into(), None)),
                }
            }
            MsgFrame::Msg {
                session_id,
                counter,
                mut ciphertext,
            } => {
                let Some(ratchet) = self
                    .ratchet
                    .as_mut()
                    .filter(|r| r.session_id() == session_id)
                else {
                    // Messages of a session not open here: refused, or replaced by another
                    // header the sender presented on this link (a resent or replayed one). The
                    // first such message is answered with a `SessionRefused`, so a sender that
                    // still counts on that session learns it is gone and queues its messages
                    // again instead of waiting for answers that never come; a sender that already
                    // left it ignores the answer. Later ones get nothing, so this costs one small
                    // answer per session.
                    let answer = (self.answered_unknown != Some(session_id)).then(|| {
                        self.answered_unknown = Some(session_id);
                        MsgFrame::SessionRefused {
                            session_id,
                            code: RefuseCode::Refused,
                            binding: None,
                        }
                    });
                    return ReceiverStep::Refuse(Refusal {
                        reason: RejectReason::NoSession,
                        answer,
                        close: false,
                    });
                };
                if let Err(e) = ratchet.open(counter, &mut ciphertext) {
                    return ReceiverStep::Refuse(Refusal {
                        reason: e.into(),
                        answer: Some(MsgFrame::Reject {
                            session_id,
                            counter,
                            code: RejectCode::Retry,
                        }),
                        close: true,
                    });
                }
                let body = match MessageBody::decode(ciphertext) {
                    Ok(b) => b,
                    Err(_) => {
                        return ReceiverStep::Refuse(Refusal {
                            reason: RejectReason::Malformed,
                            answer: Some(MsgFrame::Reject {
                                session_id,
                                counter,
                                code: RejectCode::Retry,
                            }),
                            close: true,
                        })
                    }
                };
                if body.expires_at <= now {
                    return ReceiverStep::Refuse(Refusal {
                        reason: RejectReason::Expired,
                        answer: Some(MsgFrame::Reject {
                            session_id,
                            counter,
                            code: RejectCode::Expired,
                        }),
                        close: false,
                    });
                }
                ReceiverStep::Message {
                    session_id,
                    counter,
                    body,
                }
            }
            MsgFrame::Release(ids) => ReceiverStep::Release(ids),
            // Answers travel the other way; a sender that sends them is broken or hostile.
            _ => ReceiverStep::Refuse(Refusal {
                reason: RejectReason::Malformed,
                answer: None,
                close: true,
            }),
        }
    }
}

/// The outcome of [`accept_message`].
#[derive(Debug)]
pub enum Accepted {
    /// New: deliver it to the application; once the application acknowledged it,
    /// [`Dedup::commit`] its id, make the seen-set durable, then acknowledge it to the sender.
    Deliver(MessageBody),
    /// Acknowledged by the application before (a retry after a lost acknowledgement):
    /// acknowledge, do not deliver.
    Duplicate(Id128),
    /// Refused.
    Refused(Refusal),
}

/// The receiver's decision on an opened message (after [`ReceiverStep::Message`]) at `now`: it
/// must come from `peer`'s current session and be `in_scope`, and its id is offered to the
/// seen-set ([`Dedup::offer`]), so one copy at a time is with the application and none after the
/// application acknowledged one (within the seen-set's retention). A copy of a message still with
/// the application is refused for a later retry (`Busy`, [`RejectCode::Retry`]).
///
/// # Errors
/// The seen-set store's error.
pub fn accept_message<S: SeenStore>(
    dedup: &mut Dedup<S>,
    peer: &Hotkey,
    session_id: Id128,
    counter: u64,
    body: MessageBody,
    in_scope: bool,
    now: u64,
) -> Result<Accepted, S::Error> {
    if !dedup.is_current(peer, &session_id) {
        // A newer session from the same sender exists: this substream is stale.
        return Ok(Accepted::Refused(Refusal {
            reason: RejectReason::NoSession,
            answer: None,
            close: true,
        }));
    }
    if !in_scope {
        return Ok(Accepted::Refused(Refusal {
            reason: RejectReason::OutOfScope,
            answer: Some(MsgFrame::Reject {
                session_id,
                counter,
                code: RejectCode::OutOfScope,
            }),
            close: false,
        }));
    }
    match dedup.offer(peer, &body.id, body.expires_at, now)? {
        Offer::New => Ok(Accepted::Deliver(body)),
        Offer::Duplicate => Ok(Accepted::Duplicate(body.id)),
        Offer::Delivering => Ok(Accepted::Refused(Refusal {
            reason: RejectReason::Busy,
            answer: Some(MsgFrame::Reject {
                session_id,
                counter,
                code: RejectCode::Retry,
            }),
            close: false,
        })),
    }
}
