"""Fan-out of feed items to any number of consumers, each with a bounded buffer.

Slow consumer policy: every subscriber has its own buffer of
``buffer_size`` items. When it is full, further events are dropped *for that
subscriber alone* and counted; as soon as there is room again it receives
one ``FeedGap(reason="slow_consumer", missed=N)`` in their place, then newer
items. The feed itself never waits for a consumer, so one slow consumer
cannot stall the others or the keep-alive, and memory stays bounded
(``buffer_size`` + 2 items per subscriber). Status items (``FeedDown``,
``FeedUp``, ``FeedStopped``, ``SessionLost``) are never dropped.

Late consumers never wait blind: the hub remembers the latest *status* item,
a ``FeedDown`` while an outage lasts (a ``FeedUp`` clears it) and the ending
(``FeedStopped`` / ``SessionLost``) after a feed ended (the next feed's
start clears it, :meth:`FeedHub.feed_started`). A new subscription receives
the remembered item at once, first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import trio

from ._models import FeedDown, FeedGap, FeedItem, FeedStopped, FeedUp, SessionLost

__all__ = ["FeedHub", "FeedSubscription"]

#: Items a full buffer still takes: the consumer must learn of them.
_NEVER_DROPPED = (FeedDown, FeedUp, FeedStopped, SessionLost)

#: A consumer that keeps finding items buffered yields to the scheduler at
#: least once every this many items (:meth:`FeedSubscription.receive`).
YIELD_EVERY = 16

#: What a published status item does to the remembered one: True keeps it as
#: the status, False clears the status. Other items leave it as it is.
_STATUS: Mapping[type, bool] = {
    FeedDown: True,
    FeedUp: False,
    FeedStopped: True,
    SessionLost: True,
}


class FeedSubscription(trio.abc.ReceiveChannel[FeedItem]):
    """A trio receive channel of feed items for one consumer.

    Iterate it with ``async for``; it ends when the session closes. Closing it
    (``aclose`` or ``async with``) unsubscribes.
    """

    __slots__ = (
        "_buffer_size",
        "_closed",
        "_ended",
        "_hub",
        "_items",
        "_missed",
        "_parked",
        "_unyielded",
        "_waiting",
    )

    def __init__(self, hub: FeedHub, buffer_size: int) -> None:
        self._hub = hub
        self._buffer_size = buffer_size
        self._items: deque[FeedItem] = deque()
        self._missed = 0
        self._ended = False
        self._closed = False
        # Receivers parked until an item comes (one woken per item put), and
        # how many: a plain int is cheaper for ``_put`` to test than the lot.
        self._waiting = trio.lowlevel.ParkingLot()
        self._parked = 0
        # Items handed out since a receiver of this subscription last yielded.
        self._unyielded = 0

    def _put(self, item: FeedItem) -> None:
        items = self._items
        if len(items) >= self._buffer_size and not isinstance(item, _NEVER_DROPPED):
            self._missed += 1
            return
        if self._missed:
            items.append(FeedGap("slow_consumer", missed=self._missed))
            self._missed = 0
        items.append(item)
        if self._parked:
            self._waiting.unpark()

    def _end(self) -> None:
        self._ended = True
        self._waiting.unpark_all()

    @property
    def missed(self) -> int:
        """Events dropped for this consumer and not yet reported by a ``FeedGap``."""
        return self._missed

    def receive_nowait(self) -> FeedItem:
        """The next item without waiting; ``trio.WouldBlock`` if there is none."""
        if self._closed:
            raise trio.ClosedResourceError
        if self._items:
            return self._items.popleft()
        if self._missed:
            gap = FeedGap("slow_consumer", missed=self._missed)
            self._missed = 0
            return gap
        if self._ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> FeedItem:
        """The next item; ``trio.EndOfChannel`` once the session has closed.

        Always a cancellation point: cancelled, it raises before taking
        anything, so no item is lost. Scheduling: while at least two more
        items are buffered behind the one it takes, it returns at once,
        without a trip through the scheduler, but never more than
        :data:`YIELD_EVERY` times in a row, so a busy consumer cannot starve
        other tasks. Otherwise it yields before returning the item (shielded:
        the item is taken already), which also gives the feed time to put
        the next one, so a consumer that keeps pace need not park and be
        woken. With nothing buffered it waits. Several tasks may receive from
        one subscription; each item goes to one of them.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        items = self._items
        if items and not self._closed:
            item = items.popleft()
            if len(items) > 1 and self._unyielded < YIELD_EVERY:
                self._unyielded += 1
                return item
            # Yield, keeping one item in hand: by the time this consumer asks
            # again the feed has usually put the next one, so a consumer that
            # keeps pace never parks (parking and waking cost more).
            self._unyielded = 0
            await trio.lowlevel.cancel_shielded_checkpoint()
            return item
        return await self._receive_waiting()

    async def __anext__(self) -> FeedItem:
        # ``receive`` inlined (keep the two in step): one coroutine less per
        # item for ``async for``.
        await trio.lowlevel.checkpoint_if_cancelled()
        items = self._items
        if items and not self._closed:
            item = items.popleft()
            if len(items) > 1 and self._unyielded < YIELD_EVERY:
                self._unyielded += 1
                return item
            self._unyielded = 0
            await trio.lowlevel.cancel_shielded_checkpoint()
            return item
        try:
            return await self._receive_waiting()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def _receive_waiting(self) -> FeedItem:
        # ``receive`` past its first checkpoint, when no item was at hand.
        while not (self._items or self._missed or self._ended or self._closed):
            # Cancelled here, nothing was taken.
            self._parked += 1
            try:
                await self._waiting.park()
            finally:
                self._parked -= 1
        item = self.receive_nowait()  # or a gap, EndOfChannel, ClosedResourceError
        # The item is taken: this yield must not lose it to a cancellation.
        self._unyielded = 0
        await trio.lowlevel.cancel_shielded_checkpoint()
        return item

    async def aclose(self) -> None:
        """Unsubscribe; later receives raise ``trio.ClosedResourceError``."""
        self._closed = True
        self._hub._unsubscribe(self)
        self._waiting.unpark_all()
        await trio.lowlevel.checkpoint()


class FeedHub:
    """Distributes every published item to every current subscriber."""

    __slots__ = (
        "_closed",
        "_status",
        "_subscribers",
    )

    def __init__(self) -> None:
        self._subscribers: list[FeedSubscription] = []
        self._closed = False
        self._status: FeedItem | None = None

    def subscribe(self, buffer_size: int) -> FeedSubscription:
        """A new subscription: the remembered status item first, then items from now on."""
        subscription = FeedSubscription(self, buffer_size)
        if self._closed:
            subscription._end()
        else:
            if self._status is not None:
                subscription._put(self._status)
            self._subscribers.append(subscription)
        return subscription

    def publish(self, item: FeedItem) -> None:
        """Hand ``item`` to every subscriber, noting it if it is a status item; never blocks."""
        keep = _STATUS.get(type(item))
        if keep is not None:
            self._status = item if keep else None
        self.deliver(item)

    def deliver(self, item: FeedItem) -> None:
        """Hand ``item`` to every subscriber as :meth:`publish`, for events only.

        The feed's hot path: events are never a status, so no bookkeeping.
        """
        for subscription in self._subscribers:
            subscription._put(item)

    def feed_started(self) -> None:
        """A new feed starts: forget the last one's ending (or outage)."""
        self._status = None

    @property
    def status(self) -> FeedItem | None:
        """The remembered status item (``FeedDown`` or an ending), else ``None``."""
        return self._status

    def close(self) -> None:
        """End every subscription (after it drains) and refuse new ones."""
        self._closed = True
        for subscription in self._subscribers:
            subscription._end()
        self._subscribers.clear()

    def _unsubscribe(self, subscription: FeedSubscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    @property
    def subscriber_count(self) -> int:
        """How many consumers are subscribed."""
        return len(self._subscribers)
