//! [`RuntimeHandle`]'s methods: identity, network, messages and streams, firewall, chain.

use super::{Parts, RuntimeHandle, StreamParts};

use crate::messages::{Inbox, IncomingStreams, MessageId, OutboxEntry, SendOptions, Taken};
use crate::Error;
use actix::Addr;
use hermes_actors::chain;
use hermes_actors::firewall::{self, FirewallStats};
use hermes_actors::identity::{self, IdentityInfo};
use hermes_actors::network::{Command, GossipMessage, PeerInfo};
use hermes_actors::stream::bulk::{StreamOptions, StreamWriter};
use hermes_actors::stream::{self, DeliveryEvent, MessageStats};
use hermes_proto::firewall::{Acl, Scope};
use hermes_proto::{Hotkey, SignedBinding};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::{broadcast, oneshot};

/// The public view of an outbox entry.
fn entry(m: hermes_proto::outbox::Meta, last_error: Option<String>, prefix: u16) -> OutboxEntry {
    OutboxEntry {
        id: m.id,
        to: m.to.to_ss58(prefix),
        netuid: m.netuid,
        len: m.len,
        created_at: m.created_at,
        expires_at: m.expires_at,
        last_error,
    }
}

impl RuntimeHandle {
    /// The node's identity: SS58 address, hotkey, peer id and current binding record.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown; [`Error::Identity`] if the actor failed the request.
    pub async fn identity(&self) -> Result<IdentityInfo, Error> {
        Ok(Self::ask(&self.inner.parts.identity, identity::GetIdentity).await??)
    }

    /// Signs `message` with the hotkey for the application: sr25519 over
    /// `b"hermes/app/v1" || message`. The domain tag means that no bytes an application is asked
    /// to sign can yield a signature valid for a binding record, a session header or a chain
    /// extrinsic (there is deliberately no raw variant on the handle). Check it with
    /// [`RuntimeHandle::verify`] or `Hotkey::verify_app`, or `hermes verify`.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn sign(&self, message: &[u8]) -> Result<[u8; 64], Error> {
        Ok(Self::ask(&self.inner.parts.identity, identity::Sign(message.to_vec())).await??)
    }

    /// Whether `signature` is `signer`'s [`RuntimeHandle::sign`] signature over `message`.
    pub fn verify(&self, signer: &Hotkey, message: &[u8], signature: &[u8]) -> bool {
        signer.verify_app(message, signature)
    }

    /// Verifies a peer's binding record for a connection from `peer_id`.
    ///
    /// # Errors
    /// [`Error::Identity`] with the precise reason it was refused.
    pub async fn verify_binding(
        &self,
        bytes: Vec<u8>,
        peer_id: libp2p::PeerId,
        expected: Option<hermes_proto::Hotkey>,
    ) -> Result<hermes_proto::SignedBinding, Error> {
        Ok(Self::ask(
            &self.inner.parts.identity,
            identity::VerifyBinding {
                bytes,
                peer_id,
                expected,
            },
        )
        .await??)
    }

    /// Test hook: makes the IdentityActor panic inside a handler.
    ///
    /// # Errors
    /// Always an error: the request that panicked fails, and the actor restarts.
    #[cfg(feature = "fault-injection")]
    pub async fn inject_identity_panic(&self) -> Result<(), Error> {
        Ok(Self::ask(&self.inner.parts.identity, identity::InjectPanic).await??)
    }

    /// Test hook: makes the StreamActor panic inside a handler.
    ///
    /// # Errors
    /// Always an error: the request that panicked fails, and the actor restarts.
    #[cfg(feature = "fault-injection")]
    pub async fn inject_stream_panic(&self) -> Result<(), Error> {
        Ok(Self::ask(&self.stream_parts()?.actor, stream::InjectPanic).await??)
    }

    /// Test hook: a raw `/hermes/msg/1` (`messages`) or `/hermes/stream/1` substream to the
    /// verified peer `to`, for sending hand-made frames.
    ///
    /// # Errors
    /// [`Error::Stream`] when the peer cannot be reached.
    #[cfg(feature = "fault-injection")]
    pub async fn debug_raw_substream(
        &self,
        to: &str,
        messages: bool,
    ) -> Result<libp2p::Stream, Error> {
        let (hotkey, _) = Hotkey::from_ss58(to).map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Self::ask(
            &self.stream_parts()?.actor,
            stream::RawSubstream {
                to: hotkey,
                messages,
            },
        )
        .await??)
    }

    /// Test hook: a copy of every message frame this node writes from now on.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    #[cfg(feature = "fault-injection")]
    pub async fn debug_wiretap(&self) -> Result<broadcast::Receiver<Vec<u8>>, Error> {
        Self::ask(&self.stream_parts()?.actor, stream::Wiretap).await
    }

    /// Sends `msg` to an actor and maps a stopped actor to [`Error::Stopped`].
    pub(crate) async fn ask<A, M>(addr: &Addr<A>, msg: M) -> Result<M::Result, Error>
    where
        A: actix::Handler<M>,
        A::Context: actix::dev::ToEnvelope<A, M>,
        M: actix::Message + Send + 'static,
        M::Result: Send,
    {
        addr.send(msg).await.map_err(|_| Error::Stopped)
    }

    async fn net<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Error> {
        let net = self.inner.parts.net.as_ref().ok_or_else(|| {
            Error::Network("networking is off for this runtime (with_network(false))".into())
        })?;
        let (tx, rx) = oneshot::channel();
        net.commands
            .send(make(tx))
            .await
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }

    /// Addresses the node listens on (as bound: a port 0 in the config shows the real port).
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, Error> {
        self.net(Command::ListenAddrs).await
    }

    /// Admitted peers whose binding verified, with SS58, peer id, addresses and subnets.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, Error> {
        self.net(Command::Peers).await
    }

    /// Peers with an open connection, verified or not yet.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, Error> {
        self.net(Command::Connected).await
    }

    /// Finds a node's binding in the DHT by its wallet address alone, verified.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad address, [`Error::NotFound`] when no valid binding is found.
    pub async fn find(&self, ss58: &str) -> Result<SignedBinding, Error> {
        let (hotkey, _) = Hotkey::from_ss58(ss58).map_err(|e| Error::Invalid(e.to_string()))?;
        self.net(|tx| Command::Find(hotkey, tx))
            .await?
            .map_err(Error::NotFound)
    }

    /// Stores a record in the DHT (persisted in sled on every node that holds it).
    ///
    /// # Errors
    /// [`Error::Network`] when no peer accepted it.
    pub async fn dht_put(&self, key: &[u8], value: Vec<u8>) -> Result<(), Error> {
        self.net(|tx| Command::PutRecord(key.to_vec(), value, tx))
            .await?
            .map_err(Error::Network)
    }

    /// Reads a record from the DHT (local store first).
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn dht_get(&self, key: &[u8]) -> Result<Vec<u8>, Error> {
        self.net(|tx| Command::GetRecord(key.to_vec(), tx))
            .await?
            .map_err(Error::NotFound)
    }

    /// Publishes `data` on subnet `netuid`'s gossip topic.
    ///
    /// # Errors
    /// [`Error::Network`], e.g. when no verified peer is subscribed yet.
    pub async fn publish(&self, netuid: u16, data: Vec<u8>) -> Result<(), Error> {
        self.net(|tx| Command::Publish(netuid, data, tx))
            .await?
            .map_err(Error::Network)
    }

    /// Gossip accepted from verified peers on this node's subnets. Consensus records share the
    /// subnet topics: payloads starting with `hermes/consensus/v1` are the ConsensusActors'
    /// (see `hermes_actors::consensus::gossip`), everything else is the applications'.
    ///
    /// # Errors
    /// [`Error::Network`] when networking is off.
    pub fn subscribe_gossip(
        &self,
    ) -> Result<tokio::sync::broadcast::Receiver<GossipMessage>, Error> {
        self.inner
            .parts
            .net
            .as_ref()
            .map(|n| n.gossip.subscribe())
            .ok_or_else(|| Error::Network("networking is off for this runtime".into()))
    }

    /// Peers in the Kademlia routing table.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn routing_table(&self) -> Result<Vec<PeerId>, Error> {
        self.net(Command::RoutingTable).await
    }

    /// Peers in any gossipsub mesh of this node.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn mesh_peers(&self) -> Result<Vec<PeerId>, Error> {
        self.net(Command::MeshPeers).await
    }

    /// Dials an address.
    ///
    /// # Errors
    /// [`Error::Network`] if the dial cannot start.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), Error> {
        self.net(|tx| Command::Dial(addr, tx))
            .await?
            .map_err(Error::Network)
    }

    pub(crate) fn parts(&self) -> &Parts {
        &self.inner.parts
    }

    /// The SS58 prefix addresses are shown with (`identity.ss58_prefix`).
    pub fn ss58_prefix(&self) -> u16 {
        self.inner.parts.ss58_prefix
    }

    /// The default store of offers (`sync.backend`).
    pub(crate) fn sync_backend(&self) -> hermes_actors::sync::Backend {
        self.inner.parts.sync_backend
    }

    fn stream_parts(&self) -> Result<&StreamParts, Error> {
        self.inner.parts.stream.as_ref().ok_or_else(|| {
            Error::Network("networking is off for this runtime (with_network(false))".into())
        })
    }

    /// Sends `bytes` to the node of wallet address `to` on subnet `netuid`, end-to-end encrypted.
    /// Returns once the message is in the durable outbox; it is delivered (and de-duplicated by
    /// its id, see `docs/SECURITY.md`) as soon as the recipient is reachable, and retried with backoff until `messages.ttl` ends. Watch
    /// [`RuntimeHandle::delivery_events`] for the outcome.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad address; [`Error::Stream`] with [`StreamError::TooLarge`]
    /// beyond `messages.max_size` (nothing is sent), or a full outbox.
    pub async fn send(
        &self,
        to: &str,
        netuid: u16,
        bytes: impl Into<Vec<u8>>,
    ) -> Result<MessageId, Error> {
        self.send_with(to, netuid, bytes, SendOptions::default())
            .await
    }

    /// [`RuntimeHandle::send`] with options (e.g. a TTL).
    ///
    /// # Errors
    /// As [`RuntimeHandle::send`].
    pub async fn send_with(
        &self,
        to: &str,
        netuid: u16,
        bytes: impl Into<Vec<u8>>,
        opts: SendOptions,
    ) -> Result<MessageId, Error> {
        let (hotkey, _) = Hotkey::from_ss58(to).map_err(|e| Error::Invalid(e.to_string()))?;
        let sp = self.stream_parts()?;
        Ok(Self::ask(
            &sp.actor,
            stream::SendMessage {
                to: hotkey,
                netuid,
                payload: bytes.into(),
                ttl: opts.ttl,
            },
        )
        .await??)
    }

    /// The inbox: every message delivered to this node. Each is acknowledged to its sender once
    /// the application drops it (or calls [`Inbound::ack`]), so hold it until it is handled; a
    /// crash before that delivers it again, with the same id. One consumer at a time;
    /// dropping it gives it back (messages keep waiting meanwhile).
    ///
    /// # Errors
    /// [`Error::Invalid`] while another `Inbox` is alive; [`Error::Network`] with networking off.
    pub fn subscribe(&self) -> Result<Inbox, Error> {
        let parts = self.stream_parts()?;
        Taken::take(&parts.inbox, &parts.inbox_taken).ok_or_else(|| {
            Error::Invalid("the inbox is already taken; drop the other Inbox first".into())
        })
    }

    /// Outcomes of sent messages: delivered, expired, or refused by the recipient.
    ///
    /// # Errors
    /// [`Error::Network`] with networking off.
    pub fn delivery_events(&self) -> Result<broadcast::Receiver<DeliveryEvent>, Error> {
        Ok(self.stream_parts()?.events.subscribe())
    }

    /// Message and stream counters, including refusals per reason.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn message_stats(&self) -> Result<MessageStats, Error> {
        Self::ask(&self.stream_parts()?.actor, stream::GetStats).await
    }

    /// Messages waiting in the outbox.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn outbox(&self) -> Result<Vec<OutboxEntry>, Error> {
        let sp = self.stream_parts()?;
        let prefix = sp.ss58_prefix;
        Ok(Self::ask(&sp.actor, stream::GetOutbox)
            .await?
            .into_iter()
            .map(|w| entry(w.meta, w.last_error, prefix))
            .collect())
    }

    /// Drops message `id` from the outbox: it is not sent, or retried, any more. Returns what
    /// was dropped. A message being written to its recipient at this moment may already have
    /// arrived and cannot be called back.
    ///
    /// # Errors
    /// [`Error::Stream`] with [`StreamError::NotInOutbox`](crate::StreamError::NotInOutbox) when
    /// no such message waits (delivered, refused, expired, cancelled, or never sent from here),
    /// or [`StreamError::Invalid`](crate::StreamError::Invalid) while it is in flight.
    pub async fn cancel(&self, id: MessageId) -> Result<OutboxEntry, Error> {
        let sp = self.stream_parts()?;
        let meta = Self::ask(&sp.actor, stream::CancelMessage(id)).await??;
        Ok(entry(meta, None, sp.ss58_prefix))
    }

    /// Opens an end-to-end encrypted stream to the node of `to` on `netuid`. Write to it (it
    /// implements the `futures` and `tokio` write traits), then call
    /// [`StreamWriter::finish`] to close it and wait for the recipient's confirmation.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad address; [`Error::Stream`] when the recipient is unreachable
    /// or refuses.
    pub async fn open_stream(&self, to: &str, netuid: u16) -> Result<StreamWriter, Error> {
        let chunk = self.stream_parts()?.chunk_size;
        self.open_stream_with(to, netuid, StreamOptions::new(chunk))
            .await
    }

    /// [`RuntimeHandle::open_stream`] with a name for the stream (e.g. the file's name, at most
    /// 255 bytes), sealed end to end with the data; the recipient sees it sanitized as
    /// [`IncomingStream::name`](crate::IncomingStream::name).
    ///
    /// # Errors
    /// As [`RuntimeHandle::open_stream`]; [`Error::Stream`] with `Invalid` for an empty or
    /// over-long name.
    pub async fn open_stream_named(
        &self,
        to: &str,
        netuid: u16,
        name: Option<&str>,
    ) -> Result<StreamWriter, Error> {
        let chunk = self.stream_parts()?.chunk_size;
        let mut opts = StreamOptions::new(chunk);
        opts.name = name.map(str::to_string);
        self.open_stream_with(to, netuid, opts).await
    }

    /// [`RuntimeHandle::open_stream`] with options (chunk size, name, or no end-to-end
    /// encryption).
    ///
    /// # Errors
    /// As [`RuntimeHandle::open_stream`].
    pub async fn open_stream_with(
        &self,
        to: &str,
        netuid: u16,
        opts: StreamOptions,
    ) -> Result<StreamWriter, Error> {
        let (hotkey, _) = Hotkey::from_ss58(to).map_err(|e| Error::Invalid(e.to_string()))?;
        let sp = self.stream_parts()?;
        Ok(Self::ask(
            &sp.actor,
            stream::OpenStream {
                to: hotkey,
                netuid,
                opts,
            },
        )
        .await??)
    }

    /// Streams opened to this node. One consumer at a time, like [`RuntimeHandle::subscribe`];
    /// while nobody takes them, up to `streams.max_incoming` wait and further ones are refused.
    ///
    /// # Errors
    /// [`Error::Invalid`] while another consumer is alive; [`Error::Network`] with networking off.
    pub fn incoming_streams(&self) -> Result<IncomingStreams, Error> {
        let parts = self.stream_parts()?;
        Taken::take(&parts.incoming, &parts.incoming_taken).ok_or_else(|| {
            Error::Invalid(
                "incoming streams are already taken; drop the other consumer first".into(),
            )
        })
    }

    /// Replaces the prekey now and pushes the new binding to every peer. With `erase_previous`,
    /// retired prekeys are erased at once (after a suspected key theft: sessions sealed to them
    /// can then never be opened again, here or anywhere).
    ///
    /// # Errors
    /// [`Error::Identity`] when the prekey file cannot be written.
    pub async fn rotate_prekey(&self, erase_previous: bool) -> Result<IdentityInfo, Error> {
        Ok(Self::ask(
            &self.inner.parts.identity,
            identity::RotatePrekey { erase_previous },
        )
        .await??)
    }

    /// Denial counters per reason and a summary of the policy in force.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn firewall_stats(&self) -> Result<FirewallStats, Error> {
        Self::ask(&self.inner.parts.firewall, firewall::GetStats).await
    }

    /// Replaces the ACL; connected peers it now refuses are disconnected.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn update_acl(&self, acl: Acl) -> Result<(), Error> {
        Self::ask(&self.inner.parts.firewall, firewall::UpdateAcl(acl)).await
    }

    /// Replaces the subnet scope; connected peers it now refuses are disconnected.
    ///
    /// # Errors
    /// [`Error::Stopped`] after shutdown.
    pub async fn set_subnet_scope(&self, scope: Scope) -> Result<(), Error> {
        Self::ask(&self.inner.parts.firewall, firewall::SetSubnetScope(scope)).await
    }

    /// Re-reads the chain registry now instead of waiting for the next poll.
    ///
    /// # Errors
    /// [`Error::Network`] if the backend could not be read.
    pub async fn refresh_chain(&self) -> Result<usize, Error> {
        Self::ask(&self.inner.parts.chain, chain::Refresh)
            .await?
            .map(|r| r.len())
            .map_err(Error::Network)
    }

    /// Stops every actor, flushes and closes the database, releases the data dir and joins the
    /// runtime thread. Idempotent: later calls (from any clone) return `Ok` at once.
    ///
    /// # Errors
    /// [`Error::Startup`] if the runtime thread panicked.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let control = match self.inner.control.lock() {
            Ok(mut c) => c.take(),
            Err(_) => None,
        };
        let Some(control) = control else {
            return Ok(());
        };
        let _ = control.stop_tx.send(());
        // Wait without blocking the caller's executor; the join after `done` is immediate.
        let _ = control.done_rx.await;
        control
            .thread
            .join()
            .map_err(|_| Error::Startup("the runtime thread panicked".into()))
    }
}
