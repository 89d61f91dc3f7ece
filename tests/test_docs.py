"""The documentation site builds with no warning and has every page."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PAGES = {
    "index.md": "Quick start",
    "lifecycle.md": "The lifecycle",
    "feed.md": "The live feed",
    "exit.md": "The staged exit",
    "sessions.md": "Shared and isolated sessions",
    "simulator.md": "The simulator",
    "testing.md": "The pytest fixture",
    "cli.md": "The command line",
    "PROTOCOL.md": "The wire protocol",
    "api.md": "API reference",
    "changelog.md": "Changelog",
}

needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None
    or importlib.util.find_spec("material") is None
    or importlib.util.find_spec("mkdocstrings") is None,
    reason="mkdocs, mkdocs-material or mkdocstrings is not installed (pip install -e '.[docs]')",
)


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page, title in PAGES.items():
        assert f"  - {title}: {page}\n" in config
        assert (ROOT / "docs" / page).is_file()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


@needs_mkdocs
def test_the_site_builds_strictly(site: Path) -> None:
    for page in PAGES:
        name = "index.html" if page == "index.md" else f"{page.removesuffix('.md')}/index.html"
        assert (site / name).is_file(), name


@needs_mkdocs
def test_the_generated_parts_are_on_the_site(site: Path) -> None:
    from pbxsession import diagrams

    svg = (site / "diagrams" / "lifecycle.svg").read_text(encoding="utf-8")
    assert svg == (ROOT / "diagrams" / "lifecycle.svg").read_text(encoding="utf-8")
    lifecycle = (site / "lifecycle" / "index.html").read_text(encoding="utf-8")
    assert "../diagrams/lifecycle.svg" in lifecycle
    assert "<table>" in lifecycle
    first_rule = diagrams.rules_markdown().splitlines()[2].split(" | ")[0].strip("| `")
    assert f"<code>{first_rule}</code>" in lifecycle
    cli = (site / "cli" / "index.html").read_text(encoding="utf-8")
    assert "Usage: pbxsession whoami [OPTIONS]" in cli
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert "open_session" in api
    assert "PbxError" in api
    changelog = (site / "changelog" / "index.html").read_text(encoding="utf-8")
    assert "Unreleased" in changelog
