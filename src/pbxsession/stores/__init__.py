"""Session stores: where sessions keep what a browser would keep (never a password)."""

from ._base import ContextRecord, SessionStore
from ._memory import MemoryStore, default_store

__all__ = ["ContextRecord", "MemoryStore", "SessionStore", "default_store"]
