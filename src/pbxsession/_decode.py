"""Content decoding under a size cap: the cap counts decoded bytes as they come out.

Sans-IO. ``zlib`` is asked for at most a piece at a time (``max_length``),
so a compressed bomb costs a piece of memory, not its decoded size: the
reply is refused as soon as its decoded bytes pass the cap. Stacked
encodings (``Content-Encoding: gzip, gzip``) are decoded layer by layer,
each layer bounded too.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

from ._errors import ProtocolError

__all__ = ["CappedDecoder"]

_PIECE = 64 * 1024
_MAX_LAYERS = 3
_KNOWN = frozenset({"gzip", "x-gzip", "deflate"})


class CappedDecoder:
    """Feed the wire bytes; ``body()`` is the decoded reply, never over ``cap`` bytes."""

    def __init__(self, content_encodings: Iterable[str], cap: int) -> None:
        tokens = [
            token.strip().lower()
            for header in content_encodings
            for token in header.split(",")
            if token.strip() and token.strip().lower() != "identity"
        ]
        if len(tokens) > _MAX_LAYERS:
            raise ProtocolError(f"more than {_MAX_LAYERS} content encodings")
        for token in tokens:
            if token not in _KNOWN:
                raise ProtocolError(f"unsupported content encoding {token!r}")
        # Content-Encoding lists them in the order applied: undo the last first.
        self._layers = [_Layer(token, 2 * cap) for token in reversed(tokens)]
        self._cap = cap
        self._wire = 0
        self._size = 0
        self._chunks: list[bytes] = []

    def feed(self, data: bytes) -> None:
        """Decode ``data``; raise :class:`ProtocolError` once a cap is passed."""
        self._wire += len(data)
        if self._wire > self._cap:
            raise ProtocolError(f"over {self._cap} bytes")
        self._push(0, data)

    def finish(self) -> None:
        """Flush every layer (the body has ended)."""
        for index, layer in enumerate(self._layers):
            for piece in layer.flush():
                self._push(index + 1, piece)

    def body(self) -> bytes:
        """The decoded body so far."""
        return b"".join(self._chunks)

    def _push(self, index: int, data: bytes) -> None:
        if index == len(self._layers):
            self._size += len(data)
            if self._size > self._cap:
                raise ProtocolError(f"over {self._cap} bytes once decoded")
            self._chunks.append(data)
            return
        for piece in self._layers[index].decode(data):
            self._push(index + 1, piece)


class _Layer:
    """One gzip or deflate layer, yielding at most ``_PIECE`` bytes at a time."""

    def __init__(self, token: str, limit: int) -> None:
        self._deflate = token == "deflate"
        self._zlib: zlib._Decompress | None = (
            None if self._deflate else zlib.decompressobj(16 + zlib.MAX_WBITS)
        )
        self._head = b""
        self._limit = limit
        self._out = 0

    def decode(self, data: bytes) -> Iterator[bytes]:
        obj = self._zlib
        if obj is None:
            # "deflate" is zlib-wrapped by the RFC, raw in practice: the
            # first two bytes say which (a zlib header is a multiple of 31).
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return
            wrapped = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            obj = self._zlib = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        while data and not obj.eof:
            try:
                out = obj.decompress(data, _PIECE)
            except zlib.error as exc:
                raise ProtocolError(f"content encoding is corrupt: {exc}") from None
            data = obj.unconsumed_tail
            if out:
                yield self._count(out)

    def flush(self) -> Iterator[bytes]:
        if self._zlib is None:
            if self._head:
                raise ProtocolError("content encoding is corrupt: truncated")
            return
        try:
            out = self._zlib.flush()
        except zlib.error as exc:
            raise ProtocolError(f"content encoding is corrupt: {exc}") from None
        if out:
            yield self._count(out)

    def _count(self, out: bytes) -> bytes:
        self._out += len(out)
        if self._out > self._limit:
            raise ProtocolError(f"over {self._limit} bytes in an inner content encoding")
        return out
