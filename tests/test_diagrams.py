"""The committed diagrams, rules table and README blocks match the machine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pbxsession import diagrams

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["lifecycle.mmd", "lifecycle.dot", "rules.md"])
def test_committed_file_is_fresh(name: str) -> None:
    expected = diagrams.generate(with_svg=False)[name]
    committed = (ROOT / "diagrams" / name).read_text(encoding="utf-8")
    assert committed == expected, "stale: run `pbxsession diagrams`"


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_committed_svg_is_fresh() -> None:
    committed = (ROOT / "diagrams" / "lifecycle.svg").read_text(encoding="utf-8")
    assert committed == diagrams.svg(), "stale: run `pbxsession diagrams`"


def test_readme_embeds_the_generated_diagram_and_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert diagrams.embed(readme) == readme, "stale: run `pbxsession diagrams`"
    assert diagrams.rules_markdown() in readme
    assert diagrams.mermaid() in readme


def test_the_table_says_what_the_machine_does() -> None:
    table = diagrams.rules_markdown()
    assert "| `login` | ✗ `InvalidStateError` | logged_in (company_selected if" in table
    assert (
        "| `session_lost` | ignored | ignored | host_set | host_set | ignored | ignored |" in table
    )
    assert "host_set --> logged_in: login_succeeded" in diagrams.mermaid()


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    assert diagrams.main([str(tmp_path), "--check", "--readme", str(tmp_path / "none")]) == 1
    assert diagrams.main([str(tmp_path), "--readme", str(tmp_path / "none")]) == 0
    assert diagrams.main([str(tmp_path), "--check", "--readme", str(tmp_path / "none")]) == 0
    (tmp_path / "rules.md").write_text("edited by hand\n", encoding="utf-8")
    assert diagrams.main([str(tmp_path), "--check", "--readme", str(tmp_path / "none")]) == 1
