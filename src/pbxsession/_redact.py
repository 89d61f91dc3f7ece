"""Keep cookies out of httpcore's DEBUG records (they print response headers whole)."""

from __future__ import annotations

import logging
import re

__all__ = ["RedactCookies", "install_httpcore_redaction"]

# httpcore formats headers as (b'Name', b'value') pairs in its messages.
_HEADER = re.compile(
    rb"(\(b['\"](?:set-cookie|cookie|authorization)['\"],\s*)b(['\"]).*?(?<!\\)\2".decode(),
    re.IGNORECASE,
)
_LOGGERS = (
    "httpcore",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.connection",
    "httpcore.proxy",
    "httpcore.socks",
)
_installed = False


class RedactCookies(logging.Filter):
    """Replaces the values of cookie headers in a record's text with ``[redacted]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; always keep it."""
        text = record.getMessage()
        if "ookie" in text or "uthorization" in text:
            record.msg = _HEADER.sub(r"\1b'[redacted]'", text)
            record.args = None
        return True


def install_httpcore_redaction() -> None:
    """Add the filter to httpcore's loggers, once per process.

    A filter on a logger applies to records logged on that very logger, so it
    goes on each of httpcore's (their records carry the headers).
    """
    global _installed
    if _installed:
        return
    _installed = True
    for name in _LOGGERS:
        logging.getLogger(name).addFilter(RedactCookies())
