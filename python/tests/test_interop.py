"""A Python node and a Rust node on loopback: messages and streams both ways."""

from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import pytest

import hermes_p2p
from conftest import NETUID, WAIT, connected


async def test_messages_both_ways(pair):
    rust = pair.start_rust()
    async with hermes_p2p.Node.start(pair.py_config) as node:
        me = await node.identity()
        assert me.ss58 == pair.py_ss58
        await connected(node, pair.rust_ss58)

        # Python -> Rust: bytes, bytearray and a memoryview.
        for payload in (b"epoch 7 ready", bytearray(b"from a bytearray"),
                        memoryview(b"xxfrom a memoryviewxx")[2:-2]):
            mid = await node.send(pair.rust_ss58, NETUID, payload)
            got = rust.expect(lambda o: o.get("type") == "message" and o["id"] == mid,
                              f"message {mid}")
            assert got["from"] == pair.py_ss58
            assert got["netuid"] == NETUID
            assert got["text"] == bytes(payload).decode()

        # Rust -> Python, through the running Rust node's control socket.
        inbox = node.messages()
        # The CLI waits for the delivery confirmation, which comes once we acknowledge.
        sending = asyncio.create_task(asyncio.to_thread(
            pair.rust_cli, "send", "--config", str(pair.rust_config), "--to", pair.py_ss58,
            "--message", "weights for epoch 8"))
        msg = await asyncio.wait_for(anext(inbox), WAIT)
        assert msg.sender == pair.rust_ss58
        assert msg.netuid == NETUID
        assert msg.data == b"weights for epoch 8"
        msg.ack()
        await asyncio.wait_for(sending, WAIT)


async def test_streams_both_ways(pair):
    rust = pair.start_rust()
    async with hermes_p2p.Node.start(pair.py_config) as node:
        await connected(node, pair.rust_ss58)

        # Python -> Rust: 3 MiB + 5 from several buffer kinds, numpy included.
        arr = np.arange(1 << 18, dtype=np.float64)  # 2 MiB of float64, written as raw bytes
        tail = bytearray(range(256)) * 4096 + bytearray(5)  # 1 MiB + 5
        expected = arr.tobytes() + bytes(tail)
        async with await node.open_stream(pair.rust_ss58, NETUID, name="weights.bin") as w:
            await w.write(arr)
            await w.write(memoryview(tail))
        got = rust.expect(lambda o: o.get("type") == "stream", "the stream")
        assert got["size"] == len(expected)
        assert got["from"] == pair.py_ss58
        saved = pair.inbox / "weights.bin"
        assert hashlib.sha256(saved.read_bytes()).digest() == hashlib.sha256(expected).digest()

        # Rust -> Python: `hermes stream` through the running Rust node.
        data = bytes((i * 13 + 1) % 256 for i in range((1 << 20) + 7))
        src = pair.tmp / "checkpoint.tar"
        src.write_bytes(data)
        sending = asyncio.create_task(asyncio.to_thread(
            pair.rust_cli, "stream", "--config", str(pair.rust_config), "--to", pair.py_ss58,
            "--file", str(src)))
        stream = await asyncio.wait_for(anext(node.incoming_streams()), WAIT)
        assert stream.sender == pair.rust_ss58
        assert stream.name == "checkpoint.tar"
        chunks = [c async for c in stream]
        assert b"".join(chunks) == data
        await asyncio.wait_for(sending, WAIT)  # the CLI got the confirmation


async def test_send_to_bad_address_raises_invalid_argument(pair):
    async with hermes_p2p.Node.start(pair.py_config, network=True) as node:
        with pytest.raises(hermes_p2p.InvalidArgument) as e:
            await node.send("not-an-address", NETUID, b"x")
        assert isinstance(e.value, ValueError)
        assert "invalid argument" in str(e.value)
        with pytest.raises(OverflowError):
            await node.send(pair.rust_ss58, 70000, b"x")
        with pytest.raises(TypeError):
            await node.send(pair.rust_ss58, NETUID, "a str is not bytes")


async def test_too_large_message_raises_stream_error_with_rust_text(pair):
    async with hermes_p2p.Node.start(pair.py_config) as node:
        with pytest.raises(hermes_p2p.StreamError) as e:
            await node.send(pair.rust_ss58, NETUID, bytes(64 << 20))
        assert "messages.max_size" in str(e.value)
        assert "send it as a stream instead" in str(e.value)
