"""Throw-away TLS for the simulator: a local CA made at start-up, nothing committed.

:func:`make_tls` makes a CA with ``trustme``, a server certificate for
``127.0.0.1``, ``::1`` and ``localhost``, and, when asked, a client
certificate the server then requires. The CA (and the client certificate
with its key) are written as PEM files in a fresh temporary directory, so
tools that take a path can use them; :meth:`SimTls.close` removes it.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ._extra import missing_extra

__all__ = ["SERVER_NAMES", "SimTls", "make_tls"]

SERVER_NAMES = ("127.0.0.1", "::1", "localhost")
"""The names the server certificate is valid for."""
CLIENT_NAME = "client.pbxsession.test"
"""The identity in the client certificate (when one is required)."""


@dataclass(frozen=True)
class SimTls:
    """The simulator's TLS material: server context, and files and context for clients."""

    directory: Path
    ca_path: str
    """PEM file of the throw-away CA."""
    client_cert_path: str | None
    """PEM file with the client certificate and its key, when one is required."""
    server_context: ssl.SSLContext
    client_context: ssl.SSLContext
    """Trusts the CA (and presents the client certificate when one is required)."""

    def close(self) -> None:
        """Remove the temporary directory and the PEM files in it."""
        shutil.rmtree(self.directory, ignore_errors=True)


def make_tls(*, client_cert: bool = False) -> SimTls:
    """Make a CA, the server's certificate and (optionally) a required client certificate."""
    try:  # in the sim extra; imported here so plain http never needs it
        import trustme
    except ImportError as exc:
        raise missing_extra(exc.name) from None

    ca = trustme.CA(organization_name="pbxsession simulator (throw-away)")
    directory = Path(tempfile.mkdtemp(prefix="pbxsession-sim-tls-"))
    try:
        ca_path = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*SERVER_NAMES).configure_cert(server)
        # HTTP/1.1 only: the feed is a WebSocket upgrade, which h2 would not offer
        server.set_alpn_protocols(["http/1.1"])
        client = ssl.create_default_context(cafile=str(ca_path))
        client_path: Path | None = None
        if client_cert:
            client_path = directory / "client.pem"
            ca.issue_cert(CLIENT_NAME).private_key_and_cert_chain_pem.write_to_path(
                str(client_path)
            )
            ca.configure_trust(server)
            server.verify_mode = ssl.CERT_REQUIRED
            client.load_cert_chain(str(client_path))
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return SimTls(
        directory=directory,
        ca_path=str(ca_path),
        client_cert_path=None if client_path is None else str(client_path),
        server_context=server,
        client_context=client,
    )
