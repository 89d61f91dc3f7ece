"""The options of ``open_session``, validated once into one frozen record.

Every option is checked here, at the call, before anything is sent: a bad
value raises :class:`~pbxsession.InvalidArgumentError` (or
:class:`~pbxsession.InvalidHostError`) naming it. Booleans must be booleans.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import TypeVar

import httpx

from . import _checks as checks
from . import _wire as wire
from ._errors import InvalidArgumentError
from ._feed import BackoffPolicy
from ._models import FeedOptions
from ._timeouts import ExitTimeouts, Timeout
from .stores import SessionStore, default_store

__all__ = ["SessionConfig", "VerifyTypes"]

T = TypeVar("T")

VerifyTypes = bool | str | os.PathLike[str] | ssl.SSLContext
CertTypes = str | tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """What a session was opened with, every value checked and normalised."""

    host: str | None
    ws_host: str | None
    subid: str | None
    store: SessionStore
    keep_session: bool
    allow_insecure: bool
    feed: FeedOptions | None
    timeout: Timeout
    verify: VerifyTypes
    cert: CertTypes
    trust_env: bool
    retries: int
    exit_timeout: ExitTimeouts
    backoff: BackoffPolicy | None
    exit_on_close: bool
    http_client: httpx.AsyncClient | None

    @classmethod
    def build(
        cls,
        *,
        host: str | None,
        ws_host: str | None,
        subid: str | None,
        store: SessionStore | None,
        keep_session: bool,
        allow_insecure: bool,
        feed: FeedOptions | None,
        timeout: float | Timeout,
        verify: VerifyTypes,
        cert: CertTypes,
        trust_env: bool,
        retries: int,
        exit_timeout: float | ExitTimeouts,
        backoff: BackoffPolicy | None,
        exit_on_close: bool,
        http_client: httpx.AsyncClient | None,
    ) -> SessionConfig:
        """Check every option; raise :class:`InvalidArgumentError` naming the first bad one."""
        allow_insecure = checks.boolean("allow_insecure", allow_insecure)
        return cls(
            host=None if host is None else wire.validate_host(host, allow_insecure=allow_insecure),
            ws_host=None
            if ws_host is None
            else wire.validate_host(ws_host, websocket=True, allow_insecure=allow_insecure),
            subid=None if subid is None else wire.validate_sub_id(subid),
            store=_store(store),
            keep_session=checks.boolean("keep_session", keep_session),
            allow_insecure=allow_insecure,
            feed=_instance("feed", feed, FeedOptions),
            timeout=Timeout.coerce(timeout),
            verify=_verify(verify),
            cert=_cert(cert),
            trust_env=checks.boolean("trust_env", trust_env),
            retries=checks.non_negative_int("retries", retries),
            exit_timeout=ExitTimeouts.coerce(exit_timeout),
            backoff=_backoff(backoff),
            exit_on_close=checks.boolean("exit_on_close", exit_on_close),
            http_client=_instance("http_client", http_client, httpx.AsyncClient),
        )


def _instance(name: str, value: T | None, kind: type[T]) -> T | None:
    if value is not None and not isinstance(value, kind):
        raise InvalidArgumentError(f"{name} must be a {kind.__name__} or None")
    return value


def _store(store: object) -> SessionStore:
    if store is None:
        return default_store()
    if not isinstance(store, SessionStore):
        raise InvalidArgumentError("store must be a SessionStore (MemoryStore, SqliteStore...)")
    return store


def _verify(verify: object) -> VerifyTypes:
    if isinstance(verify, bool | str | os.PathLike | ssl.SSLContext):
        return verify
    raise InvalidArgumentError("verify must be True, False, a CA bundle path or an SSLContext")


def _cert(cert: object) -> CertTypes:
    if cert is None or isinstance(cert, str):
        return cert
    if isinstance(cert, tuple) and len(cert) == 2 and all(isinstance(p, str) for p in cert):
        return (cert[0], cert[1])
    raise InvalidArgumentError("cert must be a path or a (certificate, key) pair of paths")


def _backoff(backoff: BackoffPolicy | None) -> BackoffPolicy | None:
    if backoff is None or (hasattr(backoff, "delay") and hasattr(backoff, "reset_after")):
        return backoff
    raise InvalidArgumentError("backoff must be a BackoffPolicy (delay(), reset_after) or None")
