"""The Python bindings against the Rust API, in the same run: stream throughput, 1 KiB message
rate and the asyncio event loop's lag during the stream.

    python bench.py --rust-bench PATH [--stream-mib 1024] [--messages 20000] [--rounds 3]

Each round runs the Rust side first (`PATH` is the release binary of `cargo bench --bench
stream`, run with `BENCH_ONLY=tcp,msg`: two nodes in one process, one stream over TCP with E2E
on, then 1 KiB messages with 512 sends in flight), then the same work from Python (two nodes in
this process, on a dev chain in a temp dir, same node settings: TCP only, the registry read at
start). Medians over the rounds are printed side by side with the ratio. `python/bench.sh`
builds both in release and runs this.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

# The script's own directory holds the package sources: import the installed wheel instead.
sys.path[0] = str(pathlib.Path(__file__).resolve().parent / "tests")

import hermes_p2p  # noqa: E402
from conftest import NETUID, Pair, linked  # noqa: E402

IN_FLIGHT = 512
BLOCK = 4 << 20


async def lag_probe(samples: list[float], stop: asyncio.Event) -> None:
    """How late a 1 ms timer fires: the event loop's lag."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        samples.append(time.perf_counter() - t - 0.001)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else 0.0


def bench_config(path: pathlib.Path) -> None:
    """The settings of the Rust bench's nodes: TCP only, the registry read once at start."""
    cfg = json.loads(path.read_text())
    cfg["listen"] = [a for a in cfg["listen"] if "/tcp/" in a]
    cfg["chain"]["poll_interval"] = "10m"
    cfg["chain"]["max_staleness"] = "20m"
    cfg.setdefault("log", {})["level"] = "error"
    path.write_text(json.dumps(cfg))


async def python_round(stream_mib: int, messages: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        pair = Pair(pathlib.Path(tmp))
        b_config, b_ss58 = pair.add_python_node("py2")
        bench_config(pair.py_config)
        bench_config(b_config)
        async with hermes_p2p.Node.start(pair.py_config) as a, \
                hermes_p2p.Node.start(b_config) as b:
            await linked(a, b)

            # Stream throughput, with the loop's lag measured meanwhile.
            block = bytes(BLOCK)
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
            stream_s = time.perf_counter() - t0
            stop.set()
            await probe
            assert got == sent, f"received {got} of {sent} bytes"

            # 1 KiB messages, IN_FLIGHT sends at once, until the consumer has them all.
            payload = bytes(1024)
            inbox = b.messages()

            async def consume() -> None:
                for _ in range(messages):
                    m = await anext(inbox)
                    m.ack()

            async def sender(k: int) -> None:
                for _ in range(k):
                    await a.send(b_ss58, NETUID, payload)

            t0 = time.perf_counter()
            consumer = asyncio.create_task(consume())
            share, extra = divmod(messages, IN_FLIGHT)
            await asyncio.gather(*(sender(share + (i < extra)) for i in range(IN_FLIGHT)))
            await consumer
            msg_s = time.perf_counter() - t0
    return {
        "stream": total / stream_s / 2**20,
        "msgs": messages / msg_s,
        "lag_p99_ms": pct(lags, 0.99) * 1e3,
        "lag_max_ms": max(lags) * 1e3,
    }


def rust_round(binary: str, stream_mib: int, messages: int) -> dict:
    env = dict(os.environ, BENCH_ONLY="tcp,msg", BENCH_ROUNDS="1", BENCH_MIB=str(stream_mib),
               BENCH_MSGS=str(messages), BENCH_RTT="200")
    out = subprocess.run([binary, "--bench"], env=env, capture_output=True, text=True,
                         timeout=1800)
    assert out.returncode == 0, f"the Rust bench failed: {out.stderr[-2000:]}"
    stream = re.search(r"round 1 Hermes TCP\+noise\+yamux, E2E on\s+([\d.]+) MiB/s",
                       out.stdout)
    msgs = re.search(r"^  throughput: (\d+) msg/s", out.stdout, re.M)
    assert stream and msgs, f"unexpected output of the Rust bench:\n{out.stdout}"
    return {"stream": float(stream.group(1)), "msgs": float(msgs.group(1))}


def load() -> str:
    return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rust-bench", required=True,
                    help="release binary of `cargo bench --bench stream`")
    ap.add_argument("--stream-mib", type=int, default=1024)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"stream {args.stream_mib} MiB in {BLOCK >> 20} MiB writes, {args.messages} x 1 KiB "
          f"messages with {IN_FLIGHT} in flight, {args.rounds} round(s); load {load()}")
    rust, py = [], []
    for r in range(1, args.rounds + 1):
        rust.append(rust_round(args.rust_bench, args.stream_mib, args.messages))
        print(f"  round {r} Rust:   stream {rust[-1]['stream']:7.1f} MiB/s, "
              f"{rust[-1]['msgs']:8.0f} msg/s (load {load()})", flush=True)
        py.append(asyncio.run(python_round(args.stream_mib, args.messages)))
        print(f"  round {r} Python: stream {py[-1]['stream']:7.1f} MiB/s, "
              f"{py[-1]['msgs']:8.0f} msg/s, loop lag p99 {py[-1]['lag_p99_ms']:.2f} ms, "
              f"max {py[-1]['lag_max_ms']:.1f} ms (load {load()})", flush=True)

    def med(rows: list[dict], k: str) -> float:
        return statistics.median(row[k] for row in rows)

    rs, ps = med(rust, "stream"), med(py, "stream")
    rm, pm = med(rust, "msgs"), med(py, "msgs")
    print(f"\nmedian of {args.rounds}:    Rust          Python        Python / Rust")
    print(f"  stream       {rs:7.1f} MiB/s   {ps:7.1f} MiB/s   {100 * ps / rs:5.0f} %")
    print(f"  1 KiB msgs   {rm:7.0f} msg/s   {pm:7.0f} msg/s   {100 * pm / rm:5.0f} %")
    print(f"  event-loop lag p99 during the stream: {med(py, 'lag_p99_ms'):.2f} ms "
          f"(worst round {max(p['lag_p99_ms'] for p in py):.2f} ms)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS of this process (two Python nodes, every round): {rss:.1f} MiB")


if __name__ == "__main__":
    main()
