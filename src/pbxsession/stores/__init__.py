"""Session stores: where sessions keep what a browser profile would keep (never a password).

A store keeps a session cookie per (host, user), the way a browser profile
per user would: sessions logging in as one user share it (and so share that
user's default context), sessions of different users never do.

- :class:`MemoryStore`: in one process (the default, one per process);
- :class:`SqliteStore`: in an SQLite file, shared by the processes of one machine;
- :class:`RedisStore`: in Redis, shared by a fleet (``pip install 'pbxsession[redis]'``;
  the ``redis`` package is imported only when one is made).
"""

from ._base import ContextRecord, CookieSlot, SessionStore
from ._memory import MemoryStore, default_store
from ._redis import RedisStore
from ._sqlite import SqliteStore, default_store_path

__all__ = [
    "ContextRecord",
    "CookieSlot",
    "MemoryStore",
    "RedisStore",
    "SessionStore",
    "SqliteStore",
    "default_store",
    "default_store_path",
]
