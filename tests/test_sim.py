"""The simulator's command endpoint, over real loopback sockets (raw httpx)."""

from __future__ import annotations

import ast
import base64
import json
import re
import signal
import ssl
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import trio

from pbxsession.sim import DEFAULT_USERS, SimCompany, Simulator, SimUser, load_users, open_simulator
from pbxsession.sim._cli import main
from pbxsession.sim._http import create_app

API = "/api/api.whtm"
COOKIE = "Red60urne"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with open_simulator() as s:
        yield s


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url) as c:
        yield c


FORM = {"content-type": "application/x-www-form-urlencoded"}


async def post(client: httpx.AsyncClient, **fields: str) -> httpx.Response:
    return await client.post(API, content=urlencode(fields).encode(), headers=FORM)


async def cmd(client: httpx.AsyncClient, **fields: str) -> ET.Element:
    response = await post(client, **fields)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    return ET.fromstring(response.text)


def ok(root: ET.Element, name: str) -> ET.Element:
    assert root.tag == "response"
    assert root.get("result") == "success", ET.tostring(root)
    assert root.get("cmd") == name
    return root


def failed(root: ET.Element, code: str) -> None:
    assert root.get("result") == "fail", ET.tostring(root)
    assert root.get("code") == code
    assert (root.text or "").strip(), "a failure carries a human message"


async def login(client: httpx.AsyncClient, user: str = "alice", **extra: str) -> ET.Element:
    return await cmd(client, cmd="login", sessionUser=user, sessionPass=f"{user}-pass", **extra)


# -- framing -----------------------------------------------------------------

LINE = re.compile(r'^\s*<(/?)[a-z]+(\s[a-z]+="[^"]*")*\s*/?>([^<]*</[a-z]+>)?$')


async def test_reply_one_element_per_line_and_quoted() -> None:
    odd = SimUser(
        id="5",
        login="eve",
        password="pw",
        name='Eve "the" <Hacker> & co\nnext',
        home="1",
        companies=(SimCompany("1", "A&B 'Ltd'"), SimCompany("2", "C<D>")),
    )
    async with open_simulator([odd, *DEFAULT_USERS]) as s, httpx.AsyncClient(base_url=s.url) as c:
        response = await post(c, cmd="login", sessionUser="eve", sessionPass="pw")
        text = response.text
        lines = text.splitlines()
        assert lines[0] == '<response result="success" cmd="login">'
        assert lines[-1] == "</response>"
        for line in lines:
            assert LINE.match(line), line
        assert 'name="Eve &quot;the&quot; &lt;Hacker&gt; &amp; co&#10;next"' in text
        assert '<company id="1" name="A&amp;B \'Ltd\'"/>' in text
        user = ET.fromstring(text).find("user")
        assert user is not None
        assert user.get("name") == 'Eve "the" <Hacker> & co\nnext'
        bad = await post(c, cmd='we"ird<')
        assert bad.text == (
            '<response result="fail" cmd="we&quot;ird&lt;" code="badrequest">'
            "unknown command</response>\n"
        )


async def test_login_reply_content(client: httpx.AsyncClient) -> None:
    root = ok(await login(client, "admin"), "login")
    children = [(el.tag, dict(el.attrib)) for el in root]
    assert children == [
        ("user", {"id": "100", "login": "admin", "name": "Ada Admin", "company": "7", "home": "7"}),
        ("action", {"name": "chat"}),
        ("action", {"name": "admin", "company": "true"}),
        ("company", {"id": "7", "name": "Acme Ltd"}),
        ("company", {"id": "8", "name": "Bolt plc"}),
        ("company", {"id": "9", "name": "Cog GmbH"}),
    ]


async def test_not_a_command_gets_http_4xx(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/other", data={"cmd": "login"})).status_code == 404
    assert (await client.get(API)).status_code == 405
    assert (await client.put(API, data={"cmd": "logout"})).status_code == 405
    response = await client.post(API, json={"cmd": "login"})
    assert response.status_code == 415
    no_type = await client.post(API, content=b"cmd=logout")
    assert no_type.status_code == 415
    with_charset = await client.post(
        API,
        content=b"cmd=logout",
        headers={"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    failed(ET.fromstring(with_charset.text), "notloggedin")


async def test_malformed_commands_are_badrequest(client: httpx.AsyncClient) -> None:
    failed(await cmd(client), "badrequest")
    failed(await cmd(client, cmd="dance"), "badrequest")
    failed(await cmd(client, cmd="login", sessionUser="alice"), "badrequest")
    failed(await cmd(client, cmd="login", sessionPass="x"), "badrequest")
    failed(await cmd(client, cmd="login", checkonly="2"), "badrequest")
    for subid in ("", "a b", "x" * 65, "é"):
        failed(await cmd(client, cmd="logout", subid=subid), "badrequest")
    dup = await client.post(
        API,
        content=b"cmd=logout&cmd=login",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    failed(ET.fromstring(dup.text), "badrequest")
    bad_utf8 = await client.post(
        API, content=b"cmd=%ff", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    failed(ET.fromstring(bad_utf8.text), "badrequest")


# -- cookies and contexts ----------------------------------------------------


async def test_cookie_rules(sim: Simulator) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as c:
        first = await post(c, cmd="logout")
        set_cookie = first.headers["set-cookie"]
        assert set_cookie.startswith(f"{COOKIE}=")
        assert "HttpOnly" in set_cookie
        assert "Secure" not in set_cookie
        cookie = first.cookies[COOKIE]
        again = await post(c, cmd="logout")
        assert "set-cookie" not in again.headers
        await login(c)
        assert c.cookies[COOKIE] == cookie
    async with httpx.AsyncClient(base_url=sim.url, cookies={COOKIE: "made-up"}) as c:
        response = await post(c, cmd="logout")
        assert response.cookies[COOKIE] not in ("made-up", cookie)
        failed(ET.fromstring(response.text), "notloggedin")


async def test_cookie_is_secure_over_https(sim: Simulator) -> None:
    transport = httpx.ASGITransport(app=create_app(sim))
    async with httpx.AsyncClient(transport=transport, base_url="https://pbx.example") as c:
        response = await post(c, cmd="logout")
        assert "Secure" in response.headers["set-cookie"]


async def test_browser_tabs_share_a_login_and_subids_are_isolated(sim: Simulator) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as a:
        ok(await login(a), "login")
        cookie = a.cookies[COOKIE]
        async with httpx.AsyncClient(base_url=sim.url, cookies={COOKIE: cookie}) as tab:
            root = ok(await cmd(tab, cmd="login", sessionUser="", checkonly="1"), "login")
            assert root.find("user").get("login") == "alice"  # type: ignore[union-attr]
            failed(await cmd(tab, cmd="load", type="history", subid="s1"), "notloggedin")
            ok(await login(tab, "bob", subid="s1"), "login")
            ok(await login(tab, "admin", subid="s2"), "login")
        ok(await cmd(a, cmd="logout", subid="s1"), "logout")
        # the default context and s2 are untouched
        ok(await cmd(a, cmd="load", type="history"), "load")
        ok(await cmd(a, cmd="load", type="history", subid="s2"), "load")
        failed(await cmd(a, cmd="load", type="history", subid="s1"), "notloggedin")
    views = {(v["subid"], v["login"]) for v in sim.contexts() if v["cookie"] == cookie}
    assert views == {("", "alice"), ("s1", None), ("s2", "admin")}


# -- login -------------------------------------------------------------------


async def test_login_and_logout(client: httpx.AsyncClient) -> None:
    failed(await cmd(client, cmd="logout"), "notloggedin")
    failed(await cmd(client, cmd="login", sessionUser="alice", sessionPass="nope"), "badauth")
    failed(await cmd(client, cmd="login", sessionUser="nobody", sessionPass="x"), "badauth")
    failed(await cmd(client, cmd="login", sessionUser="alice", sessionPass=""), "badauth")
    ok(await login(client), "login")
    ok(await cmd(client, cmd="logout"), "logout")
    failed(await cmd(client, cmd="logout"), "notloggedin")


async def test_checkonly(client: httpx.AsyncClient) -> None:
    failed(await cmd(client, cmd="login", sessionUser="alice", checkonly="1"), "notloggedin")
    failed(await cmd(client, cmd="login", sessionUser="", sessionPass=""), "notloggedin")
    ok(await login(client, "admin"), "login")
    ok(await cmd(client, cmd="selcompany", company="9"), "selcompany")
    for fields in (
        {"sessionUser": "admin", "checkonly": "1"},
        {"sessionUser": "admin", "sessionPass": "wrong", "checkonly": "1"},
        {"checkonly": "1"},
        {"sessionUser": "", "sessionPass": ""},
    ):
        root = ok(await cmd(client, cmd="login", **fields), "login")
        user = root.find("user")
        assert user is not None
        assert (user.get("login"), user.get("company"), user.get("home")) == ("admin", "9", "7")
        assert len(root.findall("company")) == 3
    failed(await cmd(client, cmd="login", sessionUser="alice", checkonly="1"), "notloggedin")
    ok(
        await cmd(
            client, cmd="login", sessionUser="admin", sessionPass="admin-pass", checkonly="0"
        ),
        "login",
    )


async def test_checkonly_zero_is_a_password_login(client: httpx.AsyncClient) -> None:
    failed(
        await cmd(client, cmd="login", sessionUser="alice", sessionPass="bad", checkonly="0"),
        "badauth",
    )


async def test_login_as_another_user_replaces_and_same_user_keeps(sim: Simulator) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as c:
        await login(c, "admin")
        await cmd(c, cmd="selcompany", company="8")
        root = ok(await login(c, "admin"), "login")
        assert root.find("user").get("company") == "8"  # type: ignore[union-attr]
        root = ok(await login(c, "alice"), "login")
        assert root.find("user").get("company") == "7"  # type: ignore[union-attr]
        assert [v["login"] for v in sim.contexts()] == ["alice"]


async def test_lockout() -> None:
    clock = FakeClock()
    async with open_simulator(clock=clock) as s, httpx.AsyncClient(base_url=s.url) as c:
        bad = {"cmd": "login", "sessionUser": "alice", "sessionPass": "wrong"}
        for _ in range(4):
            failed(await cmd(c, **bad), "badauth")
        ok(await login(c), "login")  # success resets the count
        for _ in range(5):
            failed(await cmd(c, **bad), "badauth")
        failed(await login(c), "locked")
        failed(await cmd(c, **bad), "locked")
        ok(await login(c, "bob"), "login")  # other users are not locked
        for _ in range(10):
            failed(await cmd(c, cmd="login", sessionUser="ghost", sessionPass="x"), "badauth")
        clock.now += 59.0
        failed(await login(c), "locked")
        clock.now += 1.5
        ok(await login(c), "login")
        assert s.user_view("alice")["locked"] is False


async def test_idle_expiry() -> None:
    clock = FakeClock()
    async with (
        open_simulator(clock=clock, idle_timeout=100.0) as s,
        httpx.AsyncClient(base_url=s.url) as c,
    ):
        await login(c)
        clock.now += 99.0
        ok(await cmd(c, cmd="load", type="history"), "load")  # use restarts the timer
        clock.now += 99.0
        ok(await cmd(c, cmd="load", type="history"), "load")
        clock.now += 100.0
        failed(await cmd(c, cmd="load", type="history"), "notloggedin")
        ok(await login(c), "login")
        assert s.expire("alice") == 1
        failed(await cmd(c, cmd="logout"), "notloggedin")


# -- other commands ----------------------------------------------------------


async def test_selcompany(client: httpx.AsyncClient) -> None:
    failed(await cmd(client, cmd="selcompany", company="7"), "notloggedin")
    await login(client, "alice")
    failed(await cmd(client, cmd="selcompany", company="7"), "norole")
    await login(client, "admin")
    failed(await cmd(client, cmd="selcompany", company="42"), "badcompany")
    failed(await cmd(client, cmd="selcompany"), "badrequest")
    root = ok(await cmd(client, cmd="selcompany", company="9"), "selcompany")
    assert [(el.tag, el.get("company"), el.get("home")) for el in root] == [("user", "9", "7")]


async def test_rtcreset(sim: Simulator, client: httpx.AsyncClient) -> None:
    await login(client)
    first = sim.user_view("alice")["rtc_pass"]
    root = ok(await cmd(client, cmd="rtcreset"), "rtcreset")
    assert list(root) == []
    second = sim.user_view("alice")["rtc_pass"]
    assert second != first
    root = ok(await cmd(client, cmd="rtcreset", getnew="1"), "rtcreset")
    rtc = root.find("rtc")
    assert rtc is not None
    third = rtc.get("pass")
    assert third == sim.user_view("alice")["rtc_pass"] != second
    failed(await cmd(client, cmd="rtcreset", getnew="1", **{"pass": str(second)}), "stale")
    assert sim.user_view("alice")["rtc_pass"] == third
    root = ok(await cmd(client, cmd="rtcreset", getnew="1", **{"pass": str(third)}), "rtcreset")
    assert root.find("rtc").get("pass") not in (None, third)  # type: ignore[union-attr]
    failed(await cmd(client, cmd="rtcreset", getnew="yes"), "badrequest")
    root = ok(await cmd(client, cmd="rtcreset", getnew="0"), "rtcreset")
    assert list(root) == []


async def test_status(sim: Simulator, client: httpx.AsyncClient) -> None:
    failed(await cmd(client, cmd="status", show="away"), "notloggedin")
    await login(client, "bob")
    failed(await cmd(client, cmd="status", show="away"), "norole")
    await login(client, "alice")
    failed(await cmd(client, cmd="status", show="sleepy"), "badrequest")
    failed(await cmd(client, cmd="status"), "badrequest")
    ok(await cmd(client, cmd="status", show="away", status="at lunch & back"), "status")
    assert sim.user_view("alice")["presence"] == {"show": "away", "status": "at lunch & back"}
    ok(await cmd(client, cmd="status", show="offline"), "status")
    assert sim.user_view("alice")["presence"] == {"show": "offline", "status": ""}


def b64(obj: object) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


async def test_save_and_load(client: httpx.AsyncClient) -> None:
    await login(client, "alice")
    root = ok(await cmd(client, cmd="load", type="history"), "load")
    data = root.find("data")
    assert data is not None
    assert data.get("name") == "history"
    assert json.loads(base64.b64decode(data.text or "")) == []
    records = [{"id": "c1", "state": "ended", "from": "101", "to": "102", "duration": 3}] * 50
    ok(await cmd(client, cmd="save", type="history", data=b64(records)), "save")
    # another context of the same user sees the same history
    await login(client, "alice", subid="x1")
    root = ok(await cmd(client, cmd="load", type="history", subid="x1"), "load")
    assert json.loads(base64.b64decode(root.find("data").text or "")) == records  # type: ignore[union-attr]
    for bad in (
        {"type": "history", "data": b64(records + records[:1])},
        {"type": "history", "data": "not base64!"},
        {"type": "history", "data": b64({"a": 1})},
        {"type": "history", "data": b64([1, 2])},
        {"type": "history"},
        {"type": "contacts", "data": b64([])},
        {"data": b64([])},
    ):
        failed(await cmd(client, cmd="save", **bad), "badrequest")
    failed(await cmd(client, cmd="load", type="contacts"), "badrequest")
    failed(await cmd(client, cmd="load"), "badrequest")


# -- faults and controls -----------------------------------------------------


async def test_fail_next_and_counts(sim: Simulator, client: httpx.AsyncClient) -> None:
    await login(client)
    sim.fail_next(2, "load")
    assert (await post(client, cmd="load", type="history")).status_code == 500
    ok(await cmd(client, cmd="status", show="online"), "status")
    assert (await post(client, cmd="load", type="history")).status_code == 500
    ok(await cmd(client, cmd="load", type="history"), "load")
    sim.fail_next(1)
    assert (await post(client, cmd="logout")).status_code == 500
    ok(await cmd(client, cmd="logout"), "logout")  # the failed one did nothing
    assert sim.command_count("load") == 3
    assert sim.command_count("logout") == 2
    assert sim.command_count("rtcreset") == 0
    assert sim.command_count() == 7


async def test_delay(sim: Simulator, client: httpx.AsyncClient) -> None:
    sim.set_delay(30.0, "status")
    ok_fast = await post(client, cmd="logout")
    assert ok_fast.status_code == 200
    with trio.move_on_after(0.2) as scope:
        await post(client, cmd="status", show="away")
    assert scope.cancelled_caught
    sim.set_delay(0)
    sim.set_delay(0, "status")
    failed(await cmd(client, cmd="status", show="away"), "notloggedin")


async def test_http_controls(sim: Simulator, client: httpx.AsyncClient) -> None:
    await login(client, "alice")
    assert (await client.post("/_sim/fail", json={"n": 1, "cmd": "load"})).json() == {}
    assert (await post(client, cmd="load", type="history")).status_code == 500
    stats = (await client.get("/_sim/stats")).json()
    assert stats["commands"]["load"] == 1
    user = (await client.get("/_sim/users/alice")).json()
    assert user["presence"] == {"show": "offline", "status": ""}
    assert user["history"] == []
    assert (await client.get("/_sim/users/nobody")).status_code == 404
    contexts = (await client.get("/_sim/contexts")).json()
    assert [(c["login"], c["company"], c["seq"], c["feeds"]) for c in contexts] == [
        ("alice", "7", 0, 0)
    ]
    assert (await client.post("/_sim/emit", json={"kind": "chat", "data": {"m": 1}})).json() == {}
    assert sim.contexts()[0]["seq"] == 1
    assert (await client.post("/_sim/emit", json={"kind": "nope"})).status_code == 400
    assert (await client.post("/_sim/delay", content=b"{bad")).status_code == 400
    assert (await client.post("/_sim/delay", json={"seconds": "x"})).status_code == 400
    assert (await client.post("/_sim/expire", json={"login": "alice"})).json() == {"expired": 1}
    failed(await cmd(client, cmd="logout"), "notloggedin")
    assert (await client.post("/_sim/restart")).json() == {}
    assert sim.contexts() == []
    assert (await client.get("/_sim/feed/drop")).status_code == 405


async def test_login_counters_show_orphans_and_repeats(sim: Simulator) -> None:
    # What the load benchmark and the store tests assert: exactly one password
    # login per user and context, and no logged-in context a client lost.
    async with httpx.AsyncClient(base_url=sim.url) as a, httpx.AsyncClient(base_url=sim.url) as b:
        await login(a, "alice")
        await login(a, "alice")  # a repeat on the same context counts twice
        await login(a, "bob", subid="s1")
        await cmd(a, cmd="login", checkonly="1")  # not a password login
        await cmd(b, cmd="login", sessionUser="alice", sessionPass="wrong")  # counted
        sim.fail_next(1, "login")
        assert (
            await post(b, cmd="login", sessionUser="bob", sessionPass="bob-pass")
        ).status_code == 500
        cookie_a, cookie_b = a.cookies[COOKIE], b.cookies[COOKIE]
        assert sorted(
            (e["cookie"] == cookie_a, e["subid"], e["login"], e["count"])
            for e in sim.password_logins()
        ) == [(False, "", "alice", 1), (True, "", "alice", 2), (True, "s1", "bob", 1)]
        assert sim.stats()["logins_alive"] == 2
        stats = (await a.get("/_sim/stats")).json()
        assert stats["logins_alive"] == 2
        assert {(e["cookie"], e["login"]) for e in stats["password_logins"]} == {
            (cookie_a, "alice"),
            (cookie_a, "bob"),
            (cookie_b, "alice"),
        }
        await cmd(a, cmd="logout")
        assert sim.stats()["logins_alive"] == 1  # (cookie_a, "s1") is still logged in
        sim.expire()
        assert sim.stats()["logins_alive"] == 0


async def test_logins_alive_leaves_out_idle_contexts() -> None:
    clock = FakeClock()
    async with open_simulator(clock=clock, idle_timeout=60) as s:
        async with httpx.AsyncClient(base_url=s.url) as c:
            await login(c)
        assert s.stats()["logins_alive"] == 1
        clock.now += 61
        assert s.stats()["logins_alive"] == 0


async def test_rendered_bytes_are_unchanged(sim: Simulator, client: httpx.AsyncClient) -> None:
    # The 2014 IPCortex client parsed these bytes: the wire module must not change them.
    response = await post(client, cmd="login", sessionUser="admin", sessionPass="admin-pass")
    assert response.text == (
        '<response result="success" cmd="login">\n'
        '  <user id="100" login="admin" name="Ada Admin" company="7" home="7"/>\n'
        '  <action name="chat"/>\n'
        '  <action name="admin" company="true"/>\n'
        '  <company id="7" name="Acme Ltd"/>\n'
        '  <company id="8" name="Bolt plc"/>\n'
        '  <company id="9" name="Cog GmbH"/>\n'
        "</response>\n"
    )
    cookie = client.cookies[COOKIE]
    assert response.headers["set-cookie"] == f"{COOKIE}={cookie}; HttpOnly; Path=/; SameSite=lax"
    response = await post(client, cmd="login", sessionUser="admin", sessionPass="x")
    assert response.text == (
        '<response result="fail" cmd="login" code="badauth">Bad username or password</response>\n'
    )


def test_the_simulator_never_imports_the_clients_wire_module() -> None:
    # A wire bug in the client must not be mirrored by the simulator.
    sim_dir = Path(__file__).resolve().parents[1] / "src" / "pbxsession" / "sim"
    for path in sim_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [f"{'.' * node.level}{node.module or ''}"]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert name not in ("pbxsession._wire", ".._wire"), f"{path.name}: {name}"


# -- lifecycle, users, CLI ---------------------------------------------------


async def test_clean_shutdown_frees_the_port() -> None:
    async with open_simulator() as s, httpx.AsyncClient(base_url=s.url) as c:
        await login(c)
        url = s.url
        start = trio.current_time()
    assert trio.current_time() - start < 1.5
    async with httpx.AsyncClient(base_url=url) as c:
        with pytest.raises(httpx.ConnectError):
            await post(c, cmd="logout")


async def test_restart_forgets_cookies(sim: Simulator, client: httpx.AsyncClient) -> None:
    await login(client)
    old = client.cookies[COOKIE]
    sim.restart()
    response = await post(client, cmd="load", type="history")
    failed(ET.fromstring(response.text), "notloggedin")
    assert response.cookies[COOKIE] != old


def test_load_users(tmp_path: Path) -> None:
    good = tmp_path / "users.json"
    good.write_text(
        json.dumps(
            [
                {
                    "id": 1,
                    "login": "zed",
                    "password": "z",
                    "name": "Zed",
                    "home": "3",
                    "companies": [{"id": "3", "name": "Three"}],
                    "actions": [{"name": "chat"}, {"name": "admin", "company": True}],
                }
            ]
        )
    )
    (user,) = load_users(good)
    assert (user.id, user.login, user.home, user.may("chat")) == ("1", "zed", "3", True)
    assert "z" not in repr(user).replace("zed", "").replace("Zed", "")
    bad = tmp_path / "bad.json"
    for content, message in (
        ("{", "not valid JSON"),
        ("[]", "non-empty"),
        ('[{"login": "a"}]', "'password'"),
        (
            '[{"id":"1","login":"a","password":"p","name":"A","home":"9",'
            '"companies":[{"id":"1","name":"X"}]}]',
            "home",
        ),
    ):
        bad.write_text(content)
        with pytest.raises(ValueError, match=message):
            load_users(bad)
    with pytest.raises(ValueError, match="cannot read"):
        load_users(tmp_path / "missing.json")


def test_cli_bad_users_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--users", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def start_cli(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Start ``python -m pbxsession.sim``; return it and what it printed up to "Ctrl-C"."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pbxsession.sim", "--port", "0", "--feed-port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or "Ctrl-C" not in lines[-1]:
        line = proc.stdout.readline()
        assert line, f"the simulator ended early: {lines}"
        lines.append(line.rstrip("\n"))
    return proc, lines


def stop_cli(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        _out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "Traceback" not in err
    return err


def printed(lines: list[str], label: str) -> str:
    return next(line.split(label, 1)[1].split()[0] for line in lines if label in line)


def test_cli_serves_and_stops_on_sigint() -> None:
    proc, lines = start_cli()
    try:
        url = printed(lines, "commands and feed:")
        ws_url = printed(lines, "feed alone:")
        assert url.startswith("http://127.0.0.1:")
        assert ws_url.startswith("ws://127.0.0.1:")
        response = httpx.post(
            url + API, data={"cmd": "login", "sessionUser": "bob", "sessionPass": "bob-pass"}
        )
        assert 'login="bob"' in response.text
        # a ready-to-paste login line naming the command URL (which serves the feed)
        assert (
            f"  echo alice-pass | pbxsession login --host {url} --user alice --password-stdin"
            in lines
        )
    finally:
        stop_cli(proc)


def test_cli_tls_prints_the_ca_path() -> None:
    proc, lines = start_cli("--tls")
    try:
        url = printed(lines, "commands and feed:")
        ca_path = printed(lines, "CA certificate:")
        assert url.startswith("https://127.0.0.1:")
        assert printed(lines, "feed alone:").startswith("wss://127.0.0.1:")
        context = ssl.create_default_context(cafile=ca_path)
        response = httpx.post(url + API, data={"cmd": "logout"}, verify=context)
        assert response.status_code == 200
        assert any(f"--cacert {ca_path} " in line for line in lines)
    finally:
        stop_cli(proc)
    assert not Path(ca_path).exists()  # thrown away at the end


def test_cli_help_names_pbxsession_sim(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: pbxsession sim ")
    assert "--tls" in out
    assert main(["--require-client-cert"]) == 2
    assert "needs --tls" in capsys.readouterr().err
