"""The simulator's HTTP face: the command endpoint, the feed route and the ``/_sim/`` controls.

``POST /api/api.whtm`` takes a form-urlencoded command and answers XML as
PROTOCOL.md says; another path is 404, another method 405, another content
type 415. Command delays and injected HTTP 500s are applied here. Nothing a
client sends can crash the server: unexpected errors answer HTTP 500.
WebSocket handshakes go to the feed (:mod:`._feed_route`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ._controls import control_routes, read_body
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


def _command_endpoint(sim: Simulator) -> Handler:
    state = sim.state

    async def command(request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != FORM_TYPE:
            return PlainTextResponse(
                f"commands must be {FORM_TYPE}", status_code=STATUS["wrong_type"]
            )
        body = await read_body(request, MAX_BODY)
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
        Route(r.path, _guarded(r.endpoint), methods=sorted(r.methods or ()))
        for r in control_routes(sim)
    ]
    routes += feed_routes(sim.feed)
    return Starlette(routes=routes)
