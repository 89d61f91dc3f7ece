"""The SQLite store's schema: its tables, its checks, its migration from version 1."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from .._errors import StoreError

__all__ = [
    "APPLICATION_ID",
    "NOT_A_STORE",
    "SCHEMA_VERSION",
    "check_or_create_schema",
    "enable_wal",
    "immediate",
]

#: ``PRAGMA application_id`` of a pbxsession store: "PBXS".
APPLICATION_ID = 0x50425853
#: ``PRAGMA user_version`` of the schema this code writes (1: one cookie per host).
SCHEMA_VERSION = 2

_SCHEMA = (
    "CREATE TABLE cookies ("
    " host TEXT NOT NULL, user TEXT NOT NULL, value TEXT NOT NULL, updated_at REAL NOT NULL,"
    " PRIMARY KEY (host, user))",
    "CREATE TABLE contexts ("
    " host TEXT NOT NULL, user TEXT NOT NULL, subid TEXT NOT NULL,"
    " logged_in INTEGER NOT NULL, seen_at REAL NOT NULL,"
    " PRIMARY KEY (host, user, subid))",
)
_TABLES = {"cookies", "contexts"}
# Version 1 to 2: every user seen logged in on a host keeps that host's one
# cookie, which is where their login lives on the PBX; logged-out contexts
# had no user and are dropped.
_MIGRATE_FROM_1 = (
    "INSERT INTO contexts (host, user, subid, logged_in, seen_at)"
    " SELECT host, login, subid, 1, seen_at FROM context WHERE login IS NOT NULL",
    "INSERT OR IGNORE INTO cookies (host, user, value, updated_at)"
    " SELECT c.host, x.login, c.value, c.updated_at FROM cookie c"
    " JOIN context x ON x.host = c.host WHERE x.login IS NOT NULL",
    "DROP TABLE cookie",
    "DROP TABLE context",
)
_TABLES_1 = {"cookie", "context"}
# SQLite's answers for a file that is not a (sound) database.
NOT_A_STORE = {"SQLITE_NOTADB", "SQLITE_CORRUPT"}


def check_or_create_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Check the store's schema; create it in an empty database, migrate version 1.

    Run inside a ``BEGIN IMMEDIATE`` transaction: a migration is all or nothing.
    """
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    tables = {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master")}
    if app_id == 0 and version == 0 and not tables:
        _create_schema(conn)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        return
    if app_id != APPLICATION_ID:
        raise StoreError(
            f"{path} is an SQLite database of another program (application_id "
            f"{app_id:#x}, tables {', '.join(sorted(tables)) or 'none'}), not a pbxsession "
            "session store; it was left untouched: choose another path"
        )
    if version == 1:
        _migrate_from_1(conn, path, tables)
        return
    _check_current(path, version, tables)


def _migrate_from_1(conn: sqlite3.Connection, path: Path, tables: set[str]) -> None:
    if not tables >= _TABLES_1 or tables & _TABLES:
        raise StoreError(
            f"{path}: the pbxsession session store of schema version 1 is "
            "damaged (its tables are not those of version 1); it was left untouched"
        )
    _create_schema(conn)  # in the caller's transaction: all or nothing
    for statement in _MIGRATE_FROM_1:
        conn.execute(statement)


def _check_current(path: Path, version: int, tables: set[str]) -> None:
    if version != SCHEMA_VERSION:
        newer = " by a newer pbxsession" if version > SCHEMA_VERSION else ""
        raise StoreError(
            f"{path} is a pbxsession session store of schema version {version}"
            f"{newer}; this version reads versions 1 and {SCHEMA_VERSION} only"
        )
    if not tables >= _TABLES:
        raise StoreError(f"{path}: the pbxsession session store is missing tables")


def _create_schema(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A ``BEGIN IMMEDIATE`` transaction: the write lock is taken before any read."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def enable_wal(conn: sqlite3.Connection, path: Path) -> None:
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
