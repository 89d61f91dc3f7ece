"""The package as an index would show it: a wheel built from this tree."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

import pbxsession

ROOT = Path(__file__).resolve().parent.parent

# A Markdown link or image target: [text](target) or ![alt](target).
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("pbxsession-*.whl")
    return zipfile.ZipFile(path)


def dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


@pytest.fixture(scope="module")
def metadata(wheel: zipfile.ZipFile) -> Message:
    return Parser().parsestr(dist_info(wheel, "METADATA"))


def test_metadata_names_the_version_and_license(metadata: Message) -> None:
    assert metadata["Name"] == "pbxsession"
    assert metadata["Version"] == pbxsession.__version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Requires-Python"] == ">=3.11"


def test_classifiers(metadata: Message) -> None:
    classifiers = set(metadata.get_all("Classifier") or [])
    for expected in (
        "Framework :: Trio",
        "Typing :: Typed",
        "Operating System :: POSIX :: Linux",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ):
        assert expected in classifiers
    # PEP 639: the SPDX expression replaces the License classifiers.
    assert not any(c.startswith("License ::") for c in classifiers)


def test_project_urls(metadata: Message) -> None:
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert {"Homepage", "Documentation", "Source", "Issues", "Changelog"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())


def test_the_wheel_holds_the_license_and_py_typed(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    assert "pbxsession/py.typed" in names
    license_text = dist_info(wheel, "licenses/LICENSE")
    assert license_text.startswith("MIT License")
    assert license_text == (ROOT / "LICENSE").read_text(encoding="utf-8")


def test_the_command_is_the_light_entry_point(wheel: zipfile.ZipFile) -> None:
    entry_points = dist_info(wheel, "entry_points.txt")
    assert "pbxsession = pbxsession.cli:main" in entry_points
    assert "pbxsession = pbxsession.testing" in entry_points  # the pytest plugin
    assert "pbxsession/__main__.py" in wheel.namelist()


def relative_links(markdown: str) -> list[str]:
    return [t for t in LINK.findall(markdown) if not t.startswith(("https://", "#"))]


def test_relative_links_are_found() -> None:
    assert relative_links("see [a](docs/A.md), [b](https://x.example/b), [c](#c)") == ["docs/A.md"]


def test_readme_links_are_absolute(metadata: Message) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert relative_links(readme) == []
    # What the index page shows is the README itself.
    assert metadata.get_payload() == readme


def test_changelog_keeps_a_changelog() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    assert f"## [{pbxsession.__version__}] - " in changelog
    assert relative_links(changelog) == []
