"""A validator on subnet 3 receives weights from a miner on subnet 7, directly, over Hermes.

    python validator_miner.py [--mib 64]

The miner streams a float32 weight tensor (numpy, no copy on the way in) to the validator; the
validator reads it back into a numpy array as it arrives, checks it, and answers with an
end-to-end encrypted message. Neither needs a server between them: the validator's firewall admits
the miner because the chain says it is registered and staked on subnet 7, a subnet the validator
accepts (`subnets: whitelist [3, 7]`), and every byte is checked against the miner's wallet.

For the demo both nodes run in this process, on a dev chain in a temp dir set up with the `hermes`
CLI (HERMES_BIN, or `hermes` on PATH). In production the miner and the validator are two
machines, each with its own hermes.json pointing at its wallet hotkey and a real chain.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import socket
import subprocess
import tempfile

import numpy as np

import hermes_p2p

VALIDATOR_NETUID, MINER_NETUID = 3, 7
HERMES = os.environ.get("HERMES_BIN", "hermes")


def cli(*args: str, cwd: pathlib.Path) -> str:
    p = subprocess.run([HERMES, *args], cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"hermes {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(tmp: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Two nodes on a dev chain: the validator on subnet 3, the miner on subnet 7, each admitting
    the other's subnet as well as its own. Returns their config files."""
    vport, mport = free_port(), free_port()
    cli("init", "--dir", "validator", "--port", str(vport), "--netuid", str(VALIDATOR_NETUID),
        "--chain", "chain", cwd=tmp)
    cli("init", "--dir", "miner", "--port", str(mport), "--netuid", str(MINER_NETUID),
        "--chain", "chain", "--bootstrap", f"/ip4/127.0.0.1/tcp/{vport}", cwd=tmp)
    for name, netuid in (("validator", VALIDATOR_NETUID), ("miner", MINER_NETUID)):
        cfg_path = tmp / name / "hermes.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["subnets"] = {"mode": "whitelist", "netuids": [VALIDATOR_NETUID, MINER_NETUID]}
        cfg["log"] = {"level": "warn"}
        cfg_path.write_text(json.dumps(cfg, indent=2))
        cli("devchain", "register", "--config", f"{name}/hermes.json", "--netuid", str(netuid),
            "--stake", "1000", cwd=tmp)
    return tmp / "validator" / "hermes.json", tmp / "miner" / "hermes.json"


async def validator(node: hermes_p2p.Node, expected: int) -> None:
    async for stream in node.incoming_streams():
        # The sender is authenticated (its binding is checked on the connection) and the subnet
        # is in this node's scope; only then is the stream handed over.
        weights = np.empty(expected, dtype=np.float32)
        view = memoryview(weights).cast("B")
        got = 0
        async for chunk in stream:
            view[got:got + len(chunk)] = chunk
            got += len(chunk)
        assert got == weights.nbytes, f"short tensor: {got} of {weights.nbytes} bytes"
        print(f"validator: {got >> 20} MiB of weights from {stream.sender} on subnet "
              f"{stream.netuid}, mean {weights.mean():.6f}")
        await node.send(stream.sender, VALIDATOR_NETUID,
                        json.dumps({"accepted": True, "mean": float(weights.mean())}).encode())
        return


async def miner(node: hermes_p2p.Node, validator_ss58: str, weights: np.ndarray) -> None:
    replies = node.messages()
    async with await node.open_stream(validator_ss58, MINER_NETUID, name="weights") as w:
        await w.write(weights)  # the array's own buffer, no copy
    reply = await anext(replies)
    reply.ack()
    print(f"miner: the validator answered {json.loads(reply.data)}")


async def main(mib: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        vcfg, mcfg = setup(pathlib.Path(tmp))
        rng = np.random.default_rng(7)
        weights = rng.random((mib << 20) // 4, dtype=np.float32)
        async with hermes_p2p.Node.start(vcfg) as v, hermes_p2p.Node.start(mcfg) as m:
            vid = await v.identity()
            print(f"validator {vid.ss58} on subnet {VALIDATOR_NETUID}; "
                  f"miner {(await m.identity()).ss58} on subnet {MINER_NETUID}")
            # Wait for the miner to have verified the validator's binding (bounded).
            for _ in range(600):
                if any(p.ss58 == vid.ss58 for p in await m.peers()):
                    break
                await asyncio.sleep(0.05)
            else:
                raise SystemExit("the miner never reached the validator")
            await asyncio.wait_for(
                asyncio.gather(validator(v, weights.size), miner(m, vid.ss58, weights)), 120)
            print(f"expected mean {weights.mean():.6f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=64, help="size of the weight tensor")
    asyncio.run(main(ap.parse_args().mib))
