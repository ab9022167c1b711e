"""Leaving the interpreter with a transfer in flight: no crash, no hang, the data dir released
(the next run starts on it). HERMES_EXIT_LOOPS sets the number of runs (default 200, about a minute)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from conftest import NETUID, WAIT

LOOPS = int(os.environ.get("HERMES_EXIT_LOOPS", "200"))
CHILD = pathlib.Path(__file__).with_name("exit_child.py")


def test_interpreter_exits_with_a_stream_in_flight(pair):
    pair.start_rust()
    for i in range(LOOPS):
        p = subprocess.run(
            [sys.executable, str(CHILD), str(pair.py_config), pair.rust_ss58, str(NETUID)],
            capture_output=True, text=True, timeout=WAIT,
        )
        assert p.returncode == 0, f"run {i}: exit code {p.returncode}\n{p.stderr[-3000:]}"
        assert "Fatal Python error" not in p.stderr, p.stderr[-3000:]
        assert "panicked" not in p.stderr, p.stderr[-3000:]
