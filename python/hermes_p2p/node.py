"""The idiomatic asyncio API around the native runtime handle.

Every I/O method is a coroutine; queues (messages, incoming streams, gossip, delivery events)
are async iterators pulled one item at a time, so a slow consumer leaves items in the runtime's
bounded queues and the runtime applies backpressure to the senders. No Python callback ever runs
on a Rust thread: results are handed to the caller's event loop.
"""

from __future__ import annotations

import os
import threading
from typing import AsyncIterator, Iterable, Optional, Union

from . import _native
from .sync import Ticket, Transfer, TransferInfo, wrap

Buffer = Union[bytes, bytearray, memoryview, "object"]
"""Anything with the buffer protocol (bytes, bytearray, memoryview, numpy arrays...)."""


class Messages:
    """``async for msg in node.messages()``: delivered messages, in order.

    Each :class:`Message` is acknowledged to its sender once it is garbage collected (or on
    ``msg.ack()``); ``msg.give_back()`` has the sender deliver it again later. Iteration ends
    when the node shuts down. Cancelling a pending ``__anext__`` loses no message.
    """

    def __init__(self, inbox: _native.Inbox) -> None:
        self._inbox = inbox

    def __aiter__(self) -> "Messages":
        return self

    async def __anext__(self) -> _native.Message:
        # A message already waiting is handed out without a trip through the event loop.
        msg = self._inbox.try_recv()
        if msg is None:
            msg = await self._inbox.recv()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def recv(self) -> Optional[_native.Message]:
        """The next message, or None once the node has shut down."""
        msg = self._inbox.try_recv()
        return msg if msg is not None else await self._inbox.recv()

    def recv_nowait(self) -> Optional[_native.Message]:
        """The next message if one is already waiting, else None (never waits)."""
        return self._inbox.try_recv()


class StreamReader:
    """The reading end of an incoming stream: ``await r.read(n)`` or ``async for chunk in r``.

    Reading to the end (``b""``) confirms the stream to its sender.
    """

    def __init__(self, inner: _native.IncomingStream) -> None:
        self._inner = inner
        self.sender: str = inner.sender
        self.netuid: int = inner.netuid
        self.id: str = inner.id
        self.e2e: bool = inner.e2e
        self.name: Optional[str] = inner.name

    async def read(self, n: int = _native.DEFAULT_READ) -> bytes:
        """Up to ``n`` bytes (at most 16 MiB a call); ``b""`` at the end of the stream."""
        if n < 0:
            raise _native.InvalidArgument(f"invalid argument: read size {n} is negative")
        return await self._inner.read(n)

    async def readall(self) -> bytes:
        """Everything up to the end of the stream (mind the memory for large streams)."""
        parts = []
        async for chunk in self:
            parts.append(chunk)
        return b"".join(parts)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._inner.read(_native.DEFAULT_READ)
            if not chunk:
                return
            yield chunk

    def __repr__(self) -> str:
        return f"StreamReader(sender={self.sender!r}, netuid={self.netuid}, id={self.id!r})"


class IncomingStreams:
    """``async for stream in node.incoming_streams()``: streams opened to this node."""

    def __init__(self, incoming: _native.Incoming) -> None:
        self._incoming = incoming

    def __aiter__(self) -> "IncomingStreams":
        return self

    async def __anext__(self) -> StreamReader:
        s = await self._incoming.accept()
        if s is None:
            raise StopAsyncIteration
        return StreamReader(s)

    async def accept(self) -> Optional[StreamReader]:
        """The next stream, or None once the node has shut down."""
        s = await self._incoming.accept()
        return None if s is None else StreamReader(s)


class StreamWriter:
    """The writing end of a stream; ``async with`` closes it (or aborts it on an exception)."""

    def __init__(self, inner: _native.StreamWriter) -> None:
        self._inner = inner
        self.id: str = inner.id

    async def write(self, data: Buffer) -> None:
        """Writes all of ``data``: bytes, bytearray, memoryview or any buffer (numpy arrays
        included), read in place without a copy when contiguous. Do not modify the buffer until
        the write returns. Cancelling a write aborts the stream."""
        await self._inner.write(data)

    @property
    def bytes_written(self) -> int:
        """Bytes the stream has accepted so far, a write under way included."""
        return self._inner.bytes_written

    async def close(self, timeout: Optional[float] = None) -> _native.StreamReport:
        """Finishes the stream and waits for the recipient's confirmation (default 60 s)."""
        return await self._inner.close(timeout)

    async def abort(self) -> None:
        """Aborts the stream: the recipient sees it break."""
        await self._inner.abort()

    async def __aenter__(self) -> "StreamWriter":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            await self.close()
        else:
            await self.abort()


class _Queue:
    """An async iterator over a native queue with ``recv()`` returning None at its end."""

    def __init__(self, native) -> None:
        self._native = native

    def __aiter__(self):
        return self

    async def __anext__(self):
        item = await self._native.recv()
        if item is None:
            raise StopAsyncIteration
        return item


class Node:
    """A running Hermes node.

    ``async with Node.start("hermes.json") as node:`` starts it from the same JSON config as
    the ``hermes`` CLI and shuts it down on exit. A node may be used from any thread and any
    event loop; each call's result is delivered to the loop that awaits it.
    """

    def __init__(self, native: _native.NativeNode) -> None:
        self._native = native
        self._lock = threading.Lock()
        self._inbox: Optional[_native.Inbox] = None
        self._incoming: Optional[_native.Incoming] = None

    # --- life cycle ------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        config: Union[str, os.PathLike],
        *,
        network: bool = True,
        logging: bool = False,
    ) -> "_Starting":
        """Starts a node from the JSON config at ``config``.

        Use as ``async with Node.start(path) as node:`` or ``node = await Node.start(path)``.
        ``logging=True`` installs Hermes' log output (per the config's ``log`` section).

        Raises ConfigError (with ``.field``) for a bad config, StorageError when another node
        holds the data dir.
        """
        return _Starting(os.fspath(config), network, logging)

    async def shutdown(self) -> None:
        """Stops the node: actors, database, data-dir lock. Idempotent."""
        await self._native.shutdown()

    def shutdown_blocking(self) -> None:
        """:meth:`shutdown` for synchronous code."""
        self._native.shutdown_blocking()

    async def __aenter__(self) -> "Node":
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self.shutdown()

    # --- identity --------------------------------------------------------------------------

    async def identity(self) -> _native.Identity:
        """SS58 address, hotkey, peer id, transport key type, prekeys."""
        return await self._native.identity()

    async def sign(self, message: Buffer) -> bytes:
        """The hotkey's sr25519 signature over ``b"hermes/app/v1" || message`` (64 bytes)."""
        return await self._native.sign(message)

    def verify(self, signer: str, message: Buffer, signature: Buffer) -> bool:
        """Whether ``signature`` is ``signer``'s :meth:`sign` signature over ``message``."""
        return self._native.verify(signer, message, signature)

    @property
    def ss58_prefix(self) -> int:
        """The SS58 prefix addresses are shown with."""
        return self._native.ss58_prefix()

    async def rotate_prekey(self, erase_previous: bool = False) -> _native.Identity:
        """Replaces the prekey now and pushes the new binding to every peer."""
        return await self._native.rotate_prekey(erase_previous)

    # --- network ---------------------------------------------------------------------------

    async def listen_addrs(self) -> list[str]:
        """Addresses the node listens on (as bound)."""
        return await self._native.listen_addrs()

    async def peers(self) -> list[_native.Peer]:
        """Admitted peers whose binding verified."""
        return await self._native.peers()

    async def connected_peers(self) -> list[str]:
        """Peer ids with an open connection, verified or not yet."""
        return await self._native.connected_peers()

    async def routing_table(self) -> list[str]:
        """Peer ids in the Kademlia routing table."""
        return await self._native.routing_table()

    async def mesh_peers(self) -> list[str]:
        """Peer ids in any gossipsub mesh of this node."""
        return await self._native.mesh_peers()

    async def find(self, ss58: str) -> _native.Binding:
        """A node's verified binding, found in the DHT by its wallet address."""
        return await self._native.find(ss58)

    async def dial(self, addr: str) -> None:
        """Dials a multiaddr."""
        await self._native.dial(addr)

    async def dht_put(self, key: Buffer, value: Buffer) -> None:
        """Stores a record in the DHT."""
        await self._native.dht_put(key, value)

    async def dht_get(self, key: Buffer) -> bytes:
        """Reads a record from the DHT (local store first)."""
        return await self._native.dht_get(key)

    async def publish(self, netuid: int, data: Buffer) -> None:
        """Publishes ``data`` on subnet ``netuid``'s gossip topic."""
        await self._native.publish(netuid, data)

    def gossip(self) -> AsyncIterator[_native.GossipMessage]:
        """``async for g in node.gossip()``: gossip from verified peers on this node's subnets.
        A consumer slower than the gossip skips the oldest messages."""
        return _Queue(self._native.subscribe_gossip())

    async def refresh_chain(self) -> int:
        """Re-reads the chain registry now; the number of registered nodes."""
        return await self._native.refresh_chain()

    # --- messages --------------------------------------------------------------------------

    async def send(
        self, to: str, netuid: int, data: Buffer, *, ttl: Optional[float] = None
    ) -> str:
        """Sends ``data`` end-to-end encrypted to wallet ``to`` on ``netuid``; returns the
        message id (hex) once it is in the durable outbox. ``ttl`` in seconds (default
        ``messages.ttl``). Raises StreamError beyond ``messages.max_size``."""
        return await self._native.send(to, netuid, data, ttl=ttl)

    def messages(self) -> Messages:
        """The inbox as an async iterator (one inbox per node, shared by every iterator)."""
        with self._lock:
            if self._inbox is None:
                self._inbox = self._native.subscribe()
            return Messages(self._inbox)

    def delivery_events(self) -> AsyncIterator[_native.DeliveryEvent]:
        """``async for e in node.delivery_events()``: delivered, expired or failed messages
        sent from now on."""
        return _Queue(self._native.delivery_events())

    async def message_stats(self) -> _native.MessageStats:
        """Message and stream counters."""
        return await self._native.message_stats()

    async def outbox(self) -> list[_native.OutboxEntry]:
        """Messages waiting in the outbox."""
        return await self._native.outbox()

    async def cancel(self, message_id: str) -> _native.OutboxEntry:
        """Drops a message from the outbox; returns what was dropped."""
        return await self._native.cancel(message_id)

    # --- streams ---------------------------------------------------------------------------

    async def open_stream(
        self,
        to: str,
        netuid: int,
        *,
        name: Optional[str] = None,
        chunk_size: Optional[int] = None,
        e2e: bool = True,
    ) -> StreamWriter:
        """Opens an end-to-end encrypted stream to wallet ``to`` on ``netuid``."""
        w = await self._native.open_stream(
            to, netuid, name=name, chunk_size=chunk_size, e2e=e2e
        )
        return StreamWriter(w)

    def incoming_streams(self) -> IncomingStreams:
        """Streams opened to this node, as an async iterator (one queue per node)."""
        with self._lock:
            if self._incoming is None:
                self._incoming = self._native.incoming_streams()
            return IncomingStreams(self._incoming)

    # --- Sync Engine -----------------------------------------------------------------------

    async def offer(
        self,
        path: Union[str, os.PathLike],
        to: str,
        netuid: int,
        *,
        ttl: Optional[float] = None,
        chunk_size: Optional[int] = None,
        file_name: Optional[str] = None,
        via: Optional[str] = None,
        deliver: bool = True,
    ) -> Ticket:
        """Offers the file at ``path`` to wallet ``to`` on ``netuid``: seals and hashes it in
        one pass, serves it from where it is (nothing is copied) to that node only, and returns
        the signed ticket. Unless ``deliver=False``, the ticket is also sent to the receiver as
        an end-to-end message (its string form).

        ``ttl``: ticket validity in seconds (default ``sync.ticket_ttl``); ``chunk_size`` in
        bytes (1 MiB..64 MiB, a multiple of 64 KiB; default ``sync.chunk_size``);
        ``file_name``: the name the receiver is told (default the file's own); ``via``:
        ``"embedded"`` or ``"s3"`` (default ``sync.backend``).

        Raises InvalidArgument for a bad address or option, SyncError when the file cannot be
        read or the receiver's key cannot be learnt.
        """
        return await self._native.offer(
            os.fspath(path), to, netuid, ttl=ttl, chunk_size=chunk_size,
            file_name=file_name, via=via, deliver=deliver,
        )

    async def fetch(
        self, ticket: Union[Ticket, str], dest: Union[str, os.PathLike]
    ) -> Transfer:
        """Starts downloading what ``ticket`` (a :class:`Ticket` or its string form) names into
        ``dest``: verified chunk by chunk, in parallel, resumable. Returns at once with the
        running :class:`Transfer`; the file appears at ``dest`` only once complete.

        Raises InvalidArgument for a ticket string that does not parse (the text says what is
        wrong with it), SyncError for a ticket not valid for this node (expired, for another
        receiver, tampered) or a destination that exists.
        """
        return Transfer(await self._native.fetch(ticket, os.fspath(dest)))

    async def transfers(self) -> list[TransferInfo]:
        """Every transfer this node offered or downloaded (kept in its database)."""
        return await self._native.transfers()

    async def transfer(self, transfer_id: str) -> Optional[Transfer]:
        """The running download ``transfer_id`` (hex), to follow or cancel; None if there is
        none running."""
        return wrap(await self._native.transfer(transfer_id))

    async def revoke(self, transfer_id: str) -> TransferInfo:
        """Revokes offer ``transfer_id`` (its chunks are refused from now on, also to a
        receiver halfway through), or cancels that download (its partial file is kept).
        Raises SyncError when there is no such transfer."""
        return await self._native.revoke(transfer_id)

    # --- consensus ---------------------------------------------------------------------------

    async def consensus_status(self, netuid: int) -> _native.ConsensusStatus:
        """What this node knows of subnet ``netuid``'s current epoch: block, epoch, elected
        validator, attestations so far, whether it is a validator, what it signed, the last
        outcome. Raises NotFoundError when the node takes no part in that subnet's consensus
        (the text says why)."""
        return await self._native.consensus_status(netuid)

    async def consensus_statuses(self) -> list[_native.ConsensusStatus]:
        """:meth:`consensus_status` of every subnet this node takes part in."""
        return await self._native.consensus_statuses()

    async def poll_consensus(self, netuid: int) -> _native.ConsensusStatus:
        """Reads the chain and acts on subnet ``netuid``'s epoch now (propose when elected,
        attest what it checks) instead of at the next ``consensus.poll_interval``; returns the
        status after it. Raises as :meth:`consensus_status`."""
        return await self._native.poll_consensus(netuid)

    def consensus_evidence(self) -> AsyncIterator[_native.Equivocation]:
        """``async for e in node.consensus_evidence()``: every equivocation this node records
        from now on (an elected validator that signed two different proposals for one epoch;
        both signed records are in ``e.first`` and ``e.second``). Bounded like
        :meth:`consensus_events`."""
        return _Queue(self._native.consensus_evidence())

    def consensus_events(self) -> AsyncIterator[_native.EpochOutcome]:
        """``async for o in node.consensus_events()``: every epoch of this node's subnets that
        finishes from now on, as the chain recorded it. Bounded (``consensus.events_capacity``):
        a consumer that falls behind skips the oldest outcomes."""
        return _Queue(self._native.consensus_events())

    @property
    def consensus_off(self) -> Optional[str]:
        """Why this node takes part in no consensus (disabled, no subnet, a chain without
        epochs); None while it does."""
        return self._native.consensus_off()

    # --- firewall ----------------------------------------------------------------------------

    async def firewall_stats(self) -> _native.FirewallStats:
        """Connections refused since start, per reason, and the policy in force (registry
        size, whether it is stale, the subnet scope, the ACL's sizes)."""
        return await self._native.firewall_stats()

    async def update_acl(
        self, *, allow: Iterable[str] = (), deny: Iterable[str] = ()
    ) -> None:
        """Replaces the ACL (the config's ``acl`` section): entries are SS58 addresses or peer
        ids; a non-empty ``allow`` admits only those, ``deny`` wins over ``allow``. Connected
        peers it now refuses are disconnected. Raises InvalidArgument naming a bad entry
        (``allow[2]: ...``); nothing changes then."""
        await self._native.update_acl(list(allow), list(deny))

    async def set_subnet_scope(self, mode: str, netuids: Iterable[int] = ()) -> None:
        """Replaces the subnet scope (the config's ``subnets`` section): ``"single"`` with one
        netuid, ``"whitelist"`` with one or more, ``"open"`` with none. Connected peers it now
        refuses are disconnected. Raises InvalidArgument saying which rule is broken."""
        await self._native.set_subnet_scope(mode, list(netuids))

    def __repr__(self) -> str:
        return f"<hermes_p2p.Node {self._native!r}>"


class _Starting:
    """The awaitable (and async context manager) that :meth:`Node.start` returns."""

    def __init__(self, config: str, network: bool, logging: bool) -> None:
        self._args = (config, network, logging)
        self._node: Optional[Node] = None

    async def _start(self) -> Node:
        config, network, logging = self._args
        native = await _native.NativeNode.start(config, network=network, logging=logging)
        return Node(native)

    def __await__(self):
        return self._start().__await__()

    async def __aenter__(self) -> Node:
        self._node = await self._start()
        return self._node

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if self._node is not None:
            await self._node.shutdown()
