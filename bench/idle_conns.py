#!/usr/bin/env python3
"""Open N Postgres connections and hold them idle (bench/memory.sh).

Speaks just enough of the wire protocol: StartupMessage (protocol 3.0) for a
trust-authenticated user, then reads until ReadyForQuery. When every
connection is ready it writes the count to --ready-file and waits for SIGTERM
or SIGINT (or --hold seconds), then sends Terminate on each and exits.

Standard library only. Exit status: 0 on success, 1 if a connection failed.
"""
import argparse
import asyncio
import resource
import signal
import struct
import sys


def startup_message(user: str, database: str) -> bytes:
    body = struct.pack("!I", 196608)  # protocol 3.0
    for key, value in (("user", user), ("database", database),
                       ("application_name", "pgshim-idle-bench")):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


async def open_one(host, port, packet, timeout):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    writer.write(packet)
    await writer.drain()

    async def until_ready():
        while True:
            header = await reader.readexactly(5)
            tag, length = header[:1], struct.unpack("!I", header[1:])[0]
            body = await reader.readexactly(length - 4)
            if tag == b"E":
                fields = [f[1:].decode(errors="replace") for f in body.split(b"\0") if f]
                raise RuntimeError("server error: " + " / ".join(fields))
            if tag == b"R" and struct.unpack("!I", body[:4])[0] != 0:
                raise RuntimeError("server asked for a password; use trust authentication")
            if tag == b"Z":
                return

    await asyncio.wait_for(until_ready(), timeout)
    return reader, writer


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--database", default="postgres")
    ap.add_argument("--parallel", type=int, default=32, help="handshakes in flight at once")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-connection handshake timeout")
    ap.add_argument("--hold", type=float, default=600.0, help="seconds to hold at most")
    ap.add_argument("--ready-file", required=True)
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.count + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))

    packet = startup_message(args.user, args.database)
    gate = asyncio.Semaphore(args.parallel)
    conns = []

    async def guarded():
        async with gate:
            conns.append(await open_one(args.host, args.port, packet, args.timeout))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    status = 0
    opening = asyncio.ensure_future(asyncio.gather(*(guarded() for _ in range(args.count))))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([opening, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not opening.done():
            raise RuntimeError("interrupted while opening connections")
        opening.result()  # raises the first failure
        with open(args.ready_file, "w") as f:
            f.write(f"{len(conns)}\n")
        try:
            await asyncio.wait_for(stopper, args.hold)
        except asyncio.TimeoutError:
            print(f"idle_conns: --hold {args.hold}s elapsed", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - report any failure and exit 1
        print(f"idle_conns: opened {len(conns)} of {args.count}: {e!r}", file=sys.stderr)
        status = 1
        opening.cancel()
    finally:
        for _, writer in conns:
            try:
                writer.write(b"X\0\0\0\4")  # Terminate
                writer.close()
            except Exception:  # noqa: BLE001
                pass
        for _, writer in conns:
            try:
                await asyncio.wait_for(writer.wait_closed(), 2)
            except Exception:  # noqa: BLE001
                pass
    return status


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
