"""Feed transport faults: streams that can be frozen (black hole) or cut off.

trio-websocket answers pings in its own reader task, so "stop answering
pings" cannot be done in a handler. Instead the feed server listens through a
:class:`FaultListener`, whose accepted streams are :class:`FaultStream`
wrappers: while the shared :class:`StreamSwitch` is frozen their
``send_all`` blocks, so no pong (and no event) leaves the server; and
:meth:`FaultStream.abort` closes the socket at once, with no closing
handshake.
"""

from __future__ import annotations

import itertools

import trio

__all__ = ["FaultListener", "FaultStream", "StreamSwitch"]


class StreamSwitch:
    """The freeze switch and registry shared by every feed stream."""

    def __init__(self) -> None:
        self.frozen = False
        self._changed = trio.Event()
        self._streams: dict[str, FaultStream] = {}
        self._ids = itertools.count(1)

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

    def wrap(self, inner: trio.SocketStream) -> FaultStream:
        """Wrap an accepted stream and register it."""
        stream = FaultStream(inner, self, f"feed-stream-{next(self._ids)}")
        self._streams[stream.name] = stream
        return stream

    def find(self, name: object) -> FaultStream | None:
        """The registered stream whose ``repr`` is ``name``, if any."""
        return self._streams.get(name) if isinstance(name, str) else None

    def forget(self, stream: FaultStream) -> None:
        """Unregister a closed stream."""
        self._streams.pop(stream.name, None)

    def abort_all(self) -> int:
        """Cut off every registered stream; return how many."""
        streams = list(self._streams.values())
        for stream in streams:
            stream.abort()
        return len(streams)


class FaultStream(trio.abc.Stream):
    """A socket stream whose sending can be frozen and which can be cut off."""

    def __init__(self, inner: trio.SocketStream, switch: StreamSwitch, name: str) -> None:
        self._inner = inner
        self._switch = switch
        self.name = name
        self._aborted = False

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
        while self._switch.frozen and not self._aborted:
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


class FaultListener(trio.abc.Listener[FaultStream]):
    """A TCP listener whose accepted streams are :class:`FaultStream` wrappers."""

    def __init__(self, inner: trio.SocketListener, switch: StreamSwitch) -> None:
        self._inner = inner
        self._switch = switch

    @property
    def port(self) -> int:
        """The bound TCP port."""
        port: int = self._inner.socket.getsockname()[1]
        return port

    async def accept(self) -> FaultStream:
        """Accept one connection and wrap it."""
        return self._switch.wrap(await self._inner.accept())

    async def aclose(self) -> None:
        """Stop listening."""
        await self._inner.aclose()
