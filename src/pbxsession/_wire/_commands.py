"""The commands, their typed replies, the failure codes' exceptions, the reply envelope."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from xml.etree.ElementTree import Element

from .. import _safexml
from .._errors import (
    CommandError,
    InvalidArgumentError,
    LoginError,
    PbxUnavailableError,
    PermissionDeniedError,
    ProtocolError,
    SessionLostError,
    StaleCredentialError,
    UnknownCompanyError,
)
from .._models import Company, Permission, User
from ._basics import (
    _CONTROL,
    _QUOTED,
    _SHOWS,
    CODE_BAD_AUTH,
    CODE_BAD_COMPANY,
    CODE_LOCKED,
    CODE_NO_ROLE,
    CODE_NOT_LOGGED_IN,
    CODE_STALE,
    MAX_FAILURE_TEXT,
    MAX_HISTORY,
    MAX_REPLY_BYTES,
    clip,
)

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class UserReply:
    """The reply to ``login`` and ``selcompany``: the user, as the PBX sees it now."""

    user: User


@dataclass(frozen=True, slots=True)
class RtcPassword:
    """The reply to ``rtcreset getnew=1``: the new WebRTC password (``repr`` hides it)."""

    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class HistoryReply:
    """The reply to ``load type=history``: the newest saved call records, oldest first."""

    records: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class Ack:
    """The reply to a command that carries nothing back but success."""

    cmd: str


def _ack(cmd: str) -> Callable[[Element], Ack]:
    reply = Ack(cmd)
    return lambda _root: reply


def _user_parser(cmd: str, username: str = "") -> Callable[[Element], UserReply]:
    """The parser of a reply carrying the user; ``username``: the one it must be."""

    def parse(root: Element) -> UserReply:
        user = _user(cmd, root)
        if username and user.login != username:
            # Exact, as the PBX compares: a reply about someone else is no login of ours.
            raise ProtocolError(f"reply to {cmd} is for another user than {username!r}")
        return UserReply(user)

    return parse


def _rtc_password(root: Element) -> RtcPassword:
    rtc = root.find("rtc")
    password = None if rtc is None else rtc.get("pass")
    if not password:
        raise ProtocolError("reply to rtcreset getnew=1 carries no password")
    return RtcPassword(password)


def _history(root: Element) -> HistoryReply:
    data = root.find("data")
    if data is None:
        raise ProtocolError("reply to load has no <data> element")
    try:
        decoded = json.loads(base64.b64decode((data.text or "").strip(), validate=True))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise ProtocolError("saved history is not base64 JSON") from exc
    if not isinstance(decoded, list) or not all(isinstance(r, dict) for r in decoded):
        raise ProtocolError("saved history is not a list of records")
    return HistoryReply(tuple(decoded[-MAX_HISTORY:]))


def _user(cmd: str, root: Element) -> User:
    element = root.find("user")
    if element is None:
        raise ProtocolError(f"reply to {cmd} has no <user> element")
    values = {}
    for name in ("id", "login", "name", "company", "home"):
        value = element.get(name)
        if value is None:
            raise ProtocolError(f"<user> in the reply to {cmd} has no {name!r}")
        values[name] = value
    if not values["login"] or _CONTROL.search(values["login"]):
        raise ProtocolError(f"<user> in the reply to {cmd} has an empty or unprintable login")
    return User(
        id=values["id"],
        login=values["login"],
        name=values["name"],
        company=values["company"],
        home=values["home"],
        permissions=_permissions(cmd, root),
        companies=_companies(cmd, root),
    )


def _permissions(cmd: str, root: Element) -> tuple[Permission, ...]:
    permissions = []
    for action in root.iter("action"):
        action_name = action.get("name")
        if not action_name:
            raise ProtocolError(f"<action> in the reply to {cmd} has no name")
        permissions.append(Permission(action_name, action.get("company") == "true"))
    return tuple(permissions)


def _companies(cmd: str, root: Element) -> tuple[Company, ...]:
    companies = []
    for company in root.iter("company"):
        company_id = company.get("id")
        if not company_id:
            raise ProtocolError(f"<company> in the reply to {cmd} has no id")
        companies.append(Company(company_id, company.get("name") or company_id))
    return tuple(companies)


@dataclass(frozen=True, slots=True)
class Command(Generic[R]):
    """One command, ready to encode, with the parser of its success reply.

    ``retry_safe`` says whether repeating it after an HTTP 5xx is harmless
    (PROTOCOL.md: never ``rtcreset`` nor a password login). Its ``repr``
    hides secret fields. Every field must be encodable as UTF-8.
    """

    cmd: str
    fields: tuple[tuple[str, str], ...]
    parse: Callable[[Element], R] = field(compare=False)
    retry_safe: bool = False
    secret_fields: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name, value in self.fields:
            if not isinstance(value, str) or not _utf8(value):
                # Named, never quoted: the value may be a password.
                raise InvalidArgumentError(f"{name} must be text that can be sent as UTF-8")

    def encode(self, subid: str | None) -> bytes:
        """The percent-encoded form body, with ``subid`` when one is active."""
        if not self.fields:  # nothing secret in it: the body is kept (hot path)
            return _bare_body(self.cmd, subid)
        return _form(("cmd", self.cmd), *self.fields, subid=subid)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={'***' if k in self.secret_fields else v!r}" for k, v in self.fields
        )
        return f"Command({self.cmd}{': ' if shown else ''}{shown})"


def _form(*pairs: tuple[str, str], subid: str | None) -> bytes:
    if subid is not None:
        pairs = (*pairs, ("subid", subid))
    return urllib.parse.urlencode(pairs).encode("ascii")


@functools.lru_cache(maxsize=256)
def _bare_body(cmd: str, subid: str | None) -> bytes:
    """The body of a command without fields (one per command and sub-ID in use)."""
    return _form(("cmd", cmd), subid=subid)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def login_command(
    username: str, password: str | None, *, checkonly: bool = False
) -> Command[UserReply]:
    """``login``: with a password, or ``checkonly`` (adopt an existing login, no password).

    The reply must be about ``username`` (any user for a ``checkonly`` with
    an empty name).
    """
    if type(checkonly) is not bool:
        raise InvalidArgumentError("checkonly must be a boolean")
    if not isinstance(username, str) or _CONTROL.search(username):
        raise InvalidArgumentError("username must be a string without control characters")
    parse = _user_parser("login", username)
    if checkonly:
        if password is not None:
            raise InvalidArgumentError("a checkonly login takes no password")
        fields = (("sessionUser", username), ("checkonly", "1"))
        return Command("login", fields, parse, retry_safe=True)
    if not username:
        raise InvalidArgumentError("username is empty")
    if not isinstance(password, str) or not password:
        raise InvalidArgumentError("a password is required unless checkonly=True")
    fields = (("sessionUser", username), ("sessionPass", password))
    return Command("login", fields, parse, secret_fields=frozenset({"sessionPass"}))


def logout_command() -> Command[Ack]:
    """``logout``."""
    return _LOGOUT


_LOGOUT: Command[Ack] = Command("logout", (), _ack("logout"), retry_safe=True)


def select_company_command(company_id: str) -> Command[UserReply]:
    """``selcompany``."""
    fields = (("company", company_id),)
    return Command("selcompany", fields, _user_parser("selcompany"), retry_safe=True)


def rtc_reset_command(*, release: str | None = None) -> Command[Ack]:
    """``rtcreset``: ``release`` is the password being given up (stale-checked)."""
    if release is None:
        return _RTC_RESET
    return Command("rtcreset", (("pass", release),), _ack("rtcreset"), secret_fields=_PASS)


_PASS = frozenset({"pass"})
_RTC_RESET: Command[Ack] = Command("rtcreset", (), _ack("rtcreset"), secret_fields=_PASS)


def rtc_new_password_command() -> Command[RtcPassword]:
    """``rtcreset getnew=1``: randomise the WebRTC password and return the new one."""
    return Command("rtcreset", (("getnew", "1"),), _rtc_password)


def status_command(show: str, text: str | None = None) -> Command[Ack]:
    """``status``: chat presence ``show`` with an optional status text."""
    if show not in _SHOWS:
        raise InvalidArgumentError(f"show must be one of {sorted(_SHOWS)}")
    fields = [("show", show)]
    if text is not None:
        fields.append(("status", text))
    return Command("status", tuple(fields), _ack("status"), retry_safe=True)


def save_history_command(records: Sequence[Mapping[str, Any]]) -> Command[Ack]:
    """``save type=history``: the newest :data:`MAX_HISTORY` records, oldest first."""
    kept = list(records)[-MAX_HISTORY:]
    data = base64.b64encode(json.dumps(kept, separators=(",", ":")).encode()).decode("ascii")
    fields = (("type", "history"), ("data", data))
    return Command("save", fields, _ack("save"), retry_safe=True)


def load_history_command() -> Command[HistoryReply]:
    """``load type=history``."""
    return Command("load", (("type", "history"),), _history, retry_safe=True)


_FAILURES: Mapping[str, type[CommandError]] = {
    CODE_NO_ROLE: PermissionDeniedError,
    CODE_BAD_COMPANY: UnknownCompanyError,
    CODE_STALE: StaleCredentialError,
    CODE_NOT_LOGGED_IN: SessionLostError,
}
#: To ``login``, these say the login itself failed (not that a session was lost).
_LOGIN_FAILURES = frozenset({CODE_BAD_AUTH, CODE_LOCKED, CODE_NOT_LOGGED_IN})


def command_error(cmd: str, code: str, message: str = "") -> CommandError:
    """The exception for a ``result="fail"`` reply to ``cmd`` with ``code``.

    ``message`` is cut to :data:`MAX_FAILURE_TEXT` bytes, wherever it came from.
    """
    message = clip(message, MAX_FAILURE_TEXT)
    if cmd == "login" and code in _LOGIN_FAILURES:
        return LoginError(cmd, code, message)
    return _FAILURES.get(code, CommandError)(cmd, code, message)


def is_not_logged_in(error: CommandError) -> bool:
    """Whether ``error`` is the PBX saying the context is not logged in."""
    return error.code == CODE_NOT_LOGGED_IN


def check_company(user: User, company_id: str) -> None:
    """Refuse, before any I/O, what the PBX would refuse of ``selcompany``.

    ``norole`` for a user with fewer than two companies, ``badcompany`` for
    an id not among them (PROTOCOL.md).
    """
    if not isinstance(company_id, str) or not company_id:
        raise InvalidArgumentError("company_id must be a non-empty string")
    if not user.is_multi_company:
        raise command_error(
            "selcompany", CODE_NO_ROLE, f"{user.login} does not administer several companies"
        )
    if company_id not in {c.id for c in user.companies}:
        raise command_error(
            "selcompany",
            CODE_BAD_COMPANY,
            f"{clip(company_id, _QUOTED)!r} is not one of the login's companies",
        )


def parse_reply(command: Command[R], status: int, content_type: str | None, body: bytes) -> R:
    """Parse the HTTP reply to ``command``; raise the documented error for a failure.

    HTTP 5xx is :class:`PbxUnavailableError`; any other non-200, a wrong
    content type, more than :data:`MAX_REPLY_BYTES`, XML that is malformed or
    declares a DTD or entities, or a reply missing what ``command`` must
    carry is :class:`ProtocolError`; ``result="fail"`` is a
    :class:`CommandError` (its text cut to :data:`MAX_FAILURE_TEXT` bytes).
    """
    cmd = command.cmd
    _check_envelope(cmd, status, content_type, body)
    try:
        root = _safexml.parse(body)
    except _safexml.UnsafeXmlError as exc:
        raise ProtocolError(f"reply to {cmd} is not well-formed, safe XML: {exc}") from None
    if root.tag != "response":
        raise ProtocolError(f"reply to {cmd} has root <{clip(root.tag, _QUOTED)}>, not <response>")
    if root.get("cmd") not in (None, cmd):
        raise ProtocolError(f"reply is for {clip(root.get('cmd', ''), _QUOTED)!r}, not {cmd!r}")
    result = root.get("result")
    if result == "fail":
        code = root.get("code")
        if not code:
            raise ProtocolError(f"failure reply to {cmd} carries no code")
        message = clip((root.text or "").strip(), MAX_FAILURE_TEXT)
        raise command_error(cmd, clip(code, _QUOTED), message)
    if result != "success":
        raise ProtocolError(f"reply to {cmd} has result {clip(result or '', _QUOTED)!r}")
    return command.parse(root)


@functools.lru_cache(maxsize=64)
def _media_type(content_type: str) -> str:
    """``text/xml`` of ``text/xml; charset=utf-8`` (a PBX sends one or two, again and again)."""
    return content_type.split(";", 1)[0].strip().lower()


def _check_envelope(cmd: str, status: int, content_type: str | None, body: bytes) -> None:
    """The HTTP status, media type and size rules, before any XML is read."""
    if status >= 500:
        raise PbxUnavailableError(f"the PBX failed: HTTP {status}")
    if status != 200:
        raise ProtocolError(f"unexpected HTTP {status} to {cmd}")
    media = _media_type(content_type or "")
    if media not in ("text/xml", "application/xml"):
        raise ProtocolError(f"reply to {cmd} is {clip(media, _QUOTED) or 'untyped'}, not XML")
    if len(body) > MAX_REPLY_BYTES:
        raise ProtocolError(f"reply to {cmd} is over {MAX_REPLY_BYTES} bytes")
