"""The Sync Engine from Python on loopback: offers both ways between a Python node and the
Rust CLI (checked by hash), progress and cancellation of a download, then its resume, and bad
tickets raising the exception that names the problem."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import pytest

import hermes_p2p
from conftest import NETUID, WAIT, connected

MIB = 1 << 20


def payload(path, size: int) -> str:
    """Writes `size` incompressible bytes to `path`; their sha256 (hex)."""
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_python_offers_to_rust(pair):
    rust = pair.start_rust()
    src = pair.tmp / "weights.bin"
    digest = payload(src, 3 * MIB + 123)
    async with hermes_p2p.Node.start(pair.py_config) as node:
        await connected(node, pair.rust_ss58)
        ticket = await asyncio.wait_for(node.offer(src, pair.rust_ss58, netuid=NETUID), WAIT)
        assert isinstance(ticket, hermes_p2p.Ticket)
        assert (ticket.sender, ticket.receiver) == (pair.py_ss58, pair.rust_ss58)
        assert (ticket.netuid, ticket.size, ticket.file_name) == (NETUID, 3 * MIB + 123,
                                                                  "weights.bin")
        text = str(ticket)
        assert text.startswith("hermes-ticket1:") and "\n" not in text
        assert hermes_p2p.Ticket.parse(f"  {text}\n") == ticket

        # The ticket went to the Rust node as a message; `listen --save-dir` fetches it.
        done = await asyncio.to_thread(
            rust.expect, lambda o: o.get("type") == "transfer" and o["id"] == ticket.transfer_id,
            "the end of the download")
        assert done["from"] == pair.py_ss58
        assert done["size"] == ticket.size
        assert sha256(pair.tmp / done["path"]) == digest

        offers = [t for t in await node.transfers() if t.id == ticket.transfer_id]
        assert len(offers) == 1
        assert (offers[0].direction, offers[0].peer, offers[0].state) == (
            "offer", pair.rust_ss58, "serving")
        assert offers[0].done_bytes >= ticket.size  # sealed bytes served


async def test_rust_offers_to_python(pair):
    pair.start_rust()
    src = pair.tmp / "checkpoint.tar"
    digest = payload(src, 2 * MIB + 7)
    async with hermes_p2p.Node.start(pair.py_config) as node:
        await connected(node, pair.rust_ss58)
        inbox = node.messages()
        printed = await asyncio.to_thread(
            pair.rust_cli, "share", "--config", str(pair.rust_config), "--to", pair.py_ss58,
            "--netuid", str(NETUID), str(src))
        # The ticket arrives as an end-to-end message too, the same one the CLI printed.
        msg = await asyncio.wait_for(anext(inbox), WAIT)
        assert msg.sender == pair.rust_ss58
        ticket = hermes_p2p.Ticket.parse(msg.data.decode(), node.ss58_prefix)
        msg.ack()
        assert str(ticket) == printed.strip()
        assert ticket.sender == pair.rust_ss58

        dest = pair.tmp / "got" / "checkpoint.tar"
        dest.parent.mkdir()
        transfer = await asyncio.wait_for(node.fetch(ticket, dest), WAIT)
        assert transfer.id == ticket.transfer_id
        reports = []
        async with asyncio.timeout(WAIT):
            async for p in transfer.progress():
                reports.append(p)
        assert reports, "no progress report at all"
        done = [p.done_bytes for p in reports]
        assert done == sorted(done)
        last = reports[-1]
        assert (last.done_bytes, last.total_bytes, last.finished) == (ticket.size, ticket.size,
                                                                      True)
        final = await asyncio.wait_for(transfer.wait(), WAIT)
        assert final.finished and transfer.done
        assert sha256(dest) == digest
        infos = {t.id: t for t in await node.transfers()}
        assert infos[ticket.transfer_id].state == "done"
        assert infos[ticket.transfer_id].direction == "download"


def slow_downloads(config) -> None:
    """One chunk in flight at a time, so that a download of several chunks takes several round
    trips and can be cancelled half-way."""
    cfg = json.loads(config.read_text())
    cfg.setdefault("sync", {})["parallelism"] = 1
    config.write_text(json.dumps(cfg))


async def test_cancel_mid_transfer_then_resume(pair):
    b_config, b_ss58 = pair.add_python_node("py2")
    slow_downloads(b_config)
    src = pair.tmp / "big.bin"
    # 32 one-MiB chunks fetched one at a time: the cancel, sent as soon as the first report
    # arrives, has 31 round trips of margin even on a loaded machine.
    size = 32 * MIB
    digest = payload(src, size)
    async with hermes_p2p.Node.start(pair.py_config) as a, \
            hermes_p2p.Node.start(b_config) as b:
        await connected(a, b_ss58)
        ticket = await asyncio.wait_for(
            a.offer(src, b_ss58, NETUID, chunk_size=MIB, deliver=False), WAIT)
        dest = pair.tmp / "copy.bin"
        transfer = await asyncio.wait_for(b.fetch(str(ticket), dest), WAIT)
        async with asyncio.timeout(WAIT):
            async for p in transfer:
                if p.done_bytes > 0:
                    assert p.done_bytes < size, "finished before it could be cancelled"
                    assert p.total_bytes == size and not p.finished
                    assert p.rate > 0 and p.eta is not None and p.eta > 0
                    await transfer.cancel()
                    break
        assert transfer.done
        with pytest.raises(hermes_p2p.SyncError) as e:
            await transfer.wait()
        assert "download cancelled" in str(e.value)
        assert not dest.exists()
        info = {t.id: t for t in await b.transfers()}[ticket.transfer_id]
        assert info.state == "cancelled"
        assert 0 < info.done_bytes < size
        assert await b.transfer(ticket.transfer_id) is None or \
            (await b.transfer(ticket.transfer_id)).done

        # The node stays usable: fetching the ticket again resumes into the same file.
        again = await asyncio.wait_for(b.fetch(ticket, dest), WAIT)
        assert again.latest.done_bytes >= info.done_bytes  # resumed, not restarted
        final = await asyncio.wait_for(again.wait(), WAIT)
        assert final.finished
        assert sha256(dest) == digest


async def test_bad_tickets_raise_naming_the_problem(pair):
    b_config, b_ss58 = pair.add_python_node("py2")
    src = pair.tmp / "small.bin"
    payload(src, 1000)
    async with hermes_p2p.Node.start(pair.py_config) as a, \
            hermes_p2p.Node.start(b_config) as b:
        await connected(a, b_ss58)
        good = str(await asyncio.wait_for(a.offer(src, b_ss58, NETUID, deliver=False), WAIT))
        dest = pair.tmp / "never.bin"
        cases = [
            ("weights please", "not a Hermes ticket"),
            ("hermes-ticket9:abcd", "ticket version `hermes-ticket9` is not supported"),
            (good[:-40], "ticket is truncated"),
            (good[:30] + "!" + good[31:], "invalid character '!' at position"),
        ]
        for text, why in cases:
            with pytest.raises(hermes_p2p.InvalidArgument) as e:
                await b.fetch(text, dest)
            assert why in str(e.value), (text[:40], str(e.value))
            assert isinstance(e.value, ValueError)
            with pytest.raises(hermes_p2p.InvalidArgument) as e2:
                hermes_p2p.Ticket.parse(text)
            assert str(e2.value) == str(e.value)
        # Well-formed, but not for this node: the sender cannot download its own offer.
        with pytest.raises(hermes_p2p.SyncError) as e:
            await a.fetch(good, dest)
        assert f"ticket is for {b_ss58}, not for this node" in str(e.value)
        # An existing destination is refused rather than overwritten.
        src_copy = pair.tmp / "exists.bin"
        src_copy.write_bytes(b"keep me")
        with pytest.raises(hermes_p2p.SyncError) as e:
            await b.fetch(good, src_copy)
        assert str(src_copy) in str(e.value)
        assert src_copy.read_bytes() == b"keep me"
        with pytest.raises(hermes_p2p.InvalidArgument):
            await b.revoke("not-hex")
        with pytest.raises(hermes_p2p.SyncError):
            await b.revoke("00" * 16)
        assert not dest.exists()
