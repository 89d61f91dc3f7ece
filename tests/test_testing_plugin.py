"""The ``pbx_simulator`` fixture, used exactly as the README shows it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_fixture_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Testing your application against it", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None
    return match.group(1)


def test_readme_example_runs_with_the_plugin(pytester: pytest.Pytester) -> None:
    example = readme_fixture_example()
    assert "pbx_simulator" in example
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\ntrio_mode = true\n")
    pytester.makepyfile(test_app=example)
    result = pytester.runpytest_subprocess("-W", "error", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)  # the fixture and the factory


def test_fixture_fails_a_wrong_expectation(pytester: pytest.Pytester) -> None:
    # The plugin really talks to a simulator: a wrong password fails the test.
    example = readme_fixture_example().replace('"alice-pass"', '"wrong"')
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\ntrio_mode = true\n")
    pytester.makepyfile(test_app=example)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)  # alice's test fails, the factory's passes
    result.stdout.fnmatch_lines(["*LoginError*badauth*"])


def run_tests(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\ntrio_mode = true\n")
    pytester.makepyfile(test_app=source)
    return pytester.runpytest_subprocess("-W", "error", "-p", "no:cacheprovider", *args)


FACTORY_EXAMPLE = """
import httpx
from pbxsession.sim import SimCompany, SimUser

CAROL = SimUser(id="103", login="carol", password="carol-pass", name="Carol",
                home="7", companies=(SimCompany("7", "Acme Ltd"),))


async def test_custom_users_and_rate(pbx_simulator_factory):
    async with pbx_simulator_factory(users=[CAROL], event_rate=25.0) as sim:
        assert sim.event_rate == 25.0
        async with httpx.AsyncClient(base_url=sim.url) as client:
            reply = await client.post(
                "/api/api.whtm",
                data={"cmd": "login", "sessionUser": "carol", "sessionPass": "carol-pass"},
            )
        assert 'login="carol"' in reply.text
        assert sim.stats()["logins_alive"] == 1


async def test_tls_form(pbx_simulator_tls):
    import ssl

    assert pbx_simulator_tls.url.startswith("https://")
    context = ssl.create_default_context(cafile=pbx_simulator_tls.ca_path)
    async with httpx.AsyncClient(base_url=pbx_simulator_tls.url, verify=context) as client:
        reply = await client.post("/api/api.whtm", data={"cmd": "logout"})
    assert "Secure" in reply.headers["set-cookie"]
"""


def test_factory_and_tls_fixtures(pytester: pytest.Pytester) -> None:
    result = run_tests(pytester, FACTORY_EXAMPLE)
    result.assert_outcomes(passed=2)


NO_HYPERCORN = "import sys\nsys.modules['hypercorn'] = None  # as if the sim extra were missing\n"
MESSAGE = (
    "ImportError: the PBX simulator needs the 'sim' extra (hypercorn is not installed):"
    " pip install 'pbxsession[sim]'"
)


def test_fixture_without_the_sim_extra_names_it(pytester: pytest.Pytester) -> None:
    # Fails on main: a ModuleNotFoundError deep inside pbxsession.sim._server.
    pytester.makeconftest(NO_HYPERCORN)
    result = run_tests(pytester, "async def test_app(pbx_simulator):\n    pass\n")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert MESSAGE in out
    assert "hypercorn/" not in out  # no frames from deep inside
    assert "ExceptionGroup" not in out


def test_import_without_the_sim_extra_names_it(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", NO_HYPERCORN + "import pbxsession.sim\n"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == MESSAGE
    assert "During handling" not in proc.stderr  # one exception, not a chain
    assert "The above exception" not in proc.stderr
