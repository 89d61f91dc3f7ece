"""Another program sharing a store, for tests/test_stores.py.

Run as ``python tests/store_worker.py '<json spec>'``; prints one JSON answer.
The spec names the store (``{"kind": "sqlite", "path"}`` or ``{"kind":
"redis", "url", "prefix"}``) and the step (``op``):

- ``steps``: for each step ``{"op", "user", "password", "subid"}``, open a
  session on ``url`` and log in as ``user`` with the password (``login``),
  with ``checkonly`` (``adopt``) or with ``login_shared`` (``shared``), or
  log in and out again (``login_logout``);
  answers a list of ``{"login", "password_logins"}`` or ``{"error": code, ...}``;
- ``writes``: record ``n`` contexts of its own (``w{worker}-{j}``) for ``user``,
  then, ``n`` times, add one to the number in the file ``counter`` under
  ``store.lock(host, user)``.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import trio

import pbxsession


class PasswordLogins(logging.Handler):
    """Counts the password logins this program sends (the transport logs each)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "sessionPass=" in record.getMessage():
            self.count += 1


def make_store(spec: dict[str, Any]) -> pbxsession.SessionStore:
    if spec["kind"] == "sqlite":
        return pbxsession.SqliteStore(spec["path"])
    return pbxsession.RedisStore(spec["url"], prefix=spec["prefix"])


async def main(spec: dict[str, Any]) -> Any:
    store = make_store(spec["store"])
    try:
        if spec["op"] == "writes":
            return await writes(spec, store)
        return [await log_in(spec, step, store) for step in spec["steps"]]
    finally:
        if isinstance(store, pbxsession.RedisStore):
            await store.aclose()


async def writes(spec: dict[str, Any], store: pbxsession.SessionStore) -> dict[str, Any]:
    host, worker, n, user = spec["host"], spec["worker"], spec["n"], spec["user"]
    for j in range(n):
        await store.record_context(host, user, f"w{worker}-{j}", True)
    counter = trio.Path(spec["counter"])
    for _ in range(n):
        async with store.lock(host, user):
            value = int(await counter.read_text() or "0")
            await trio.sleep(0.001)  # a window for a lost update, were the lock broken
            await counter.write_text(str(value + 1))
    return {"ok": True}


async def log_in(
    spec: dict[str, Any], step: dict[str, Any], store: pbxsession.SessionStore
) -> dict[str, Any]:
    counter = PasswordLogins()
    logger = logging.getLogger("pbxsession")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.handlers[:] = [counter]
    user, password, subid = step["user"], step.get("password"), step.get("subid")
    async with pbxsession.open_session(
        spec["url"], ws_host=spec["ws_url"], store=store, feed=None, keep_session=True
    ) as session:
        try:
            if step["op"] == "login":
                result = await session.login(user, password, subid=subid)
            elif step["op"] == "login_logout":
                result = await session.login(user, password, subid=subid)
                await session.logout()
            elif step["op"] == "adopt":
                result = await session.login(user, checkonly=True, subid=subid)
            else:
                result = await session.login_shared(user, password, subid=subid)
        except pbxsession.LoginError as exc:
            return {"error": exc.code, "password_logins": counter.count}
        return {"login": result.login, "password_logins": counter.count}


if __name__ == "__main__":
    print(json.dumps(trio.run(main, json.loads(sys.argv[1]))))
