"""MkDocs hook: publish the generated lifecycle SVG with the site.

The SVG is generated into ``diagrams/`` by ``pbxsession diagrams`` (and
checked fresh by tests/test_diagrams.py); it is served from the site at
``diagrams/lifecycle.svg`` rather than copied into ``docs/`` by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("diagrams/lifecycle.svg",)


def on_files(files: Files, config: Any) -> Files:
    """Add each generated file to the site, under the same path."""
    for name in GENERATED:
        files.append(File.generated(config, name, abs_src_path=str(ROOT / name)))
    return files
