"""``pbxsession sim`` (or ``python -m pbxsession.sim``): serve a simulated PBX until Ctrl-C."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from collections.abc import Sequence

import trio

from ._server import open_simulator
from ._simulator import Simulator
from ._users import DEFAULT_USERS, SimUser, load_users

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pbxsession sim",
        description=(
            "Serve a simulated PBX until Ctrl-C: commands over HTTP and the live feed over "
            "WebSocket, both on --port, and the feed alone on --feed-port."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="command port (default 8080)")
    parser.add_argument("--feed-port", type=int, default=8081, help="feed port (default 8081)")
    parser.add_argument("--users", metavar="FILE", help="JSON users file replacing the defaults")
    parser.add_argument(
        "--event-rate",
        type=float,
        default=0.0,
        metavar="N",
        help="made-up events per second to each logged-in context (default 0 = off)",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve https and wss with a certificate from a throw-away CA (its path is printed)",
    )
    parser.add_argument(
        "--require-client-cert",
        action="store_true",
        help="with --tls: refuse clients without a certificate from that CA (one is printed)",
    )
    return parser


def describe(sim: Simulator, users: Sequence[SimUser]) -> list[str]:
    """The lines ``pbxsession sim`` prints once serving: addresses, users, a login line."""
    lines = [
        "PBX simulator",
        f"  commands and feed: {sim.url}",
        f"  feed alone:        {sim.ws_url}  (for --ws-host)",
    ]
    cacert = ""
    if sim.ca_path is not None:
        lines.append(f"  CA certificate:    {sim.ca_path}")
        cacert = f" --cacert {shlex.quote(sim.ca_path)}"
    if sim.client_cert_path is not None:
        lines.append(f"  client cert+key:   {sim.client_cert_path}  (required)")
    lines.append("  users: " + ", ".join(f"{u.login}/{u.password}" for u in users))
    first = users[0]
    lines += [
        "log in with:",
        f"  echo {shlex.quote(first.password)} | pbxsession login --host {sim.url}{cacert}"
        f" --user {shlex.quote(first.login)} --password-stdin",
        "Ctrl-C to stop",
    ]
    return lines


async def _serve(args: argparse.Namespace, users: Sequence[SimUser]) -> None:
    async with open_simulator(
        users,
        event_rate=args.event_rate,
        host=args.host,
        port=args.port,
        feed_port=args.feed_port,
        tls=args.tls,
        require_client_cert=args.require_client_cert,
    ) as sim:
        print("\n".join(describe(sim, users)), flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break


def _split(group: BaseExceptionGroup[BaseException], kind: type[BaseException]) -> bool:
    """Tell whether ``group`` holds only exceptions of ``kind``."""
    return group.split(kind)[1] is None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator from the command line; return the exit status."""
    args = _parser().parse_args(argv)
    problem = _usage_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        users = DEFAULT_USERS if args.users is None else load_users(args.users)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status = _run(args, users)
    if status == 0:
        print("stopped", flush=True)
    return status


def _usage_problem(args: argparse.Namespace) -> str:
    if args.event_rate < 0:
        return "--event-rate cannot be negative"
    if args.require_client_cert and not args.tls:
        return "--require-client-cert needs --tls"
    return ""


def _run(args: argparse.Namespace, users: Sequence[SimUser]) -> int:
    """Serve until Ctrl-C (0), or a socket error (1)."""
    try:
        trio.run(_serve, args, users)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        if _split(group, OSError) and not _split(group, KeyboardInterrupt):
            print(f"error: {group.exceptions[0]}", file=sys.stderr)
            return 1
        if not _split(group, KeyboardInterrupt):
            raise
    return 0
