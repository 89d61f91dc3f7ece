"""The simulator's ``/_sim/`` control API: fault controls and views over HTTP.

JSON body in, JSON out; bad input answers 400. This is the test harness's
interface, not the PBX's wire format (that is :mod:`._wire`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ._simulator import Simulator
from ._wire import MAX_BODY

__all__ = ["control_routes", "read_body"]


class _ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it grows past ``limit`` bytes (commands too)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_body(request: Request) -> dict[str, object]:
    body = await read_body(request, MAX_BODY)
    if not body:
        return {}
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise _ControlError(400, "the body is not JSON") from exc
    if not isinstance(data, dict):
        raise _ControlError(400, "the body must be a JSON object")
    return data


def _opt_str(data: dict[str, object], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise _ControlError(400, f"{key} must be a string or null")
    return value


def _number(data: dict[str, object], key: str, default: float | None = None) -> float:
    value = data.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _ControlError(400, f"{key} must be a number")
    return float(value)


def _int(data: dict[str, object], key: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _ControlError(400, f"{key} must be an integer")
    return value


class _Controls:
    """The fault controls and views, each one JSON in and JSON out."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def delay(self, data: dict[str, object]) -> object:
        self.sim.set_delay(_number(data, "seconds"), _opt_str(data, "cmd"))
        return {}

    async def fail(self, data: dict[str, object]) -> object:
        self.sim.fail_next(_int(data, "n", 1), _opt_str(data, "cmd"))
        return {}

    async def expire(self, data: dict[str, object]) -> object:
        subid = _opt_str(data, "subid") or ""
        cookie = _opt_str(data, "cookie")
        return {"expired": self.sim.expire(_opt_str(data, "login"), cookie=cookie, subid=subid)}

    async def restart(self, data: dict[str, object]) -> object:
        self.sim.restart()
        return {}

    async def emit(self, data: dict[str, object]) -> object:
        kind = _opt_str(data, "kind") or ""
        payload = data.get("data", {})
        if not isinstance(payload, dict):
            raise _ControlError(400, "data must be a JSON object")
        self.sim.emit(kind, payload, _opt_str(data, "login"))
        return {}

    async def burst(self, data: dict[str, object]) -> object:
        kind = _opt_str(data, "kind") or "device"
        await self.sim.emit_burst(_int(data, "n"), kind, _opt_str(data, "login"))
        return {}

    async def event_rate(self, data: dict[str, object]) -> object:
        self.sim.set_event_rate(_number(data, "rate"))
        return {}

    async def feed_drop(self, data: dict[str, object]) -> object:
        return {"dropped": self.sim.drop_feeds()}

    async def feed_error(self, data: dict[str, object]) -> object:
        count = self.sim.feed_error(_int(data, "errno"), _opt_str(data, "message") or "")
        return {"closed": count}

    async def feed_refuse(self, data: dict[str, object]) -> object:
        self.sim.refuse_handshakes(_int(data, "n", 1))
        return {}

    async def feed_freeze(self, data: dict[str, object]) -> object:
        self.sim.freeze_feeds()
        return {}

    async def feed_unfreeze(self, data: dict[str, object]) -> object:
        self.sim.unfreeze_feeds()
        return {}

    async def user(self, request: Request) -> Response:
        try:
            return JSONResponse(self.sim.user_view(request.path_params["login"]))
        except KeyError:
            return JSONResponse({"error": "no such user"}, status_code=404)

    async def contexts(self, request: Request) -> Response:
        return JSONResponse(self.sim.contexts())

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self.sim.stats())


def _post(path: str, action: Callable[[dict[str, object]], Awaitable[object]]) -> Route:
    async def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(await action(await _json_body(request)))
        except _ControlError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    return Route(f"/_sim/{path}", endpoint, methods=["POST"])


def control_routes(sim: Simulator) -> list[Route]:
    """The ``/_sim/`` routes of ``sim`` (see the package docstring's table)."""
    c = _Controls(sim)
    return [
        _post("delay", c.delay),
        _post("fail", c.fail),
        _post("expire", c.expire),
        _post("restart", c.restart),
        _post("emit", c.emit),
        _post("burst", c.burst),
        _post("event-rate", c.event_rate),
        _post("feed/drop", c.feed_drop),
        _post("feed/error", c.feed_error),
        _post("feed/refuse", c.feed_refuse),
        _post("feed/freeze", c.feed_freeze),
        _post("feed/unfreeze", c.feed_unfreeze),
        Route("/_sim/users/{login}", c.user, methods=["GET"]),
        Route("/_sim/contexts", c.contexts, methods=["GET"]),
        Route("/_sim/stats", c.stats, methods=["GET"]),
    ]
