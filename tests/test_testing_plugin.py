"""The ``pbx_simulator`` fixture, used exactly as the README shows it."""

from __future__ import annotations

import re
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
    pytester.makepyfile(test_app="import pbxsession\n\n\n" + example)
    result = pytester.runpytest_subprocess("-W", "error", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_fixture_fails_a_wrong_expectation(pytester: pytest.Pytester) -> None:
    # The plugin really talks to a simulator: a wrong password fails the test.
    example = readme_fixture_example().replace('"alice-pass"', '"wrong"')
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\ntrio_mode = true\n")
    pytester.makepyfile(test_app="import pbxsession\n\n\n" + example)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*LoginError*badauth*"])
