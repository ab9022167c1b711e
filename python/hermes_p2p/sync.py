"""The Sync Engine from asyncio: offer a file to a node, fetch what a ticket names, follow and
cancel the download.

    ticket = await sender.offer("weights.bin", receiver_ss58, netuid=3)
    transfer = await receiver.fetch(str(ticket), "/data/weights.bin")
    async for p in transfer.progress():
        print(p.done_bytes, p.total_bytes, p.rate, p.eta)
    await transfer.wait()

The ticket travels as text (``str(ticket)``, one line); by default ``offer`` also sends it to
the receiver as an end-to-end message.
"""

from __future__ import annotations

from typing import AsyncIterator, Optional

from . import _native

Ticket = _native.Ticket
Progress = _native.Progress
TransferInfo = _native.TransferInfo


class Transfer:
    """A running (or finished) download, as :meth:`Node.fetch` returns it.

    ``async for p in transfer.progress()`` follows it; ``await transfer.wait()`` waits for the
    end; ``await transfer.cancel()`` stops it (the partial file is kept: fetching the same
    ticket into the same destination again resumes it).
    """

    def __init__(self, inner: _native.Transfer) -> None:
        self._inner = inner
        self.id: str = inner.id
        self.dest: str = inner.dest

    @property
    def latest(self) -> Progress:
        """The latest progress report."""
        return self._inner.progress

    @property
    def done(self) -> bool:
        """Whether the download has ended: completed, failed or cancelled."""
        return self._inner.done

    def progress(self) -> AsyncIterator[Progress]:
        """Progress reports (bytes in place, total, rate in B/s, ETA in s), from the current one
        until the download ends. Reports are coalesced, never queued: a slow consumer sees the
        latest one each time, so the iterator holds one report at most."""
        return self._follow(self._inner.updates())

    def __aiter__(self) -> AsyncIterator[Progress]:
        return self.progress()

    @staticmethod
    async def _follow(updates: _native.ProgressIter) -> AsyncIterator[Progress]:
        while True:
            p = await updates.next()
            if p is None:
                return
            yield p

    async def wait(self) -> Progress:
        """Waits for the end of the download; its final progress once the file is complete,
        verified and in place. Raises SyncError with the runtime's text when it failed or was
        cancelled. Cancelling this wait leaves the download running."""
        return await self._inner.wait()

    async def cancel(self) -> None:
        """Stops the download and waits until it has stopped (its partial file is journaled
        for a resume). A download that already ended is left as it was."""
        self._inner.cancel()
        try:
            await self._inner.wait()
        except _native.SyncError:
            pass

    def __repr__(self) -> str:
        return f"Transfer(id={self.id!r}, dest={self.dest!r})"


def wrap(inner: Optional[_native.Transfer]) -> Optional[Transfer]:
    """The Python form of a native transfer (None stays None)."""
    return None if inner is None else Transfer(inner)
