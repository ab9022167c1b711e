"""Backpressure and cancellation of the data plane, between two Python nodes on loopback.

A receiver that does not read holds at most `messages.inbox_capacity` messages; the rest wait
unacknowledged in the sender's outbox, whose byte limit makes `send` fail (StreamError, outbox
full) instead of memory or disk growing. Cancelled sends and stream writes leave both nodes
usable."""

from __future__ import annotations

import asyncio
import json

import pytest

import hermes_p2p
from conftest import NETUID, WAIT, connected, eventually

CAPACITY = 4
SIZE = 4096
OUTBOX = 64 * 1024


def configure(config, **messages) -> None:
    cfg = json.loads(config.read_text())
    cfg.setdefault("messages", {}).update(messages)
    config.write_text(json.dumps(cfg))


async def test_receiver_that_does_not_read_bounds_the_sender(pair):
    b_config, b_ss58 = pair.add_python_node("py2")
    configure(pair.py_config, outbox_max_bytes=OUTBOX, max_size=SIZE)
    configure(b_config, inbox_capacity=CAPACITY)
    async with hermes_p2p.Node.start(pair.py_config) as a, \
            hermes_p2p.Node.start(b_config) as b:
        await connected(a, b_ss58)
        # b does not read. Each send returns once durable; the unacknowledged ones stay in a's
        # outbox until it is full, then `send` refuses instead of queueing more.
        sent: dict[str, bytes] = {}
        with pytest.raises(hermes_p2p.StreamError) as e:
            for i in range(10 * OUTBOX // SIZE):
                data = i.to_bytes(4, "big") * (SIZE // 4)
                sent[await asyncio.wait_for(a.send(b_ss58, NETUID, data), WAIT)] = data
        assert "outbox full" in str(e.value)
        assert "messages.outbox_max_bytes" in str(e.value)
        assert 0 < len(sent) <= OUTBOX // SIZE

        # b takes in what its inbox holds, and no more while nobody reads it.
        async def inbox_full():
            return (await b.message_stats()).received >= CAPACITY

        await eventually(inbox_full, "the receiver's inbox filling up")
        assert (await b.message_stats()).received == CAPACITY
        stats = await a.message_stats()
        assert stats.delivered == 0
        assert stats.outbox == len(sent)
        assert stats.outbox_bytes <= OUTBOX

        # Reading drains it: every message arrives once, and a's outbox empties.
        got: dict[str, bytes] = {}
        inbox = b.messages()
        async with asyncio.timeout(WAIT):
            while len(got) < len(sent):
                msg = await anext(inbox)
                assert msg.id not in got, "delivered twice"
                got[msg.id] = msg.data
                msg.ack()
        assert got == sent

        async def outbox_empty():
            return (await a.message_stats()).outbox == 0

        await eventually(outbox_empty, "the sender's outbox draining")
        assert (await a.message_stats()).delivered == len(sent)
        # Room again: the next send is accepted and delivered.
        mid = await a.send(b_ss58, NETUID, b"after the drain")
        msg = await asyncio.wait_for(anext(inbox), WAIT)
        assert (msg.id, msg.data) == (mid, b"after the drain")


async def test_cancelled_sends_leave_the_node_usable(pair):
    b_config, b_ss58 = pair.add_python_node("py2")
    async with hermes_p2p.Node.start(pair.py_config) as a, \
            hermes_p2p.Node.start(b_config) as b:
        await connected(a, b_ss58)
        payloads = {i.to_bytes(4, "big") * 256 for i in range(200)}
        tasks = [asyncio.create_task(a.send(b_ss58, NETUID, p)) for p in payloads]
        # Let them start (each is then a Rust task waiting on the node), then cancel them all
        # as soon as the first is accepted: the rest are cancelled while pending.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        accepted = {r for r in results if isinstance(r, str)}
        cancelled = [r for r in results if isinstance(r, asyncio.CancelledError)]
        assert accepted, "no send completed"
        assert cancelled, "every send had completed before the cancellation"
        assert len(accepted) + len(cancelled) == len(tasks), results

        # The node keeps working: a send after the cancellations is delivered, and so is every
        # accepted one; a cancelled one either never entered the outbox or is delivered whole.
        after = await asyncio.wait_for(a.send(b_ss58, NETUID, b"after the cancellations"), WAIT)
        got: dict[str, bytes] = {}
        inbox = b.messages()
        async with asyncio.timeout(WAIT):
            while after not in got or not accepted <= got.keys():
                msg = await anext(inbox)
                assert msg.id not in got, "delivered twice"
                got[msg.id] = msg.data
                msg.ack()
        assert got[after] == b"after the cancellations"
        assert all(data in payloads for mid, data in got.items() if mid != after)

        async def settled():
            return (await a.message_stats()).outbox == 0

        await eventually(settled, "the sender's outbox draining")
        assert len(got) <= len(payloads) + 1


async def test_cancelled_write_to_the_rust_node_leaves_both_usable(pair):
    rust = pair.start_rust()
    async with hermes_p2p.Node.start(pair.py_config) as node:
        await connected(node, pair.rust_ss58)
        w = await asyncio.wait_for(node.open_stream(pair.rust_ss58, NETUID, name="cut.bin"),
                                   WAIT)
        writing = asyncio.create_task(w.write(bytearray(256 << 20)))

        async def some_sent():
            return w.bytes_written > 0 or writing.done()

        await eventually(some_sent, "the first bytes of the stream leaving")
        assert not writing.done(), "256 MiB written before the cancellation"
        writing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writing
        with pytest.raises(hermes_p2p.StreamError) as e:
            await w.write(b"more")
        assert "write to it was cancelled" in str(e.value)
        # The cut stream is not saved as if complete.
        assert not (pair.inbox / "cut.bin").exists() or \
            (pair.inbox / "cut.bin").stat().st_size < 256 << 20

        # Both nodes still work: a message and a whole stream reach the Rust node.
        mid = await node.send(pair.rust_ss58, NETUID, b"still here")
        await asyncio.to_thread(
            rust.expect, lambda o: o.get("type") == "message" and o["id"] == mid, "the message")
        async with await node.open_stream(pair.rust_ss58, NETUID, name="whole.bin") as w2:
            await w2.write(b"w" * 100_000)
        got = await asyncio.to_thread(
            rust.expect, lambda o: o.get("type") == "stream" and o.get("size") == 100_000,
            "the second stream")
        assert got["from"] == pair.py_ss58
        assert (pair.inbox / "whole.bin").read_bytes() == b"w" * 100_000


async def test_waiting_messages_taken_without_awaiting_and_the_rest_kept(pair):
    """`recv_nowait` hands out what is already in the inbox; what is not handed out stays
    unacknowledged, so a node that stops with messages waiting gets them again."""
    b_config, b_ss58 = pair.add_python_node("py2")
    configure(b_config, inbox_capacity=CAPACITY)
    async with hermes_p2p.Node.start(pair.py_config) as a:
        sent: dict[str, bytes] = {}
        async with hermes_p2p.Node.start(b_config) as b:
            await connected(a, b_ss58)
            inbox = b.messages()
            assert inbox.recv_nowait() is None, "a message out of nowhere"
            for i in range(CAPACITY):
                data = bytes([i]) * 64
                sent[await asyncio.wait_for(a.send(b_ss58, NETUID, data), WAIT)] = data

            async def inbox_full():
                return (await b.message_stats()).received >= CAPACITY

            await eventually(inbox_full, "the receiver's inbox filling up")
            taken = [inbox.recv_nowait() for _ in range(2)]
            assert all(m is not None for m in taken), taken
            assert len({m.id for m in taken}) == 2
            for m in taken:
                assert sent[m.id] == m.data
                m.ack()

            async def two_delivered():
                return (await a.message_stats()).delivered >= 2

            await eventually(two_delivered, "the two taken messages acknowledged")
        # b stopped with two messages in its inbox that nobody took: not acknowledged.
        stats = await a.message_stats()
        assert stats.delivered == 2
        assert stats.outbox == CAPACITY - 2
        rest = {mid: data for mid, data in sent.items() if mid not in {m.id for m in taken}}

        async with hermes_p2p.Node.start(b_config) as b:
            got: dict[str, bytes] = {}
            inbox = b.messages()
            async with asyncio.timeout(WAIT):
                while len(got) < len(rest):
                    msg = await anext(inbox)
                    assert msg.id not in got, "delivered twice"
                    got[msg.id] = msg.data
                    msg.ack()
            assert got == rest
