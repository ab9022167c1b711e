//! End-to-end envelopes: signed HPKE session headers and the message ratchet.
//!
//! Public-key operations are the expensive part of end-to-end encryption (an X25519 scalar
//! multiplication and an sr25519 signature cost tens of microseconds each), so they are paid once
//! per *session*, not once per message:
//!
//! 1. The sender picks the recipient's current prekey from the recipient's signed binding record and
//!    runs HPKE (RFC 9180, base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256) with a fresh
//!    ephemeral key: [`seal_session`]. The HPKE `info` string binds every header field, so the
//!    derived secret belongs to exactly this header.
//! 2. The sender signs the whole header, including the encapsulated key, with its wallet hotkey
//!    (sr25519, domain tag [`SESSION_DOMAIN`]). HPKE base mode does not authenticate the sender; the
//!    signature does, and the receiver checks it against the hotkey of the connection's verified
//!    binding ([`SessionHeader::check`]).
//! 3. The receiver decapsulates with the private half of the named prekey
//!    ([`SessionHeader::open`]). Once that prekey is erased (after its rotation grace period), no key
//!    the receiver stores can open the header again: forward secrecy against later key theft.
//! 4. Both sides export a 32-byte root from the HPKE context. For message sessions it seeds a
//!    symmetric KDF ratchet ([`SendRatchet`], [`RecvRatchet`]): `message_key = HMAC(chain, 0x01)`,
//!    `chain' = HMAC(chain, 0x02)`, the old chain key overwritten at once. Every message therefore has
//!    its own AES-256-GCM key, used once and erased; a key that leaks exposes one message, and the
//!    chain key that is kept cannot be run backwards to earlier messages.
//!
//! Replay protection has three layers: the header's `created_at` must be inside the receiver's
//! window and its session id must be new ([`SessionHeader::check`] plus the caller's seen-set), the
//! ratchet counter must be exactly the next one, and each message carries a 128-bit id and an
//! expiry that the receiver de-duplicates ([`MessageBody`]).
//!
//! # Session header encoding (version 1, little-endian, 220 bytes)
//! ```text
//! u8    version = 1
//! u8    kind (1 = message session, 2 = stream)
//! [16]  session id (random)
//! [32]  sender hotkey (sr25519)
//! [32]  recipient hotkey (sr25519)
//! [32]  recipient prekey (X25519 public key, as in the recipient's binding)
//! u16   netuid (streams: the stream's subnet; message sessions: 0, each message names its own)
//! u64   created_at (unix seconds)
//! [32]  enc (HPKE encapsulated key)
//! [64]  signature (sender hotkey over SESSION_DOMAIN || all of the above)
//! ```

use crate::codec::{DecodeError, Reader, Writer};
use crate::hotkey::{sign, Hotkey, SIGNATURE_LEN};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hmac;
use hpke::aead::ExportOnlyAead;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::rand_core::CryptoRng;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use sp_core::sr25519;
use std::fmt;
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// Domain tag of session-header signatures and of the HPKE `info` string.
pub const SESSION_DOMAIN: &[u8] = b"hermes/session/v1";
/// The only header version this build produces and accepts.
pub const SESSION_VERSION: u8 = 1;
/// Encoded length of a [`SessionHeader`].
pub const SESSION_HEADER_LEN: usize = 1 + 1 + 16 + 32 + 32 + 32 + 2 + 8 + 32 + SIGNATURE_LEN;
/// Length of an AES-256-GCM tag.
pub const TAG_LEN: usize = 16;
/// Length of a message id and of a session id.
pub const ID_LEN: usize = 16;
/// Clock skew tolerated on `created_at` values from the future.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// HPKE exporter label of the message-ratchet root.
const EXPORT_MESSAGES: &[u8] = b"hermes/v1 message chain";
/// HPKE exporter label of a stream's first chunk key.
const EXPORT_STREAM: &[u8] = b"hermes/v1 stream key";

type Kem = X25519HkdfSha256;

/// A 128-bit identifier (sessions, messages, streams).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Id128(pub [u8; ID_LEN]);

impl Id128 {
    /// A fresh random id.
    pub fn random(rng: &mut impl CryptoRng) -> Self {
        let mut b = [0u8; ID_LEN];
        rng.fill_bytes(&mut b);
        Id128(b)
    }

    /// Lower-case hex, the form logs and the CLI print.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses 32 hex digits.
    ///
    /// # Errors
    /// A message when the text is not exactly 32 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.len() != 2 * ID_LEN || !t.is_ascii() {
            return Err(format!("`{text}` is not a 128-bit id (32 hex digits)"));
        }
        let mut out = [0u8; ID_LEN];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&t[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("`{text}` is not a 128-bit id (32 hex digits)"))?;
        }
        Ok(Id128(out))
    }
}

impl fmt::Debug for Id128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

impl fmt::Display for Id128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_hex())
    }
}

/// What a session carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum SessionKind {
    /// A ratcheted sequence of messages (`/hermes/msg/1`).
    Messages,
    /// One stream of chunks (`/hermes/stream/1`).
    Stream,
}

impl SessionKind {
    fn code(self) -> u8 {
        match self {
            SessionKind::Messages => 1,
            SessionKind::Stream => 2,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(SessionKind::Messages),
            2 => Some(SessionKind::Stream),
            _ => None,
        }
    }
}

/// A signed session header: everything the receiver needs to derive the session secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionHeader {
    /// Messages or stream.
    pub kind: SessionKind,
    /// Random session id; also the stream id of a stream session.
    pub session_id: Id128,
    /// The sender's wallet hotkey (signs this header).
    pub sender: Hotkey,
    /// The intended recipient's wallet hotkey.
    pub recipient: Hotkey,
    /// The recipient prekey the session is sealed to.
    pub prekey: [u8; 32],
    /// Subnet of a stream; 0 for message sessions.
    pub netuid: u16,
    /// Sender's clock at creation, unix seconds.
    pub created_at: u64,
    /// HPKE encapsulated key.
    pub enc: [u8; 32],
    /// sr25519 signature by `sender` over `SESSION_DOMAIN || header without signature`.
    pub signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for SessionHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionHeader")
            .field("kind", &self.kind)
            .field("session_id", &self.session_id)
            .field("sender", &self.sender)
            .field("recipient", &self.recipient)
            .field("netuid", &self.netuid)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Why a session header was refused. Each variant is a separate counter on the receiver; none of
/// them is ever sent back to the peer (it only learns "refused", or "stale prekey" with the fresh
/// binding, which it needs to recover).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
#[non_exhaustive]
pub enum SessionReject {
    /// Bytes that are not a header, an unknown version, or a kind the channel does not carry.
    #[error("malformed session header")]
    Malformed,
    /// Addressed to another hotkey than this node's.
    #[error("session header is addressed to another node")]
    WrongRecipient,
    /// Claims a sender other than the hotkey of the connection's verified binding.
    #[error("session header names another sender than the connection's binding")]
    SenderMismatch,
    /// The signature does not verify: the header was altered or forged.
    #[error("session header signature does not verify")]
    BadSignature,
    /// `created_at` is older than the replay window, or the session id was seen before.
    #[error("session header is a replay (too old or already seen)")]
    Replay,
    /// `created_at` is further in the future than the tolerated clock skew.
    #[error("session header is from the future")]
    FromFuture,
    /// The prekey it is sealed to is not one this node holds (rotated out and erased, or never ours).
    #[error("session is sealed to a prekey this node no longer holds")]
    StalePrekey,
    /// Decapsulation failed (an invalid encapsulated key).
    #[error("session key could not be derived")]
    Undecryptable,
}

impl SessionReject {
    /// A stable snake_case name for counters.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionReject::Malformed => "malformed",
            SessionReject::WrongRecipient => "wrong_recipient",
            SessionReject::SenderMismatch => "sender_mismatch",
            SessionReject::BadSignature => "bad_header",
            SessionReject::Replay => "replay",
            SessionReject::FromFuture => "from_future",
            SessionReject::StalePrekey => "stale_prekey",
            SessionReject::Undecryptable => "undecryptable",
        }
    }
}

/// Errors on the sending side of the envelope layer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The recipient's prekey is not a usable X25519 public key.
    #[error("the recipient's prekey is not a usable X25519 key")]
    BadPrekey,
    /// A ratchet reached its message limit; a new session is required.
    #[error("session exhausted; start a new one")]
    Exhausted,
    /// The AEAD refused to seal (never expected with valid inputs).
    #[error("sealing failed")]
    Seal,
}

/// The secret shared by the two ends of a session. Zeroized on drop, redacted in `Debug`.
pub struct SessionSecret(Zeroizing<[u8; 32]>);

impl fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecret(<redacted>)")
    }
}

impl SessionSecret {
    /// The raw 32 bytes, for handing the secret to the ratchet or stream sealer.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Wraps raw bytes (e.g. received from the identity actor).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SessionSecret(Zeroizing::new(bytes))
    }
}

/// An X25519 prekey pair. The private half zeroizes on drop.
pub struct Prekey {
    public: [u8; 32],
    secret: <Kem as hpke::Kem>::PrivateKey,
}

impl fmt::Debug for Prekey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Prekey(public: {}, secret: <redacted>)",
            hex32(&self.public)
        )
    }
}

impl Prekey {
    /// Derives the pair from a 32-byte seed (HPKE `DeriveKeyPair`).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let (secret, public) = Kem::derive_keypair(seed);
        let mut out = [0u8; 32];
        out.copy_from_slice(&public.to_bytes());
        Prekey {
            public: out,
            secret,
        }
    }

    /// The public key, as published in the binding record.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }
}

fn hex32(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl SessionHeader {
    fn write_fields(&self, w: &mut Writer) {
        w.u8(SESSION_VERSION)
            .u8(self.kind.code())
            .put(&self.session_id.0)
            .put(&self.sender.0)
            .put(&self.recipient.0)
            .put(&self.prekey)
            .u16(self.netuid)
            .u64(self.created_at);
    }

    /// The HPKE `info` string: domain tag and every field but `enc` and the signature.
    fn hpke_info(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(SESSION_DOMAIN.len() + SESSION_HEADER_LEN);
        w.put(SESSION_DOMAIN);
        self.write_fields(&mut w);
        w.into_vec()
    }

    /// The bytes the sender signs: domain tag, every field and `enc`.
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(SESSION_DOMAIN.len() + SESSION_HEADER_LEN);
        w.put(SESSION_DOMAIN);
        self.write_fields(&mut w);
        w.put(&self.enc);
        w.into_vec()
    }

    /// Appends the wire form to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = Writer::with_capacity(SESSION_HEADER_LEN);
        self.write_fields(&mut w);
        w.put(&self.enc).put(&self.signature);
        out.extend_from_slice(&w.into_vec());
    }

    /// The wire form ([`SESSION_HEADER_LEN`] bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(SESSION_HEADER_LEN);
        self.encode_into(&mut v);
        v
    }

    /// Reads a header from the front of `r`.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != SESSION_VERSION {
            return Err(DecodeError::invalid(
                "session.version",
                format!("unsupported version {version}; this build reads {SESSION_VERSION}"),
            ));
        }
        let kind = SessionKind::from_code(r.u8()?)
            .ok_or_else(|| DecodeError::invalid("session.kind", "unknown session kind"))?;
        Ok(SessionHeader {
            kind,
            session_id: Id128(r.array()?),
            sender: Hotkey(r.array()?),
            recipient: Hotkey(r.array()?),
            prekey: r.array()?,
            netuid: r.u16()?,
            created_at: r.u64()?,
            enc: r.array()?,
            signature: r.array()?,
        })
    }

    /// Decodes exactly one header. Does not verify it: call [`SessionHeader::check`].
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] when cut short, [`DecodeError::Invalid`] for an unknown version
    /// or kind, or trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let h = Self::read(&mut r)?;
        r.finish("session")?;
        Ok(h)
    }

    /// The receiver's checks before any key is used, cheapest first: recipient, sender against
    /// the connection's binding, signature, then the time window (`window` seconds back,
    /// [`MAX_CLOCK_SKEW_SECS`] ahead). The caller then checks the session id against its seen-set
    /// and opens the header with the prekey it names.
    ///
    /// # Errors
    /// The first check that fails.
    pub fn check(
        &self,
        me: &Hotkey,
        expected_sender: &Hotkey,
        kind: SessionKind,
        now: u64,
        window: u64,
    ) -> Result<(), SessionReject> {
        if self.kind != kind {
            return Err(SessionReject::Malformed);
        }
        if self.recipient != *me {
            return Err(SessionReject::WrongRecipient);
        }
        if self.sender != *expected_sender {
            return Err(SessionReject::SenderMismatch);
        }
        if !self.sender.verify(&self.signing_payload(), &self.signature) {
            return Err(SessionReject::BadSignature);
        }
        if self.created_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(SessionReject::FromFuture);
        }
        if self.created_at.saturating_add(window) < now {
            return Err(SessionReject::Replay);
        }
        Ok(())
    }

    /// Derives the session secret with the prekey the header names. The caller picks `prekey` by
    /// [`SessionHeader::prekey`] and reports [`SessionReject::StalePrekey`] when it has none.
    ///
    /// # Errors
    /// [`SessionReject::StalePrekey`] when `prekey` is not the one named;
    /// [`SessionReject::Undecryptable`] when decapsulation fails.
    pub fn open(&self, prekey: &Prekey) -> Result<SessionSecret, SessionReject> {
        if prekey.public != self.prekey {
            return Err(SessionReject::StalePrekey);
        }
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&self.enc)
            .map_err(|_| SessionReject::Undecryptable)?;
        let ctx = hpke::setup_receiver::<ExportOnlyAead, HkdfSha256, Kem>(
            &OpModeR::Base,
            &prekey.secret,
            &enc,
            &self.hpke_info(),
        )
        .map_err(|_| SessionReject::Undecryptable)?;
        let mut out = Zeroizing::new([0u8; 32]);
        ctx.export(export_label(self.kind), out.as_mut())
            .map_err(|_| SessionReject::Undecryptable)?;
        Ok(SessionSecret(out))
    }
}

fn export_label(kind: SessionKind) -> &'static [u8] {
    match kind {
        SessionKind::Messages => EXPORT_MESSAGES,
        SessionKind::Stream => EXPORT_STREAM,
    }
}

/// What the sender asks for when it seals a session.
#[derive(Debug, Clone)]
pub struct SessionRequest {
    /// Messages or stream.
    pub kind: SessionKind,
    /// The recipient's hotkey.
    pub recipient: Hotkey,
    /// The recipient's current prekey, taken from its verified binding.
    pub prekey: [u8; 32],
    /// Stream subnet (0 for message sessions).
    pub netuid: u16,
}

/// Seals a new session to `req.recipient`'s prekey and signs the header with `signer`.
///
/// # Errors
/// [`EnvelopeError::BadPrekey`] when the prekey is unusable (e.g. a low-order point).
pub fn seal_session(
    signer: &sr25519::Pair,
    req: &SessionRequest,
    now: u64,
    rng: &mut impl CryptoRng,
) -> Result<(SessionHeader, SessionSecret), EnvelopeError> {
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&req.prekey)
        .map_err(|_| EnvelopeError::BadPrekey)?;
    let mut header = SessionHeader {
        kind: req.kind,
        session_id: Id128::random(rng),
        sender: Hotkey::of(signer),
        recipient: req.recipient,
        prekey: req.prekey,
        netuid: req.netuid,
        created_at: now,
        enc: [0; 32],
        signature: [0; SIGNATURE_LEN],
    };
    let (enc, ctx) = hpke::setup_sender_with_rng::<ExportOnlyAead, HkdfSha256, Kem>(
        &OpModeS::Base,
        &pk,
        &header.hpke_info(),
        rng,
    )
    .map_err(|_| EnvelopeError::BadPrekey)?;
    header.enc.copy_from_slice(&enc.to_bytes());
    header.signature = sign(signer, &header.signing_payload());
    let mut out = Zeroizing::new([0u8; 32]);
    ctx.export(export_label(req.kind), out.as_mut())
        .map_err(|_| EnvelopeError::Seal)?;
    Ok((header, SessionSecret(out)))
}

/// One step of the KDF chain: returns the message key and advances `chain` in place.
fn ratchet_step(chain: &mut [u8; 32]) -> Zeroizing<[u8; 32]> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, chain.as_slice());
    let mut mk = Zeroizing::new([0u8; 32]);
    mk.copy_from_slice(hmac::sign(&key, &[1]).as_ref());
    chain.copy_from_slice(hmac::sign(&key, &[2]).as_ref());
    mk
}

/// Additional data of message `counter` in `session`.
fn message_aad(session: &Id128, counter: u64) -> [u8; ID_LEN + 8 + 4] {
    let mut aad = [0u8; ID_LEN + 8 + 4];
    aad[..ID_LEN].copy_from_slice(&session.0);
    aad[ID_LEN..ID_LEN + 8].copy_from_slice(&counter.to_le_bytes());
    aad[ID_LEN + 8..].copy_from_slice(b"hmsg");
    aad
}

fn aes_key(bytes: &[u8; 32]) -> Result<LessSafeKey, EnvelopeError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| EnvelopeError::Seal)
}

/// Upper bound on messages in one session: far beyond any configured rekey limit, and it keeps
/// counters from ever wrapping.
pub const MAX_SESSION_MESSAGES: u64 = 1 << 40;

/// The sending half of a message session.
pub struct SendRatchet {
    session_id: Id128,
    chain: Zeroizing<[u8; 32]>,
    next: u64,
}

impl fmt::Debug for SendRatchet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendRatchet")
            .field("session_id", &self.session_id)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl SendRatchet {
    /// Starts the chain from a session secret (consumed: it is not needed again).
    pub fn new(session_id: Id128, secret: SessionSecret) -> Self {
        SendRatchet {
            session_id,
            chain: Zeroizing::new(*secret.expose()),
            next: 0,
        }
    }

    /// The session this ratchet belongs to.
    pub fn session_id(&self) -> Id128 {
        self.session_id
    }

    /// Messages sealed so far (the next counter).
    pub fn sealed(&self) -> u64 {
        self.next
    }

    /// Seals `buf` in place (plaintext in, ciphertext‖tag out) under the next message key, which
    /// is erased on return. Returns the counter the receiver needs.
    ///
    /// # Errors
    /// [`EnvelopeError::Exhausted`] past [`MAX_SESSION_MESSAGES`].
    pub fn seal(&mut self, buf: &mut Vec<u8>) -> Result<u64, EnvelopeError> {
        if self.next >= MAX_SESSION_MESSAGES {
            return Err(EnvelopeError::Exhausted);
        }
        let counter = self.next;
        let mk = ratchet_step(&mut self.chain);
        self.next += 1;
        let key = aes_key(&mk)?;
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0u8; 12]),
                Aad::from(message_aad(&self.session_id, counter)),
                buf.as_mut_slice(),
            )
            .map_err(|_| EnvelopeError::Seal)?;
        buf.extend_from_slice(tag.as_ref());
        Ok(counter)
    }
}

/// Why an in-session message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RatchetError {
    /// The counter was already used (a replayed or duplicated frame).
    #[error("message counter already used (replay)")]
    Replay,
    /// The counter skips ahead; frames arrive in order on one substream, so this is tampering.
    #[error("message counter out of order")]
    OutOfOrder,
    /// Authentication failed: the ciphertext or its framing was altered.
    #[error("message does not authenticate")]
    BadCiphertext,
}

/// The receiving half of a message session.
pub struct RecvRatchet {
    session_id: Id128,
    chain: Zeroizing<[u8; 32]>,
    next: u64,
}

impl fmt::Debug for RecvRatchet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvRatchet")
            .field("session_id", &self.session_id)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl RecvRatchet {
    /// Starts the chain from a session secret.
    pub fn new(session_id: Id128, secret: SessionSecret) -> Self {
        RecvRatchet {
            session_id,
            chain: Zeroizing::new(*secret.expose()),
            next: 0,
        }
    }

    /// The session this ratchet belongs to.
    pub fn session_id(&self) -> Id128 {
        self.session_id
    }

    /// The counter expected next.
    pub fn expected(&self) -> u64 {
        self.next
    }

    /// Steps past `counter` without decrypting (the frame was refused for its size); keeps both
    /// ends of the chain in step.
    ///
    /// # Errors
    /// As [`RecvRatchet::open`] for the counter checks.
    pub fn skip(&mut self, counter: u64) -> Result<(), RatchetError> {
        self.check_counter(counter)?;
        drop(ratchet_step(&mut self.chain));
        self.next += 1;
        Ok(())
    }

    fn check_counter(&self, counter: u64) -> Result<(), RatchetError> {
        if counter < self.next {
            return Err(RatchetError::Replay);
        }
        if counter > self.next {
            return Err(RatchetError::OutOfOrder);
        }
        Ok(())
    }

    /// Opens message `counter` in place (ciphertext‖tag in, plaintext out). The chain advances
    /// only when the message authenticates, and the message key is erased either way.
    ///
    /// # Errors
    /// [`RatchetError`]: replayed or out-of-order counter, or a ciphertext that fails to
    /// authenticate.
    pub fn open(&mut self, counter: u64, buf: &mut Vec<u8>) -> Result<(), RatchetError> {
        self.check_counter(counter)?;
        if buf.len() < TAG_LEN {
            return Err(RatchetError::BadCiphertext);
        }
        let mut chain = self.chain.clone();
        let mk = ratchet_step(&mut chain);
        let key = aes_key(&mk).map_err(|_| RatchetError::BadCiphertext)?;
        let len = key
            .open_in_place(
                Nonce::assume_unique_for_key([0u8; 12]),
                Aad::from(message_aad(&self.session_id, counter)),
                buf.as_mut_slice(),
            )
            .map_err(|_| RatchetError::BadCiphertext)?
            .len();
        buf.truncate(len);
        self.chain.copy_from_slice(chain.as_ref());
        chain.zeroize();
        self.next += 1;
        Ok(())
    }
}

/// Length of the fixed part of a [`MessageBody`] before the payload.
pub const BODY_HEADER_LEN: usize = ID_LEN + 2 + 8 + 8;

/// The plaintext of one message, sealed by the ratchet.
///
/// ```text
/// [16]  message id (random, de-duplicated by the receiver)
/// u16   netuid
/// u64   sent_at (unix seconds, when this copy was sealed)
/// u64   expires_at (unix seconds; the receiver refuses it after this, and keeps the id until then)
/// ...   payload
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageBody {
    /// Message id.
    pub id: Id128,
    /// Subnet the message belongs to.
    pub netuid: u16,
    /// When this copy was sealed.
    pub sent_at: u64,
    /// End of the message's life.
    pub expires_at: u64,
    /// Application bytes.
    pub payload: Vec<u8>,
}

impl MessageBody {
    /// Writes the body header followed by `payload` into `out` (cleared first), ready to seal in
    /// place.
    pub fn encode_parts(
        id: &Id128,
        netuid: u16,
        sent_at: u64,
        expires_at: u64,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) {
        out.clear();
        out.reserve(BODY_HEADER_LEN + payload.len() + TAG_LEN);
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&netuid.to_le_bytes());
        out.extend_from_slice(&sent_at.to_le_bytes());
        out.extend_from_slice(&expires_at.to_le_bytes());
        out.extend_from_slice(payload);
    }

    /// Encodes into a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        Self::encode_parts(
            &self.id,
            self.netuid,
            self.sent_at,
            self.expires_at,
            &self.payload,
            &mut v,
        );
        v
    }

    /// Decodes an opened plaintext, taking ownership of the buffer (the payload is moved, not
    /// copied, past the fixed header).
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] when shorter than the fixed header.
    pub fn decode(mut buf: Vec<u8>) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&buf);
        let id = Id128(r.array()?);
        let netuid = r.u16()?;
        let sent_at = r.u64()?;
        let expires_at = r.u64()?;
        buf.drain(..BODY_HEADER_LEN);
        Ok(MessageBody {
            id,
            netuid,
            sent_at,
            expires_at,
            payload: buf,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hpke::rand_core::{Infallible, TryCryptoRng, TryRng};
    use proptest::prelude::*;
    use sp_core::Pair as _;

    pub(crate) const NOW: u64 = 1_800_000_000;

    /// A deterministic generator for tests (SplitMix64); never used outside tests.
    pub(crate) struct TestRng(pub u64);
    impl TryRng for TestRng {
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
    impl TryCryptoRng for TestRng {}

    pub(crate) fn pair(uri: &str) -> sr25519::Pair {
        sr25519::Pair::from_string(uri, None).unwrap()
    }

    pub(crate) fn prekey(n: u8) -> Prekey {
        Prekey::from_seed(&[n; 32])
    }

    pub(crate) fn session(kind: SessionKind) -> (SessionHeader, SessionSecret) {
        let bob = Hotkey::of(&pair("//Bob"));
        seal_session(
            &pair("//Alice"),
            &SessionRequest {
                kind,
                recipient: bob,
                prekey: prekey(7).public(),
                netuid: 0,
            },
            NOW,
            &mut TestRng(1),
        )
        .unwrap()
    }

    #[test]
    fn header_round_trips_and_opens_to_the_same_secret() {
        let (h, secret) = session(SessionKind::Messages);
        let bytes = h.encode();
        assert_eq!(bytes.len(), SESSION_HEADER_LEN);
        let back = SessionHeader::decode(&bytes).unwrap();
        assert_eq!(back, h);
        let alice = Hotkey::of(&pair("//Alice"));
        let bob = Hotkey::of(&pair("//Bob"));
        assert_eq!(
            back.check(&bob, &alice, SessionKind::Messages, NOW + 5, 600),
            Ok(())
        );
        let opened = back.open(&prekey(7)).unwrap();
        assert_eq!(opened.expose(), secret.expose());
        // A stream session from the same inputs derives another secret (exporter labels differ).
        let (_, stream_secret) = session(SessionKind::Stream);
        assert_ne!(stream_secret.expose(), secret.expose());
    }

    #[test]
    fn every_header_check_has_its_own_reason() {
        let (h, _) = session(SessionKind::Messages);
        let alice = Hotkey::of(&pair("//Alice"));
        let bob = Hotkey::of(&pair("//Bob"));
        let carol = Hotkey::of(&pair("//Carol"));
        let k = SessionKind::Messages;
        assert_eq!(
            h.check(&carol, &alice, k, NOW, 600),
            Err(SessionReject::WrongRecipient)
        );
        assert_eq!(
            h.check(&bob, &carol, k, NOW, 600),
            Err(SessionReject::SenderMismatch)
        );
        assert_eq!(
            h.check(&bob, &alice, SessionKind::Stream, NOW, 600),
            Err(SessionReject::Malformed)
        );
        assert_eq!(
            h.check(&bob, &alice, k, NOW + 601, 600),
            Err(SessionReject::Replay)
        );
        assert_eq!(
            h.check(&bob, &alice, k, NOW - MAX_CLOCK_SKEW_SECS - 1, 600),
            Err(SessionReject::FromFuture)
        );
        // Tampering with any signed field, the encapsulated key or the signature breaks it.
        let mut t = h.clone();
        t.netuid = 9;
        assert_eq!(
            t.check(&bob, &alice, k, NOW, 600),
            Err(SessionReject::BadSignature)
        );
        let mut t = h.clone();
        t.enc[3] ^= 1;
        assert_eq!(
            t.check(&bob, &alice, k, NOW, 600),
            Err(SessionReject::BadSignature)
        );
        let mut t = h.clone();
        t.signature[0] ^= 1;
        assert_eq!(
            t.check(&bob, &alice, k, NOW, 600),
            Err(SessionReject::BadSignature)
        );
        // Another prekey: refused before any decapsulation.
        assert!(matches!(
            h.open(&prekey(8)),
            Err(SessionReject::StalePrekey)
        ));
    }

    #[test]
    fn a_header_altered_after_sealing_derives_another_secret() {
        // Even without the signature check, the HPKE info binds the header: a receiver that opens
        // a modified header gets a different secret and every message then fails to authenticate.
        let (h, secret) = session(SessionKind::Messages);
        let mut t = h.clone();
        t.created_at += 1;
        let other = t.open(&prekey(7)).unwrap();
        assert_ne!(other.expose(), secret.expose());
    }

    #[test]
    fn ratchet_round_trip_replay_and_tamper() {
        let (h, s) = session(SessionKind::Messages);
        let r = h.open(&prekey(7)).unwrap();
        let mut tx = SendRatchet::new(h.session_id, s);
        let mut rx = RecvRatchet::new(h.session_id, r);
        let mut frames = Vec::new();
        for i in 0..5u8 {
            let mut buf = vec![i; 100 + usize::from(i)];
            let c = tx.seal(&mut buf).unwrap();
            assert_eq!(c, u64::from(i));
            assert_eq!(buf.len(), 100 + usize::from(i) + TAG_LEN);
            frames.push((c, buf));
        }
        // Out of order is refused and does not advance.
        let mut b = frames[1].1.clone();
        assert_eq!(rx.open(1, &mut b), Err(RatchetError::OutOfOrder));
        // A flipped bit is refused and does not advance.
        let mut b = frames[0].1.clone();
        b[10] ^= 4;
        assert_eq!(rx.open(0, &mut b), Err(RatchetError::BadCiphertext));
        // The right order opens everything.
        for (i, (c, f)) in frames.iter().enumerate() {
            let mut b = f.clone();
            rx.open(*c, &mut b).unwrap();
            assert_eq!(b, vec![i as u8; 100 + i]);
        }
        // A replayed frame is refused.
        let mut b = frames[2].1.clone();
        assert_eq!(rx.open(2, &mut b), Err(RatchetError::Replay));
        // A frame moved to another counter does not authenticate (the counter is in the AAD).
        let mut tx2_buf = vec![9u8; 10];
        let c = tx.seal(&mut tx2_buf).unwrap();
        assert_eq!(c, 5);
        let mut moved = frames[4].1.clone();
        assert_eq!(rx.open(5, &mut moved), Err(RatchetError::BadCiphertext));
        rx.open(5, &mut tx2_buf).unwrap();
        assert_eq!(tx2_buf, vec![9u8; 10]);
    }

    #[test]
    fn skipping_keeps_both_chains_in_step() {
        let (h, s) = session(SessionKind::Messages);
        let mut tx = SendRatchet::new(h.session_id, s);
        let mut rx = RecvRatchet::new(h.session_id, h.open(&prekey(7)).unwrap());
        let mut a = b"too big".to_vec();
        let ca = tx.seal(&mut a).unwrap();
        let mut b = b"next".to_vec();
        let cb = tx.seal(&mut b).unwrap();
        rx.skip(ca).unwrap();
        rx.open(cb, &mut b).unwrap();
        assert_eq!(b, b"next");
    }

    #[test]
    fn body_round_trips() {
        let body = MessageBody {
            id: Id128([3; 16]),
            netuid: 42,
            sent_at: NOW,
            expires_at: NOW + 60,
            payload: b"weights".to_vec(),
        };
        assert_eq!(MessageBody::decode(body.encode()).unwrap(), body);
        assert!(matches!(
            MessageBody::decode(vec![0; BODY_HEADER_LEN - 1]),
            Err(DecodeError::Incomplete { .. })
        ));
    }

    #[test]
    fn ids_print_and_parse_as_hex() {
        let id = Id128([0xab; 16]);
        assert_eq!(Id128::from_hex(&id.to_hex()), Ok(id));
        assert!(Id128::from_hex("xyz").is_err());
        assert!(Id128::from_hex(&"g".repeat(32)).is_err());
    }

    proptest! {
        #[test]
        fn any_flipped_header_bit_is_refused(idx in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (h, _) = session(SessionKind::Messages);
            let alice = Hotkey::of(&pair("//Alice"));
            let bob = Hotkey::of(&pair("//Bob"));
            let mut bytes = h.encode();
            let i = idx.index(bytes.len());
            bytes[i] ^= 1 << bit;
            if let Ok(t) = SessionHeader::decode(&bytes) {
                prop_assert!(t.check(&bob, &alice, SessionKind::Messages, NOW, 600).is_err());
            }
        }

        #[test]
        fn any_flipped_ciphertext_bit_is_refused(
            len in 0usize..300, idx in any::<prop::sample::Index>(), bit in 0u8..8
        ) {
            let (h, s) = session(SessionKind::Messages);
            let mut tx = SendRatchet::new(h.session_id, s);
            let mut rx = RecvRatchet::new(h.session_id, h.open(&prekey(7)).unwrap());
            let mut buf = vec![0x5a; len];
            let c = tx.seal(&mut buf).unwrap();
            let i = idx.index(buf.len());
            buf[i] ^= 1 << bit;
            prop_assert_eq!(rx.open(c, &mut buf), Err(RatchetError::BadCiphertext));
        }

        #[test]
        fn header_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = SessionHeader::decode(&bytes);
        }
    }
}
