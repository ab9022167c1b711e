//! Deterministic simulation of message delivery between two nodes, driving the same state
//! machines the runtime uses (outbox, link sender and receiver, seen-set, prekey ring) with real
//! cryptography. Random interleavings of sends, partial deliveries, link failures, restarts of
//! either node (volatile state lost, stores kept), prekey rotations and erasures, clock jumps and
//! replayed frames must never deliver a message twice, and once the link is left up every message
//! is delivered or expired.

use hermes_proto::envelope::{
    seal_session, Id128, SessionKind, SessionRequest, MAX_CLOCK_SKEW_SECS,
};
use hermes_proto::frame::{MsgFrame, RefuseCode};
use hermes_proto::hotkey::Hotkey;
use hermes_proto::inbox::{Dedup, MemSeenStore};
use hermes_proto::msglink::{
    accept_message, release_frames, Accepted, LinkReceiver, LinkSender, ReceiverStep, Refusal,
    SenderEvent, SessionLimits,
};
use hermes_proto::outbox::{MemOutboxStore, Outbox, OutboxLimits};
use hermes_proto::prekey::PrekeyRing;
use hermes_proto::reason::RejectReason;
use hpke::rand_core::{Infallible, TryCryptoRng, TryRng};
use proptest::prelude::*;
use sp_core::{sr25519, Pair as _};
use std::collections::{BTreeSet, VecDeque};

const WINDOW: u64 = 600;
const MAX_FRAME: usize = 1 << 20;

/// SplitMix64, for reproducible runs.
struct SimRng(u64);
impl TryRng for SimRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.try_next_u64()? as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Ok(z ^ (z >> 31))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let v = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}
impl TryCryptoRng for SimRng {}

#[derive(Debug, Clone)]
enum Op {
    Send { ttl: u16 },
    Connect,
    Disconnect,
    SenderWrite(u8),
    ToReceiver(u8),
    ToSender(u8),
    RestartSender,
    RestartReceiver,
    Rotate,
    EraseRetired,
    Tick(u16),
    Replay(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u16..2000).prop_map(|ttl| Op::Send { ttl }),
        2 => Just(Op::Connect),
        1 => Just(Op::Disconnect),
        4 => (1u8..6).prop_map(Op::SenderWrite),
        4 => (1u8..8).prop_map(Op::ToReceiver),
        3 => (1u8..8).prop_map(Op::ToSender),
        1 => Just(Op::RestartSender),
        1 => Just(Op::RestartReceiver),
        1 => Just(Op::Rotate),
        1 => Just(Op::EraseRetired),
        2 => (1u16..200).prop_map(Op::Tick),
        1 => any::<u8>().prop_map(Op::Replay),
    ]
}

struct Link {
    tx: LinkSender,
    rx: LinkReceiver,
    s2r: VecDeque<Vec<u8>>,
    r2s: VecDeque<Vec<u8>>,
}

struct Sim {
    now: u64,
    rng: SimRng,
    alice: sr25519::Pair,
    a: Hotkey,
    b: Hotkey,
    outbox: Option<Outbox<MemOutboxStore>>,
    sender_view: [u8; 32],
    link: Option<Link>,
    ring: PrekeyRing,
    dedup: Option<Dedup<MemSeenStore>>,
    delivered: Vec<Id128>,
    sent: BTreeSet<Id128>,
    expired: BTreeSet<Id128>,
    captured: Vec<Vec<u8>>,
    refusals: Vec<RejectReason>,
}

const LIMITS: SessionLimits = SessionLimits {
    max_messages: 3,
    max_age_secs: 50,
};

impl Sim {
    fn new(seed: u64) -> Self {
        let alice = sr25519::Pair::from_string("//Alice", None).unwrap();
        let bob = sr25519::Pair::from_string("//Bob", None).unwrap();
        let mut rng = SimRng(seed);
        let mut ring = PrekeyRing::default();
        let now = 1_800_000_000;
        let mut seed_bytes = [0u8; 32];
        rng.try_fill_bytes(&mut seed_bytes).unwrap();
        ring.rotate(&seed_bytes, now);
        let current = ring.current().unwrap().keypair().public();
        Sim {
            now,
            rng,
            a: Hotkey::of(&alice),
            b: Hotkey::of(&bob),
            alice,
            outbox: Some(
                Outbox::load(MemOutboxStore::default(), OutboxLimits::default())
                    .unwrap()
                    .0,
            ),
            sender_view: current,
            link: None,
            ring,
            dedup: Some(Dedup::new(MemSeenStore::default())),
            delivered: Vec::new(),
            sent: BTreeSet::new(),
            expired: BTreeSet::new(),
            captured: Vec::new(),
            refusals: Vec::new(),
        }
    }

    fn outbox(&mut self) -> &mut Outbox<MemOutboxStore> {
        self.outbox.as_mut().unwrap()
    }

    fn dedup(&mut self) -> &mut Dedup<MemSeenStore> {
        self.dedup.as_mut().unwrap()
    }

    fn current_prekey(&self) -> [u8; 32] {
        self.ring.current().unwrap().keypair().public()
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Send { ttl } => {
                let (b, now) = (self.b, self.now);
                let mut rng = SimRng(self.rng.try_next_u64().unwrap());
                let m = self
                    .outbox()
                    .enqueue(b, 3, &[7; 10], now, u64::from(*ttl), &mut rng)
                    .unwrap();
                self.sent.insert(m.id);
            }
            Op::Connect => self.connect(),
            Op::Disconnect => self.disconnect(),
            Op::SenderWrite(n) => self.sender_write(usize::from(*n)),
            Op::ToReceiver(n) => {
                for _ in 0..*n {
                    self.pump_receiver();
                }
            }
            Op::ToSender(n) => {
                for _ in 0..*n {
                    self.pump_sender();
                }
            }
            Op::RestartSender => {
                self.disconnect();
                let store = self.outbox.take().unwrap().into_store();
                self.outbox = Some(Outbox::load(store, OutboxLimits::default()).unwrap().0);
            }
            Op::RestartReceiver => {
                self.disconnect();
                let store = self.dedup.take().unwrap().into_store();
                self.dedup = Some(Dedup::new(store));
            }
            Op::Rotate => {
                let mut seed = [0u8; 32];
                self.rng.try_fill_bytes(&mut seed).unwrap();
                self.ring.rotate(&seed, self.now);
                // The sender's view stays stale until a refusal or a reconnect tells it.
            }
            Op::EraseRetired => {
                self.ring.erase_expired(self.now, 0);
            }
            Op::Tick(s) => {
                self.now += u64::from(*s);
                let now = self.now;
                let gone = self.outbox().expire(now).unwrap();
                self.expired.extend(gone.iter().map(|m| m.id));
                self.dedup().sweep(now).unwrap();
            }
            Op::Replay(i) => {
                if !self.captured.is_empty() {
                    let f = self.captured[usize::from(*i) % self.captured.len()].clone();
                    if let Some(l) = self.link.as_mut() {
                        l.s2r.push_back(f);
                    }
                }
            }
        }
    }

    fn connect(&mut self) {
        if self.link.is_some() {
            return;
        }
        let b = self.b;
        self.outbox().link_up(&b);
        // The binding exchange on connect gives the sender the receiver's current prekey.
        self.sender_view = self.current_prekey();
        self.link = Some(Link {
            tx: LinkSender::new(LIMITS),
            rx: LinkReceiver::new(self.b, self.a, WINDOW),
            s2r: VecDeque::new(),
            r2s: VecDeque::new(),
        });
    }

    fn disconnect(&mut self) {
        let Some(link) = self.link.take() else {
            return;
        };
        if let Some(s) = link.rx.session_id() {
            let a = self.a;
            self.dedup().close_session(&a, &s);
        }
        let (b, now) = (self.b, self.now);
        let mut rng = SimRng(self.rng.try_next_u64().unwrap());
        self.outbox().link_lost(&b, now * 1000, &mut rng);
    }

    fn sender_write(&mut self, n: usize) {
        let (b, now) = (self.b, self.now);
        if self.link.is_none() {
            return;
        }
        let batch = self.outbox().take(&b, n, MAX_FRAME, now).unwrap();
        for m in batch {
            let link = self.link.as_mut().unwrap();
            if link.tx.needs_session(now) {
                let (h, secret) = seal_session(
                    &self.alice,
                    &SessionRequest {
                        kind: SessionKind::Messages,
                        recipient: b,
                        prekey: self.sender_view,
                        netuid: 0,
                    },
                    now,
                    &mut self.rng,
                )
                .unwrap();
                let f = link.tx.start_session(&h, secret, now);
                link.s2r.push_back(f.clone());
                self.captured.push(f);
            }
            let f = link.tx.seal(&m, now).unwrap();
            link.s2r.push_back(f.clone());
            self.captured.push(f);
        }
    }

    fn refuse(&mut self, r: Refusal) {
        self.refusals.push(r.reason);
        if let (Some(a), Some(l)) = (r.answer, self.link.as_mut()) {
            l.r2s.push_back(a.encode());
        }
        if r.close {
            self.disconnect();
        }
    }

    fn pump_receiver(&mut self) {
        let now = self.now;
        let Some(bytes) = self.link.as_mut().and_then(|l| l.s2r.pop_front()) else {
            return;
        };
        let frame = MsgFrame::decode(&bytes, MAX_FRAME).unwrap();
        let step = self.link.as_mut().unwrap().rx.on_frame(frame, now);
        let a = self.a;
        match step {
            ReceiverStep::Session(h) => {
                let keep = h.created_at + WINDOW + MAX_CLOCK_SKEW_SECS;
                if !self.dedup().note_session(&h.session_id, keep).unwrap() {
                    let r = self.link.as_mut().unwrap().rx.refuse_session(
                        &h,
                        RejectReason::Replay,
                        None,
                    );
                    return self.refuse(r);
                }
                let key = self
                    .ring
                    .entries()
                    .into_iter()
                    .map(|e| e.keypair())
                    .find(|k| k.public() == h.prekey);
                let current = self.current_prekey();
                let link = self.link.as_mut().unwrap();
                match key.map(|k| h.open(&k)) {
                    Some(Ok(secret)) => {
                        link.rx.install(&h, secret);
                        self.dedup().make_current(&a, &h.session_id);
                    }
                    Some(Err(r)) => {
                        let r = link.rx.refuse_session(&h, r.into(), None);
                        self.refuse(r)
                    }
                    None => {
                        let r = link.rx.refuse_session(
                            &h,
                            RejectReason::StalePrekey,
                            Some(current.to_vec()),
                        );
                        self.refuse(r)
                    }
                }
            }
            ReceiverStep::Message {
                session_id,
                counter,
                body,
            } => {
                let now = self.now;
                let d = self.dedup.as_mut().unwrap();
                match accept_message(d, &a, session_id, counter, body, true, now).unwrap() {
                    Accepted::Deliver(b) => {
                        self.delivered.push(b.id);
                        self.link
                            .as_mut()
                            .unwrap()
                            .r2s
                            .push_back(MsgFrame::Ack(vec![b.id]).encode());
                    }
                    Accepted::Duplicate(id) => {
                        self.link
                            .as_mut()
                            .unwrap()
                            .r2s
                            .push_back(MsgFrame::Ack(vec![id]).encode());
                    }
                    Accepted::Refused(r) => self.refuse(r),
                }
            }
            ReceiverStep::Release(ids) => self.dedup().release(&a, &ids).unwrap(),
            ReceiverStep::Refuse(r) => self.refuse(r),
        }
    }

    fn pump_sender(&mut self) {
        let Some(bytes) = self.link.as_mut().and_then(|l| l.r2s.pop_front()) else {
            return;
        };
        let frame = MsgFrame::decode(&bytes, MAX_FRAME).unwrap();
        let ev = self.link.as_mut().unwrap().tx.on_frame(frame);
        match ev {
            SenderEvent::Acked(ids) => {
                self.outbox().acked(&ids).unwrap();
                // The simulated store is durable at once, so every deletion may be released.
                assert!(self.outbox().take_unflushed().is_empty());
                let link = self.link.as_mut().unwrap();
                link.s2r.extend(release_frames(&ids));
            }
            SenderEvent::Rejected { id, code } => {
                let gone = self.outbox().rejected(&id, code.is_terminal()).unwrap();
                self.expired.extend(gone.map(|m| m.id));
            }
            SenderEvent::SessionRefused {
                code,
                binding,
                requeue,
            } => {
                for id in requeue {
                    self.outbox().rejected(&id, false).unwrap();
                }
                match (code, binding) {
                    (RefuseCode::StalePrekey, Some(b)) if b.len() == 32 => {
                        self.sender_view.copy_from_slice(&b);
                    }
                    _ => self.disconnect(),
                }
            }
            SenderEvent::Ignored => {}
        }
    }

    /// Leaves the link up (reconnecting as needed) until the outbox is empty.
    fn drain(&mut self) {
        for _ in 0..400 {
            let now = self.now;
            let gone = self.outbox().expire(now).unwrap();
            self.expired.extend(gone.iter().map(|m| m.id));
            if self.outbox().is_empty() {
                return;
            }
            self.connect();
            self.sender_write(16);
            for _ in 0..64 {
                self.pump_receiver();
            }
            for _ in 0..64 {
                self.pump_sender();
            }
        }
        panic!(
            "outbox never drained: {:?}, refusals {:?}",
            self.outbox().pending(),
            self.refusals
        );
    }

    fn check_no_duplicates(&self) {
        let unique: BTreeSet<&Id128> = self.delivered.iter().collect();
        assert_eq!(
            unique.len(),
            self.delivered.len(),
            "a message was delivered twice"
        );
        assert!(self.delivered.iter().all(|d| self.sent.contains(d)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn never_lost_never_duplicated(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..80)) {
        let mut sim = Sim::new(seed);
        for op in &ops {
            sim.apply(op);
            sim.check_no_duplicates();
        }
        sim.drain();
        sim.check_no_duplicates();
        let delivered: BTreeSet<Id128> = sim.delivered.iter().copied().collect();
        for id in &sim.sent {
            prop_assert!(
                delivered.contains(id) || sim.expired.contains(id),
                "message {id} neither delivered nor expired; ops {ops:?}"
            );
        }
    }
}

#[test]
fn a_rotation_the_sender_missed_heals_through_the_stale_prekey_refusal() {
    let mut sim = Sim::new(7);
    sim.apply(&Op::Connect);
    sim.apply(&Op::Rotate);
    sim.apply(&Op::EraseRetired);
    sim.apply(&Op::Send { ttl: 100 });
    sim.sender_write(1);
    sim.pump_receiver(); // SessionInit to the erased prekey: refused, with the fresh binding
    sim.pump_receiver(); // its message: no session
    assert_eq!(
        sim.refusals,
        vec![RejectReason::StalePrekey, RejectReason::NoSession]
    );
    sim.pump_sender();
    assert_eq!(sim.sender_view, sim.current_prekey());
    sim.sender_write(1);
    sim.pump_receiver();
    sim.pump_receiver();
    assert_eq!(sim.delivered.len(), 1);
    sim.pump_sender();
    assert!(sim.outbox().is_empty());
}

#[test]
fn replayed_frames_are_refused_and_deliver_nothing() {
    let mut sim = Sim::new(9);
    sim.apply(&Op::Connect);
    sim.apply(&Op::Send { ttl: 100 });
    sim.sender_write(1);
    sim.pump_receiver();
    sim.pump_receiver();
    assert_eq!(sim.delivered.len(), 1);
    // The session header and the message, injected again on the same link.
    for i in 0..2u8 {
        sim.apply(&Op::Replay(i));
    }
    sim.pump_receiver();
    sim.pump_receiver();
    assert_eq!(sim.delivered.len(), 1);
    assert_eq!(
        sim.refusals,
        vec![RejectReason::Replay, RejectReason::Replay]
    );
}
