"""Leaves the interpreter while a stream is being written: a daemon thread's event loop keeps
writing to the Rust node when the main thread exits (argv: config, recipient, netuid)."""

import asyncio
import sys
import threading

import hermes_p2p

config, to, netuid = sys.argv[1], sys.argv[2], int(sys.argv[3])
writing = threading.Event()


async def main():
    node = await hermes_p2p.Node.start(config)
    for _ in range(400):
        if any(p.ss58 == to for p in await node.peers()):
            break
        await asyncio.sleep(0.05)
    w = await node.open_stream(to, netuid)
    block = bytes(1 << 20)
    while True:
        await w.write(block)
        writing.set()


threading.Thread(target=lambda: asyncio.run(main()), daemon=True).start()
if not writing.wait(60):
    sys.exit(3)
# Exit with the write, its Rust task and the node all in flight.
sys.exit(0)
