"""The exception tree of pbxsession: every exception the library raises.

Everything raised on purpose is a :class:`PbxError`; catch that to catch all
of them. Nothing escapes as an ``ExceptionGroup``: where a hidden nursery
collects failures, one of these is raised, chained (``from``) to the cause.

::

    PbxError
    ├── InvalidStateError        the operation is not allowed in this state
    ├── InvalidArgumentError     a bad argument (also a ValueError)
    │   └── InvalidHostError     a host URI outside PROTOCOL.md's rules
    ├── CommandError             the PBX answered result="fail" (.cmd, .code)
    │   ├── LoginError           login refused: badauth, locked, notloggedin
    │   ├── PermissionDeniedError  norole: the user may not do this
    │   ├── UnknownCompanyError  badcompany: not one of the login's companies
    │   ├── StaleCredentialError stale: the WebRTC password was reset elsewhere
    │   └── SessionLostError     notloggedin while logged in: the login is gone
    ├── SessionBusyError         another operation of this session is in progress
    ├── ProtocolError            the reply breaks PROTOCOL.md (malformed, too big)
    ├── PbxUnavailableError      connection failure, timeout, HTTP 5xx
    │   ├── PbxTimeoutError      no whole reply in time (also a TimeoutError)
    │   └── TlsError             the TLS handshake failed (never retried)
    └── StoreError               a session store cannot be read or written

No message, attribute or ``repr`` of these, nor anything chained to them,
ever holds a password or a session cookie.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "CommandError",
    "InvalidArgumentError",
    "InvalidHostError",
    "InvalidStateError",
    "LoginError",
    "PbxError",
    "PbxTimeoutError",
    "PbxUnavailableError",
    "PermissionDeniedError",
    "ProtocolError",
    "SessionBusyError",
    "SessionLostError",
    "StaleCredentialError",
    "StoreError",
    "TlsError",
    "UnknownCompanyError",
]


class PbxError(Exception):
    """Base class of every exception pbxsession raises on purpose."""


class InvalidStateError(PbxError):
    """The session's state does not allow the operation; nothing changed.

    ``operation`` names the refused operation, ``state`` the state the session
    was in, and ``allowed_in`` the states that would have allowed it.
    """

    def __init__(
        self, operation: str, state: str, allowed_in: Iterable[str], detail: str = ""
    ) -> None:
        self.operation = operation
        self.state = state
        self.allowed_in = tuple(allowed_in)
        where = ", ".join(self.allowed_in) if self.allowed_in else "no state"
        message = f"{operation}() is not allowed in state {state!r}; it is allowed in: {where}"
        if detail:
            message = f"{message} ({detail})"
        super().__init__(message)


class InvalidArgumentError(PbxError, ValueError):
    """An argument is malformed (empty user name, bad sub-ID, bad option...)."""


class InvalidHostError(InvalidArgumentError):
    """A host URI breaks PROTOCOL.md's host rules, or is insecure without consent."""


class CommandError(PbxError):
    """The PBX refused a command: ``result="fail"`` with a ``code``.

    ``cmd`` is the command (``login``, ``rtcreset``...), ``code`` the PBX's
    failure code and ``message`` its human text.
    """

    def __init__(self, cmd: str, code: str, message: str = "") -> None:
        self.cmd = cmd
        self.code = code
        self.message = message
        text = f"{cmd} failed: {code}"
        if message:
            text = f"{text}: {message}"
        super().__init__(text)


class LoginError(CommandError):
    """Login refused; ``code`` is ``badauth``, ``locked`` or ``notloggedin``.

    ``notloggedin`` answers a ``checkonly`` login when the shared context is
    not logged in as the asked user.
    """


class PermissionDeniedError(CommandError):
    """The user lacks the role for this (``norole``), e.g. a one-company user."""


class UnknownCompanyError(CommandError):
    """The company id is not one of the login's companies (``badcompany``)."""


class StaleCredentialError(CommandError):
    """The WebRTC password being released was already reset elsewhere (``stale``)."""


class SessionLostError(CommandError):
    """The PBX says the session is no longer logged in (``notloggedin``).

    The session has moved back to ``host_set``; log in again to go on.
    """


class SessionBusyError(PbxError):
    """Another operation of this session is in progress; nothing was done.

    Like trio's ``BusyResourceError``: a synchronous operation (``set_host``,
    ``get_sub_id``...) made while an async one runs is refused with this.
    ``operation`` names the refused operation.
    """

    def __init__(self, operation: str) -> None:
        self.operation = operation
        super().__init__(f"{operation}() refused: another operation of this session is in progress")


class ProtocolError(PbxError):
    """The PBX's reply does not follow PROTOCOL.md (malformed, oversized...)."""


class PbxUnavailableError(PbxError):
    """The PBX could not be reached or failed itself (timeout, refused, HTTP 5xx)."""


class PbxTimeoutError(PbxUnavailableError, TimeoutError):
    """The PBX accepted the request but no whole reply came in time.

    The message says how many attempts were made and how long was waited.
    """


class TlsError(PbxUnavailableError):
    """The TLS handshake failed (certificate, host name, or TLS on a plain port).

    Never retried: a certificate does not get better by retrying.
    """


class StoreError(PbxError):
    """A session store could not be read or written (corrupt file, no server...)."""
