"""The simulator's HTTP face: the command endpoint, the feed route and the ``/_sim/`` controls.

``POST /api/api.whtm`` takes a form-urlencoded command and answers XML as
PROTOCOL.md says; another path is 404, another method 405, another content
type 415. Command delays and injected HTTP 500s are applied here. Nothing a
client sends can crash the server: unexpected errors answer HTTP 500.
WebSocket handshakes go to the feed (:mod:`._feed_route`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ._feed_route import feed_routes
from ._simulator import Simulator
from ._wire import (
    COMMAND_PATH,
    CONTENT_TYPE,
    COOKIE_ATTRIBUTES,
    COOKIE_NAME,
    FORM_TYPE,
    MAX_BODY,
    STATUS,
    BadForm,
    Reply,
    parse_form,
    render_reply,
)

__all__ = ["create_app"]

logger = logging.getLogger("pbxsession.sim")

Handler = Callable[[Request], Awaitable[Response]]


class _ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_body(request: Request, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _command_endpoint(sim: Simulator) -> Handler:
    state = sim.state

    async def command(request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != FORM_TYPE:
            return PlainTextResponse(
                f"commands must be {FORM_TYPE}", status_code=STATUS["wrong_type"]
            )
        body = await _read_body(request, MAX_BODY)
        form: dict[str, str] = {}
        problem = "the command is too large" if body is None else ""
        if body is not None:
            try:
                form = parse_form(body)
            except BadForm as exc:
                problem = str(exc)
        cmd = form.get("cmd", "")
        state.count_command(cmd)
        delay = state.faults.delay_for(cmd)
        if delay > 0:
            await trio.sleep(delay)
        if state.faults.take_failure(cmd):
            return PlainTextResponse("simulated PBX failure", status_code=STATUS["failure"])
        cookie = request.cookies.get(COOKIE_NAME)
        issue = not state.is_known_cookie(cookie)
        if issue or cookie is None:
            cookie = state.issue_cookie()
        if problem:
            reply = Reply(cmd=cmd, code="badrequest", message=problem)
        else:
            reply = state.handle_command(cookie, form)
        response = Response(render_reply(reply), media_type=CONTENT_TYPE)
        if issue:
            attributes: dict[str, Any] = dict(COOKIE_ATTRIBUTES)
            response.set_cookie(
                COOKIE_NAME, cookie, secure=request.url.scheme == "https", **attributes
            )
        return response

    return command


async def _json_body(request: Request) -> dict[str, object]:
    body = await _read_body(request, MAX_BODY)
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


def _controls(sim: Simulator) -> list[Route]:
    async def delay(data: dict[str, object]) -> object:
        sim.set_delay(_number(data, "seconds"), _opt_str(data, "cmd"))
        return {}

    async def fail(data: dict[str, object]) -> object:
        sim.fail_next(_int(data, "n", 1), _opt_str(data, "cmd"))
        return {}

    async def expire(data: dict[str, object]) -> object:
        subid = _opt_str(data, "subid") or ""
        count = sim.expire(_opt_str(data, "login"), cookie=_opt_str(data, "cookie"), subid=subid)
        return {"expired": count}

    async def restart(data: dict[str, object]) -> object:
        sim.restart()
        return {}

    async def emit(data: dict[str, object]) -> object:
        kind = _opt_str(data, "kind") or ""
        payload = data.get("data", {})
        if not isinstance(payload, dict):
            raise _ControlError(400, "data must be a JSON object")
        sim.emit(kind, payload, _opt_str(data, "login"))
        return {}

    async def burst(data: dict[str, object]) -> object:
        kind = _opt_str(data, "kind") or "device"
        await sim.emit_burst(_int(data, "n"), kind, _opt_str(data, "login"))
        return {}

    async def event_rate(data: dict[str, object]) -> object:
        sim.set_event_rate(_number(data, "rate"))
        return {}

    async def feed_drop(data: dict[str, object]) -> object:
        return {"dropped": sim.drop_feeds()}

    async def feed_error(data: dict[str, object]) -> object:
        count = sim.feed_error(_int(data, "errno"), _opt_str(data, "message") or "")
        return {"closed": count}

    async def feed_refuse(data: dict[str, object]) -> object:
        sim.refuse_handshakes(_int(data, "n", 1))
        return {}

    async def feed_freeze(data: dict[str, object]) -> object:
        sim.freeze_feeds()
        return {}

    async def feed_unfreeze(data: dict[str, object]) -> object:
        sim.unfreeze_feeds()
        return {}

    def post(path: str, action: Callable[[dict[str, object]], Awaitable[object]]) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                return JSONResponse(await action(await _json_body(request)))
            except _ControlError as exc:
                return JSONResponse({"error": str(exc)}, status_code=exc.status)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)

        return Route(f"/_sim/{path}", endpoint, methods=["POST"])

    async def user(request: Request) -> Response:
        try:
            return JSONResponse(sim.user_view(request.path_params["login"]))
        except KeyError:
            return JSONResponse({"error": "no such user"}, status_code=404)

    async def contexts(request: Request) -> Response:
        return JSONResponse(sim.contexts())

    async def stats(request: Request) -> Response:
        return JSONResponse(sim.stats())

    return [
        post("delay", delay),
        post("fail", fail),
        post("expire", expire),
        post("restart", restart),
        post("emit", emit),
        post("burst", burst),
        post("event-rate", event_rate),
        post("feed/drop", feed_drop),
        post("feed/error", feed_error),
        post("feed/refuse", feed_refuse),
        post("feed/freeze", feed_freeze),
        post("feed/unfreeze", feed_unfreeze),
        Route("/_sim/users/{login}", user, methods=["GET"]),
        Route("/_sim/contexts", contexts, methods=["GET"]),
        Route("/_sim/stats", stats, methods=["GET"]),
    ]


def _guarded(handler: Handler) -> Handler:
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception:
            logger.exception("simulator request failed")
            return PlainTextResponse("internal simulator error", status_code=STATUS["failure"])

    return guarded


def create_app(sim: Simulator) -> Starlette:
    """Build the Starlette app serving ``sim``'s commands, feed and controls."""
    routes: list[BaseRoute] = [
        Route(COMMAND_PATH, _guarded(_command_endpoint(sim)), methods=["POST"])
    ]
    routes += [
        Route(r.path, _guarded(r.endpoint), methods=sorted(r.methods or ())) for r in _controls(sim)
    ]
    routes += feed_routes(sim.feed)
    return Starlette(routes=routes)
