"""The hub's fan-out and its remembered status item, in pure trio (no sockets)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from pbxsession._fanout import YIELD_EVERY, FeedHub, FeedSubscription
from pbxsession._models import (
    FeedDown,
    FeedEvent,
    FeedGap,
    FeedItem,
    FeedStopped,
    FeedUp,
    SessionLost,
)


def event(seq: int) -> FeedEvent:
    return FeedEvent(seq, "device", {})


def drain(sub: FeedSubscription) -> list[FeedItem]:
    items: list[FeedItem] = []
    while True:
        try:
            items.append(sub.receive_nowait())
        except trio.WouldBlock:
            return items


def test_a_new_hub_has_no_status_and_no_subscribers() -> None:
    hub = FeedHub()
    assert hub.status is None
    assert hub.subscriber_count == 0
    assert drain(hub.subscribe(10)) == []


def test_subscriber_count_follows_subscribe_and_close() -> None:
    hub = FeedHub()
    hub.subscribe(10)
    hub.subscribe(10)
    assert hub.subscriber_count == 2
    hub.close()
    assert hub.subscriber_count == 0


async def test_closing_a_subscription_lowers_the_count() -> None:
    hub = FeedHub()
    sub = hub.subscribe(10)
    await sub.aclose()
    assert hub.subscriber_count == 0


@pytest.mark.parametrize(
    "ending", [FeedStopped("gave up reconnecting after 5.0s", 91), SessionLost("logged out")]
)
async def test_a_late_consumer_gets_the_ending_at_once(ending: FeedItem) -> None:
    hub = FeedHub()
    hub.publish(event(1))
    hub.publish(ending)
    late = hub.subscribe(10)
    with trio.fail_after(1):  # at once, not after the next feed's first item
        assert await late.receive() == ending
    assert drain(late) == []
    assert hub.status == ending


async def test_the_ending_comes_first_then_the_next_feed() -> None:
    hub = FeedHub()
    hub.publish(SessionLost("logged out"))
    late = hub.subscribe(10)
    hub.feed_started()  # the next login's feed
    hub.publish(event(1))
    assert drain(late) == [SessionLost("logged out"), event(1)]


def test_a_new_feed_forgets_the_last_ending() -> None:
    hub = FeedHub()
    hub.publish(FeedStopped("PBX version changed", 100))
    hub.feed_started()
    assert hub.status is None
    assert drain(hub.subscribe(10)) == []


def test_an_outage_is_remembered_until_the_feed_is_up() -> None:
    hub = FeedHub()
    down = FeedDown(92, "feed closed without error")
    hub.publish(down)
    hub.publish(FeedGap("server", after_seq=1, resumed_at=9))  # not a status
    assert drain(hub.subscribe(10)) == [down]
    hub.publish(FeedUp(resumed=False, downtime=1.0))
    assert hub.status is None
    assert drain(hub.subscribe(10)) == []


def test_events_do_not_touch_the_status() -> None:
    hub = FeedHub()
    down = FeedDown(91, "refused")
    hub.publish(down)
    hub.deliver(event(1))
    hub.publish(event(2))
    assert hub.status == down


def test_an_ending_after_an_outage_replaces_it() -> None:
    hub = FeedHub()
    hub.publish(FeedDown(92, "x"))
    hub.publish(FeedStopped("gave up", 91))
    assert drain(hub.subscribe(10)) == [FeedStopped("gave up", 91)]


def test_status_items_pass_a_full_buffer() -> None:
    hub = FeedHub()
    sub = hub.subscribe(2)
    for seq in range(1, 5):
        hub.publish(event(seq))
    hub.publish(FeedDown(92, "x"))
    hub.publish(FeedUp(resumed=True, downtime=0.5))
    items = drain(sub)
    assert items[:2] == [event(1), event(2)]
    assert items[2] == FeedGap("slow_consumer", missed=2)
    assert items[3:] == [FeedDown(92, "x"), FeedUp(resumed=True, downtime=0.5)]


def test_a_closed_hub_ends_new_subscriptions_without_status() -> None:
    hub = FeedHub()
    hub.publish(SessionLost("x"))
    hub.close()
    sub = hub.subscribe(10)
    with pytest.raises(trio.EndOfChannel):
        sub.receive_nowait()


async def test_a_waiting_consumer_is_woken_by_a_status_item() -> None:
    hub = FeedHub()
    sub = hub.subscribe(10)
    got: list[FeedItem] = []

    async def consume() -> None:
        got.append(await sub.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        hub.publish(FeedDown(92, "x"))
    assert got == [FeedDown(92, "x")]


class _StepCounter(trio.abc.Instrument):
    """Counts the scheduler steps of one task."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += task is self.task


async def test_a_consumer_with_items_buffered_yields_every_yield_every_items() -> None:
    """Fair but cheap: no trip through the scheduler per item, yet never more than YIELD_EVERY."""
    hub = FeedHub()
    sub = hub.subscribe(1000)
    total = 10 * YIELD_EVERY
    for seq in range(1, total + 1):
        hub.publish(event(seq))
    counter = _StepCounter(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(counter)
    try:
        seen = [counter.steps for _ in range(total) if await sub.receive()]
    finally:
        trio.lowlevel.remove_instrument(counter)
    per_step = [seen.count(value) for value in set(seen)]
    assert max(per_step) <= YIELD_EVERY + 1  # it gave others their turn that often
    assert len(per_step) <= total // YIELD_EVERY + 2  # not once per item


async def test_receive_yields_unless_two_more_items_are_buffered() -> None:
    hub = FeedHub()
    sub = hub.subscribe(10)
    for seq in (1, 2, 3):
        hub.publish(event(seq))
    counter = _StepCounter(trio.lowlevel.current_task())
    trio.lowlevel.add_instrument(counter)
    try:
        assert await sub.receive() == event(1)
        assert counter.steps == 0  # two more behind it: no yield
        assert await sub.receive() == event(2)
        assert counter.steps == 1  # one more: yielded
        assert await sub.receive() == event(3)
        assert counter.steps == 2  # the last one: yielded
    finally:
        trio.lowlevel.remove_instrument(counter)


@pytest.mark.parametrize("buffered", [0, 1, 3])
async def test_a_cancelled_receive_takes_nothing(buffered: int) -> None:
    hub = FeedHub()
    sub = hub.subscribe(10)
    for seq in range(1, buffered + 1):
        hub.publish(event(seq))
    with trio.CancelScope() as scope:
        scope.cancel()
        await sub.receive()
    assert scope.cancelled_caught
    with trio.CancelScope() as scope:
        scope.cancel()
        await sub.__anext__()
    assert scope.cancelled_caught
    assert drain(sub) == [event(seq) for seq in range(1, buffered + 1)]


async def test_a_woken_receiver_cancelled_before_it_runs_keeps_its_item() -> None:
    hub = FeedHub()
    sub = hub.subscribe(10)
    got: list[FeedItem] = []
    scope = trio.CancelScope()

    async def consume() -> None:
        with scope:
            got.append(await sub.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()  # parked
        hub.publish(event(1))  # wakes it
        scope.cancel()  # too late: it is no longer waiting
    assert got + drain(sub) == [event(1)]


async def test_receivers_sharing_a_subscription_get_each_item_once() -> None:
    hub = FeedHub()
    sub = hub.subscribe(100)
    got: list[list[int]] = [[], [], []]

    async def consume(index: int) -> None:
        async for item in sub:
            assert isinstance(item, FeedEvent)
            got[index].append(item.seq)

    async with trio.open_nursery() as nursery:
        for index in range(3):
            nursery.start_soon(consume, index)
        for seq in range(1, 61):
            await trio.testing.wait_all_tasks_blocked()
            hub.publish(event(seq))
            if seq % 7 == 0:  # some arrive together
                hub.publish(event(seq + 1000))
        await trio.testing.wait_all_tasks_blocked()
        hub.close()
    everything = sorted(seq for seqs in got for seq in seqs)
    assert everything == sorted([*range(1, 61), *(s + 1000 for s in range(7, 61, 7))])
    assert all(got)  # every parked receiver was woken at some point
