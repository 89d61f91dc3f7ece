"""The feed's decisions without sockets: time is a number passed in."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pbxsession import _wire as wire
from pbxsession._feed_policy import (
    CLOSED,
    NO_PONG,
    Failure,
    FeedPolicy,
    Retry,
    Started,
    Stop,
)
from pbxsession._models import FeedDown, FeedGap, FeedStopped, FeedUp, SessionLost


@dataclass
class Steps:
    """A backoff of fixed delays that records the attempt numbers asked for."""

    seconds: float = 1.0
    reset_after: float = 60.0
    attempts: list[int] = field(default_factory=list)

    def delay(self, attempt: int) -> float:
        self.attempts.append(attempt)
        return self.seconds


def policy(limit: float | None = None, backoff: Steps | None = None) -> FeedPolicy:
    return FeedPolicy(max_retry_time=limit, backoff=backoff or Steps())


def up(p: FeedPolicy, now: float, seq: int = 0, resumed: bool = True) -> Started:
    return p.on_ready(seq, resumed, now)


def retry(decision: object) -> Retry:
    assert isinstance(decision, Retry), decision
    return decision


def stop(decision: object) -> Stop:
    assert isinstance(decision, Stop), decision
    return decision


# ------------------------------------------------------------------ errnos


@pytest.mark.parametrize("errno", [1, 3, 90, 91, 92, 4711, -1])
def test_retryable_errnos_retry_with_one_feed_down(errno: int) -> None:
    p = policy()
    up(p, 0.0)
    decision = retry(p.on_failure(Failure(errno, "why"), 5.0))
    assert decision.down == FeedDown(errno, "why")
    assert decision.delay == 1.0
    assert p.up_since is None


def test_errno_2_is_session_lost() -> None:
    p = policy()
    up(p, 0.0)
    decision = stop(p.on_failure(Failure(2, "user has been logged out"), 1.0))
    assert decision.ending == SessionLost("user has been logged out")
    assert p.up_since is None


def test_errno_2_without_text_still_says_why() -> None:
    decision = stop(policy().on_failure(Failure(2, ""), 1.0))
    assert isinstance(decision.ending, SessionLost) and decision.ending.reason


def test_errno_100_stops_for_good() -> None:
    decision = stop(policy().on_failure(Failure(100, ""), 1.0))
    assert decision.ending == FeedStopped("PBX version changed", 100)


def test_errno_100_even_with_an_unlimited_budget_and_mid_outage() -> None:
    p = policy(None)
    retry(p.on_failure(CLOSED, 0.0))
    assert stop(p.on_failure(Failure(100, "upgraded"), 1.0)).ending == FeedStopped("upgraded", 100)


def test_a_tls_failure_stops_whatever_its_errno() -> None:
    failure = Failure(91, "TLS: certificate verify failed (wss://pbx)", tls=True)
    decision = stop(policy(None).on_failure(failure, 0.0))
    assert decision.ending == FeedStopped("TLS: certificate verify failed (wss://pbx)", 91)


@pytest.mark.parametrize(
    ("status", "errno"), [(403, 2), (404, 91), (400, 91), (401, 91), (500, 91), (503, 91)]
)
def test_handshake_statuses(status: int, errno: int) -> None:
    assert wire.handshake_errno(status) == errno
    failure = Failure.handshake_refused(status, "ws://pbx:81/api/feed")
    assert failure.errno == errno
    assert str(status) in failure.message


def test_a_404_names_the_url_and_is_retried() -> None:
    failure = Failure.handshake_refused(404, "ws://pbx:81/api/feed")
    assert "ws://pbx:81/api/feed" in failure.message
    assert isinstance(policy().on_failure(failure, 0.0), Retry)


def test_a_403_is_session_lost() -> None:
    failure = Failure.handshake_refused(403, "ws://pbx/api/feed")
    assert isinstance(stop(policy().on_failure(failure, 0.0)).ending, SessionLost)


def test_off_protocol_frames_are_errno_92() -> None:
    assert Failure.off_protocol("binary feed frame").errno == 92
    assert NO_PONG.errno == CLOSED.errno == 92


# ------------------------------------------------------------------ budget


def test_budget_zero_never_retries() -> None:
    p = policy(0)
    up(p, 0.0)
    decision = stop(p.on_failure(CLOSED, 10.0))
    assert decision.ending == FeedStopped("gave up reconnecting after 0.0s", 92)


def test_budget_none_retries_forever() -> None:
    backoff = Steps(30.0)
    p = policy(None, backoff)
    for i in range(1000):
        assert isinstance(p.on_failure(CLOSED, i * 30.0), Retry)
    assert backoff.attempts == list(range(1000))


def test_budget_exactly_at_the_limit_stops_and_delays_never_overshoot() -> None:
    p = policy(5.5, Steps(2.0))
    assert retry(p.on_failure(CLOSED, 100.0)).delay == 2.0
    assert retry(p.on_failure(CLOSED, 102.0)).delay == 2.0
    assert retry(p.on_failure(CLOSED, 104.0)).delay == 1.5  # cut to what is left
    decision = stop(p.on_failure(Failure(91, "refused"), 105.5))  # exactly at the limit
    assert decision.ending == FeedStopped("gave up reconnecting after 5.5s", 91)


def test_just_under_the_limit_still_retries() -> None:
    p = policy(5.5)
    retry(p.on_failure(CLOSED, 0.0))
    assert retry(p.on_failure(CLOSED, 5.49)).delay == pytest.approx(0.01)


def test_a_feed_that_stayed_up_starts_a_new_outage_and_backoff() -> None:
    backoff = Steps(1.0, reset_after=60)
    p = policy(10, backoff)
    retry(p.on_failure(CLOSED, 0.0))
    retry(p.on_failure(CLOSED, 1.0))
    up(p, 9.0)  # 9 s of the budget spent
    retry(p.on_failure(CLOSED, 69.0))  # up 60 s: a fresh outage, 10 s again
    retry(p.on_failure(CLOSED, 78.0))
    assert backoff.attempts == [0, 1, 0, 1]
    stop(p.on_failure(CLOSED, 79.0))


# --------------------------------------------------------------- flapping


def test_a_flapping_feed_is_one_outage_and_exhausts_the_budget() -> None:
    # ready, then dropped at once, again and again: fails on main (each
    # connection that came up started the retry clock afresh).
    backoff = Steps(1.0, reset_after=60)
    p = policy(5, backoff)
    now = 0.0
    decision = p.on_failure(CLOSED, now)
    rounds = 0
    while isinstance(decision, Retry):
        now += decision.delay
        up(p, now)
        now += 0.01  # up for a moment
        decision = p.on_failure(CLOSED, now)
        rounds += 1
        assert rounds < 100, "a flapping feed never used up its retry time"
    assert isinstance(decision.ending, FeedStopped)
    assert backoff.attempts == list(range(rounds))  # the backoff never restarted
    assert 5 <= now <= 5.1  # down 5 s in all, the moments up not counted


def test_up_time_between_flaps_is_not_counted() -> None:
    p = policy(5, Steps(1.0, reset_after=60))
    retry(p.on_failure(CLOSED, 0.0))
    up(p, 1.0)  # down 1 s
    retry(p.on_failure(CLOSED, 31.0))  # up 30 s: still the same outage
    assert retry(p.on_failure(CLOSED, 33.0)).delay == 1.0  # down 1 + 2 s: 2 s left
    stop(p.on_failure(CLOSED, 35.0))  # down 1 + 4 = 5 s


def test_flaps_publish_down_and_up_each_time() -> None:
    p = policy()
    up(p, 0.0)
    assert retry(p.on_failure(CLOSED, 1.0)).down == FeedDown(92, "feed closed without error")
    assert retry(p.on_failure(Failure(91, "refused"), 2.0)).down is None  # same down period
    assert up(p, 3.0).up == FeedUp(resumed=True, downtime=2.0)
    assert retry(p.on_failure(NO_PONG, 3.5)).down == FeedDown(92, "no pong in time")
    assert up(p, 4.0).up == FeedUp(resumed=True, downtime=0.5)


def test_a_first_attempt_that_fails_is_an_outage_too() -> None:
    p = policy()
    assert retry(p.on_failure(Failure(91, "refused"), 0.0)).down == FeedDown(91, "refused")
    started = up(p, 2.0, seq=7)
    assert started == Started(gap=None, up=FeedUp(resumed=True, downtime=2.0))
    assert p.reconnects == 0  # the first connection is not a reconnect


def test_no_feed_up_without_an_outage() -> None:
    p = policy()
    assert up(p, 0.0, seq=3) == Started(gap=None, up=None)


# ------------------------------------------------------- resume, gap, dups


def test_fresh_start_takes_the_pbx_position_and_resumes_from_it() -> None:
    p = policy()
    assert p.since() is None
    up(p, 0.0, seq=41, resumed=False)  # a fresh start is never a gap
    assert p.since() == 41
    assert p.gaps == 0
    assert not p.accept(41)
    assert p.accept(42)
    assert p.since() == 42
    assert (p.events, p.last_seq) == (1, 42)


def test_duplicates_from_a_resume_are_dropped() -> None:
    p = policy()
    up(p, 0.0, seq=0)
    assert [p.accept(s) for s in (1, 2, 3)] == [True, True, True]
    retry(p.on_failure(CLOSED, 1.0))
    up(p, 1.5, seq=5, resumed=True)
    assert [p.accept(s) for s in (2, 3, 4, 5)] == [False, False, True, True]
    assert (p.events, p.last_seq, p.reconnects, p.gaps) == (5, 5, 1, 0)


def test_a_jump_in_numbers_is_not_a_gap() -> None:
    p = policy()
    up(p, 0.0, seq=0)
    assert p.accept(2) and p.accept(7)  # filtered kinds make numbers jump
    assert p.gaps == 0


def test_resumed_false_is_a_gap_before_the_feed_up() -> None:
    p = policy()
    up(p, 0.0, seq=0)
    p.accept(2)
    retry(p.on_failure(CLOSED, 1.0))
    started = up(p, 4.0, seq=27, resumed=False)
    assert started.gap == FeedGap("server", after_seq=2, resumed_at=27)
    assert started.up == FeedUp(resumed=False, downtime=3.0)
    assert p.since() == 2  # what the PBX still has after 2 is delivered
    assert p.gaps == 1


def test_numbering_restart_is_a_gap_and_the_pbx_numbers_are_used() -> None:
    p = policy()
    up(p, 0.0, seq=0)
    for s in range(1, 101):
        p.accept(s)
    retry(p.on_failure(CLOSED, 1.0))
    started = up(p, 2.0, seq=3, resumed=False)
    assert started.gap == FeedGap("server", after_seq=100, resumed_at=3)
    assert p.since() == 3
    assert p.accept(4)  # not dropped as "seen"


def test_a_restart_claimed_as_resumed_is_still_a_gap() -> None:
    p = policy()
    up(p, 0.0, seq=50)
    retry(p.on_failure(CLOSED, 1.0))
    started = up(p, 2.0, seq=1, resumed=True)
    assert started.gap == FeedGap("server", after_seq=50, resumed_at=1)
    assert p.since() == 1
