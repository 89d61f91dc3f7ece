"""Feed transport faults: streams that can be frozen (black hole) or cut off.

trio-websocket answers pings in its own reader task, so "stop answering
pings" cannot be done in a handler (nor can it with hypercorn, which answers
them itself). Instead both ports listen through a :class:`FaultListener`,
whose accepted streams are :class:`FaultStream` wrappers (under TLS, when
there is TLS): while the shared :class:`StreamSwitch` is frozen a feed
stream's ``send_all`` blocks, so no pong (and no event) leaves the server;
and :meth:`FaultStream.abort` closes the socket at once, with no closing
handshake. On the feed port every stream is a feed stream; on the command
port a stream becomes one when its WebSocket handshake reaches the feed
(:meth:`StreamSwitch.mark_feed`), so commands are never frozen or cut off.
Streams are found by their peer address, ``"host:port"``.
"""

from __future__ import annotations

import ssl

import trio

__all__ = ["FaultListener", "FaultStream", "StreamSwitch", "peer_name"]


def peer_name(host: object, port: object) -> str:
    """The registry key of a connection from ``host:port``."""
    return f"{host}:{port}"


class StreamSwitch:
    """The freeze switch and registry shared by every feed stream."""

    def __init__(self) -> None:
        self.frozen = False
        self._changed = trio.Event()
        self._streams: dict[str, FaultStream] = {}

    def freeze(self) -> None:
        """Block every feed stream's sending until :meth:`unfreeze`."""
        self.frozen = True
        self.notify()

    def unfreeze(self) -> None:
        """Let feed streams send again (what was held back goes out)."""
        self.frozen = False
        self.notify()

    def notify(self) -> None:
        """Wake every sender waiting on the switch."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Wait until the switch (or some stream's life) changes."""
        await self._changed.wait()

    def wrap(self, inner: trio.SocketStream, *, feed: bool) -> FaultStream:
        """Wrap an accepted stream and register it by its peer address."""
        try:
            name = peer_name(*inner.socket.getpeername()[:2])
        except OSError:  # the peer is already gone; any unique name will do
            name = f"gone-{id(inner)}"
        stream = FaultStream(inner, self, name, feed=feed)
        self._streams[stream.name] = stream
        return stream

    def find(self, name: str) -> FaultStream | None:
        """The registered stream from peer ``name`` (``"host:port"``), if any."""
        return self._streams.get(name)

    def mark_feed(self, name: str) -> FaultStream | None:
        """Make the stream from peer ``name`` a feed stream (freezable); return it."""
        stream = self._streams.get(name)
        if stream is not None:
            stream.feed = True
        return stream

    def forget(self, stream: FaultStream) -> None:
        """Unregister a closed stream."""
        self._streams.pop(stream.name, None)

    def abort_all(self) -> int:
        """Cut off every registered feed stream; return how many."""
        streams = [s for s in self._streams.values() if s.feed]
        for stream in streams:
            stream.abort()
        return len(streams)


class FaultStream(trio.abc.Stream):
    """A socket stream whose sending can be frozen and which can be cut off."""

    def __init__(
        self, inner: trio.SocketStream, switch: StreamSwitch, name: str, *, feed: bool
    ) -> None:
        self._inner = inner
        self._switch = switch
        self.name = name
        self.feed = feed
        """Whether freezing applies (a feed connection, not a command one)."""
        self._aborted = False

    @property
    def socket(self) -> trio.socket.SocketType:
        """The socket underneath (hypercorn and trio-websocket read its addresses)."""
        return self._inner.socket

    def __repr__(self) -> str:
        return self.name

    def abort(self) -> None:
        """Close the socket now (no WebSocket closing handshake)."""
        if self._aborted:
            return
        self._aborted = True
        self._switch.forget(self)
        self._inner.socket.close()
        self._switch.notify()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``, first waiting while the switch is frozen."""
        while self.feed and self._switch.frozen and not self._aborted:
            await self._switch.wait_changed()
        if self._aborted:
            raise trio.ClosedResourceError("feed stream was cut off")
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until sending might not block."""
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        """Receive some bytes."""
        if self._aborted:
            raise trio.ClosedResourceError("feed stream was cut off")
        return await self._inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        """Close the stream."""
        self._switch.forget(self)
        await self._inner.aclose()


class FaultListener(trio.abc.Listener[trio.abc.Stream]):
    """A TCP listener whose accepted streams are :class:`FaultStream` wrappers.

    With ``ssl_context`` each is wrapped once more in a server-side
    :class:`trio.SSLStream`, so faults act on the raw socket under TLS.
    (Not a :class:`trio.SSLListener`: trio-websocket asserts that one wraps a
    :class:`trio.SocketListener`.)
    """

    def __init__(
        self,
        inner: trio.SocketListener,
        switch: StreamSwitch,
        *,
        feed: bool,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._inner = inner
        self._switch = switch
        self._feed = feed
        self._ssl_context = ssl_context

    @property
    def port(self) -> int:
        """The bound TCP port."""
        port: int = self._inner.socket.getsockname()[1]
        return port

    async def accept(self) -> trio.abc.Stream:
        """Accept one connection and wrap it."""
        stream = self._switch.wrap(await self._inner.accept(), feed=self._feed)
        if self._ssl_context is None:
            return stream
        return trio.SSLStream(stream, self._ssl_context, server_side=True, https_compatible=True)

    async def aclose(self) -> None:
        """Stop listening."""
        await self._inner.aclose()
