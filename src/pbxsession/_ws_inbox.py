"""The feed connection's inbox: trio-websocket's messages, handed over in batches.

trio-websocket's reader task passes each message through a memory channel
whose ``send`` yields to the scheduler: the reader hands over one message
per scheduler round, and the task reading them is woken once per message.
:func:`install` puts an :class:`Inbox` in place of both ends of that channel
(the connection's ``_send_channel`` and ``_recv_channel``, trio-websocket
0.12, which ``pyproject.toml`` pins). Its ``send`` appends without yielding,
so every message of one socket read is handed over in one step, and the feed
task takes them all in one wake-up.

The inbox never makes the reader wait: the feed task drains it every time
it runs and never waits for a consumer (the hub drops for slow ones), so it
holds at most what arrived since the feed task last ran, or while it waited
for a pong (at most ``pong_timeout`` seconds). ``get_message``
still works through it (the feed's handshake uses it).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import trio
import trio_websocket

__all__ = ["Inbox", "install"]


class Inbox:
    """Messages from the reader task, in order, until the connection closes."""

    __slots__ = ("_closed", "_waiting", "messages")

    def __init__(self) -> None:
        #: Messages not yet taken, oldest first; the feed task pops them itself.
        self.messages: deque[str | bytes] = deque()
        self._closed = False
        self._waiting = trio.lowlevel.ParkingLot()

    @property
    def closed(self) -> bool:
        """Whether the connection has closed (messages may still be left to take)."""
        return self._closed

    # -- the reader's end (trio-websocket calls these) -------------------------

    async def send(self, message: str | bytes) -> None:
        """Take ``message`` from the reader task, without yielding."""
        if self._closed:
            raise trio.ClosedResourceError
        self.messages.append(message)
        if self._waiting:
            self._waiting.unpark()

    async def aclose(self) -> None:
        """Either end closing: the connection is over once the messages are taken."""
        self._closed = True
        self._waiting.unpark_all()

    # -- the taking end --------------------------------------------------------

    async def wait(self) -> None:
        """Return once a message is there or the connection has closed."""
        while not self.messages and not self._closed:
            await self._waiting.park()

    async def receive(self) -> str | bytes:
        """The next message (``get_message``); ``trio.EndOfChannel`` once closed and empty."""
        await trio.lowlevel.checkpoint_if_cancelled()
        await self.wait()
        if not self.messages:
            raise trio.EndOfChannel
        message = self.messages.popleft()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return message


def install(ws: trio_websocket.WebSocketConnection) -> Inbox:
    """Put a new :class:`Inbox` in place of ``ws``'s message channel and return it.

    Call it once the handshake is done and before the peer has reason to
    send: whatever the channel holds already moves to the inbox first.
    """
    inbox = Inbox()
    connection: Any = ws  # the channel's ends are private attributes
    original = connection._recv_channel
    while True:
        try:
            inbox.messages.append(original.receive_nowait())
        except trio.WouldBlock:
            break
        except (trio.EndOfChannel, trio.ClosedResourceError):
            inbox._closed = True
            break
    connection._send_channel = connection._recv_channel = inbox
    return inbox
