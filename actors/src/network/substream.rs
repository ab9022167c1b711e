//! Raw substreams for the data plane (`/hermes/msg/1`, `/hermes/stream/1`): a small
//! `NetworkBehaviour` that opens outbound substreams on request and hands negotiated inbound ones
//! to the stream layer.
//!
//! Opening does not go through the swarm's event loop: each connection's handler owns a bounded
//! request channel, and [`Substreams::open`] sends to it directly, so the network thread only does
//! the protocol negotiation. Inbound substreams go into one bounded queue; when the stream layer
//! falls behind, new substreams are dropped (the remote sees a reset and retries) instead of
//! piling up. The stream layer, not this behaviour, decides whether the remote may use them: it
//! checks the peer against the directory of verified peers.

use futures::channel::{mpsc as fmpsc, oneshot};
use futures::{SinkExt, StreamExt};
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::{InboundUpgrade, OutboundUpgrade, UpgradeInfo};
use libp2p::core::Endpoint;
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, StreamUpgradeError, SubstreamProtocol, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// Protocol of end-to-end encrypted messages.
pub const MSG_PROTOCOL: StreamProtocol = StreamProtocol::new("/hermes/msg/1");
/// Protocol of end-to-end encrypted streams.
pub const STREAM_PROTOCOL: StreamProtocol = StreamProtocol::new("/hermes/stream/1");
/// Protocol of the Sync Engine's embedded store (manifests and sealed chunks).
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/hermes/sync/1");
/// Open requests queued per connection before [`Substreams::open`] waits.
const OPEN_QUEUE: usize = 16;
/// Time allowed for a substream's protocol negotiation.
const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(10);

/// A negotiated inbound substream.
#[derive(Debug)]
pub struct InboundSubstream {
    /// The remote peer (authenticated by the transport; not necessarily verified yet).
    pub peer: PeerId,
    /// The protocol it speaks.
    pub protocol: StreamProtocol,
    /// The substream.
    pub stream: Stream,
}

/// Why a substream could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// No connection to the peer.
    #[error("not connected to {0}")]
    NotConnected(PeerId),
    /// The connection closed before the substream was negotiated.
    #[error("the connection closed while opening a substream")]
    ConnectionClosed,
    /// The peer does not speak the protocol.
    #[error("the peer does not support {0}")]
    Unsupported(StreamProtocol),
    /// Negotiation timed out.
    #[error("substream negotiation timed out")]
    Timeout,
    /// I/O failure during negotiation.
    #[error("substream negotiation failed: {0}")]
    Io(std::io::Error),
}

struct OpenRequest {
    protocol: StreamProtocol,
    reply: oneshot::Sender<Result<Stream, OpenError>>,
}

struct Shared {
    conns: HashMap<ConnectionId, (PeerId, fmpsc::Sender<OpenRequest>)>,
    inbound: mpsc::Sender<InboundSubstream>,
    /// Protocols served by another layer, each with its own queue.
    routes: Vec<(StreamProtocol, mpsc::Sender<InboundSubstream>)>,
    dropped: u64,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The handle that opens substreams; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Substreams {
    shared: Arc<Mutex<Shared>>,
}

impl std::fmt::Debug for Substreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Substreams").finish_non_exhaustive()
    }
}

impl Substreams {
    /// Opens a substream speaking `protocol` on one of the connections to `peer`.
    ///
    /// # Errors
    /// [`OpenError`]: no connection, the connection closed, the peer refused the protocol, or
    /// negotiation failed.
    pub async fn open(&self, peer: PeerId, protocol: StreamProtocol) -> Result<Stream, OpenError> {
        let tx = {
            let g = lock(&self.shared);
            // The newest connection is the most likely to stay up (an older one may be a
            // duplicate from a simultaneous dial that the peer is about to close).
            g.conns
                .iter()
                .filter(|(_, (p, _))| *p == peer)
                .max_by_key(|(id, _)| **id)
                .map(|(_, (_, tx))| tx.clone())
        };
        let mut tx = tx.ok_or(OpenError::NotConnected(peer))?;
        let (reply, rx) = oneshot::channel();
        tx.send(OpenRequest { protocol, reply })
            .await
            .map_err(|_| OpenError::ConnectionClosed)?;
        rx.await.map_err(|_| OpenError::ConnectionClosed)?
    }

    /// Inbound substreams dropped because the stream layer's queue was full.
    pub fn dropped(&self) -> u64 {
        lock(&self.shared).dropped
    }
}

/// The behaviour.
pub struct Behaviour {
    shared: Arc<Mutex<Shared>>,
    /// Every protocol accepted inbound.
    protocols: Vec<StreamProtocol>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("substream::Behaviour")
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// A behaviour whose inbound substreams go to `inbound`, and the handle that opens outbound
    /// ones.
    /// `routes` adds protocols whose inbound substreams go to their own queue instead.
    pub fn new(
        inbound: mpsc::Sender<InboundSubstream>,
        routes: Vec<(StreamProtocol, mpsc::Sender<InboundSubstream>)>,
    ) -> (Self, Substreams) {
        let protocols = [MSG_PROTOCOL, STREAM_PROTOCOL]
            .into_iter()
            .chain(routes.iter().map(|(p, _)| p.clone()))
            .collect();
        let shared = Arc::new(Mutex::new(Shared {
            conns: HashMap::new(),
            inbound,
            routes,
            dropped: 0,
        }));
        (
            Behaviour {
                shared: shared.clone(),
                protocols,
            },
            Substreams { shared },
        )
    }

    fn handler(&self, id: ConnectionId, peer: PeerId) -> Handler {
        let (tx, rx) = fmpsc::channel(OPEN_QUEUE);
        lock(&self.shared).conns.insert(id, (peer, tx));
        Handler {
            peer,
            protocols: self.protocols.clone(),
            rx,
            pending: HashMap::new(),
            next: 0,
            shared: self.shared.clone(),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(id, peer))
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.handler(id, peer))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(c) => {
                lock(&self.shared).conns.remove(&c.connection_id);
            }
            // A handler was created but another behaviour refused the connection.
            FromSwarm::ListenFailure(f) => {
                lock(&self.shared).conns.remove(&f.connection_id);
            }
            FromSwarm::DialFailure(f) => {
                lock(&self.shared).conns.remove(&f.connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        ev: THandlerOutEvent<Self>,
    ) {
        match ev {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// The upgrade: plain multistream-select negotiation of one of our protocols.
#[derive(Debug, Clone)]
pub struct Upgrade(Vec<StreamProtocol>);

impl UpgradeInfo for Upgrade {
    type Info = StreamProtocol;
    type InfoIter = std::vec::IntoIter<StreamProtocol>;
    fn protocol_info(&self) -> Self::InfoIter {
        self.0.clone().into_iter()
    }
}

impl InboundUpgrade<Stream> for Upgrade {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;
    fn upgrade_inbound(self, s: Stream, p: StreamProtocol) -> Self::Future {
        ready(Ok((s, p)))
    }
}

impl OutboundUpgrade<Stream> for Upgrade {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<Self::Output, Infallible>>;
    fn upgrade_outbound(self, s: Stream, p: StreamProtocol) -> Self::Future {
        ready(Ok((s, p)))
    }
}

/// Per-connection handler.
pub struct Handler {
    peer: PeerId,
    protocols: Vec<StreamProtocol>,
    rx: fmpsc::Receiver<OpenRequest>,
    pending: HashMap<u64, (StreamProtocol, oneshot::Sender<Result<Stream, OpenError>>)>,
    next: u64,
    shared: Arc<Mutex<Shared>>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("substream::Handler")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = Infallible;
    type InboundProtocol = Upgrade;
    type OutboundProtocol = Upgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = u64;

    fn listen_protocol(&self) -> SubstreamProtocol<Upgrade, ()> {
        SubstreamProtocol::new(Upgrade(self.protocols.clone()), ())
            .with_timeout(NEGOTIATION_TIMEOUT)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Upgrade, u64, Infallible>> {
        match self.rx.poll_next_unpin(cx) {
            Poll::Ready(Some(req)) => {
                let id = self.next;
                self.next += 1;
                let protocol = req.protocol.clone();
                self.pending.insert(id, (req.protocol, req.reply));
                Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(Upgrade(vec![protocol]), id)
                        .with_timeout(NEGOTIATION_TIMEOUT),
                })
            }
            _ => Poll::Pending,
        }
    }

    fn on_behaviour_event(&mut self, ev: Infallible) {
        match ev {}
    }

    fn on_connection_event(&mut self, event: ConnectionEvent<Upgrade, Upgrade, (), u64>) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, protocol),
                ..
            }) => {
                let mut g = lock(&self.shared);
                let item = InboundSubstream {
                    peer: self.peer,
                    protocol,
                    stream,
                };
                let queue = g
                    .routes
                    .iter()
                    .find(|(p, _)| *p == item.protocol)
                    .map_or(&g.inbound, |(_, q)| q);
                if let Err(e) = queue.try_send(item) {
                    g.dropped += 1;
                    tracing::debug!(peer = %self.peer, error = %e, "inbound substream dropped: stream layer busy or stopped");
                }
            }
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: (stream, _),
                info,
            }) => {
                if let Some((_, reply)) = self.pending.remove(&info) {
                    let _ = reply.send(Ok(stream));
                }
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { info, error }) => {
                if let Some((protocol, reply)) = self.pending.remove(&info) {
                    let e = match error {
                        StreamUpgradeError::Timeout => OpenError::Timeout,
                        StreamUpgradeError::NegotiationFailed => OpenError::Unsupported(protocol),
                        StreamUpgradeError::Io(e) => OpenError::Io(e),
                        StreamUpgradeError::Apply(never) => match never {},
                    };
                    let _ = reply.send(Err(e));
                }
            }
            _ => {}
        }
    }
}
