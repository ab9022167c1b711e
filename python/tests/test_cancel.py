"""Cancelling an awaiting task cancels the Rust side: a cancelled recv loses nothing and frees
the inbox; a stream write cancelled half-way aborts the stream; a future whose loop is gone is
dropped silently."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

import hermes_p2p
from conftest import NETUID, WAIT, connected, eventually


async def test_cancelled_recv_loses_nothing(pair):
    pair.start_rust()
    async with hermes_p2p.Node.start(pair.py_config) as node:
        await connected(node, pair.rust_ss58)
        inbox = node.messages()
        # Nothing is coming: the recv times out (is cancelled) on the Rust side too...
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(anext(inbox), 0.2)
        waiting = asyncio.create_task(anext(inbox))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        # ...so the next message goes to the next recv, not to a cancelled one.
        sending = asyncio.create_task(asyncio.to_thread(
            pair.rust_cli, "send", "--config", str(pair.rust_config), "--to", pair.py_ss58,
            "--message", "after the cancellations"))
        msg = await asyncio.wait_for(anext(inbox), WAIT)
        assert msg.data == b"after the cancellations"
        del msg
        await asyncio.wait_for(sending, WAIT)


async def test_cancelled_write_aborts_the_stream(pair):
    b_config, b_ss58 = pair.add_python_node("py2")
    async with hermes_p2p.Node.start(pair.py_config) as a, \
            hermes_p2p.Node.start(b_config) as b:
        await connected(a, b_ss58)
        w = await asyncio.wait_for(a.open_stream(b_ss58, NETUID), WAIT)
        reader = await asyncio.wait_for(anext(b.incoming_streams()), WAIT)
        # b does not read: the write fills the pipeline and then waits on flow control.
        big = bytearray(256 << 20)
        writing = asyncio.create_task(w.write(big))

        async def some_sent():
            return w.bytes_written > 0 or writing.done()

        await eventually(some_sent, "the first bytes of the stream leaving")
        assert not writing.done(), "the write finished: the receiver never applied backpressure"
        assert w.bytes_written < len(big)
        writing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writing
        # The stream is aborted, not left to be finished short.
        with pytest.raises(hermes_p2p.StreamError) as e:
            await asyncio.wait_for(w.write(b"more"), WAIT)
        assert "write to it was cancelled" in str(e.value)
        with pytest.raises(hermes_p2p.StreamError):
            async with asyncio.timeout(WAIT):
                async for _ in reader:
                    pass
        # Both nodes still work: a new stream goes through whole.
        w2 = await asyncio.wait_for(a.open_stream(b_ss58, NETUID), WAIT)
        await w2.write(b"second stream")
        closing = asyncio.create_task(w2.close(timeout=WAIT))
        r2 = await asyncio.wait_for(anext(b.incoming_streams()), WAIT)
        assert await asyncio.wait_for(r2.readall(), WAIT) == b"second stream"
        assert (await closing).bytes == len(b"second stream")


async def test_future_of_a_closed_loop_is_dropped_silently(pair):
    async with hermes_p2p.Node.start(pair.py_config, network=False) as node:
        unraisable = []
        old_hook = sys.unraisablehook
        sys.unraisablehook = unraisable.append
        try:
            def on_a_loop_that_closes():
                loop = asyncio.new_event_loop()

                async def fire():
                    # Started, never awaited; the loop closes before the result comes.
                    return [node._native.identity() for _ in range(20)]

                futs = loop.run_until_complete(fire())
                loop.close()
                return futs

            futs = await asyncio.to_thread(on_a_loop_that_closes)
            # The results come back after the close; they must vanish without a trace.
            for _ in range(20):
                assert (await node.identity()).ss58 == pair.py_ss58
            assert len(futs) == 20
        finally:
            sys.unraisablehook = old_hook
        assert unraisable == []


async def test_node_from_several_threads(pair):
    async with hermes_p2p.Node.start(pair.py_config, network=False) as node:
        me = await node.identity()
        errors: list[BaseException] = []
        results: list[str] = []
        lock = threading.Lock()

        def worker():
            async def many():
                got = await asyncio.gather(*(node.identity() for _ in range(25)))
                sig = await node.sign(b"from a thread")
                assert node.verify(me.ss58, b"from a thread", sig)
                return [g.ss58 for g in got]

            try:
                r = asyncio.run(many())
                with lock:
                    results.extend(r)
            except BaseException as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(e)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        # The owning loop keeps using it meanwhile.
        for _ in range(25):
            assert (await node.identity()).ss58 == me.ss58
        for t in threads:
            await asyncio.to_thread(t.join, WAIT)
        assert errors == []
        assert results == [me.ss58] * (8 * 25)
