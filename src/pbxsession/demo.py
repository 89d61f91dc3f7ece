"""``pbxsession demo``: a whole session lifecycle on the embedded simulator.

Set the host and the feed host, take a sub-ID, log in as the multi-company
administrator, select a company, show live feed events for a few seconds,
force an outage (the feed is cut off and more events arrive than the PBX
keeps, so the feed comes back with a gap), reset the WebRTC password
(``getnew``), then the staged exit with logout. Every state transition is
printed as it happens.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Final, Protocol

import trio
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import pbxsession
from pbxsession import (
    Event,
    ExitReport,
    FeedEvent,
    FeedGap,
    FeedItem,
    FeedUp,
    MemoryStore,
    State,
)

__all__ = ["report_table", "run_demo"]

# A small PBX event buffer, so that a short outage is enough to show a gap.
_RING_SIZE: Final = 20
_OUTAGE_EVENTS: Final = 30
_OUTAGE_BOUND: Final = 8.0


class _Say(Protocol):
    def __call__(self, line_type: str, text: str, **data: Any) -> None: ...


async def _show_feed(events: AsyncIterator[FeedItem], say: _Say, seconds: float) -> None:
    """Print every feed item for ``seconds``."""
    with trio.move_on_after(seconds):
        async for item in events:
            if isinstance(item, FeedEvent):
                data = dict(item.data)
                shown = escape(json.dumps(data))
                say(
                    "event",
                    f"  feed #{item.seq} [green]{escape(item.kind)}[/] {shown}",
                    seq=item.seq,
                    kind=item.kind,
                    data=data,
                )
            else:
                say("feed", f"  feed: {escape(str(item))}", item=str(item))


async def _show_outage(sim: Any, events: AsyncIterator[FeedItem], say: _Say) -> None:
    """Cut the feed off, emit more than the PBX keeps, and show how it comes back."""
    sim.drop_feeds()
    for n in range(_OUTAGE_EVENTS):
        sim.emit("presence", {"user": "alice", "show": "away", "n": n}, login="admin")
    say("call", f"forced outage: feed cut off, {_OUTAGE_EVENTS} events sent meanwhile")
    counted, gap_seen = 0, False
    with trio.move_on_after(_OUTAGE_BOUND):
        async for item in events:
            if isinstance(item, FeedEvent):
                counted += 1
                if gap_seen:
                    break  # back and streaming again
                continue
            say("feed", f"  feed: [yellow]{escape(str(item))}[/]", item=str(item))
            gap_seen = gap_seen or isinstance(item, FeedGap)
            if isinstance(item, FeedUp):
                break
    say("info", "  the feed is back and streaming again", events=counted)


async def run_demo(console: Console, *, seconds: float = 3.0, as_json: bool = False) -> ExitReport:
    """Run the demo, printing to ``console``; returns the exit report."""
    from pbxsession.sim import open_simulator

    started = trio.current_time()

    def say(line_type: str, text: str, **data: Any) -> None:
        stamp = trio.current_time() - started
        if as_json:
            print(json.dumps({"t": round(stamp, 3), "type": line_type} | data), flush=True)
        else:
            console.print(f"[dim]{stamp:6.3f}s[/] {text}", highlight=False)

    def on_transition(source: State, target: State, event: Event) -> None:
        say(
            "transition",
            f"[bold cyan]{source.value} → {target.value}[/] ({event.value})",
            source=source.value,
            target=target.value,
            event=event.value,
        )

    async with open_simulator(event_rate=6.0, ring_size=_RING_SIZE) as sim:
        say("info", f"simulator: commands on {sim.url}, live feed on {sim.ws_url}")
        async with pbxsession.open_session(store=MemoryStore()) as session:
            session.on_transition(on_transition)
            say("state", f"state: {session.state.value}", state=session.state.value)
            session.set_ws_host(sim.ws_url)
            say("call", f"set_ws_host({sim.ws_url!r})")
            session.set_host(sim.url)
            subid = session.get_sub_id()
            say("call", f"get_sub_id() → {subid}", subid=subid)
            events = session.events()
            user = await session.login("admin", "admin-pass")
            companies = ", ".join(f"{c.id} {c.name}" for c in user.companies)
            say("call", f"login('admin') → {user.name}, companies {companies}", user=user.login)
            user = await session.select_company("8")
            say("call", f"select_company('8') → company {user.company}", company=user.company)
            say("info", f"live feed for {seconds:g}s:")
            await _show_feed(events, say, seconds)
            await _show_outage(sim, events, say)
            password = await session.rtc_reset(getnew=True)
            say(
                "call",
                f"rtc_reset(getnew=True) → a new WebRTC password ({len(password or '')} "
                "characters, not shown)",
            )
            report = await session.exit(logout=True)
        _print_report(console, report, as_json=as_json)
        return report


def _print_report(console: Console, report: ExitReport, *, as_json: bool) -> None:
    if not as_json:
        console.print(report_table(report, logout=True))
        return
    steps = {
        name: {"outcome": r.outcome.value, "duration": r.duration}
        for name, r in report.steps.items()
    }
    record = {"type": "exit_report", "duration": report.duration, "steps": steps}
    print(json.dumps(record), flush=True)


def report_table(report: ExitReport, *, logout: bool) -> Table:
    """The exit report as a table: each step's outcome, time and detail.

    ``logout`` is what was asked of ``exit``, shown in the title.
    """
    table = Table(title=f"exit(logout={logout}) in {report.duration * 1000:.0f} ms")
    table.add_column("step")
    table.add_column("outcome")
    table.add_column("time", justify="right")
    table.add_column("detail")
    for name, result in report.steps.items():
        detail = result.reason or (str(result.error) if result.error else "")
        table.add_row(name, result.outcome.value, f"{result.duration * 1000:.0f} ms", detail)
    return table
