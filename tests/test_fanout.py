"""The hub's fan-out and its remembered status item, in pure trio (no sockets)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from pbxsession._fanout import FeedHub, FeedSubscription
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
