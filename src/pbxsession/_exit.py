"""The staged exit (the 6.5 API's "super-logout"): its plan, its runner, its report.

An exit runs in two stages, each a nursery:

1. ``chat_offline``, ``history_save`` and ``rtc_release``, concurrently;
2. ``logout`` (when asked), after the feed has been stopped.

The plan is a function of the :class:`~pbxsession._login.Login` being
ended (which steps run, and why each other one is skipped). Every step has
its own timeout, and the whole exit a deadline; a step that fails, hangs or
is skipped never stops the others. Step failures are reported in the
:class:`~pbxsession.ExitReport`, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from . import _wire as wire
from ._errors import PbxTimeoutError, SessionLostError, StaleCredentialError
from ._login import Login, Route
from ._models import StepOutcome, StepResult
from ._nursery import open_owned_nursery
from ._timeouts import ExitTimeouts

__all__ = ["STEP_NAMES", "ExitPlan", "ExitStep", "StepSkipped", "run_exit", "run_stage"]

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


@dataclass(slots=True)
class ExitPlan:
    """What the exit of ``login`` does, step by step.

    ``logout`` says whether logging out was asked for; ``detached`` that
    the session closes without telling the PBX anything. ``lost`` collects
    the ``notloggedin`` answers the steps met: the PBX had already ended
    the login.
    """

    login: Login | None
    logout: bool
    detached: bool = False
    unsure: Route | None = None
    """Where a login attempt timed out, the PBX may have made it: logout goes there too."""
    deadline: float | None = None
    lost: list[str] = field(default_factory=list)

    def stage_one(self) -> list[ExitStep]:
        """Chat offline, history save and WebRTC release, run concurrently."""
        return [
            ExitStep("chat_offline", self._chat_offline),
            ExitStep("history_save", self._history_save),
            ExitStep("rtc_release", self._rtc_release),
        ]

    def stage_two(self) -> list[ExitStep]:
        """Logout, once the feed is stopped."""
        return [ExitStep("logout", self._logout)]

    def logged_out(self, results: dict[str, StepResult]) -> bool:
        """Whether the login is over on the PBX after ``results``."""
        done = results.get("logout")
        return bool(self.lost) or (done is not None and done.outcome is StepOutcome.OK)

    def _login(self) -> Login:
        if self.detached:
            raise StepSkipped("detached: exit_on_close=False")
        if self.login is None:
            raise StepSkipped("not logged in")
        return self.login

    async def _send(self, login: Login, command: wire.Command[Any]) -> None:
        try:
            await login.route.send(command, self.deadline)
        except SessionLostError as exc:
            self.lost.append(str(exc))
            raise

    async def _chat_offline(self) -> None:
        login = self._login()
        if not login.user.has_permission(wire.CHAT_PERMISSION):
            raise StepSkipped("the user has no chat permission")
        await self._send(login, wire.status_command("offline"))

    async def _history_save(self) -> None:
        login = self._login()
        if login.history is None:
            raise StepSkipped("the saved history could not be loaded at login")
        await self._send(login, wire.save_history_command(list(login.history)))

    async def _rtc_release(self) -> None:
        login = self._login()
        held, login.rtc_password = login.rtc_password, None
        if held is None:
            raise StepSkipped("no WebRTC password held")
        try:
            await self._send(login, wire.rtc_reset_command(release=held))
        except StaleCredentialError:
            raise StepSkipped("another program already reset the WebRTC password") from None

    async def _logout(self) -> None:
        if not self.logout and not self.detached:
            raise StepSkipped("not requested")
        if self.login is None and self.unsure is not None and not self.detached:
            await self._logout_unsure(self.unsure)
            return
        login = self._login()
        if self.lost:
            raise StepSkipped("already logged out: the PBX answered notloggedin")
        try:
            await self._send(login, wire.logout_command())
        except SessionLostError:
            raise StepSkipped("already logged out: the PBX answered notloggedin") from None

    async def _logout_unsure(self, route: Route) -> None:
        """A login that timed out may stand on the PBX: log it out, so none is left behind."""
        try:
            await route.send(wire.logout_command(), self.deadline)
        except SessionLostError:
            raise StepSkipped("not logged in (the timed-out login had not been made)") from None


async def run_exit(
    plan: ExitPlan, bounds: ExitTimeouts, deadline: float, results: dict[str, StepResult]
) -> None:
    """Run ``plan``'s two stages into ``results``, stopping the feed in between.

    Interrupted (``KeyboardInterrupt``), every step not yet ended is
    reported ``failed``: "interrupted before it ended".
    """
    plan.deadline = deadline
    try:
        await run_stage(
            plan.stage_one(), step_timeout=bounds.step, deadline=deadline, results=results
        )
        if plan.login is not None:
            # The feed goes before logout, which would otherwise end it with errno 2.
            await plan.login.stop_feed(deadline)
        await run_stage(
            plan.stage_two(), step_timeout=bounds.step, deadline=deadline, results=results
        )
    finally:
        interrupted = StepResult(StepOutcome.FAILED, reason="interrupted before it ended")
        for name in STEP_NAMES:
            results.setdefault(name, interrupted)


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
    as each step ends, so that an interrupted stage leaves those it has.
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
        except PbxTimeoutError as exc:  # the command's own deadline came first
            results[step.name] = _result(StepOutcome.TIMED_OUT, started, error=exc, reason=str(exc))
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
    if error is not None and error.__traceback__ is not None:
        # The traceback starts at ``_run_step``, the catcher, whose ``results``
        # will hold this result that holds the error: a reference cycle. The
        # report keeps the error as the step raised it, from the step down.
        error.__traceback__ = error.__traceback__.tb_next
    return StepResult(outcome, trio.current_time() - started, error=error, reason=reason)
