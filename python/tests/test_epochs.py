"""Consensus from Python, read-only: a node on the dev chain reports its subnet's epoch, and an
epoch closed by stepping the chain arrives as an EpochOutcome."""

from __future__ import annotations

import asyncio
import json

import pytest

import hermes_p2p
from conftest import NETUID, WAIT, eventually, hermes

async def test_status_and_finished_epochs(pair):
    cfg = json.loads(pair.py_config.read_text())
    cfg["consensus"]["poll_interval"] = "100ms"
    pair.py_config.write_text(json.dumps(cfg))
    async with hermes_p2p.Node.start(pair.py_config) as node:
        assert node.consensus_off is None
        events = node.consensus_events()

        async def read():
            s = await node.consensus_status(NETUID)
            return s if s.epoch is not None else None

        status = await eventually(read, "the consensus actor reading the chain")
        assert status.netuid == NETUID and status.block is not None
        assert [s.netuid for s in await node.consensus_statuses()] == [NETUID]
        with pytest.raises(hermes_p2p.NotFoundError) as e:
            await node.consensus_status(NETUID + 1)
        assert f"no consensus for subnet {NETUID + 1}" in str(e.value)

        # The dev chain advances only when stepped. The first epoch had no round (the nodes
        # registered during it); the next one has, and closing it yields its outcome.
        assert status.epoch == 0

        async def step_to(epoch: int):
            await asyncio.to_thread(hermes, "devchain", "step", "--chain", "chain", "20",
                                    cwd=pair.tmp)

            async def there():
                return (await node.consensus_status(NETUID)).epoch == epoch

            await eventually(there, f"the node seeing epoch {epoch}")

        await step_to(1)
        await step_to(2)
        outcome = await asyncio.wait_for(anext(events), WAIT)
        assert isinstance(outcome, hermes_p2p.EpochOutcome)
        assert (outcome.netuid, outcome.epoch) == (NETUID, 1)
        # Two idle nodes, no validator yet: nobody was elected.
        assert outcome.verdict == "no_validators"
        assert outcome.elected is None and outcome.validators == 0
        assert not outcome.proposed and not outcome.attested

        async def followed():
            s = await node.consensus_status(NETUID)
            return s if s.last is not None else None

        after = await eventually(followed, "the status showing the finished epoch")
        assert after.last == (1, "no_validators")
        assert after.last_outcome.epoch == 1 and after.followed == 1

        # The node's standing as the dev chain holds it, read once the epoch closed.
        async def standing():
            return (await node.consensus_status(NETUID)).standing

        st = await eventually(standing, "the status showing the node's standing")
        assert isinstance(st, hermes_p2p.Standing)
        assert st.node_class in ("registered", "idle") and st.registered_epoch == 0
        assert st.penalties == 0 and st.reputation_ppm == 1_000_000


async def test_poll_consensus_reads_the_chain_now(pair):
    cfg = json.loads(pair.py_config.read_text())
    # Only the poll at start and poll_consensus can read the chain in this test.
    cfg["consensus"]["poll_interval"] = "10m"
    pair.py_config.write_text(json.dumps(cfg))
    async with hermes_p2p.Node.start(pair.py_config) as node:

        async def read():
            s = await node.poll_consensus(NETUID)
            return s if s.epoch is not None else None

        first = await eventually(read, "the consensus actor reading the chain")
        assert first.epoch == 0
        await asyncio.to_thread(hermes, "devchain", "step", "--chain", "chain", "20",
                                cwd=pair.tmp)
        # The actor has not looked again on its own...
        assert (await node.consensus_status(NETUID)).epoch == 0
        # ...and does when asked.
        polled = await node.poll_consensus(NETUID)
        assert polled.epoch == 1 and polled.block > first.block
        assert (await node.consensus_status(NETUID)).epoch == 1
        # Nothing bad heard: every reason is listed, at zero; no evidence.
        assert polled.bad_records == {
            r: 0
            for r in (
                "malformed", "oversized", "bad_signature", "wrong_subnet", "wrong_epoch",
                "not_elected", "not_validator", "not_included", "wrong_proposal",
                "equivocation", "duplicate",
            )
        }
        assert polled.evidence == 0
        # No validator yet: nothing was gossiped, so no epoch has traffic in its trace.
        assert all(isinstance(t, hermes_p2p.EpochTrace) and t.sent == (0, 0) == t.received
                   for t in polled.traces)
        evidence = node.consensus_evidence()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(anext(evidence), 0.5)
        with pytest.raises(hermes_p2p.NotFoundError):
            await node.poll_consensus(NETUID + 1)


async def test_consensus_off_says_why(pair):
    cfg = json.loads(pair.py_config.read_text())
    cfg["consensus"]["enabled"] = False
    pair.py_config.write_text(json.dumps(cfg))
    async with hermes_p2p.Node.start(pair.py_config) as node:
        assert node.consensus_off == "consensus.enabled is false"
        assert await node.consensus_statuses() == []
        with pytest.raises(hermes_p2p.NotFoundError) as e:
            await node.consensus_status(NETUID)
        assert "consensus.enabled is false" in str(e.value)
