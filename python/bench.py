"""Rough figures for the Python bindings: stream throughput, 1 KiB message rate and asyncio
event-loop lag, between two Python nodes on loopback (registered on a dev chain in a temp dir).

    python bench.py [--stream-mib 1024] [--messages 5000]

Needs the `hermes` CLI (HERMES_BIN, default target/debug/hermes) to set the nodes up. The Rust
baselines are `cargo bench --bench stream` and `--bench flood` (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import resource
import sys
import tempfile
import time

# The script's own directory holds the package sources: import the installed wheel instead.
sys.path[0] = str(pathlib.Path(__file__).resolve().parent / "tests")

import hermes_p2p  # noqa: E402
from conftest import NETUID, Pair, connected  # noqa: E402


async def lag_probe(samples: list[float], stop: asyncio.Event) -> None:
    """How late a 1 ms timer fires: the event loop's lag."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        samples.append(time.perf_counter() - t - 0.001)


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else 0.0


async def main(stream_mib: int, messages: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pair = Pair(pathlib.Path(tmp))
        b_config, b_ss58 = pair.add_python_node("py2")
        async with hermes_p2p.Node.start(pair.py_config) as a, \
                hermes_p2p.Node.start(b_config) as b:
            await connected(a, b_ss58)

            # Stream throughput, with the loop's lag measured meanwhile.
            block = bytes(4 << 20)
            total = stream_mib << 20
            lags: list[float] = []
            stop = asyncio.Event()
            probe = asyncio.create_task(lag_probe(lags, stop))

            async def receive() -> int:
                s = await anext(b.incoming_streams())
                n = 0
                while chunk := await s.read(1 << 20):
                    n += len(chunk)
                return n

            t0 = time.perf_counter()
            reader = asyncio.create_task(receive())
            w = await a.open_stream(b_ss58, NETUID)
            sent = 0
            while sent < total:
                await w.write(block)
                sent += len(block)
            await w.close(timeout=600)
            got = await reader
            dt = time.perf_counter() - t0
            stop.set()
            await probe
            assert got == sent
            print(f"stream: {sent >> 20} MiB in {dt:.2f} s = {sent / dt / 2**20:.1f} MiB/s; "
                  f"event-loop lag p99 {p99(lags) * 1e3:.2f} ms, max {max(lags) * 1e3:.2f} ms")

            # 1 KiB message rate, sender to consumer.
            payload = bytes(1024)
            inbox = b.messages()
            t0 = time.perf_counter()

            async def consume() -> None:
                for _ in range(messages):
                    m = await anext(inbox)
                    m.ack()

            consumer = asyncio.create_task(consume())
            for _ in range(messages):
                await a.send(b_ss58, NETUID, payload)
            await consumer
            dt = time.perf_counter() - t0
            print(f"messages: {messages} x 1 KiB in {dt:.2f} s = {messages / dt:.0f} msg/s")
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"peak RSS of the process (both nodes): {rss:.1f} MiB")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--stream-mib", type=int, default=1024)
    ap.add_argument("--messages", type=int, default=5000)
    args = ap.parse_args()
    asyncio.run(main(args.stream_mib, args.messages))
