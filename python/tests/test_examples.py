"""The examples run as a user would run them: a separate interpreter, real nodes, real CLI."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

from conftest import HERMES, WAIT

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def test_validator_receives_weights_from_a_miner_on_another_subnet(tmp_path):
    p = subprocess.run(
        [sys.executable, str(EXAMPLES / "validator_miner.py"), "--mib", "8"],
        cwd=tmp_path, capture_output=True, text=True, timeout=4 * WAIT,
        env={"HERMES_BIN": HERMES, "PATH": "/usr/bin:/bin"},
    )
    assert p.returncode == 0, p.stderr
    who = re.search(r"^validator (\S+) on subnet 3; miner (\S+) on subnet 7$", p.stdout, re.M)
    assert who, p.stdout
    miner = who.group(2)
    got = re.search(rf"^validator: 8 MiB of weights from {miner} on subnet 7, mean (\S+)$",
                    p.stdout, re.M)
    expected = re.search(r"^expected mean (\S+)$", p.stdout, re.M)
    assert got and expected and got.group(1) == expected.group(1), p.stdout
    assert re.search(r"^miner: the validator answered \{'accepted': True, 'mean': 0\.\d+\}$",
                     p.stdout, re.M), p.stdout
