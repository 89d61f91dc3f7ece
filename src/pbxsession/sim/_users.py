"""The simulator's user directory: built-in users and the users-file loader."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_USERS", "SimAction", "SimCompany", "SimUser", "load_users", "parse_users"]


@dataclass(frozen=True)
class SimCompany:
    """A company a simulated user may work for: its id and display name."""

    id: str
    name: str


@dataclass(frozen=True)
class SimAction:
    """One permission of a simulated user; ``company`` marks a company-level one."""

    name: str
    company: bool = False


@dataclass(frozen=True)
class SimUser:
    """A user the simulator knows: credentials, identity, companies and permissions."""

    id: str
    login: str
    password: str
    name: str
    home: str
    companies: tuple[SimCompany, ...]
    actions: tuple[SimAction, ...] = ()

    def __repr__(self) -> str:
        return (
            f"SimUser(id={self.id!r}, login={self.login!r}, name={self.name!r}, "
            f"home={self.home!r}, companies={self.companies!r}, actions={self.actions!r})"
        )

    def may(self, action: str) -> bool:
        """Tell whether the user holds the permission named ``action``."""
        return any(a.name == action for a in self.actions)


_ACME = SimCompany("7", "Acme Ltd")
_BOLT = SimCompany("8", "Bolt plc")
_COG = SimCompany("9", "Cog GmbH")

DEFAULT_USERS: tuple[SimUser, ...] = (
    SimUser(
        id="101",
        login="alice",
        password="alice-pass",
        name="Alice Able",
        home="7",
        companies=(_ACME,),
        actions=(SimAction("chat"),),
    ),
    SimUser(
        id="100",
        login="admin",
        password="admin-pass",
        name="Ada Admin",
        home="7",
        companies=(_ACME, _BOLT, _COG),
        actions=(SimAction("chat"), SimAction("admin", company=True)),
    ),
    SimUser(
        id="102",
        login="bob",
        password="bob-pass",
        name="Bob Basic",
        home="8",
        companies=(_BOLT,),
        actions=(SimAction("voicemail"),),
    ),
)
"""The built-in users: ``alice``, ``admin`` (three companies) and ``bob`` (no chat)."""


class UsersFileError(ValueError):
    """A users file cannot be read or does not describe a valid list of users."""


def _text(obj: dict[str, object], key: str, where: str) -> str:
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and key in ("id", "home"):
        return str(value)
    if not isinstance(value, str) or not value:
        raise UsersFileError(f"{where}: {key!r} must be a non-empty string")
    return value


def _company(raw: object, where: str) -> SimCompany:
    if not isinstance(raw, dict):
        raise UsersFileError(f"{where}: a company must be an object with 'id' and 'name'")
    return SimCompany(id=_text(raw, "id", where), name=_text(raw, "name", where))


def _action(raw: object, where: str) -> SimAction:
    if not isinstance(raw, dict):
        raise UsersFileError(f"{where}: an action must be an object with 'name'")
    company = raw.get("company", False)
    if not isinstance(company, bool):
        raise UsersFileError(f"{where}: an action's 'company' must be true or false")
    return SimAction(name=_text(raw, "name", where), company=company)


def _user(raw: object, index: int) -> SimUser:
    where = f"user #{index}"
    if not isinstance(raw, dict):
        raise UsersFileError(f"{where}: must be an object")
    login = _text(raw, "login", where)
    where = f"user #{index} ({login!r})"
    password = raw.get("password")
    if not isinstance(password, str):
        raise UsersFileError(f"{where}: 'password' must be a string")
    companies_raw = raw.get("companies")
    if not isinstance(companies_raw, list) or not companies_raw:
        raise UsersFileError(f"{where}: 'companies' must be a non-empty list")
    actions_raw = raw.get("actions", [])
    if not isinstance(actions_raw, list):
        raise UsersFileError(f"{where}: 'actions' must be a list")
    companies = tuple(_company(c, where) for c in companies_raw)
    home = _text(raw, "home", where)
    if home not in {c.id for c in companies}:
        raise UsersFileError(f"{where}: 'home' {home!r} is not one of its companies")
    return SimUser(
        id=_text(raw, "id", where),
        login=login,
        password=password,
        name=_text(raw, "name", where),
        home=home,
        companies=companies,
        actions=tuple(_action(a, where) for a in actions_raw),
    )


def parse_users(data: object) -> tuple[SimUser, ...]:
    """Build users from decoded users-file JSON (a list of user objects).

    Raises :class:`ValueError` (``UsersFileError``) naming the faulty entry.
    """
    if not isinstance(data, list) or not data:
        raise UsersFileError("a users file must hold a non-empty JSON list of users")
    users = tuple(_user(raw, i) for i, raw in enumerate(data, start=1))
    logins = [u.login for u in users]
    duplicates = sorted({name for name in logins if logins.count(name) > 1})
    if duplicates:
        raise UsersFileError(f"duplicate logins: {', '.join(duplicates)}")
    return users


def load_users(path: str | Path) -> tuple[SimUser, ...]:
    """Read a users file and build its users.

    The file holds a JSON list of ``{id, login, password, name, home,
    companies: [{id, name}], actions: [{name, company?}]}`` objects.

    Raises :class:`ValueError` with a message naming the file and the problem.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsersFileError(f"cannot read users file {str(path)!r}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsersFileError(f"users file {str(path)!r} is not valid JSON: {exc}") from exc
    try:
        return parse_users(data)
    except UsersFileError as exc:
        raise UsersFileError(f"users file {str(path)!r}: {exc}") from exc


def by_login(users: Sequence[SimUser]) -> dict[str, SimUser]:
    """Index users by login name."""
    return {u.login: u for u in users}
