"""Type stubs of the extension module (the Rust runtime handle and its data plane)."""

from typing import Any, Awaitable, Optional, Sequence, Union
from os import PathLike

BufferLike = Any  # bytes, bytearray, memoryview, numpy arrays: anything with the buffer protocol

MAX_READ: int
DEFAULT_READ: int
VERSION: str

class HermesError(Exception):
    field: Optional[str]
class ConfigError(HermesError): ...
class InvalidArgument(HermesError, ValueError): ...
class NetworkError(HermesError): ...
class NotFoundError(HermesError): ...
class StreamError(HermesError): ...
class IdentityError(HermesError): ...
class StorageError(HermesError): ...
class SyncError(HermesError): ...
class StoppedError(HermesError): ...

class Identity:
    ss58: str
    hotkey: str
    peer_id: str
    transport_key_type: str
    prekeys: int
    restarts: int

class Peer:
    ss58: str
    peer_id: str
    addresses: list[str]
    netuids: list[int]

class Binding:
    ss58: str
    netuids: list[int]
    issued_at: int
    expires_at: int

class MessageStats:
    sent: int
    delivered: int
    received: int
    duplicates: int
    outbox: int
    outbox_bytes: int
    sessions: tuple[int, int]
    streams: tuple[int, int]
    stream_bytes: tuple[int, int]
    rejected: list[tuple[str, int]]


class OutboxEntry:
    id: str
    to: str
    netuid: int
    len: int
    created_at: int
    expires_at: int
    last_error: Optional[str]

class StreamReport:
    bytes: int
    elapsed: float

class DeliveryEvent:
    kind: str
    id: str
    to: str
    reason: Optional[str]

class Message:
    sender: str
    netuid: int
    id: str
    sent_at: int
    @property
    def data(self) -> bytes: ...
    def ack(self) -> None: ...
    def give_back(self) -> None: ...

class Inbox:
    def recv(self) -> Awaitable[Optional[Message]]: ...
    def try_recv(self) -> Optional[Message]: ...

class IncomingStream:
    sender: str
    netuid: int
    id: str
    e2e: bool
    name: Optional[str]
    def read(self, n: int = ...) -> Awaitable[bytes]: ...

class Incoming:
    def accept(self) -> Awaitable[Optional[IncomingStream]]: ...

class StreamWriter:
    id: str
    bytes_written: int
    def write(self, data: BufferLike) -> Awaitable[None]: ...
    def close(self, timeout: Optional[float] = None) -> Awaitable[StreamReport]: ...
    def abort(self) -> Awaitable[None]: ...


class GossipMessage:
    sender: str
    peer_id: str
    netuid: int
    @property
    def data(self) -> bytes: ...

class Gossip:
    skipped: int
    def recv(self) -> Awaitable[Optional[GossipMessage]]: ...

class Events:
    def recv(self) -> Awaitable[Optional[DeliveryEvent]]: ...

class Ticket:
    """A signed ticket; ``str(ticket)`` is its one-line form, ``Ticket.parse`` reads it back."""
    @staticmethod
    def parse(text: str, ss58_prefix: int = 42) -> "Ticket": ...
    @property
    def transfer_id(self) -> str: ...
    @property
    def sender(self) -> str: ...
    @property
    def receiver(self) -> str: ...
    @property
    def netuid(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def chunk_size(self) -> int: ...
    @property
    def file_name(self) -> Optional[str]: ...
    @property
    def issued_at(self) -> int: ...
    @property
    def expires_at(self) -> int: ...

class Progress:
    done_bytes: int
    total_bytes: int
    rate: float
    eta: Optional[float]
    finished: bool

class ProgressIter:
    def next(self) -> Awaitable[Optional[Progress]]: ...

class Transfer:
    @property
    def id(self) -> str: ...
    @property
    def dest(self) -> str: ...
    @property
    def progress(self) -> Progress: ...
    @property
    def done(self) -> bool: ...
    def wait(self) -> Awaitable[Progress]: ...
    def cancel(self) -> None: ...
    def updates(self) -> ProgressIter: ...

class TransferInfo:
    id: str
    direction: str
    peer: str
    path: str
    size: int
    done_bytes: int
    state: str
    error: Optional[str]
    backend: Optional[str]
    expires_at: int
    rate: float

class EpochOutcome:
    netuid: int
    epoch: int
    elected: Optional[str]
    proposal: Optional[str]
    attestations: int
    validators: int
    verdict: str
    changes: list[tuple[str, str, str]]
    proposed: bool
    attested: bool

class Standing:
    node_class: str
    registered_epoch: int
    progress: int
    penalties: int
    reputation_ppm: int

class EpochTrace:
    epoch: int
    proposed_ago: Optional[float]
    proposal_ago: Optional[float]
    finalized_ago: Optional[float]
    sent: tuple[int, int]
    received: tuple[int, int]

class ConsensusStatus:
    netuid: int
    block: Optional[int]
    epoch: Optional[int]
    elected: Optional[str]
    attestations: tuple[int, int]
    validator: bool
    standing: Optional[Standing]
    last: Optional[tuple[int, str]]
    last_outcome: Optional[EpochOutcome]
    followed: Optional[int]
    proposed: Optional[tuple[int, str]]
    attested: Optional[tuple[int, str]]
    last_error: Optional[str]
    bad_records: dict[str, int]
    evidence: int
    traces: list[EpochTrace]

class ConsensusEvents:
    skipped: int
    def recv(self) -> Awaitable[Optional[EpochOutcome]]: ...

class Equivocation:
    netuid: int
    epoch: int
    proposer: str
    first: tuple[bytes, str]
    second: tuple[bytes, str]
    heard_from: str

class EvidenceEvents:
    skipped: int
    def recv(self) -> Awaitable[Optional[Equivocation]]: ...

class FirewallStats:
    denied: dict[str, int]
    registry_entries: int
    chain_stale: bool
    scope_mode: str
    scope_netuids: list[int]
    acl_entries: tuple[int, int]

class NativeNode:
    @staticmethod
    def start(config: Union[str, PathLike], *, network: bool = True, logging: bool = False) -> Awaitable["NativeNode"]: ...
    def identity(self) -> Awaitable[Identity]: ...
    def sign(self, message: BufferLike) -> Awaitable[bytes]: ...
    def verify(self, signer: str, message: BufferLike, signature: BufferLike) -> bool: ...
    def ss58_prefix(self) -> int: ...
    def listen_addrs(self) -> Awaitable[list[str]]: ...
    def peers(self) -> Awaitable[list[Peer]]: ...
    def connected_peers(self) -> Awaitable[list[str]]: ...
    def routing_table(self) -> Awaitable[list[str]]: ...
    def mesh_peers(self) -> Awaitable[list[str]]: ...
    def find(self, ss58: str) -> Awaitable[Binding]: ...
    def dial(self, addr: str) -> Awaitable[None]: ...
    def dht_put(self, key: BufferLike, value: BufferLike) -> Awaitable[None]: ...
    def dht_get(self, key: BufferLike) -> Awaitable[bytes]: ...
    def publish(self, netuid: int, data: BufferLike) -> Awaitable[None]: ...
    def subscribe_gossip(self) -> Gossip: ...
    def send(self, to: str, netuid: int, data: BufferLike, *, ttl: Optional[float] = None) -> Awaitable[str]: ...
    def subscribe(self) -> Inbox: ...
    def delivery_events(self) -> Events: ...
    def message_stats(self) -> Awaitable[MessageStats]: ...
    def outbox(self) -> Awaitable[list[OutboxEntry]]: ...
    def cancel(self, id: str) -> Awaitable[OutboxEntry]: ...
    def open_stream(self, to: str, netuid: int, *, name: Optional[str] = None, chunk_size: Optional[int] = None, e2e: bool = True) -> Awaitable[StreamWriter]: ...
    def incoming_streams(self) -> Incoming: ...
    def offer(self, path: Union[str, PathLike], to: str, netuid: int, *, ttl: Optional[float] = None, chunk_size: Optional[int] = None, file_name: Optional[str] = None, via: Optional[str] = None, deliver: bool = True) -> Awaitable[Ticket]: ...
    def fetch(self, ticket: Union[Ticket, str], dest: Union[str, PathLike]) -> Awaitable[Transfer]: ...
    def transfers(self) -> Awaitable[list[TransferInfo]]: ...
    def transfer(self, id: str) -> Awaitable[Optional[Transfer]]: ...
    def revoke(self, id: str) -> Awaitable[TransferInfo]: ...
    def consensus_status(self, netuid: int) -> Awaitable[ConsensusStatus]: ...
    def consensus_statuses(self) -> Awaitable[list[ConsensusStatus]]: ...
    def poll_consensus(self, netuid: int) -> Awaitable[ConsensusStatus]: ...
    def consensus_events(self) -> ConsensusEvents: ...
    def consensus_evidence(self) -> EvidenceEvents: ...
    def consensus_off(self) -> Optional[str]: ...
    def firewall_stats(self) -> Awaitable[FirewallStats]: ...
    def update_acl(self, allow: Sequence[str], deny: Sequence[str]) -> Awaitable[None]: ...
    def set_subnet_scope(self, mode: str, netuids: Sequence[int]) -> Awaitable[None]: ...
    def rotate_prekey(self, erase_previous: bool = False) -> Awaitable[Identity]: ...
    def refresh_chain(self) -> Awaitable[int]: ...
    def shutdown(self) -> Awaitable[None]: ...
    def shutdown_blocking(self) -> None: ...
