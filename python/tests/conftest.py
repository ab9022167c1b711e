"""Real nodes on loopback: a Rust node (the `hermes` CLI of this workspace, `hermes listen
--json`) and a Python node, both registered on a dev chain in a temp dir."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import queue
import signal
import socket
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERMES = os.environ.get("HERMES_BIN", str(ROOT / "target" / "debug" / "hermes"))
NETUID = 3
#: Bound of every wait for the network (connections, deliveries): generous for a loaded CI.
WAIT = float(os.environ.get("HERMES_TEST_WAIT", "60"))


def hermes(*args: str, cwd: pathlib.Path) -> str:
    """Runs the CLI; its stdout. Fails the test with stderr on a non-zero exit."""
    p = subprocess.run(
        [HERMES, *args], cwd=cwd, capture_output=True, text=True, timeout=WAIT
    )
    assert p.returncode == 0, f"hermes {' '.join(args)}: {p.stderr}"
    return p.stdout


def free_port() -> int:
    """A port free for both TCP and UDP (QUIC) on loopback right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


class RustNode:
    """`hermes listen --json` in a subprocess; its stdout lines as parsed JSON objects."""

    def __init__(self, config: pathlib.Path, save_dir: pathlib.Path) -> None:
        self.proc = subprocess.Popen(
            [HERMES, "listen", "--config", str(config), "--json", "--save-dir", str(save_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: "queue.Queue[dict]" = queue.Queue()
        self.ready = threading.Event()
        self.stderr: list[str] = []
        threading.Thread(target=self._out, daemon=True).start()
        threading.Thread(target=self._err, daemon=True).start()
        assert self.ready.wait(WAIT), f"the Rust node did not start: {self.stderr}"

    def _out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                pass

    def _err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            if "listening for messages and streams" in line:
                self.ready.set()

    def expect(self, pred, what: str) -> dict:
        """The next output object matching `pred` (bounded wait)."""
        deadline = time.monotonic() + WAIT
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"the Rust node never printed {what}; stderr: {self.stderr[-20:]}"
            try:
                obj = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if pred(obj):
                return obj

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Pair:
    """Configs of a Rust node (`rust/`) and a Python node (`py/`, bootstrapping off the Rust
    one), both registered on the dev chain `chain/`."""

    def __init__(self, tmp: pathlib.Path) -> None:
        self.tmp = tmp
        rust_port, py_port = free_port(), free_port()
        hermes("init", "--dir", "rust", "--port", str(rust_port), "--netuid", str(NETUID),
               "--chain", "chain", cwd=tmp)
        hermes("init", "--dir", "py", "--port", str(py_port), "--netuid", str(NETUID),
               "--chain", "chain", "--bootstrap", f"/ip4/127.0.0.1/tcp/{rust_port}", cwd=tmp)
        for d in ("rust", "py"):
            hermes("devchain", "register", "--config", f"{d}/hermes.json", "--stake", "1000",
                   cwd=tmp)
        self.rust_config = tmp / "rust" / "hermes.json"
        self.py_config = tmp / "py" / "hermes.json"
        self.rust_ss58 = hermes("id", "--config", "rust/hermes.json", "--field", "ss58",
                                cwd=tmp).strip()
        self.py_ss58 = hermes("id", "--config", "py/hermes.json", "--field", "ss58",
                              cwd=tmp).strip()
        self.inbox = tmp / "inbox"
        self.rust: RustNode | None = None
        self.py_port = py_port
        self.rust_port = rust_port

    def add_python_node(self, name: str) -> tuple[pathlib.Path, str]:
        """One more registered node, bootstrapping off the Python one; (config, ss58)."""
        hermes("init", "--dir", name, "--port", str(free_port()), "--netuid", str(NETUID),
               "--chain", "chain", "--bootstrap", f"/ip4/127.0.0.1/tcp/{self.py_port}",
               cwd=self.tmp)
        hermes("devchain", "register", "--config", f"{name}/hermes.json", "--stake", "1000",
               cwd=self.tmp)
        ss58 = hermes("id", "--config", f"{name}/hermes.json", "--field", "ss58",
                      cwd=self.tmp).strip()
        return self.tmp / name / "hermes.json", ss58

    def start_rust(self) -> RustNode:
        self.rust = RustNode(self.rust_config, self.inbox)
        return self.rust

    def rust_cli(self, *args: str) -> str:
        """A CLI command through the running Rust node (its control socket)."""
        return hermes(*args, cwd=self.tmp)

    def close(self) -> None:
        if self.rust is not None:
            self.rust.stop()


@pytest.fixture
def pair(tmp_path):
    p = Pair(tmp_path)
    yield p
    p.close()


async def eventually(cond, what: str, timeout: float = WAIT):
    """Polls the coroutine function `cond` until it returns a truthy value (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        v = await cond()
        if v:
            return v
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def connected(node, ss58: str) -> None:
    """Waits until `node` has admitted the peer of `ss58`."""

    async def seen():
        return any(p.ss58 == ss58 for p in await node.peers())

    await eventually(seen, f"a verified connection to {ss58}")


async def linked(a, b) -> str:
    """Waits until node `a` holds a connection to node `b`; returns b's peer id."""
    b_peer = (await b.identity()).peer_id

    async def up():
        return b_peer in await a.connected_peers()

    await eventually(up, f"a connection to {b_peer}")
    return b_peer
