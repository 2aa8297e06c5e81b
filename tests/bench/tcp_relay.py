"""The network path between the bench's hosts and the local AWS's S3: a TCP relay on loopback that a test can cut.

On AWS an instance reaches S3 through a gateway or interface endpoint, and that path can fail (a route table, an
endpoint policy, an outage) while everything else works. The bench's hosts share this machine's network, so the
fleet scenario gives them S3 through this relay: stopping it (SIGTERM) makes S3 unreachable for them alone,
connection refused, as a missing route does, while the local AWS keeps serving the other APIs.

    python tests/bench/tcp_relay.py --listen 127.0.0.1:PORT --target 127.0.0.1:PORT [--pid-file F]
"""

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

BUFFER = 1 << 20


def address(text: str) -> tuple[str, int]:
    host, _colon, port = text.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: give 127.0.0.1:PORT (the relay stays on loopback)")
    return host, int(port)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def relay(target: tuple[str, int], client_reader, client_writer) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, upstream_writer), pipe(upstream_reader, client_writer))


async def serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    server = await asyncio.start_server(lambda r, w: relay(target, r, w), *listen, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"tcp_relay: {listen[0]}:{listen[1]} -> {target[0]}:{target[1]}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=address, required=True)
    parser.add_argument("--target", type=address, required=True)
    parser.add_argument("--pid-file", type=Path)
    args = parser.parse_args(argv)
    if args.pid_file:
        args.pid_file.write_text(f"{os.getpid()}\n")
    try:
        asyncio.run(serve(args.listen, args.target))
    finally:
        if args.pid_file:
            args.pid_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
