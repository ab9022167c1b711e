"""The firewall from Python: its counters, and the ACL and the subnet scope replaced at runtime
between two real nodes on loopback."""

from __future__ import annotations

import pytest

import hermes_p2p
from conftest import NETUID, eventually, linked


async def _refused_while(a, b, addr: str, reason: str, before: int) -> None:
    """B dials A until A has counted one more refusal for `reason`; B stays disconnected."""
    b_peer = (await b.identity()).peer_id

    async def counted():
        try:
            await b.dial(addr)
        except hermes_p2p.HermesError:
            pass  # a refused dial may fail on B's side too; A's counter is what is checked
        return (await a.firewall_stats()).denied.get(reason, 0) > before

    await eventually(counted, f"A refusing B's dial as {reason}")
    assert b_peer not in await a.connected_peers()


async def _reconnects(a, b, addr: str) -> None:
    b_peer = (await b.identity()).peer_id

    async def back():
        if b_peer in await a.connected_peers():
            return True
        try:
            await b.dial(addr)
        except hermes_p2p.HermesError:
            pass
        return False

    await eventually(back, "B admitted again")


async def test_acl_and_scope_replaced_at_runtime(pair):
    b_config, b_ss58 = pair.add_python_node("b")
    async with hermes_p2p.Node.start(pair.py_config) as a, \
            hermes_p2p.Node.start(b_config) as b:
        b_peer = await linked(a, b)
        addr = (await a.listen_addrs())[0]

        stats = await a.firewall_stats()
        assert isinstance(stats, hermes_p2p.FirewallStats)
        # The Rust node's, A's and B's registrations; the chain was just read.
        assert stats.registry_entries == 3 and not stats.chain_stale
        assert (stats.scope_mode, stats.scope_netuids) == ("single", [NETUID])
        assert stats.acl_entries == (0, 0)

        # Deny B by its wallet address: A drops it and refuses it from then on.
        before = stats.denied.get("acl_ss58", 0)
        await a.update_acl(deny=[b_ss58])

        async def dropped():
            return b_peer not in await a.connected_peers()

        await eventually(dropped, "A dropping B once the ACL denies it")
        assert (await a.firewall_stats()).acl_entries == (0, 1)
        await _refused_while(a, b, addr, "acl_ss58", before)

        # An empty ACL again: B comes back.
        await a.update_acl()
        assert (await a.firewall_stats()).acl_entries == (0, 0)
        await _reconnects(a, b, addr)

        # A scope without B's subnet: dropped and refused as out of scope.
        before = (await a.firewall_stats()).denied.get("out_of_scope", 0)
        await a.set_subnet_scope("whitelist", [NETUID + 1, NETUID + 2])
        await eventually(dropped, "A dropping B once its subnet is out of scope")
        stats = await a.firewall_stats()
        assert (stats.scope_mode, stats.scope_netuids) == ("whitelist", [NETUID + 1, NETUID + 2])
        await _refused_while(a, b, addr, "out_of_scope", before)

        await a.set_subnet_scope("open")
        assert (await a.firewall_stats()).scope_mode == "open"
        await _reconnects(a, b, addr)


@pytest.mark.parametrize(
    "call, says",
    [
        (lambda n: n.update_acl(allow=["5F-not-an-address"]), "allow[0]"),
        (lambda n: n.update_acl(deny=["12D3KooW", ""]), "deny[0]"),
        (lambda n: n.set_subnet_scope("single", [1, 2]), "exactly one netuid, got 2"),
        (lambda n: n.set_subnet_scope("whitelist"), "at least one netuid"),
        (lambda n: n.set_subnet_scope("whitelist", [4, 4]), "listed twice"),
        (lambda n: n.set_subnet_scope("open", [1]), "takes no netuids"),
        (lambda n: n.set_subnet_scope("closed"), "mode `closed`"),
    ],
)
async def test_bad_firewall_arguments_are_refused_and_change_nothing(pair, call, says):
    async with hermes_p2p.Node.start(pair.py_config, network=False) as node:
        before = await node.firewall_stats()
        with pytest.raises(hermes_p2p.InvalidArgument) as e:
            await call(node)
        assert says in str(e.value)
        after = await node.firewall_stats()
        assert (after.acl_entries, after.scope_mode, after.scope_netuids) == (
            before.acl_entries,
            before.scope_mode,
            before.scope_netuids,
        )


async def test_a_netuid_out_of_range_is_refused(pair):
    async with hermes_p2p.Node.start(pair.py_config, network=False) as node:
        with pytest.raises(OverflowError):
            await node.set_subnet_scope("single", [70000])
