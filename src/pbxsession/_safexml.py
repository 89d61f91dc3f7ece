"""A hardened XML reader for small, untrusted documents: no DTD, no entities.

It feeds expat straight into the C ``TreeBuilder``. Any document type
declaration stops the parse at its first byte, so no entity is ever declared,
expanded or fetched (billion laughs, external entities, parameter entities);
a reference to an undeclared entity is an expat error. One parser per
document: expat parsers cannot be reset, and making one costs about a
microsecond (defusedxml's pure-Python parser cost about 40 µs per reply).

Most replies are one empty or text-only element (every acknowledgement and
every failure). Those are read by a strict pattern instead, which accepts
only a subset of XML with nothing to expand, normalise or decode: ASCII
names, double-quoted ASCII attribute values without ``&``, ``<`` or
whitespace controls, ASCII text without ``&``, ``<``, ``>``, ``]`` or
carriage returns, an optional UTF-8 declaration. On that subset it builds exactly the
element expat would (``tests/test_wire.py`` checks this against expat on
generated documents); anything else goes to expat. In a live process the
pattern costs a few microseconds where making and running an expat parser
costs about fifteen (the parser's buffers and code are cold by then).
"""

from __future__ import annotations

import re
from xml.etree.ElementTree import Element, TreeBuilder
from xml.parsers import expat

__all__ = ["UnsafeXmlError", "parse"]


class UnsafeXmlError(ValueError):
    """The document is malformed, or declares a DTD or an entity."""


def _refuse_dtd(*_: object) -> None:
    raise UnsafeXmlError("a document type declaration is not allowed")


def _refuse_entity(*_: object) -> None:
    raise UnsafeXmlError("an entity declaration is not allowed")


def _refuse_external(*_: object) -> int:
    raise UnsafeXmlError("an external entity is not allowed")


_S = rb"[ \t\n]"
_NAME = rb"[A-Za-z_:][A-Za-z0-9_.:-]*"
# A double-quoted ASCII value without '"', '&', '<' or any control character.
_VALUE = rb'"([\x20\x21\x23-\x25\x27-\x3b\x3d-\x7e]*)"'
_ATTRIBUTES = re.compile(_S + rb"+(" + _NAME + rb")" + _S + rb"*=" + _S + rb"*" + _VALUE)
_SIMPLE = re.compile(
    rb'(?:<\?xml' + _S + rb'+version="1\.0"(?:' + _S + rb'+encoding="(?:utf-8|UTF-8)")?'
    + _S + rb"*\?>)?" + _S + rb"*"
    + rb"<(?P<tag>" + _NAME + rb")"
    + rb"(?P<attributes>(?:" + _ATTRIBUTES.pattern.replace(b"(", b"(?:") + rb")*)" + _S + rb"*"
    # Text: ASCII without '&', '<', '>', ']' or controls other than tab and newline.
    + rb"(?:/>|>(?P<text>[\t\n\x20-\x25\x27-\x3b\x3d\x3f-\x5c\x5e-\x7e]*)</(?P=tag)"
    + _S + rb"*>)" + _S + rb"*"
)  # fmt: skip


def _simple(document: bytes) -> Element | None:
    """The element of a document in the simple subset (see the module), else ``None``."""
    match = _SIMPLE.fullmatch(document)
    if match is None:
        return None
    tag, attributes, text = match.group("tag", "attributes", "text")
    pairs = _ATTRIBUTES.findall(attributes)
    attrib = {name.decode("ascii"): value.decode("ascii") for name, value in pairs}
    if len(attrib) != len(pairs):  # a repeated attribute: expat's error to report
        return None
    element = Element(tag.decode("ascii"), attrib)
    if text:
        element.text = text.decode("ascii")
    return element


def parse(document: bytes) -> Element:
    """The root element of ``document``; raise :class:`UnsafeXmlError` if it is unsafe.

    Comments and processing instructions are dropped; namespaces are not
    processed (a prefixed tag keeps its prefix).
    """
    element = _simple(document)
    if element is not None:
        return element
    builder = TreeBuilder()
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_entity
    parser.UnparsedEntityDeclHandler = _refuse_entity
    parser.ExternalEntityRefHandler = _refuse_external
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(document, True)
    except UnsafeXmlError:
        raise
    except (expat.ExpatError, LookupError, ValueError) as exc:
        # LookupError/ValueError: an encoding declaration Python's codecs do
        # not know, or a multi-byte one expat cannot take.
        raise UnsafeXmlError(str(exc)) from None
    return builder.close()
