"""A hostile HTTP server for tests: raw trio sockets, one scripted behaviour per server.

``serve_hostile(nursery, behaviour)`` listens on loopback (plain, or TLS with
an ``ssl.SSLContext``) and, for each connection, reads one request (method
line, headers, ``Content-Length`` body) and hands the stream to
``behaviour(stream, request)``, which writes whatever it likes: a reply
trickled byte by byte, a body that never ends, endless 1xx responses,
a compression bomb, or nothing at all. A first byte that is not an HTTP
method (a TLS ClientHello, say) is answered ``400`` and closed, as a real
plain server does.

Bombs are built streaming with ``zlib`` (never the decoded bytes in memory):
each run of zeros compresses, after a full flush, to the same bytes, so a
1 GiB bomb is a header, one segment repeated, and a trailer.
"""

from __future__ import annotations

import functools
import ssl
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

XML = b'<?xml version="1.0"?><response result="success" cmd="login"/>'
MiB = 1 << 20


@dataclass
class Request:
    """One request as the server read it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Behaviour = Callable[[trio.abc.Stream, Request], Awaitable[None]]


@dataclass
class Hostile:
    """A running hostile server: its URL and every request it read."""

    url: str
    port: int
    requests: list[Request] = field(default_factory=list)
    connections: int = 0


async def serve_hostile(
    nursery: trio.Nursery, behaviour: Behaviour, *, tls: ssl.SSLContext | None = None
) -> Hostile:
    """Start a server on 127.0.0.1 that runs ``behaviour`` for every request."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    server = Hostile(f"{'https' if tls else 'http'}://127.0.0.1:{port}", port)

    async def handle(stream: trio.abc.Stream) -> None:
        server.connections += 1
        if tls is not None:
            stream = trio.SSLStream(stream, tls, server_side=True)
        try:
            request = await _read_request(stream)
            if request is None:
                return
            server.requests.append(request)
            await behaviour(stream, request)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up: what hostile servers see all day
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    nursery.start_soon(trio.serve_listeners, handle, listeners)
    return server


async def _read_request(stream: trio.abc.Stream) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        data += chunk
        if not data[:1].isalpha():
            await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            return None
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        body += chunk
    return Request(method, target, headers, body)


def head(
    status: str = "200 OK", *, length: int | None = None, extra: tuple[str, ...] = ()
) -> bytes:
    """A response head; ``length`` None means no Content-Length."""
    lines = [f"HTTP/1.1 {status}", "Content-Type: text/xml", *extra]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# ---------------------------------------------------------------- behaviours


async def never_answer(stream: trio.abc.Stream, request: Request) -> None:
    """Accept, read the request, say nothing."""
    await trio.sleep_forever()


async def trickle(stream: trio.abc.Stream, request: Request) -> None:
    """A valid reply, one byte per second."""
    for byte in head(length=len(XML)) + XML:
        await stream.send_all(bytes([byte]))
        await trio.sleep(1)


async def endless_chunked(stream: trio.abc.Stream, request: Request) -> None:
    """A chunked body whose chunks keep coming, twice a second, for ever."""
    await stream.send_all(head(extra=("Transfer-Encoding: chunked",)))
    while True:
        await stream.send_all(b"1\r\n \r\n")
        await trio.sleep(0.5)


async def endless_close_delimited(stream: trio.abc.Stream, request: Request) -> None:
    """A body delimited by the connection's close, which never comes."""
    await stream.send_all(head(extra=("Connection: close",)))
    while True:
        await stream.send_all(b" ")
        await trio.sleep(0.5)


async def endless_informational(stream: trio.abc.Stream, request: Request) -> None:
    """``102 Processing`` twice a second, for ever: never a final response."""
    while True:
        await stream.send_all(b"HTTP/1.1 102 Processing\r\n\r\n")
        await trio.sleep(0.5)


def replying(status: str, body: bytes, *extra: str) -> Behaviour:
    """A behaviour that answers at once with ``status`` and ``body``."""

    async def behaviour(stream: trio.abc.Stream, request: Request) -> None:
        await stream.send_all(head(status, length=len(body), extra=extra) + body)

    return behaviour


# --------------------------------------------------------------------- bombs


@functools.cache
def gzip_zeros(size: int) -> bytes:
    """gzip of ``size`` zero bytes (a multiple of 1 MiB), built without holding them."""
    assert size % MiB == 0
    # Segments as long as ``size`` allows: each full flush costs a few bytes,
    # and a 1 GiB bomb must stay under the 1 MiB wire cap to test the decoded one.
    step = next(n * MiB for n in (16, 4, 1) if size % (n * MiB) == 0)
    zeros = bytes(MiB)

    def segment(compressor: zlib._Compress) -> bytes:
        out = b"".join(compressor.compress(zeros) for _ in range(step // MiB))
        return out + compressor.flush(zlib.Z_FULL_FLUSH)

    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = segment(compressor)
    # After a full flush the state is fresh: every further segment gives these bytes.
    repeated = segment(compressor)
    final_block = compressor.flush(zlib.Z_FINISH)[:-8]  # minus the trailer of 2 segments
    crc = 0
    for _ in range(size // MiB):
        crc = zlib.crc32(zeros, crc)
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return first + repeated * (size // step - 1) + final_block + trailer


@functools.cache
def gzip_of(data: bytes) -> bytes:
    """gzip of ``data`` (for gzip inside gzip)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def bomb(size: int, *, content_length: bool, layers: int = 1) -> Behaviour:
    """A gzip bomb of ``size`` decoded bytes, ``layers`` deep, with or without a length."""
    body = gzip_zeros(size)
    for _ in range(layers - 1):
        body = gzip_of(body)
    encoding = "Content-Encoding: " + ", ".join(["gzip"] * layers)

    async def behaviour(stream: trio.abc.Stream, request: Request) -> None:
        if content_length:
            await stream.send_all(head(length=len(body), extra=(encoding,)))
            view = memoryview(body)
            for start in range(0, len(body), 65536):
                await stream.send_all(view[start : start + 65536])
            return
        await stream.send_all(head(extra=(encoding, "Transfer-Encoding: chunked")))
        view = memoryview(body)
        for start in range(0, len(body), 65536):
            piece = view[start : start + 65536]
            await stream.send_all(b"%x\r\n" % len(piece) + bytes(piece) + b"\r\n")
        await stream.send_all(b"0\r\n\r\n")

    return behaviour
