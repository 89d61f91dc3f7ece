"""The staged exit (the 6.5 API's "super-logout"): its plan, its runner, its report.

An exit runs in two stages, each a nursery:

1. ``chat_offline``, ``history_save`` and ``rtc_release``, concurrently;
2. ``logout`` (when asked), after the feed has been stopped.

Every step has its own timeout, and the whole exit a deadline; a step that
fails, hangs or is skipped never stops the others. Step failures are
reported in the :class:`~pbxsession.ExitReport`, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio

from ._models import StepOutcome, StepResult
from ._nursery import open_owned_nursery

__all__ = ["STEP_NAMES", "ExitStep", "StepSkipped", "run_stage"]

log = logging.getLogger("pbxsession")

#: The report's step names, in the order they are listed.
STEP_NAMES = ("chat_offline", "history_save", "rtc_release", "logout")


class StepSkipped(Exception):
    """Raised by a step that has nothing to do; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ExitStep:
    """One named step: an async function that returns, raises, or skips."""

    name: str
    run: Callable[[], Awaitable[None]]


async def run_stage(
    steps: Sequence[ExitStep],
    *,
    step_timeout: float,
    deadline: float,
    results: dict[str, StepResult] | None = None,
) -> dict[str, StepResult]:
    """Run ``steps`` concurrently and return each one's result by name.

    Each step is bounded by ``step_timeout`` seconds and by the absolute
    (``trio.current_time()``) ``deadline`` of the whole exit, whichever comes
    first. Nothing a step raises (an ``Exception``) leaves this function: it
    becomes a ``failed`` result, :class:`StepSkipped` a ``skipped`` one, and
    running out of time a ``timed_out`` one. Results go into ``results``
    as each step ends, so that an interrupted stage (``KeyboardInterrupt``)
    leaves those it has.
    """
    results = {} if results is None else results
    async with open_owned_nursery() as nursery:
        for step in steps:
            nursery.start_soon(_run_step, step, step_timeout, deadline, results)
    return results


async def _run_step(
    step: ExitStep, step_timeout: float, deadline: float, results: dict[str, StepResult]
) -> None:
    started = trio.current_time()
    own_deadline = started + step_timeout
    with trio.CancelScope(deadline=min(deadline, own_deadline)) as scope:
        try:
            await step.run()
        except StepSkipped as skipped:
            results[step.name] = _result(StepOutcome.SKIPPED, started, reason=skipped.reason)
            return
        except Exception as exc:  # a failing step must not stop the others
            log.info("exit step %s failed: %s", step.name, str(exc))
            results[step.name] = _result(
                StepOutcome.FAILED, started, error=exc, reason=f"{type(exc).__name__}: {exc}"
            )
            return
    if scope.cancelled_caught:
        if own_deadline <= deadline:
            reason = f"no answer within the step timeout of {step_timeout:g}s"
        else:
            reason = "cut off when the time for the whole exit ran out"
        log.info("exit step %s timed out: %s", step.name, reason)
        results[step.name] = _result(StepOutcome.TIMED_OUT, started, reason=reason)
    else:
        results[step.name] = _result(StepOutcome.OK, started)


def _result(
    outcome: StepOutcome,
    started: float,
    *,
    error: BaseException | None = None,
    reason: str | None = None,
) -> StepResult:
    return StepResult(outcome, trio.current_time() - started, error=error, reason=reason)
