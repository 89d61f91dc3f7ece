"""What a failure looks like: one line (or one JSON object) and an exit status.

The statuses and their ``kind`` words are a table, so that scripts can rely
on either; library messages are rewritten to name the command line's own
options (``--insecure``) rather than the library's keywords.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Final

from pbxsession import (
    InvalidArgumentError,
    InvalidStateError,
    LoginError,
    PbxError,
    PbxTimeoutError,
    PbxUnavailableError,
    SessionLostError,
    StoreError,
    TlsError,
    UnknownCompanyError,
)

__all__ = [
    "EXIT_BAD_CREDENTIALS",
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PBX_ERROR",
    "EXIT_STORE",
    "EXIT_UNREACHABLE",
    "EXIT_WRONG_STATE",
    "KINDS",
    "CliFailure",
    "cli_wording",
    "failure_for",
    "report_failure",
]

EXIT_OK: Final = 0
EXIT_PBX_ERROR: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_BAD_CREDENTIALS: Final = 3
EXIT_UNREACHABLE: Final = 4
EXIT_WRONG_STATE: Final = 5
EXIT_STORE: Final = 6
EXIT_INTERRUPTED: Final = 130

#: The ``kind`` a JSON error carries for each exit status.
KINDS: Final[dict[int, str]] = {
    EXIT_OK: "ok",
    EXIT_PBX_ERROR: "pbx_error",
    EXIT_BAD_INPUT: "bad_input",
    EXIT_BAD_CREDENTIALS: "bad_credentials",
    EXIT_UNREACHABLE: "unreachable",
    EXIT_WRONG_STATE: "wrong_state",
    EXIT_STORE: "store",
    EXIT_INTERRUPTED: "interrupted",
}

# Library keyword -> the option a command-line user can actually type.
_OPTION_NAMES: Final = (
    (re.compile(r"\ballow_insecure=True\b"), "--insecure"),
    (re.compile(r"\ballow_insecure\b"), "--insecure"),
    (re.compile(r"\brequest_timeout\b"), "--timeout"),
    (re.compile(r"\bws_host\b"), "--ws-host"),
    (re.compile(r"^verify: no CA file"), "--cacert: no CA file"),
)

NOT_LOGGED_IN: Final = "not logged in: run `pbxsession login` first"


class CliFailure(Exception):
    """A failure to report as one line with a distinct exit status.

    ``kind`` defaults to the status's word in :data:`KINDS`; a more precise
    one (``timeout``, ``session_lost``, ``usage``) may be given.
    """

    def __init__(self, message: str, status: int, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind or KINDS.get(status, "error")


def cli_wording(message: str) -> str:
    """``message`` with the library's keywords replaced by the CLI's options."""
    for pattern, option in _OPTION_NAMES:
        message = pattern.sub(option, message)
    return message


def _classify(exc: PbxError) -> tuple[str, int, str | None]:
    """The message, status and (optional) precise kind for a library error."""
    if isinstance(exc, LoginError) and exc.code in ("badauth", "locked"):
        why = exc.message or "bad username or password"
        return f"login refused: {exc.code} ({why})", EXIT_BAD_CREDENTIALS, None
    if isinstance(exc, LoginError | SessionLostError):
        return NOT_LOGGED_IN, EXIT_WRONG_STATE, "not_logged_in"
    if isinstance(exc, InvalidStateError):
        return str(exc), EXIT_WRONG_STATE, None
    if isinstance(exc, InvalidArgumentError | UnknownCompanyError):
        return f"bad input: {exc}", EXIT_BAD_INPUT, None
    if isinstance(exc, PbxUnavailableError):
        return _unreachable(exc)
    if isinstance(exc, StoreError):
        return f"session store: {exc}", EXIT_STORE, None
    return f"PBX error: {exc}", EXIT_PBX_ERROR, None


def _unreachable(exc: PbxUnavailableError) -> tuple[str, int, str | None]:
    if isinstance(exc, TlsError):  # a certificate does not get better by trying again
        hint = "; trust its CA with --cacert" if "verify failed" in str(exc) else ""
        return f"TLS: {exc}{hint}", EXIT_UNREACHABLE, None
    if isinstance(exc, PbxTimeoutError):
        return f"PBX unreachable: {exc}", EXIT_UNREACHABLE, "timeout"
    return f"PBX unreachable: {exc}", EXIT_UNREACHABLE, None


def failure_for(exc: PbxError) -> CliFailure:
    """The :class:`CliFailure` a library error is shown as."""
    message, status, kind = _classify(exc)
    return CliFailure(cli_wording(message), status, kind)


def report_failure(message: str, status: int, kind: str, *, as_json: bool) -> int:
    """Print one failure on standard error, as text or JSON; return ``status``."""
    if as_json:
        record = {"error": message, "kind": kind, "exit_status": status}
        print(json.dumps(record), file=sys.stderr, flush=True)
    else:
        # Plain print: a terminal wraps a long line itself; a pipe gets it whole.
        print(f"pbxsession: {message}", file=sys.stderr, flush=True)
    return status
