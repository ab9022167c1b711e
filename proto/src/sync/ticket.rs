//! The access ticket: everything a receiver needs to fetch, verify and decrypt one transfer.
//!
//! 1. The sender issues it ([`Ticket::issue`]) once the payload is where the receiver can pull
//!    it: the transfer id, the manifest root and layout, where to fetch (its own node, and/or
//!    presigned URLs), an optional file name, a validity window, and the transfer's
//!    [`ContentKey`] sealed to the receiver.
//! 2. Key sealing reuses the end-to-end layer as is: a stream-kind HPKE session header
//!    ([`seal_session`]) to the receiver's X25519 prekey, with a fresh ephemeral; the content key
//!    is wrapped with AES-256-GCM under `HMAC-SHA256(session secret, "hermes/sync/v1 content key
//!    wrap")`, the additional data binding the transfer id and root. Only the holder of that
//!    prekey's private half can unwrap it ([`Ticket::open_key`]).
//! 3. The sender's hotkey signs `TICKET_DOMAIN ‖ body` (sr25519, substrate context). The domain
//!    tag keeps a ticket signature from ever verifying as a binding, session header or extrinsic.
//! 4. The receiver decodes the ticket (bytes, or the one-line string form), then
//!    [`Ticket::verify`] checks, in order: shape, addressee, signature, key slot, validity window.
//!    Each failure has its own [`TicketError`] variant.
//!
//! # Encoding (version 1, little-endian)
//! ```text
//! u8      version = 1
//! [16]    transfer id
//! [32]    sender hotkey (signs the ticket)
//! [32]    receiver hotkey
//! u16     netuid
//! u64     issued_at (unix seconds)
//! u64     expires_at (unix seconds, exclusive)
//! u8      cipher
//! u64     payload size
//! u32     chunk size
//! [32]    manifest root
//! u8      has name (0 or 1); if 1: u16 length (1..=255) + UTF-8 file name
//! u8      location count (1..=8), then each location:
//!           u8 kind 1 = peer:      u16+N peer id (1..=128), u8 count (0..=16),
//!                                  count × u16+N binary multiaddr (1..=256)
//!           u8 kind 2 = presigned: u16+N manifest URL, u16+N payload URL (1..=4096, http(s))
//! [220]   key header (an envelope session header, kind = stream)
//! [48]    wrapped content key (ciphertext ‖ tag)
//! [64]    signature (sender hotkey over TICKET_DOMAIN ‖ all of the above)
//! ```
//!
//! # String form
//! `hermes-ticket1:` followed by the encoding in lower-case base32 (RFC 4648 alphabet `a-z2-7`,
//! no padding), on one line. Base32 rather than base58: base58 is one big number, so a string
//! cut short decodes to entirely different bytes, while base32 maps every 8 characters to 5
//! bytes, so a cut string decodes to a *prefix* of the ticket and is reported as truncated. It is
//! also case-insensitive and alphanumeric (a double-click selects it). No separate checksum:
//! the signature already detects any change. Whitespace anywhere is ignored, because terminals
//! and chat clients wrap long lines when they are copied.

use super::layout::Layout;
use super::manifest::{Cipher, Hash, HASH_LEN};
use super::seal::{ContentKey, CONTENT_KEY_LEN};
use crate::codec::{DecodeError, Reader, Writer};
use crate::envelope::{
    seal_session, Id128, Prekey, SessionHeader, SessionKind, SessionRequest, ID_LEN,
    SESSION_HEADER_LEN, TAG_LEN,
};
use crate::filename::MAX_NAME_LEN;
use crate::hotkey::{sign, Hotkey, DEFAULT_SS58_PREFIX, SIGNATURE_LEN};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hmac;
use hpke::rand_core::CryptoRng;
use sp_core::sr25519;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;
use zeroize::Zeroizing;

/// Domain tag of ticket signatures.
pub const TICKET_DOMAIN: &[u8] = b"hermes/sync-ticket/v1";
/// The only ticket version this build produces and accepts.
pub const TICKET_VERSION: u8 = 1;
/// Prefix of the string form; the digit is the ticket version.
pub const TICKET_PREFIX: &str = "hermes-ticket1:";
/// Locations per ticket: a few nodes and stores, never a list that grows with the payload.
pub const MAX_LOCATIONS: usize = 8;
/// Addresses per peer location.
pub const MAX_ADDRS: usize = 16;
/// Length of one binary multiaddr.
pub const MAX_ADDR_LEN: usize = 256;
/// Length of a peer id (a libp2p multihash), as in binding records.
pub const MAX_PEER_ID_LEN: usize = 128;
/// Length of one presigned URL (SigV4 URLs with a session token run to about 2 KiB).
pub const MAX_URL_LEN: usize = 4096;
/// Largest encoded ticket, checked before decoding.
pub const MAX_TICKET_LEN: usize = 32 * 1024;
/// Longest string form accepted (base32 of [`MAX_TICKET_LEN`] bytes, plus the prefix).
pub const MAX_TICKET_STR_LEN: usize = TICKET_PREFIX.len() + MAX_TICKET_LEN.div_ceil(5) * 8;
/// Longest validity window: a leaked ticket must not stay usable for long.
pub const MAX_TICKET_LIFETIME_SECS: u64 = 30 * 24 * 3600;
/// Clock skew tolerated on `issued_at`.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// Length of the wrapped content key.
pub const WRAPPED_KEY_LEN: usize = CONTENT_KEY_LEN + TAG_LEN;
/// Label deriving the wrapping key from the key header's secret.
const WRAP_LABEL: &[u8] = b"hermes/sync/v1 content key wrap";

const KIND_PEER: u8 = 1;
const KIND_PRESIGNED: u8 = 2;

/// Where the sealed chunks (and the manifest) can be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A Hermes node serving the transfer over `/hermes/sync/1` (the sender's, by default).
    Peer {
        /// libp2p peer id bytes (multihash).
        peer_id: Vec<u8>,
        /// Binary multiaddrs to dial it at (may be empty: look it up in the DHT).
        addrs: Vec<Vec<u8>>,
    },
    /// An S3-compatible store: presigned GET URLs, fetched with ranged GETs.
    Presigned {
        /// URL of the manifest object.
        manifest_url: String,
        /// URL of the sealed-payload object (all sealed chunks back to back).
        payload_url: String,
    },
}

/// The statement the sender signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketBody {
    /// Random id of the transfer; bound into every chunk's additional data.
    pub transfer_id: Id128,
    /// The sender's hotkey, which signs the ticket.
    pub sender: Hotkey,
    /// The only hotkey the ticket is for.
    pub receiver: Hotkey,
    /// Subnet the transfer belongs to.
    pub netuid: u16,
    /// Start of validity, unix seconds.
    pub issued_at: u64,
    /// End of validity (exclusive), unix seconds.
    pub expires_at: u64,
    /// Payload size and chunk size.
    pub layout: Layout,
    /// How chunks are sealed.
    pub cipher: Cipher,
    /// Root of the manifest ([`super::manifest::Manifest::root`]).
    pub root: Hash,
    /// The name the sender gives the file (its word, not a path: sanitize before use).
    pub file_name: Option<String>,
    /// Where to fetch from, in the sender's order of preference.
    pub locations: Vec<Location>,
    /// HPKE session header sealing the wrapping key to the receiver's prekey.
    pub key_header: SessionHeader,
    /// The content key, wrapped under the key header's secret.
    pub wrapped_key: [u8; WRAPPED_KEY_LEN],
}

/// A signed ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The signed statement.
    pub body: TicketBody,
    /// sr25519 signature by `body.sender` over `TICKET_DOMAIN ‖ body`.
    pub signature: [u8; SIGNATURE_LEN],
}

/// Why a ticket was refused, or could not be issued or opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TicketError {
    /// A field breaks a structural rule (counts, lengths, window).
    #[error("malformed ticket: {0}")]
    Malformed(String),
    /// The ticket names another receiver.
    #[error("ticket is for {receiver}, not for this node")]
    NotForMe {
        /// SS58 of the receiver the ticket names.
        receiver: String,
    },
    /// The signature does not verify under the sender it names: altered after signing, or forged.
    #[error("ticket signature does not verify (altered or forged; copy it again)")]
    BadSignature,
    /// Validly signed, but its key slot belongs to another sender, receiver, subnet or time.
    #[error("ticket's sealed key does not belong to it (tampered)")]
    Tampered,
    /// `now >= expires_at`.
    #[error("ticket expired at {expires_at} (now {now}); ask the sender for a new one")]
    Expired {
        /// End of validity.
        expires_at: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// `issued_at` is further ahead than the tolerated clock skew.
    #[error("ticket is not valid before {issued_at} (now {now}); check the clock")]
    NotYetValid {
        /// Start of validity.
        issued_at: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// The key is sealed to a prekey this node no longer holds (rotated out and erased).
    #[error("ticket is sealed to a prekey this node no longer holds; ask for a new ticket")]
    StalePrekey,
    /// The content key could not be unwrapped.
    #[error("ticket's content key could not be opened")]
    Undecryptable,
    /// Issuing: the receiver's prekey is not a usable X25519 key.
    #[error("the receiver's prekey is not a usable X25519 key")]
    BadPrekey,
}

/// Why a ticket string was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TicketParseError {
    /// The text does not start with `hermes-ticket`.
    #[error("not a Hermes ticket (it starts with `{TICKET_PREFIX}`)")]
    NotATicket,
    /// A ticket of another version.
    #[error("ticket version `{0}` is not supported; this build reads `{TICKET_PREFIX}`")]
    UnsupportedVersion(String),
    /// Longer than any ticket can be.
    #[error("ticket is {len} bytes long; at most {MAX_TICKET_STR_LEN}")]
    TooLong {
        /// Length of the text given, in bytes.
        len: usize,
    },
    /// A character outside the base32 alphabet.
    #[error("ticket has an invalid character {character:?} at position {index}")]
    BadCharacter {
        /// The character.
        character: char,
        /// Its position after the prefix.
        index: usize,
    },
    /// The text decodes but ends early: part of it was lost when copying.
    #[error("ticket is truncated (copy the whole line)")]
    Truncated,
    /// The text decodes to bytes that are not a ticket.
    #[error("ticket is damaged: {0}")]
    Invalid(DecodeError),
}

/// What the sender puts in a ticket.
#[derive(Debug, Clone)]
pub struct TicketRequest {
    /// The transfer's id (the one its chunks were sealed with).
    pub transfer_id: Id128,
    /// The receiver's hotkey.
    pub receiver: Hotkey,
    /// The receiver's current prekey, from its verified binding.
    pub receiver_prekey: [u8; 32],
    /// Subnet of the transfer.
    pub netuid: u16,
    /// End of validity, unix seconds.
    pub expires_at: u64,
    /// Payload layout.
    pub layout: Layout,
    /// Chunk cipher.
    pub cipher: Cipher,
    /// Manifest root.
    pub root: Hash,
    /// Optional file name.
    pub file_name: Option<String>,
    /// Where to fetch.
    pub locations: Vec<Location>,
}

fn shape_error(msg: impl Into<String>) -> TicketError {
    TicketError::Malformed(msg.into())
}

fn check_url(url: &str) -> Result<(), String> {
    if url.is_empty() || url.len() > MAX_URL_LEN {
        return Err(format!(
            "URL of {} bytes; expected 1..={MAX_URL_LEN}",
            url.len()
        ));
    }
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err("URL is not http(s)".into());
    }
    if url.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err("URL has spaces, control or non-ASCII characters".into());
    }
    Ok(())
}

impl Location {
    fn check(&self) -> Result<(), String> {
        match self {
            Location::Peer { peer_id, addrs } => {
                if peer_id.is_empty() || peer_id.len() > MAX_PEER_ID_LEN {
                    return Err(format!(
                        "peer id of {} bytes; expected 1..={MAX_PEER_ID_LEN}",
                        peer_id.len()
                    ));
                }
                if addrs.len() > MAX_ADDRS {
                    return Err(format!("{} addresses; at most {MAX_ADDRS}", addrs.len()));
                }
                if let Some(a) = addrs
                    .iter()
                    .find(|a| a.is_empty() || a.len() > MAX_ADDR_LEN)
                {
                    return Err(format!(
                        "address of {} bytes; expected 1..={MAX_ADDR_LEN}",
                        a.len()
                    ));
                }
                Ok(())
            }
            Location::Presigned {
                manifest_url,
                payload_url,
            } => {
                check_url(manifest_url)?;
                check_url(payload_url)
            }
        }
    }

    fn encoded_len(&self) -> usize {
        1 + match self {
            Location::Peer { peer_id, addrs } => {
                2 + peer_id.len() + 1 + addrs.iter().map(|a| 2 + a.len()).sum::<usize>()
            }
            Location::Presigned {
                manifest_url,
                payload_url,
            } => 2 + manifest_url.len() + 2 + payload_url.len(),
        }
    }

    fn write(&self, w: &mut Writer) {
        match self {
            Location::Peer { peer_id, addrs } => {
                w.u8(KIND_PEER).bytes_u16(peer_id);
                // Bounded by MAX_ADDRS once the shape is checked.
                w.u8(u8::try_from(addrs.len()).unwrap_or(u8::MAX));
                for a in addrs {
                    w.bytes_u16(a);
                }
            }
            Location::Presigned {
                manifest_url,
                payload_url,
            } => {
                w.u8(KIND_PRESIGNED)
                    .bytes_u16(manifest_url.as_bytes())
                    .bytes_u16(payload_url.as_bytes());
            }
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let loc = match r.u8()? {
            KIND_PEER => {
                let peer_id = r.bytes_u16("ticket.peer_id", MAX_PEER_ID_LEN)?.to_vec();
                let n = usize::from(r.u8()?);
                if n > MAX_ADDRS {
                    return Err(DecodeError::invalid(
                        "ticket.addrs",
                        format!("{n} addresses; at most {MAX_ADDRS}"),
                    ));
                }
                let mut addrs = Vec::with_capacity(n);
                for _ in 0..n {
                    addrs.push(r.bytes_u16("ticket.addr", MAX_ADDR_LEN)?.to_vec());
                }
                Location::Peer { peer_id, addrs }
            }
            KIND_PRESIGNED => {
                let m = r.bytes_u16("ticket.manifest_url", MAX_URL_LEN)?;
                let p = r.bytes_u16("ticket.payload_url", MAX_URL_LEN)?;
                let text = |b: &[u8], field| {
                    String::from_utf8(b.to_vec())
                        .map_err(|_| DecodeError::invalid(field, "not UTF-8"))
                };
                Location::Presigned {
                    manifest_url: text(m, "ticket.manifest_url")?,
                    payload_url: text(p, "ticket.payload_url")?,
                }
            }
            k => {
                return Err(DecodeError::invalid(
                    "ticket.location",
                    format!("unknown location kind {k}"),
                ))
            }
        };
        loc.check()
            .map_err(|e| DecodeError::invalid("ticket.location", e))?;
        Ok(loc)
    }
}

impl TicketBody {
    /// Checks the structural rules the decoder enforces, so that encoding never produces bytes the
    /// decoder would refuse.
    ///
    /// # Errors
    /// [`TicketError::Malformed`] naming the rule.
    pub fn check_shape(&self) -> Result<(), TicketError> {
        if let Some(name) = &self.file_name {
            if name.is_empty() || name.len() > MAX_NAME_LEN {
                return Err(shape_error(format!(
                    "file name of {} bytes; expected 1..={MAX_NAME_LEN}",
                    name.len()
                )));
            }
        }
        if self.locations.is_empty() || self.locations.len() > MAX_LOCATIONS {
            return Err(shape_error(format!(
                "{} locations; expected 1..={MAX_LOCATIONS}",
                self.locations.len()
            )));
        }
        for l in &self.locations {
            l.check().map_err(shape_error)?;
        }
        if self.encoded_len() + SIGNATURE_LEN > MAX_TICKET_LEN {
            return Err(shape_error(format!(
                "{} bytes; at most {MAX_TICKET_LEN}",
                self.encoded_len() + SIGNATURE_LEN
            )));
        }
        if self.expires_at <= self.issued_at {
            return Err(shape_error(format!(
                "expires_at {} is not after issued_at {}",
                self.expires_at, self.issued_at
            )));
        }
        if self.expires_at - self.issued_at > MAX_TICKET_LIFETIME_SECS {
            return Err(shape_error(format!(
                "validity of {}s exceeds the maximum {MAX_TICKET_LIFETIME_SECS}s",
                self.expires_at - self.issued_at
            )));
        }
        Ok(())
    }

    /// Length of the body's encoding.
    pub fn encoded_len(&self) -> usize {
        1 + ID_LEN
            + 32
            + 32
            + 2
            + 8
            + 8
            + 1
            + 8
            + 4
            + HASH_LEN
            + 1
            + self.file_name.as_ref().map_or(0, |n| 2 + n.len())
            + 1
            + self
                .locations
                .iter()
                .map(Location::encoded_len)
                .sum::<usize>()
            + SESSION_HEADER_LEN
            + WRAPPED_KEY_LEN
    }

    fn write(&self, w: &mut Writer) {
        w.u8(TICKET_VERSION)
            .put(&self.transfer_id.0)
            .put(&self.sender.0)
            .put(&self.receiver.0)
            .u16(self.netuid)
            .u64(self.issued_at)
            .u64(self.expires_at)
            .u8(self.cipher.code())
            .u64(self.layout.size())
            .put(&self.layout.chunk_size().to_le_bytes())
            .put(&self.root);
        match &self.file_name {
            Some(n) => w.u8(1).bytes_u16(n.as_bytes()),
            None => w.u8(0),
        };
        // Bounded by MAX_LOCATIONS once the shape is checked.
        w.u8(u8::try_from(self.locations.len()).unwrap_or(u8::MAX));
        for l in &self.locations {
            l.write(w);
        }
        let mut header = Vec::with_capacity(SESSION_HEADER_LEN);
        self.key_header.encode_into(&mut header);
        w.put(&header).put(&self.wrapped_key);
    }

    /// The bytes the sender signs: `TICKET_DOMAIN ‖ body`.
    pub fn signing_payload(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(TICKET_DOMAIN.len() + self.encoded_len());
        w.put(TICKET_DOMAIN);
        self.write(&mut w);
        w.into_vec()
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let version = r.u8()?;
        if version != TICKET_VERSION {
            return Err(DecodeError::invalid(
                "ticket.version",
                format!("unsupported version {version}; this build reads {TICKET_VERSION}"),
            ));
        }
        let transfer_id = Id128(r.array()?);
        let sender = Hotkey(r.array()?);
        let receiver = Hotkey(r.array()?);
        let netuid = r.u16()?;
        let issued_at = r.u64()?;
        let expires_at = r.u64()?;
        let cipher = Cipher::from_code(r.u8()?)?;
        let size = r.u64()?;
        let chunk_size = u32::from_le_bytes(r.array()?);
        let layout = Layout::new(size, chunk_size)?;
        let root = r.array()?;
        let file_name = match r.u8()? {
            0 => None,
            1 => {
                let b = r.bytes_u16("ticket.file_name", MAX_NAME_LEN)?;
                if b.is_empty() {
                    return Err(DecodeError::invalid("ticket.file_name", "empty"));
                }
                Some(
                    String::from_utf8(b.to_vec())
                        .map_err(|_| DecodeError::invalid("ticket.file_name", "not UTF-8"))?,
                )
            }
            f => {
                return Err(DecodeError::invalid(
                    "ticket.file_name",
                    format!("presence flag {f}; expected 0 or 1"),
                ))
            }
        };
        let n = usize::from(r.u8()?);
        if n == 0 || n > MAX_LOCATIONS {
            return Err(DecodeError::invalid(
                "ticket.locations",
                format!("{n} locations; expected 1..={MAX_LOCATIONS}"),
            ));
        }
        let mut locations = Vec::with_capacity(n);
        for _ in 0..n {
            locations.push(Location::read(r)?);
        }
        let key_header = SessionHeader::read(r)?;
        let wrapped_key = r.array()?;
        Ok(TicketBody {
            transfer_id,
            sender,
            receiver,
            netuid,
            issued_at,
            expires_at,
            layout,
            cipher,
            root,
            file_name,
            locations,
            key_header,
            wrapped_key,
        })
    }
}

fn wrap_key(secret: &[u8; 32]) -> Result<LessSafeKey, TicketError> {
    let k = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut derived = Zeroizing::new([0u8; 32]);
    derived.copy_from_slice(hmac::sign(&k, WRAP_LABEL).as_ref());
    UnboundKey::new(&AES_256_GCM, derived.as_ref())
        .map(LessSafeKey::new)
        .map_err(|_| TicketError::Undecryptable)
}

fn wrap_aad(transfer_id: &Id128, root: &Hash) -> [u8; ID_LEN + HASH_LEN + 4] {
    let mut a = [0u8; ID_LEN + HASH_LEN + 4];
    a[..ID_LEN].copy_from_slice(&transfer_id.0);
    a[ID_LEN..ID_LEN + HASH_LEN].copy_from_slice(root);
    a[ID_LEN + HASH_LEN..].copy_from_slice(b"hkey");
    a
}

impl Ticket {
    /// Seals `key` to the receiver's prekey and signs the ticket with `signer` (the sender's
    /// hotkey). `now` becomes `issued_at`.
    ///
    /// # Errors
    /// [`TicketError::BadPrekey`] for an unusable prekey; [`TicketError::Malformed`] when the
    /// request breaks a shape rule (the same rules the decoder enforces).
    pub fn issue(
        signer: &sr25519::Pair,
        req: TicketRequest,
        key: &ContentKey,
        now: u64,
        rng: &mut impl CryptoRng,
    ) -> Result<Self, TicketError> {
        let (key_header, secret) = seal_session(
            signer,
            &SessionRequest {
                kind: SessionKind::Stream,
                recipient: req.receiver,
                prekey: req.receiver_prekey,
                netuid: req.netuid,
            },
            now,
            rng,
        )
        .map_err(|_| TicketError::BadPrekey)?;
        let mut wrapped_key = [0u8; WRAPPED_KEY_LEN];
        wrapped_key[..CONTENT_KEY_LEN].copy_from_slice(key.expose());
        // One wrap per freshly derived key, so the all-zero nonce is used exactly once.
        let tag = wrap_key(secret.expose())?
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key([0u8; 12]),
                Aad::from(wrap_aad(&req.transfer_id, &req.root)),
                &mut wrapped_key[..CONTENT_KEY_LEN],
            )
            .map_err(|_| TicketError::Undecryptable)?;
        wrapped_key[CONTENT_KEY_LEN..].copy_from_slice(tag.as_ref());
        let body = TicketBody {
            transfer_id: req.transfer_id,
            sender: Hotkey::of(signer),
            receiver: req.receiver,
            netuid: req.netuid,
            issued_at: now,
            expires_at: req.expires_at,
            layout: req.layout,
            cipher: req.cipher,
            root: req.root,
            file_name: req.file_name,
            locations: req.locations,
            key_header,
            wrapped_key,
        };
        body.check_shape()?;
        let signature = sign(signer, &body.signing_payload());
        Ok(Ticket { body, signature })
    }

    /// Length of [`Ticket::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        self.body.encoded_len() + SIGNATURE_LEN
    }

    /// The binary form.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        self.body.write(&mut w);
        w.put(&self.signature);
        w.into_vec()
    }

    /// Decodes a ticket strictly. Does not verify it: call [`Ticket::verify`].
    ///
    /// # Errors
    /// [`DecodeError::Incomplete`] when cut short; [`DecodeError::Invalid`] for an unknown
    /// version, cipher or location kind, a bad layout, an over-long field or trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_TICKET_LEN {
            return Err(DecodeError::invalid(
                "ticket",
                format!("{} bytes; at most {MAX_TICKET_LEN}", bytes.len()),
            ));
        }
        let mut r = Reader::new(bytes);
        let body = TicketBody::read(&mut r)?;
        let signature = r.array()?;
        r.finish("ticket")?;
        Ok(Ticket { body, signature })
    }

    /// The receiver's checks, cheapest first: shape, addressee (`me`), the sender's signature,
    /// that the key slot belongs to this sender, receiver and subnet, then the validity window
    /// at `now` (unix seconds). The caller may then check the sender against its own policy.
    ///
    /// # Errors
    /// The first check that fails.
    pub fn verify(&self, now: u64, me: &Hotkey) -> Result<(), TicketError> {
        let b = &self.body;
        b.check_shape()?;
        if b.receiver != *me {
            return Err(TicketError::NotForMe {
                receiver: b.receiver.to_ss58(DEFAULT_SS58_PREFIX),
            });
        }
        if !b.sender.verify(&b.signing_payload(), &self.signature) {
            return Err(TicketError::BadSignature);
        }
        let h = &b.key_header;
        if h.kind != SessionKind::Stream
            || h.sender != b.sender
            || h.recipient != b.receiver
            || h.netuid != b.netuid
            || h.created_at != b.issued_at
        {
            return Err(TicketError::Tampered);
        }
        if b.issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
            return Err(TicketError::NotYetValid {
                issued_at: b.issued_at,
                now,
            });
        }
        if now >= b.expires_at {
            return Err(TicketError::Expired {
                expires_at: b.expires_at,
                now,
            });
        }
        Ok(())
    }

    /// The X25519 prekey the content key is sealed to: the receiver picks its private half.
    pub fn sealed_to(&self) -> [u8; 32] {
        self.body.key_header.prekey
    }

    /// Unwraps the content key with the receiver's prekey. Call after [`Ticket::verify`].
    ///
    /// # Errors
    /// [`TicketError::StalePrekey`] when `prekey` is not the one the key is sealed to;
    /// [`TicketError::Undecryptable`] when it does not unwrap (a wrong key or altered bytes).
    pub fn open_key(&self, prekey: &Prekey) -> Result<ContentKey, TicketError> {
        let b = &self.body;
        let secret = b.key_header.open(prekey).map_err(|e| match e {
            crate::envelope::SessionReject::StalePrekey => TicketError::StalePrekey,
            _ => TicketError::Undecryptable,
        })?;
        let mut buf = Zeroizing::new(b.wrapped_key);
        let plain = wrap_key(secret.expose())?
            .open_in_place(
                Nonce::assume_unique_for_key([0u8; 12]),
                Aad::from(wrap_aad(&b.transfer_id, &b.root)),
                buf.as_mut(),
            )
            .map_err(|_| TicketError::Undecryptable)?;
        let mut key = [0u8; CONTENT_KEY_LEN];
        key.copy_from_slice(plain);
        let key = ContentKey::from_bytes(key);
        Ok(key)
    }

    /// Parses the one-line string form.
    ///
    /// # Errors
    /// [`TicketParseError`] saying what is wrong with the text.
    pub fn parse(text: &str) -> Result<Self, TicketParseError> {
        let text = text.trim();
        let Some(rest) = text.strip_prefix(TICKET_PREFIX) else {
            if let Some(other) = text.strip_prefix("hermes-ticket") {
                let version: String = other.chars().take_while(|c| *c != ':').take(8).collect();
                return Err(TicketParseError::UnsupportedVersion(format!(
                    "hermes-ticket{version}"
                )));
            }
            return Err(TicketParseError::NotATicket);
        };
        if text.len() > MAX_TICKET_STR_LEN {
            return Err(TicketParseError::TooLong { len: text.len() });
        }
        let (bytes, canonical) = base32_decode(rest)?;
        match Ticket::decode(&bytes) {
            Err(DecodeError::Incomplete { .. }) => Err(TicketParseError::Truncated),
            Err(other) => Err(TicketParseError::Invalid(other)),
            // Leftover bits after the last whole byte must be zero: one string per ticket.
            Ok(_) if !canonical => Err(TicketParseError::Invalid(DecodeError::invalid(
                "ticket",
                "trailing characters after the ticket",
            ))),
            Ok(t) => Ok(t),
        }
    }
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Lower-case RFC 4648 base32 without padding.
fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in bytes {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes base32 (either case, whitespace ignored) into every whole byte it holds, and says
/// whether the text is exactly what the encoder writes for those bytes (no extra character, zero
/// leftover bits). A string cut anywhere yields a prefix of the original bytes.
fn base32_decode(text: &str) -> Result<(Vec<u8>, bool), TicketParseError> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut acc, mut bits, mut count) = (0u32, 0u32, 0usize);
    for (index, character) in text.chars().filter(|c| !c.is_whitespace()).enumerate() {
        count = index + 1;
        let v = match character {
            'a'..='z' => u32::from(character) - u32::from('a'),
            'A'..='Z' => u32::from(character) - u32::from('A'),
            '2'..='7' => u32::from(character) - u32::from('2') + 26,
            _ => return Err(TicketParseError::BadCharacter { character, index }),
        };
        acc = ((acc << 5) | v) & 0xFFFF;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xFF) as u8);
        }
    }
    let canonical = acc & ((1 << bits) - 1) == 0 && count == (out.len() * 8).div_ceil(5);
    Ok((out, canonical))
}

impl fmt::Display for Ticket {
    /// The one-line string form: [`TICKET_PREFIX`] and the base32 of the encoding.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(TICKET_PREFIX)?;
        f.write_str(&base32_encode(&self.encode()))
    }
}

impl FromStr for Ticket {
    type Err = TicketParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ticket::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::{CHUNK_ALIGN, DEFAULT_CHUNK_SIZE};
    use super::*;
    use crate::envelope::tests::{pair, prekey, TestRng, NOW};
    use proptest::prelude::*;

    fn alice() -> sr25519::Pair {
        pair("//Alice")
    }

    fn bob() -> Hotkey {
        Hotkey::of(&pair("//Bob"))
    }

    fn locations() -> Vec<Location> {
        vec![
            Location::Peer {
                peer_id: vec![0, 36, 8, 1, 18, 32, 7, 7],
                addrs: vec![vec![4, 127, 0, 0, 1, 6, 0x1f, 0x90]],
            },
            Location::Presigned {
                manifest_url: "http://127.0.0.1:9000/b/t.manifest?X-Amz-Signature=ab".into(),
                payload_url: "https://s3.example/b/t.payload?X-Amz-Signature=cd".into(),
            },
        ]
    }

    fn request() -> TicketRequest {
        TicketRequest {
            transfer_id: Id128([0x11; 16]),
            receiver: bob(),
            receiver_prekey: prekey(7).public(),
            netuid: 3,
            expires_at: NOW + 3600,
            layout: Layout::new(100 << 30, DEFAULT_CHUNK_SIZE).unwrap(),
            cipher: Cipher::Aes256Gcm,
            root: [0x22; 32],
            file_name: Some("model.safetensors".into()),
            locations: locations(),
        }
    }

    fn issued() -> (Ticket, ContentKey) {
        let key = ContentKey::from_bytes([0x33; 32]);
        let t = Ticket::issue(&alice(), request(), &key, NOW, &mut TestRng(9)).unwrap();
        (t, key)
    }

    /// Re-signs a modified body as Alice, to reach the checks behind the signature.
    fn resign(mut t: Ticket) -> Ticket {
        t.signature = sign(&alice(), &t.body.signing_payload());
        t
    }

    #[test]
    fn issued_ticket_verifies_and_opens_for_its_receiver() {
        let (t, key) = issued();
        let bytes = t.encode();
        assert_eq!(bytes.len(), t.encoded_len());
        let back = Ticket::decode(&bytes).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.verify(NOW + 10, &bob()), Ok(()));
        assert_eq!(back.sealed_to(), prekey(7).public());
        assert_eq!(back.open_key(&prekey(7)).unwrap().expose(), key.expose());
        // The string form is one line and parses back.
        let s = t.to_string();
        assert!(s.starts_with(TICKET_PREFIX));
        assert!(!s.contains(char::is_whitespace));
        assert_eq!(s.parse::<Ticket>(), Ok(t));
    }

    #[test]
    fn expired_early_and_foreign_tickets_are_refused() {
        let (t, _) = issued();
        assert_eq!(
            t.verify(NOW + 3600, &bob()),
            Err(TicketError::Expired {
                expires_at: NOW + 3600,
                now: NOW + 3600
            })
        );
        assert_eq!(
            t.verify(NOW - MAX_CLOCK_SKEW_SECS - 1, &bob()),
            Err(TicketError::NotYetValid {
                issued_at: NOW,
                now: NOW - MAX_CLOCK_SKEW_SECS - 1
            })
        );
        let carol = Hotkey::of(&pair("//Carol"));
        assert_eq!(
            t.verify(NOW, &carol),
            Err(TicketError::NotForMe {
                receiver: bob().to_ss58(DEFAULT_SS58_PREFIX)
            })
        );
        // Carol cannot open it either, even when she holds some prekey.
        assert_eq!(t.open_key(&prekey(8)).err(), Some(TicketError::StalePrekey));
    }

    #[test]
    fn tampering_is_detected() {
        let (t, _) = issued();
        // Any field changed after signing: the signature no longer verifies.
        let mut m = t.clone();
        m.body.expires_at += 3600;
        assert_eq!(m.verify(NOW, &bob()), Err(TicketError::BadSignature));
        let mut m = t.clone();
        m.body.root[0] ^= 1;
        assert_eq!(m.verify(NOW, &bob()), Err(TicketError::BadSignature));
        // Re-signed by another key while still naming Alice as sender.
        let mut m = t.clone();
        m.signature = sign(&pair("//Mallory"), &m.body.signing_payload());
        assert_eq!(m.verify(NOW, &bob()), Err(TicketError::BadSignature));
        // A key slot taken from a ticket for another subnet / receiver / sender.
        let mut m = t.clone();
        m.body.netuid = 4;
        assert_eq!(resign(m).verify(NOW, &bob()), Err(TicketError::Tampered));
        let mut m = t.clone();
        m.body.key_header.recipient = Hotkey::of(&pair("//Carol"));
        assert_eq!(resign(m).verify(NOW, &bob()), Err(TicketError::Tampered));
        // A wrapped key moved to another transfer id or root does not unwrap.
        let mut m = t.clone();
        m.body.transfer_id = Id128([0x12; 16]);
        assert_eq!(
            m.open_key(&prekey(7)).err(),
            Some(TicketError::Undecryptable)
        );
        let mut m = t.clone();
        m.body.root[5] ^= 0x80;
        assert_eq!(
            m.open_key(&prekey(7)).err(),
            Some(TicketError::Undecryptable)
        );
        let mut m = t.clone();
        m.body.wrapped_key[40] ^= 1;
        assert_eq!(
            m.open_key(&prekey(7)).err(),
            Some(TicketError::Undecryptable)
        );
    }

    #[test]
    fn issuing_refuses_bad_shapes() {
        let key = ContentKey::from_bytes([1; 32]);
        let cases: Vec<fn(&mut TicketRequest)> = vec![
            |r| r.locations.clear(),
            |r| r.locations = vec![locations()[0].clone(); MAX_LOCATIONS + 1],
            |r| r.expires_at = NOW,
            |r| r.expires_at = NOW + MAX_TICKET_LIFETIME_SECS + 1,
            |r| r.file_name = Some(String::new()),
            |r| r.file_name = Some("x".repeat(MAX_NAME_LEN + 1)),
            |r| {
                r.locations = vec![Location::Presigned {
                    manifest_url: "ftp://x".into(),
                    payload_url: "https://x".into(),
                }]
            },
            |r| {
                r.locations = vec![Location::Peer {
                    peer_id: vec![],
                    addrs: vec![],
                }]
            },
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut req = request();
            f(&mut req);
            assert!(
                matches!(
                    Ticket::issue(&alice(), req, &key, NOW, &mut TestRng(1)),
                    Err(TicketError::Malformed(_))
                ),
                "case {i}"
            );
        }
        let mut req = request();
        req.receiver_prekey = [0; 32];
        assert_eq!(
            Ticket::issue(&alice(), req, &key, NOW, &mut TestRng(1)).err(),
            Some(TicketError::BadPrekey)
        );
    }

    #[test]
    fn string_form_errors_are_specific() {
        let s = issued().0.to_string();
        assert_eq!(Ticket::parse("hello"), Err(TicketParseError::NotATicket));
        assert_eq!(
            Ticket::parse("hermes-ticket2:abc"),
            Err(TicketParseError::UnsupportedVersion(
                "hermes-ticket2".into()
            ))
        );
        assert_eq!(
            Ticket::parse(&s[..s.len() - 40]),
            Err(TicketParseError::Truncated)
        );
        assert_eq!(
            Ticket::parse(&s[..TICKET_PREFIX.len()]),
            Err(TicketParseError::Truncated)
        );
        let mut bad = s.clone();
        bad.replace_range(TICKET_PREFIX.len() + 3..TICKET_PREFIX.len() + 4, "0");
        assert_eq!(
            Ticket::parse(&bad),
            Err(TicketParseError::BadCharacter {
                character: '0',
                index: 3
            })
        );
        let mut bad = s.clone();
        bad.insert(TICKET_PREFIX.len() + 5, 'é');
        assert!(matches!(
            Ticket::parse(&bad),
            Err(TicketParseError::BadCharacter { index: 5, .. })
        ));
        // Extra characters at the end decode to trailing bytes, or to another ticket that fails
        // its signature: never silently accepted as the original.
        for extra in ['a', '2', 'z'] {
            let mut long = s.clone();
            long.push(extra);
            assert!(Ticket::parse(&long).is_err(), "{extra}");
        }
        // Cut anywhere, it says truncated (base32 keeps a prefix of the bytes).
        for cut in TICKET_PREFIX.len()..s.len() {
            assert_eq!(
                Ticket::parse(&s[..cut]),
                Err(TicketParseError::Truncated),
                "{cut}"
            );
        }
        // Case-insensitive (some tools upper-case what they are given).
        assert_eq!(
            Ticket::parse(&format!(
                "{TICKET_PREFIX}{}",
                s[TICKET_PREFIX.len()..].to_uppercase()
            )),
            Ticket::parse(&s)
        );
        let huge = format!("{TICKET_PREFIX}{}", "1".repeat(MAX_TICKET_STR_LEN + 1));
        assert!(matches!(
            Ticket::parse(&huge),
            Err(TicketParseError::TooLong { .. })
        ));
        // Wrapped by a terminal: still the same ticket.
        let wrapped: String = s
            .chars()
            .enumerate()
            .flat_map(|(i, c)| {
                if i > 0 && i % 80 == 0 {
                    vec!['\n', c]
                } else {
                    vec![c]
                }
            })
            .collect();
        assert_eq!(Ticket::parse(&format!("  {wrapped}\n")), Ticket::parse(&s));
        assert!(Ticket::parse(&s).is_ok());
    }

    fn arb_location() -> impl Strategy<Value = Location> {
        let bytes = |lo, hi| proptest::collection::vec(any::<u8>(), lo..=hi);
        prop_oneof![
            (
                bytes(1, MAX_PEER_ID_LEN),
                proptest::collection::vec(bytes(1, 40), 0..=MAX_ADDRS)
            )
                .prop_map(|(peer_id, addrs)| Location::Peer { peer_id, addrs }),
            ("[!-~]{0,60}", "[!-~]{0,60}").prop_map(|(a, b)| Location::Presigned {
                manifest_url: format!("https://{a}"),
                payload_url: format!("http://{b}"),
            }),
        ]
    }

    prop_compose! {
        fn arb_ticket()(
            ids in any::<([u8; 16], [u8; 16], [u8; 32], [u8; 32], [u8; 32])>(),
            netuid in any::<u16>(),
            issued_at in 0u64..(1 << 40),
            life in 1u64..=MAX_TICKET_LIFETIME_SECS,
            size in 0u64..(1 << 40),
            chunk in 128u32..=1024,
            name in proptest::option::of("[a-zA-Z0-9 ._é-]{1,60}"),
            locations in proptest::collection::vec(arb_location(), 1..=MAX_LOCATIONS),
            enc in any::<[u8; 32]>(),
            sigs in any::<([u8; 32], [u8; 32], [u8; 32], [u8; 32])>(),
            wrapped in proptest::collection::vec(any::<u8>(), WRAPPED_KEY_LEN),
        ) -> Ticket {
            let (tid, sid, sender, receiver, root) = ids;
            let sig = |a: [u8; 32], b: [u8; 32]| {
                let mut s = [0u8; 64];
                s[..32].copy_from_slice(&a);
                s[32..].copy_from_slice(&b);
                s
            };
            let mut wrapped_key = [0u8; WRAPPED_KEY_LEN];
            wrapped_key.copy_from_slice(&wrapped);
            Ticket {
                body: TicketBody {
                    transfer_id: Id128(tid),
                    sender: Hotkey(sender),
                    receiver: Hotkey(receiver),
                    netuid,
                    issued_at,
                    expires_at: issued_at + life,
                    layout: Layout::new(size, chunk * CHUNK_ALIGN).unwrap(),
                    cipher: Cipher::Aes256Gcm,
                    root,
                    file_name: name,
                    locations,
                    key_header: SessionHeader {
                        kind: SessionKind::Stream,
                        session_id: Id128(sid),
                        sender: Hotkey(sender),
                        recipient: Hotkey(receiver),
                        prekey: root,
                        netuid,
                        created_at: issued_at,
                        enc,
                        signature: sig(sigs.0, sigs.1),
                    },
                    wrapped_key,
                },
                signature: sig(sigs.2, sigs.3),
            }
        }
    }

    proptest! {
        #[test]
        fn round_trips_in_both_forms(t in arb_ticket()) {
            prop_assert_eq!(t.body.check_shape(), Ok(()));
            let bytes = t.encode();
            prop_assert_eq!(bytes.len(), t.encoded_len());
            prop_assert_eq!(Ticket::decode(&bytes), Ok(t.clone()));
            prop_assert_eq!(Ticket::parse(&t.to_string()), Ok(t));
        }

        #[test]
        fn any_flipped_bit_is_refused(idx in any::<prop::sample::Index>(), bit in 0u8..8) {
            let (t, key) = issued();
            let mut bytes = t.encode();
            let i = idx.index(bytes.len());
            bytes[i] ^= 1 << bit;
            if let Ok(m) = Ticket::decode(&bytes) {
                // Either it no longer verifies, or (never, by the signature) yields another key.
                prop_assert!(m.verify(NOW, &bob()).is_err());
                if let Ok(k) = m.open_key(&prekey(7)) {
                    prop_assert_eq!(k.expose(), key.expose());
                }
            }
        }

        #[test]
        fn mutated_tickets_decode_canonically_or_not_at_all(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 1..4)) {
            let (t, _) = issued();
            let original = t.encode();
            let mut bytes = original.clone();
            super::super::mutate(&mut bytes, &edits);
            if let Ok(m) = Ticket::decode(&bytes) {
                prop_assert_eq!(m.encode(), bytes.clone());
                prop_assert_eq!(Ticket::parse(&m.to_string()), Ok(m.clone()));
                if bytes != original {
                    prop_assert!(m.verify(NOW, &bob()).is_err());
                }
            }
        }

        #[test]
        fn decoders_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..600), text in "\\PC{0,200}"
        ) {
            let _ = Ticket::decode(&bytes);
            let _ = Ticket::parse(&text);
            let _ = Ticket::parse(&format!("{TICKET_PREFIX}{text}"));
        }
    }
}
