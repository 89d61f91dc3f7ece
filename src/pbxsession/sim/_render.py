"""Wire rendering of the simulator: XML command replies and JSON feed frames.

Replies follow PROTOCOL.md to the letter: one element per line and nothing
after it on that line, every attribute value in double quotes and
XML-escaped (``&``, ``<``, ``>``, ``"`` and line breaks / tabs as character
references, so no value can break the one-element-per-line rule). Characters
that XML 1.0 cannot carry at all are replaced by U+FFFD.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CONTENT_TYPE",
    "Element",
    "Reply",
    "error_frame",
    "escape_attr",
    "escape_text",
    "event_frame",
    "ready_frame",
    "render_reply",
]

CONTENT_TYPE = "text/xml; charset=utf-8"
"""The ``Content-Type`` of every command reply."""

_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_ATTR_TABLE = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#9;",
    }
)
_TEXT_TABLE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\n": "&#10;", "\r": "&#13;"})


def _clean(value: str) -> str:
    return _INVALID_XML.sub("\ufffd", value)


def escape_attr(value: str) -> str:
    """Escape ``value`` for use inside a double-quoted XML attribute."""
    return _clean(value).translate(_ATTR_TABLE)


def escape_text(value: str) -> str:
    """Escape ``value`` for use as XML character data on a single line."""
    return _clean(value).translate(_TEXT_TABLE)


@dataclass(frozen=True)
class Element:
    """One child element of a reply: tag, ordered attributes and optional text."""

    tag: str
    attrs: tuple[tuple[str, str], ...] = ()
    text: str | None = None


@dataclass(frozen=True)
class Reply:
    """A command reply before rendering; ``code`` is None for success."""

    cmd: str
    code: str | None = None
    message: str = ""
    children: Sequence[Element] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Tell whether this is a ``result="success"`` reply."""
        return self.code is None


def _attrs(pairs: Sequence[tuple[str, str]]) -> str:
    return "".join(f' {name}="{escape_attr(value)}"' for name, value in pairs)


def _element(el: Element) -> str:
    if el.text is None:
        return f"  <{el.tag}{_attrs(el.attrs)}/>"
    return f"  <{el.tag}{_attrs(el.attrs)}>{escape_text(el.text)}</{el.tag}>"


def render_reply(reply: Reply) -> str:
    """Render ``reply`` as the XML document of PROTOCOL.md (ends with a newline)."""
    if reply.code is not None:
        head = _attrs((("result", "fail"), ("cmd", reply.cmd), ("code", reply.code)))
        return f"<response{head}>{escape_text(reply.message)}</response>\n"
    head = _attrs((("result", "success"), ("cmd", reply.cmd)))
    lines = [f"<response{head}>", *(_element(el) for el in reply.children), "</response>"]
    return "\n".join(lines) + "\n"


def _dumps(obj: Mapping[str, object]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def event_frame(seq: int, kind: str, data: Mapping[str, object]) -> str:
    """Render a feed ``event`` frame."""
    return _dumps({"type": "event", "seq": seq, "kind": kind, "data": data})


def ready_frame(seq: int, resumed: bool) -> str:
    """Render a feed ``ready`` frame."""
    return _dumps({"type": "ready", "seq": seq, "resumed": resumed})


def error_frame(errno: int, message: str) -> str:
    """Render a feed ``error`` frame (the feed ends after it)."""
    return _dumps({"type": "error", "errno": errno, "message": message})
