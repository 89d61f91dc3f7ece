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
- **Private.** The file is created ``0600`` (``os.open`` then ``fchmod``, so a
  umask can neither widen nor narrow it) before SQLite opens it; SQLite gives
  its ``-wal`` and ``-shm`` files the same mode; a missing parent directory
  is created ``0700``.
- **Never a silent reset.** ``PRAGMA application_id`` marks the file as a
  pbxsession store and ``PRAGMA user_version`` is its schema version. Only an
  empty file (or an empty SQLite database) is initialised; a corrupt file,
  another kind of file or another program's database raises
  :class:`~pbxsession.StoreError` naming the path.
- **The re-login lock** is ``fcntl.flock`` on a side file ``<path>.lock``:
  the kernel releases it when its holder's process dies, so a crash never
  leaves it held. It is taken without blocking (``LOCK_NB``), retried with
  short sleeps up to ``lock_timeout``, so the trio loop never blocks and a
  cancelled wait simply stops; the descriptor is closed (releasing the lock)
  however the block is left. Tasks of one process first queue on a
  ``trio.Lock`` per host, so only one of them polls. The side file covers the
  whole store (every host): re-logins are rare and short.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import platformdirs
import trio

from .._errors import InvalidArgumentError, StoreError
from ._base import ContextRecord

__all__ = ["SqliteStore", "default_store_path"]

T = TypeVar("T")

#: ``PRAGMA application_id`` of a pbxsession store: "PBXS".
APPLICATION_ID = 0x50425853
#: ``PRAGMA user_version`` of the schema this code writes.
SCHEMA_VERSION = 1

_SCHEMA = (
    "CREATE TABLE cookie ( host TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at REAL NOT NULL)",
    "CREATE TABLE context ("
    " host TEXT NOT NULL, subid TEXT NOT NULL, login TEXT, seen_at REAL NOT NULL,"
    " PRIMARY KEY (host, subid))",
)
_TABLES = {"cookie", "context"}
# SQLite's answers for a file that is not a (sound) database.
_NOT_A_STORE = {"SQLITE_NOTADB", "SQLITE_CORRUPT"}


def default_store_path() -> Path:
    """Where the command line keeps its store: ``sessions.sqlite3`` in the user state dir.

    That is ``platformdirs.user_state_path("pbxsession")``, e.g.
    ``~/.local/state/pbxsession`` on Linux. Nothing is created here.
    """
    return platformdirs.user_state_path("pbxsession") / "sessions.sqlite3"


def _subid_key(subid: str | None) -> str:
    # Sub-IDs are 1 to 64 characters, so "" can stand for the default context.
    return "" if subid is None else subid


def _create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (never truncates)."""
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)  # exactly 0700, whatever the umask
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask
    finally:
        os.close(fd)


class SqliteStore:
    """A :class:`~pbxsession.stores.SessionStore` in an SQLite file, for one machine.

    Every session, in any process, that opens a store on the same ``path``
    shares its cookie (and so the default context's login), like tabs of one
    browser. ``busy_timeout`` bounds how long a write waits for another
    process's; ``lock_timeout`` how long :meth:`lock` waits before raising
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
        self._local_locks: dict[str, trio.Lock] = {}

    @property
    def path(self) -> Path:
        """The store's file."""
        return self._path

    def __repr__(self) -> str:
        return f"<SqliteStore path={str(self._path)!r}>"

    # ----------------------------------------------------------- the interface

    async def get_cookie(self, host: str) -> str | None:
        """The session cookie for ``host``, or ``None``."""

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM cookie WHERE host = ?", (host,)).fetchone()
            return None if row is None else str(row[0])

        return await self._run("read the cookie", read)

    async def set_cookie(self, host: str, cookie: str, *, replacing: str | None) -> str:
        """Store ``cookie`` for ``host`` if ``replacing`` is still stored; return the one kept."""

        def compare_and_set(conn: sqlite3.Connection) -> str:
            with _immediate(conn):
                row = conn.execute("SELECT value FROM cookie WHERE host = ?", (host,)).fetchone()
                current = None if row is None else str(row[0])
                if current is None or current == replacing:
                    conn.execute(
                        "INSERT INTO cookie (host, value, updated_at) VALUES (?, ?, ?)"
                        " ON CONFLICT (host) DO UPDATE SET"
                        " value = excluded.value, updated_at = excluded.updated_at",
                        (host, cookie, time.time()),
                    )
                    current = cookie
                return current

        return await self._run("store the cookie", compare_and_set)

    async def record_context(self, host: str, subid: str | None, login: str | None) -> None:
        """Note that context ``subid`` on ``host`` is logged in as ``login`` (or out)."""

        def write(conn: sqlite3.Connection) -> None:
            now = time.time()
            with _immediate(conn):
                conn.execute(
                    "INSERT INTO context (host, subid, login, seen_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (host, subid) DO UPDATE SET"
                    " login = excluded.login, seen_at = excluded.seen_at",
                    (host, _subid_key(subid), login, now),
                )
                conn.execute("DELETE FROM context WHERE seen_at < ?", (now - self._context_ttl,))

        await self._run("record a context", write)

    async def get_context(self, host: str, subid: str | None) -> ContextRecord | None:
        """What was last recorded of context ``subid`` on ``host``."""

        def read(conn: sqlite3.Connection) -> ContextRecord | None:
            row = conn.execute(
                "SELECT login, seen_at FROM context WHERE host = ? AND subid = ?",
                (host, _subid_key(subid)),
            ).fetchone()
            return None if row is None else ContextRecord(row[0], float(row[1]))

        return await self._run("read a context", read)

    async def contexts(self, host: str) -> dict[str | None, ContextRecord]:
        """Every context recorded for ``host``, by sub-ID (``None``: the default one)."""

        def read(conn: sqlite3.Connection) -> dict[str | None, ContextRecord]:
            rows = conn.execute(
                "SELECT subid, login, seen_at FROM context WHERE host = ? ORDER BY subid",
                (host,),
            ).fetchall()
            return {(s or None): ContextRecord(login, float(seen)) for s, login, seen in rows}

        return await self._run("read the contexts", read)

    @asynccontextmanager
    async def lock(self, host: str) -> AsyncIterator[None]:
        """A lock per store shared by every process using it (``flock`` on ``<path>.lock``).

        Raises :class:`~pbxsession.StoreError` after waiting ``lock_timeout``.
        """
        local = self._local_locks.setdefault(host, trio.Lock())
        async with local:
            lock_path = self._path.with_name(self._path.name + ".lock")
            fd = await self._run_os("open the lock file", lambda: _open_lock_file(lock_path))
            try:
                await self._flock(fd, lock_path)
                yield
            finally:
                os.close(fd)  # releases the flock too

    # ------------------------------------------------------------- internals

    async def _flock(self, fd: int, lock_path: Path) -> None:
        deadline = trio.current_time() + self._lock_timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # never blocks
            except BlockingIOError:
                if trio.current_time() >= deadline:
                    raise StoreError(
                        f"session store {self._path}: another process held the lock "
                        f"{lock_path} for over {self._lock_timeout:g} s"
                    ) from None
                await trio.sleep(delay)
                delay = min(delay * 2, 0.01)
            except OSError as exc:
                raise StoreError(f"session store {self._path}: cannot lock {lock_path}") from exc
            else:
                return

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
        """Create the file (0600) if missing, then check or initialise its schema."""
        _create_private(self._path)
        conn = self._connect()
        try:
            try:
                with _immediate(conn):
                    self._check_or_create_schema(conn)
                _enable_wal(conn, self._path)
            except sqlite3.DatabaseError as exc:
                if getattr(exc, "sqlite_errorname", "") not in _NOT_A_STORE:
                    raise  # locked, unreadable...: reported by _call as such
                raise StoreError(
                    f"{self._path} is not a pbxsession session store: it is not a readable "
                    f"SQLite database ({exc}); move it away or choose another path"
                ) from exc
        finally:
            conn.close()

    def _check_or_create_schema(self, conn: sqlite3.Connection) -> None:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master")}
        if app_id == 0 and version == 0 and not tables:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            return
        if app_id != APPLICATION_ID:
            raise StoreError(
                f"{self._path} is an SQLite database of another program (application_id "
                f"{app_id:#x}, tables {', '.join(sorted(tables)) or 'none'}), not a pbxsession "
                "session store; it was left untouched: choose another path"
            )
        if version != SCHEMA_VERSION:
            newer = " by a newer pbxsession" if version > SCHEMA_VERSION else ""
            raise StoreError(
                f"{self._path} is a pbxsession session store of schema version {version}"
                f"{newer}; this version reads version {SCHEMA_VERSION} only"
            )
        if not tables >= _TABLES:
            raise StoreError(f"{self._path}: the pbxsession session store is missing tables")


def _open_lock_file(path: Path) -> int:
    _create_private(path)
    return os.open(path, os.O_RDWR)


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A ``BEGIN IMMEDIATE`` transaction: the write lock is taken before any read."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _enable_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Switch the file to WAL (persistent), retrying while another process holds it."""
    deadline = time.monotonic() + 5.0
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
            continue
        if mode.lower() != "wal":
            raise StoreError(f"cannot put the session store {path} in WAL mode (got {mode!r})")
        return
