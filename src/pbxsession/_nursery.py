"""Nurseries that let one exception out, never an ``ExceptionGroup``.

trio wraps whatever leaves a nursery in an ``ExceptionGroup`` (strict
groups). The nurseries pbxsession hides inside its own calls are an
implementation detail, so what escapes them is one exception: the body's or
a task's, the way it was raised. Tasks started in them catch their own
errors, so a group here normally holds one real exception, possibly with
``Cancelled`` beside it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import trio

__all__ = ["leaves", "open_owned_nursery", "unwrap"]


def leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    """Every exception in ``group`` and its nested groups, depth first."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from leaves(exc)
        else:
            yield exc


def unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception that stands for ``group``.

    A ``KeyboardInterrupt`` wins (the user asked to stop), then the first
    exception that is not ``Cancelled``; the others are noted on it.
    """
    found = list(leaves(group))
    chosen: BaseException = next(
        (e for e in found if isinstance(e, KeyboardInterrupt)),
        next((e for e in found if not isinstance(e, trio.Cancelled)), found[0]),
    )
    for other in found:
        if other is not chosen and not isinstance(other, trio.Cancelled):
            chosen.add_note(f"also raised meanwhile: {other!r}")
    return chosen


@asynccontextmanager
async def open_owned_nursery() -> AsyncIterator[trio.Nursery]:
    """``trio.open_nursery()`` whose failure leaves as one exception (see :func:`unwrap`)."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        chosen = unwrap(group)
        raise chosen from chosen.__cause__
