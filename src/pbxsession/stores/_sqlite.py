"""A session store in one SQLite file, shared by every process that opens it.

How it works, and why:

- **One connection per call.** Each method runs one short function in a
  worker thread (``trio.to_thread.run_sync``) that opens the file, does one
  transaction and closes it. Opening a local SQLite file costs well under a
  millisecond, and a connection that never outlives one call can never be
  used from two threads at once, needs no closing by the user and cannot
  hold a transaction open across an ``await``. Worker threads are not
  abandoned on cancellation: a cancelled call waits for its (short,
  ``busy_timeout``-bounded) transaction to end, so a write is never left half
  done.
- **Several processes at once.** The file is in WAL mode (readers never wait
  for the writer), every connection sets ``busy_timeout`` so a writer waits
  for another instead of failing, every write is a single statement or a
  ``BEGIN IMMEDIATE`` transaction (the write lock is taken before reading, so
  a read-modify-write such as the cookie's compare-and-set cannot interleave
  with another's).
- **Per user.** Cookies are keyed by (host, user), contexts by (host, user,
  sub-ID): sessions of different users never share a cookie.
- **Private.** The file is created ``0600`` (``os.open`` then ``fchmod``, so a
  umask can neither widen nor narrow it) before SQLite opens it; SQLite gives
  its ``-wal`` and ``-shm`` files the same mode; every missing folder is
  created ``0700``. Where POSIX modes do not exist (Windows) the per-user
  folder's ACL applies.
- **Never a silent reset.** ``PRAGMA application_id`` marks the file as a
  pbxsession store and ``PRAGMA user_version`` is its schema version. Only an
  empty file (or an empty SQLite database) is initialised; a store of schema
  version 1 (one cookie per host) is migrated in one transaction (each user
  seen logged in keeps the host's cookie); a corrupt file, another kind of
  file, another program's database or a newer schema raises
  :class:`~pbxsession.StoreError` naming the path, and is left untouched.
- **The re-login lock** is a ``filelock`` lock file per (host, user) in the
  folder ``<path>.locks``: the kernel releases it when its holder's process
  dies, so a crash never leaves it held. It is tried without blocking, in a
  worker thread, retried with short sleeps up to ``lock_timeout``, so the trio
  loop never blocks and a cancelled wait simply stops; it is released
  however the block is left. Tasks of one process first queue on a
  ``trio.Lock`` per (host, user), so only one of them polls.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import filelock
import platformdirs
import trio

from .._errors import InvalidArgumentError, StoreError
from ._base import ContextRecord
from ._files import create_private_file, open_lock
from ._sqlite_schema import NOT_A_STORE, check_or_create_schema, enable_wal, immediate

__all__ = ["SqliteStore", "default_store_path"]

T = TypeVar("T")


def default_store_path() -> Path:
    """Where the command line keeps its store: ``sessions.sqlite3`` in the user state dir.

    That is ``platformdirs.user_state_path("pbxsession")``, e.g.
    ``~/.local/state/pbxsession`` on Linux. Nothing is created here.
    """
    return platformdirs.user_state_path("pbxsession") / "sessions.sqlite3"


def _subid_key(subid: str | None) -> str:
    # Sub-IDs are 1 to 64 characters, so "" can stand for the default context.
    return "" if subid is None else subid


def _record(user: str, subid: str, logged_in: int, seen_at: float) -> ContextRecord:
    return ContextRecord(str(user), subid or None, bool(logged_in), float(seen_at))


class SqliteStore:
    """A :class:`~pbxsession.stores.SessionStore` in an SQLite file, for one machine.

    Every session, in any process, that opens a store on the same ``path``
    shares the cookie of its user (and so that user's default context's
    login), like the tabs of one browser profile per user. ``busy_timeout``
    bounds how long a write waits for another process's; ``lock_timeout``
    how long :meth:`lock` waits before raising
    :class:`~pbxsession.StoreError`. A context not recorded for
    ``context_ttl`` seconds (default 30 days) is forgotten at the next write,
    so that random sub-IDs do not pile up. See the module's docstring for
    the design.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        lock_timeout: float = 30.0,
        context_ttl: float = 30 * 86400.0,
    ) -> None:
        for name, value in (
            ("busy_timeout", busy_timeout),
            ("lock_timeout", lock_timeout),
            ("context_ttl", context_ttl),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidArgumentError(f"{name} must be a positive number of seconds")
        self._path = Path(path)
        self._busy_timeout = float(busy_timeout)
        self._lock_timeout = float(lock_timeout)
        self._context_ttl = float(context_ttl)
        self._ready = False
        self._ready_lock = threading.Lock()
        self._local_locks: dict[tuple[str, str], trio.Lock] = {}

    @property
    def path(self) -> Path:
        """The store's file."""
        return self._path

    def lock_path(self, host: str, user: str) -> Path:
        """The lock file of (``host``, ``user``): a digest, so any name makes a safe file name."""
        digest = hashlib.sha256(f"{host}\0{user}".encode("utf-8", "surrogatepass")).hexdigest()
        return self._path.with_name(self._path.name + ".locks") / f"{digest[:32]}.lock"

    def __repr__(self) -> str:
        return f"<SqliteStore path={str(self._path)!r}>"

    # ----------------------------------------------------------- the interface

    async def get_cookie(self, host: str, user: str) -> str | None:
        """The session cookie of ``user`` for ``host``, or ``None``."""

        def read(conn: sqlite3.Connection) -> str | None:
            return _cookie(conn, host, user)

        return await self._run("read the cookie", read)

    async def set_cookie(
        self, host: str, user: str, cookie: str | None, *, replacing: str | None
    ) -> str | None:
        """Compare-and-set ``cookie`` (``None`` clears); return the cookie in effect."""

        def compare_and_set(conn: sqlite3.Connection) -> str | None:
            with immediate(conn):
                current = _cookie(conn, host, user)
                if current is not None and current != replacing:
                    return current
                if cookie is None:
                    conn.execute("DELETE FROM cookies WHERE host = ? AND user = ?", (host, user))
                else:
                    conn.execute(
                        "INSERT INTO cookies (host, user, value, updated_at) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (host, user) DO UPDATE SET"
                        " value = excluded.value, updated_at = excluded.updated_at",
                        (host, user, cookie, time.time()),
                    )
                return cookie

        return await self._run("store the cookie", compare_and_set)

    async def record_context(
        self, host: str, user: str, subid: str | None, logged_in: bool
    ) -> None:
        """Note that ``user``'s context ``subid`` on ``host`` is logged in (or out), now."""

        def write(conn: sqlite3.Connection) -> None:
            now = time.time()
            with immediate(conn):
                # REPLACE gives the row a new, higher rowid: the newest record
                # wins a tie of seen_at in latest_user.
                conn.execute(
                    "INSERT OR REPLACE INTO contexts (host, user, subid, logged_in, seen_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (host, user, _subid_key(subid), int(bool(logged_in)), now),
                )
                conn.execute("DELETE FROM contexts WHERE seen_at < ?", (now - self._context_ttl,))

        await self._run("record a context", write)

    async def get_context(self, host: str, user: str, subid: str | None) -> ContextRecord | None:
        """What was last recorded of ``user``'s context ``subid`` on ``host``."""

        def read(conn: sqlite3.Connection) -> ContextRecord | None:
            row = conn.execute(
                "SELECT user, subid, logged_in, seen_at FROM contexts"
                " WHERE host = ? AND user = ? AND subid = ?",
                (host, user, _subid_key(subid)),
            ).fetchone()
            return None if row is None else _record(*row)

        return await self._run("read a context", read)

    async def contexts(self, host: str) -> dict[tuple[str, str | None], ContextRecord]:
        """Every context recorded for ``host``, by ``(user, subid)``."""

        def read(conn: sqlite3.Connection) -> dict[tuple[str, str | None], ContextRecord]:
            rows = conn.execute(
                "SELECT user, subid, logged_in, seen_at FROM contexts WHERE host = ?"
                " ORDER BY user, subid",
                (host,),
            ).fetchall()
            records = [_record(*row) for row in rows]
            return {(r.user, r.subid): r for r in records}

        return await self._run("read the contexts", read)

    async def latest_user(self, host: str) -> str | None:
        """The user most recently recorded logged in on ``host`` (and not out since)."""

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT user FROM contexts WHERE host = ? AND logged_in"
                " ORDER BY seen_at DESC, rowid DESC LIMIT 1",
                (host,),
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._run("read the latest user", read)

    @asynccontextmanager
    async def lock(self, host: str, user: str) -> AsyncIterator[None]:
        """A lock per (host, user) shared by every process using this file.

        Raises :class:`~pbxsession.StoreError` after waiting ``lock_timeout``.
        """
        local = self._local_locks.setdefault((host, user), trio.Lock())
        async with local:
            path = self.lock_path(host, user)
            lock = await self._run_os("open the lock file", lambda: open_lock(path))
            await self._acquire(lock, path)
            try:
                yield
            finally:
                lock.release()  # closes the descriptor: quick, and must happen now

    # ------------------------------------------------------------- internals

    async def _acquire(self, lock: filelock.BaseFileLock, path: Path) -> None:
        deadline = trio.current_time() + self._lock_timeout
        delay = 0.001

        def attempt() -> bool:
            try:
                lock.acquire(blocking=False)
            except filelock.Timeout:
                return False
            return True

        # Not abandoned on cancellation: a lock taken by the attempt is
        # returned, and the caller's finally releases it.
        while not await self._run_os(f"lock {path}", attempt):
            if trio.current_time() >= deadline:
                raise StoreError(
                    f"session store {self._path}: another process held the lock "
                    f"{path} for over {self._lock_timeout:g} s"
                )
            await trio.sleep(delay)
            delay = min(delay * 2, 0.01)

    async def _run_os(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await trio.to_thread.run_sync(fn)
        except OSError as exc:
            raise StoreError(f"session store {self._path}: cannot {what}: {exc}") from exc

    async def _run(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await trio.to_thread.run_sync(self._call, what, fn)

    def _call(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """In a worker thread: open, check once, run ``fn``, close."""
        try:
            if not self._ready:
                with self._ready_lock:
                    if not self._ready:
                        self._prepare()
                        self._ready = True
            conn = self._connect()
            try:
                return fn(conn)
            finally:
                conn.close()
        except StoreError:
            raise
        except sqlite3.Error as exc:
            raise StoreError(f"session store {self._path}: cannot {what}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"session store {self._path}: cannot {what}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: autocommit; transactions are explicit (BEGIN IMMEDIATE).
        conn = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        return conn

    def _prepare(self) -> None:
        """Create the file (0600) if missing, then check, migrate or initialise its schema."""
        create_private_file(self._path)
        conn = self._connect()
        try:
            try:
                with immediate(conn):
                    check_or_create_schema(conn, self._path)
                enable_wal(conn, self._path)
            except sqlite3.DatabaseError as exc:
                if getattr(exc, "sqlite_errorname", "") not in NOT_A_STORE:
                    raise  # locked, unreadable...: reported by _call as such
                raise StoreError(
                    f"{self._path} is not a pbxsession session store: it is not a readable "
                    f"SQLite database ({exc}); move it away or choose another path"
                ) from exc
        finally:
            conn.close()


def _cookie(conn: sqlite3.Connection, host: str, user: str) -> str | None:
    row = conn.execute(
        "SELECT value FROM cookies WHERE host = ? AND user = ?", (host, user)
    ).fetchone()
    return None if row is None else str(row[0])
