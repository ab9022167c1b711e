//! Plain result types handed to Python: read-only attributes, a `repr`, nothing live.

use crate::errors::Failure;
use hermes::MessageId;
use pyo3::prelude::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A message id from its hex text.
///
/// # Errors
/// `InvalidArgument` for anything but 32 hex digits.
pub(crate) fn parse_id(text: &str) -> Result<MessageId, Failure> {
    MessageId::from_hex(text).map_err(|e| Failure::invalid(format!("invalid argument: {e}")))
}

/// The node's identity.
#[pyclass(frozen, get_all, module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    /// SS58 address of the hotkey.
    ss58: String,
    /// The hotkey's public key, hex.
    hotkey: String,
    /// The libp2p peer id of the transport key.
    peer_id: String,
    /// `"ed25519"` or `"rsa"`.
    transport_key_type: String,
    /// Prekeys held (the current one and retired ones in their grace period).
    prekeys: usize,
    /// How many times the identity actor was restarted by its supervisor.
    restarts: u32,
}

impl From<hermes::IdentityInfo> for Identity {
    fn from(i: hermes::IdentityInfo) -> Self {
        Identity {
            ss58: i.ss58,
            hotkey: hex(&i.hotkey.0),
            peer_id: i.peer_id.to_string(),
            transport_key_type: i.transport_key_type,
            prekeys: i.prekeys,
            restarts: i.restarts,
        }
    }
}

#[pymethods]
impl Identity {
    fn __repr__(&self) -> String {
        format!("Identity(ss58={:?}, peer_id={:?})", self.ss58, self.peer_id)
    }
}

/// An admitted peer whose binding verified.
#[pyclass(frozen, get_all, module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// Its SS58 address.
    ss58: String,
    /// Its peer id.
    peer_id: String,
    /// Its known addresses.
    addresses: Vec<String>,
    /// Its subnets.
    netuids: Vec<u16>,
}

impl From<hermes_actors::network::PeerInfo> for Peer {
    fn from(p: hermes_actors::network::PeerInfo) -> Self {
        Peer {
            ss58: p.ss58,
            peer_id: p.peer_id.to_string(),
            addresses: p.addresses.iter().map(ToString::to_string).collect(),
            netuids: p.netuids,
        }
    }
}

#[pymethods]
impl Peer {
    fn __repr__(&self) -> String {
        format!("Peer(ss58={:?}, netuids={:?})", self.ss58, self.netuids)
    }
}

/// A verified binding found in the DHT.
#[pyclass(frozen, get_all, module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    /// The wallet address it binds.
    ss58: String,
    /// Its subnets.
    netuids: Vec<u16>,
    /// When it was issued (unix seconds).
    issued_at: u64,
    /// When it expires (unix seconds).
    expires_at: u64,
}

impl Binding {
    pub(crate) fn new(b: &hermes::proto::SignedBinding, prefix: u16) -> Self {
        Binding {
            ss58: b.record.hotkey.to_ss58(prefix),
            netuids: b.record.netuids.clone(),
            issued_at: b.record.issued_at,
            expires_at: b.record.expires_at,
        }
    }
}

/// Message and stream counters.
#[pyclass(frozen, get_all, name = "MessageStats", module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    /// Messages accepted by `send`.
    sent: u64,
    /// Messages acknowledged by their recipients.
    delivered: u64,
    /// Messages received.
    received: u64,
    /// Duplicates dropped.
    duplicates: u64,
    /// Messages waiting in the outbox.
    outbox: usize,
    /// Their bytes.
    outbox_bytes: u64,
    /// Sessions (opened, accepted).
    sessions: (u64, u64),
    /// Streams (opened, accepted).
    streams: (u64, u64),
    /// Stream bytes (sent, received).
    stream_bytes: (u64, u64),
    /// Refusals per reason.
    rejected: Vec<(String, u64)>,
}

impl From<hermes::MessageStats> for Stats {
    fn from(s: hermes::MessageStats) -> Self {
        Stats {
            sent: s.sent,
            delivered: s.delivered,
            received: s.received,
            duplicates: s.duplicates,
            outbox: s.outbox,
            outbox_bytes: s.outbox_bytes,
            sessions: s.sessions,
            streams: s.streams,
            stream_bytes: s.stream_bytes,
            rejected: s
                .rejected
                .iter()
                .map(|(r, n)| (format!("{r:?}"), *n))
                .collect(),
        }
    }
}

#[pymethods]
impl Stats {
    fn __repr__(&self) -> String {
        format!(
            "MessageStats(sent={}, delivered={}, received={}, outbox={})",
            self.sent, self.delivered, self.received, self.outbox
        )
    }
}

/// A message waiting in the outbox.
#[pyclass(frozen, get_all, module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct OutboxEntry {
    /// Message id (hex).
    id: String,
    /// Recipient's SS58 address.
    to: String,
    /// Subnet.
    netuid: u16,
    /// Payload size.
    len: usize,
    /// When `send` accepted it (unix seconds).
    created_at: u64,
    /// When it expires (unix seconds).
    expires_at: u64,
    /// Why the last attempt failed, if one did.
    last_error: Option<String>,
}

impl From<hermes::OutboxEntry> for OutboxEntry {
    fn from(e: hermes::OutboxEntry) -> Self {
        OutboxEntry {
            id: e.id.to_hex(),
            to: e.to,
            netuid: e.netuid,
            len: e.len,
            created_at: e.created_at,
            expires_at: e.expires_at,
            last_error: e.last_error,
        }
    }
}

#[pymethods]
impl OutboxEntry {
    fn __repr__(&self) -> String {
        format!(
            "OutboxEntry(id={:?}, to={:?}, len={})",
            self.id, self.to, self.len
        )
    }
}

/// What a closed stream reports.
#[pyclass(frozen, get_all, module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct StreamReport {
    /// Bytes written and confirmed by the recipient.
    bytes: u64,
    /// Seconds from open to confirmation.
    elapsed: f64,
}

impl From<hermes::StreamReport> for StreamReport {
    fn from(r: hermes::StreamReport) -> Self {
        StreamReport {
            bytes: r.bytes,
            elapsed: r.elapsed.as_secs_f64(),
        }
    }
}

#[pymethods]
impl StreamReport {
    fn __repr__(&self) -> String {
        format!(
            "StreamReport(bytes={}, elapsed={:.3})",
            self.bytes, self.elapsed
        )
    }
}

/// What became of a sent message.
#[pyclass(frozen, get_all, module = "hermes_p2p._native")]
#[derive(Debug, Clone)]
pub(crate) struct DeliveryEvent {
    /// `"delivered"`, `"expired"` or `"failed"`.
    kind: String,
    /// Message id (hex).
    id: String,
    /// Recipient's SS58 address.
    to: String,
    /// The recipient's reason, for `"failed"`.
    reason: Option<String>,
}

impl DeliveryEvent {
    pub(crate) fn new(e: hermes::DeliveryEvent, prefix: u16) -> Option<Self> {
        use hermes::DeliveryEvent as E;
        let (kind, id, to, reason) = match e {
            E::Delivered { id, to } => ("delivered", id, to, None),
            E::Expired { id, to } => ("expired", id, to, None),
            E::Failed { id, to, reason } => ("failed", id, to, Some(reason)),
            _ => return None,
        };
        Some(DeliveryEvent {
            kind: kind.into(),
            id: id.to_hex(),
            to: to.to_ss58(prefix),
            reason,
        })
    }
}

#[pymethods]
impl DeliveryEvent {
    fn __repr__(&self) -> String {
        format!("DeliveryEvent({:?}, id={:?})", self.kind, self.id)
    }
}
