"""The lifecycle diagrams and rules table, generated from the machine itself.

``python -m pbxsession.diagrams [DIR]`` (or ``pbxsession diagrams``) writes
into ``DIR`` (default ``diagrams/``):

- ``lifecycle.mmd``: Mermaid ``stateDiagram-v2`` source;
- ``lifecycle.dot`` and ``lifecycle.svg``: Graphviz source and its rendering
  (needs Graphviz's ``dot``);
- ``rules.md``: the state x operation table (target state or the error).

``--check`` writes nothing and exits 1 when a file differs from what the
machine generates. Nothing here is written by hand: change the machine in
``pbxsession._lifecycle`` and regenerate.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from . import RULES, Event, Operation, State, rules_table, transitions

__all__ = [
    "RULE_TESTS",
    "dot",
    "embed",
    "generate",
    "main",
    "mermaid",
    "rule_test_name",
    "rules_markdown",
    "svg",
]


def mermaid() -> str:
    """The lifecycle as a Mermaid state diagram."""
    lines = ["stateDiagram-v2", f"    [*] --> {State.UNCONFIGURED.value}"]
    for source, event, target in transitions():
        lines.append(f"    {source.value} --> {target.value}: {event.value}")
    lines.append(f"    {State.CLOSED.value} --> [*]")
    return "\n".join(lines) + "\n"


def dot() -> str:
    """The lifecycle as Graphviz DOT source."""
    lines = [
        "digraph lifecycle {",
        "    rankdir=LR;",
        '    node [shape=box, style="rounded", fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
        '    start [shape=point, label=""];',
        f"    start -> {State.UNCONFIGURED.value};",
        f"    {State.CLOSED.value} [peripheries=2];",
    ]
    for source, event, target in transitions():
        style = ', style="dashed"' if event is Event.SESSION_LOST else ""
        lines.append(f'    {source.value} -> {target.value} [label="{event.value}"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def svg(dot_source: str | None = None) -> str:
    """``dot_source`` (default: :func:`dot`) rendered to SVG by Graphviz's ``dot``."""
    binary = shutil.which("dot")
    if binary is None:
        raise RuntimeError("Graphviz's dot is not installed (Debian: apt-get install graphviz)")
    result = subprocess.run(
        [binary, "-Tsvg"],
        input=dot_source if dot_source is not None else dot(),
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def rules_markdown() -> str:
    """The state x operation table as Markdown: the state reached, or the error."""
    states = list(State)
    header = "| operation | " + " | ".join(f"`{s.value}`" for s in states) + " | note | test |"
    rule = "|---|" + "---|" * len(states) + "---|---|"
    rows = [header, rule]
    for operation, row in rules_table():
        cells = [_cell(row[s]) for s in states] + [RULES[operation].note, _test_link(operation)]
        rows.append(f"| `{operation.value}` | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


#: Where each rule's own test lives (``test_rule_<operation>``).
RULE_TESTS = "https://github.com/pbxsession/pbxsession/blob/main/tests/test_lifecycle.py"


def rule_test_name(operation: Operation) -> str:
    """The name of the test that checks ``operation``'s rule, cell by cell."""
    return f"test_rule_{operation.value}"


def _test_link(operation: Operation) -> str:
    return f"[`{rule_test_name(operation)}`]({RULE_TESTS})"


def _cell(text: str) -> str:
    if text == "InvalidStateError":
        return "✗ `InvalidStateError`"
    return text


def generate(*, with_svg: bool = True) -> dict[str, str]:
    """Every generated file's name and content."""
    files = {
        "lifecycle.mmd": mermaid(),
        "lifecycle.dot": dot(),
        "rules.md": rules_markdown(),
    }
    if with_svg:
        files["lifecycle.svg"] = svg(files["lifecycle.dot"])
    return files


def embed(readme: str) -> str:
    """``readme`` with its generated blocks brought up to date.

    A block stands between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``
    markers, NAME being ``diagram`` or ``rules``.
    """
    blocks = {"diagram": f"```mermaid\n{mermaid()}```\n", "rules": rules_markdown()}
    for name, content in blocks.items():
        begin, end = f"<!-- {name}:begin -->\n", f"<!-- {name}:end -->"
        head, found, rest = readme.partition(begin)
        if not found or end not in rest:
            continue
        readme = head + begin + content + end + rest.split(end, 1)[1]
    return readme


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or ``--check``) the generated files; returns the exit status."""
    parser = argparse.ArgumentParser(prog="pbxsession diagrams", description=__doc__)
    parser.add_argument("directory", nargs="?", default="diagrams", type=Path)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    parser.add_argument(
        "--readme", type=Path, default=Path("README.md"), help="README to embed them in"
    )
    args = parser.parse_args(argv)
    files = {
        args.directory / name: content
        for name, content in generate(with_svg=shutil.which("dot") is not None).items()
    }
    if args.readme.exists():
        files[args.readme] = embed(args.readme.read_text(encoding="utf-8"))
    stale = []
    for path, content in files.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != content:
            stale.append(str(path))
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content, encoding="utf-8")
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; run: pbxsession diagrams", file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
