"""`python -m inferstack.platform.gateway`: the gateway process (env INFERSTACK_GATEWAY_ADMIN_TOKEN required)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

import uvloop

from .admin import AdminServer
from .server import Gateway

TOKEN_ENV = "INFERSTACK_GATEWAY_ADMIN_TOKEN"
DRAIN_GRACE_S = 5.0


async def serve(token: str, admin_port: int, exit_on_stdin_eof: bool) -> None:
    loop = asyncio.get_running_loop()
    gateway = Gateway(loop)
    gateway.start()
    admin = AdminServer(gateway, token)
    port = await admin.start(admin_port)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if exit_on_stdin_eof:
        # The supervisor holds our stdin open; if it dies without stopping us, EOF arrives and we leave too.
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        loop.create_task(_set_on_eof(reader, stop))
    sys.stdout.write(json.dumps({"admin_port": port}) + "\n")
    sys.stdout.flush()
    await stop.wait()
    await admin.close()
    await gateway.drain(DRAIN_GRACE_S)


async def _set_on_eof(reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
    while await reader.read(4096):
        pass
    stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inferstack.platform.gateway", description=__doc__)
    parser.add_argument("--admin-port", type=int, default=0, help="admin API port on 127.0.0.1 (0 = any free port)")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="exit when stdin closes (supervised mode)")
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_ENV)
    if not token:
        print(f"{TOKEN_ENV} must be set", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s gateway %(levelname)s %(message)s")
    uvloop.run(serve(token, args.admin_port, args.exit_on_stdin_eof))
    return 0


if __name__ == "__main__":
    sys.exit(main())
