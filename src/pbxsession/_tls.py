"""TLS trust the httpx way, built once per distinct choice, and one-line handshake failures.

``trust_context`` turns what ``verify=`` and ``cert=`` accept into an
``ssl.SSLContext`` shared by every session (building one loads the whole CA
bundle: about 14 ms and half a MiB each). ``tls_failure`` reads an exception
raised while connecting and says, in one line, why the handshake failed.
"""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Iterator

import httpx
import trio

from ._errors import InvalidArgumentError, TlsError

__all__ = ["Verify", "speaks_tls", "tls_failure", "trust_context"]

Verify = bool | str | os.PathLike[str] | ssl.SSLContext
ClientCert = str | tuple[str, str] | None

# The first bytes of a TLS record (handshake or alert, any version): what a
# plain-http client reads back from a TLS server.
_TLS_RECORDS = (b"\x15\x03", b"\x16\x03")


def trust_context(
    verify: Verify = True, cert: ClientCert = None, trust_env: bool = True
) -> ssl.SSLContext:
    """The TLS context for ``verify`` and a client ``cert``, one per distinct input.

    ``verify``: ``True`` (system/certifi trust), a CA file or folder, an
    ``SSLContext`` (used as is) or ``False`` (no checks). With ``trust_env``,
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` replace the default trust as in httpx.
    A path or a context never turns host name checks off.
    """
    if isinstance(verify, ssl.SSLContext):
        if cert is not None:
            raise InvalidArgumentError(
                "cert= cannot be added to an SSLContext: load_cert_chain() into it instead"
            )
        return verify
    if not isinstance(trust_env, bool):
        raise InvalidArgumentError("trust_env must be True or False")
    source = _trust_source(verify)
    if cert is not None and not _valid_cert(cert):
        raise InvalidArgumentError("cert must be a path or a (certificate, key) pair of paths")
    env = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")) if trust_env else None
    key = cert if isinstance(cert, str | None) else (cert[0], cert[1])
    return _build(source, key, env)


def _trust_source(verify: object) -> str | bool:
    """``True``/``False``, or the CA path (which must exist)."""
    if isinstance(verify, bool):
        return verify
    if isinstance(verify, str | os.PathLike):
        source = os.fspath(verify)
        if not os.path.exists(source):
            raise InvalidArgumentError(f"verify: no CA file or folder at {source!r}")
        return str(source)
    raise InvalidArgumentError("verify must be True, False, a CA path or an ssl.SSLContext")


def _valid_cert(cert: object) -> bool:
    if isinstance(cert, str):
        return True
    return isinstance(cert, tuple) and len(cert) == 2 and all(isinstance(p, str) for p in cert)


@functools.lru_cache(maxsize=32)
def _build(
    source: str | bool, cert: ClientCert, env: tuple[str | None, str | None] | None
) -> ssl.SSLContext:
    # ``env`` is in the key so that a changed SSL_CERT_FILE gives a new context.
    if source is True:
        ctx = httpx.create_ssl_context(verify=True, trust_env=env is not None)
    elif source is False:
        ctx = httpx.create_ssl_context(verify=False, trust_env=False)
    elif os.path.isdir(source):
        ctx = ssl.create_default_context(capath=source)
    else:
        ctx = ssl.create_default_context(cafile=source)
    if isinstance(cert, str):
        ctx.load_cert_chain(cert)
    elif cert is not None:
        ctx.load_cert_chain(cert[0], cert[1])
    return ctx


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def tls_failure(exc: BaseException, url: str) -> TlsError | None:
    """The :class:`TlsError` that ``exc`` (raised connecting to ``url``) amounts to, if any."""
    secure = url.lower().startswith(("https:", "wss:"))
    for link in _chain(exc):
        if isinstance(link, ssl.SSLCertVerificationError):
            reason = link.verify_message or link.reason or "certificate rejected"
            return TlsError(f"certificate verify failed: {reason.rstrip('.')} ({url})")
        if isinstance(link, ssl.SSLError):
            return _ssl_error(link, url)
        if not secure and any(r in str(link).encode("latin-1", "replace") for r in _TLS_RECORDS):
            return TlsError(f"{url} speaks TLS: use https://")
    return None


def _ssl_error(error: ssl.SSLError, url: str) -> TlsError:
    reason = (error.reason or "").upper()
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return TlsError(f"{url} is not a TLS server: use http://")
    if "CERTIFICATE" in reason or "ALERT" in reason:
        return TlsError(f"TLS handshake refused: {error.reason.lower()} ({url})")
    return TlsError(f"TLS handshake failed: {error.reason or error} ({url})")


async def speaks_tls(host: str, port: int) -> bool:
    """Whether the server at ``host``:``port`` completes a TLS handshake (certificate unchecked).

    Asked only after a plain-http server hung up without a word, which is
    what a TLS server does with a plain request (OpenSSL sends no alert).
    """
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    with trio.move_on_after(_PROBE_SECONDS):
        try:
            tcp = await trio.open_tcp_stream(host, port)
        except OSError:
            return False
        stream = trio.SSLStream(tcp, probe, server_hostname=host)
        try:
            await stream.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError):
            return False
        finally:
            await trio.aclose_forcefully(stream)
        return True
    return False


_PROBE_SECONDS = 1.0
