"""Hermes for Python: direct, wallet-authenticated, end-to-end encrypted links between subnet
nodes, from asyncio.

    import asyncio, hermes_p2p

    async def main():
        async with hermes_p2p.Node.start("hermes.json") as node:
            await node.send("5F...", 3, b"epoch 7 ready")

    asyncio.run(main())

The runtime keeps its own threads; the GIL is released while it works and every result is
handed to the awaiting event loop. See ``python/README.md``.
"""

from ._native import (
    ConfigError,
    ConsensusStatus,
    EpochOutcome,
    EpochTrace,
    Equivocation,
    FirewallStats,
    HermesError,
    IdentityError,
    InvalidArgument,
    NetworkError,
    NotFoundError,
    StoppedError,
    StorageError,
    Standing,
    StreamError,
    SyncError,
    VERSION as __version__,
)
from .node import IncomingStreams, Messages, Node, StreamReader, StreamWriter
from .parity import ALIASES, EXCLUDED
from .sync import Progress, Ticket, Transfer, TransferInfo

__all__ = [
    "Node",
    "Messages",
    "IncomingStreams",
    "StreamReader",
    "StreamWriter",
    "Ticket",
    "Transfer",
    "Progress",
    "TransferInfo",
    "ConsensusStatus",
    "EpochOutcome",
    "Standing",
    "EpochTrace",
    "Equivocation",
    "FirewallStats",
    "HermesError",
    "ConfigError",
    "InvalidArgument",
    "NetworkError",
    "NotFoundError",
    "StreamError",
    "IdentityError",
    "StorageError",
    "SyncError",
    "StoppedError",
    "ALIASES",
    "EXCLUDED",
]
