"""The embedded PBX simulator: a real HTTP + WebSocket server speaking PROTOCOL.md.

Start it inside a trio program or test::

    async with open_simulator() as sim:
        ...  # point a client at sim.url: commands, and the feed at /api/feed

or from a shell: ``pbxsession sim [--host 127.0.0.1] [--port 8080]
[--feed-port 8081] [--users FILE] [--event-rate N] [--tls
[--require-client-cert]]`` (also ``python -m pbxsession.sim``), which prints
both URLs, the CA's path under TLS and a ready-to-paste login line.

Addresses
---------
``sim.url`` serves the commands and the feed (PROTOCOL.md: ``ws_host``
defaults to the host), so ``open_session(sim.url)`` needs nothing else.
``sim.ws_url`` serves the feed alone on a port of its own, for tests of a
separate ``ws_host``; both behave the same, fault controls included.
``open_simulator(tls=True)`` serves https and wss on both ports with a
certificate for ``127.0.0.1``, ``::1`` and ``localhost`` from a CA made at
start-up (``trustme``) and thrown away at the end: ``sim.ca_path`` is its
PEM file, ``sim.ssl_context`` a client context that trusts it.
``require_client_cert=True`` also refuses clients without a certificate
from that CA; ``sim.client_cert_path`` holds one with its key (and
``sim.ssl_context`` presents it).

The wire format (paths, form, XML replies, cookie, feed frames, errnos,
statuses) is in ``_wire.py``, the rules in ``_state.py``; the simulator
never imports the client's wire module, so a wire bug is not mirrored.

Users
-----
:data:`DEFAULT_USERS`: ``alice``/``alice-pass`` (id 101, "Alice Able", home 7,
companies 7 "Acme Ltd", permission ``chat``); ``admin``/``admin-pass`` (id
100, "Ada Admin", home 7, companies 7, 8 "Bolt plc", 9 "Cog GmbH", ``chat`` and
company-level ``admin``); ``bob``/``bob-pass`` (id 102, "Bob Basic", home 8,
company 8, ``voicemail`` only: no ``chat``). A users file (:func:`load_users`)
is a JSON list of ``{"id", "login", "password", "name", "home",
"companies": [{"id", "name"}], "actions": [{"name", "company": bool}]}``.

Choices where PROTOCOL.md is silent
-----------------------------------
- The cookie ``Red60urne`` (``Path=/; HttpOnly; SameSite=Lax``, ``Secure``
  over https) is set only by the command endpoint, on 200 replies.
- A context's selected company starts at the user's home. A password login
  as the user the context already holds keeps the context, its company and
  its feeds; a login as another user ends the old login (its feeds get
  errno 2), clears the context's kept events (numbering goes on) and selects
  the new user's home company. A failed login changes nothing.
- Password login needs a non-empty ``sessionUser`` and a ``sessionPass``
  field (else ``badrequest``); an empty password is ``badauth``. Unknown
  users get ``badauth`` and are not counted towards any lockout. The
  ``lock_threshold``-th consecutive ``badauth`` (5) locks the user for
  ``lock_period`` s; after the lock the count starts again. A ``checkonly``
  login is not a password login: lockout does not apply to it.
- A malformed field wins over permission: ``status`` with a bad ``show``
  from a user without ``chat`` is ``badrequest``; ``selcompany`` without a
  ``company`` is ``badrequest`` before ``norole``.
- ``subid`` present but empty (or longer than 64, or another character) is
  ``badrequest``; on the feed it is a 403. A field given twice, a body that
  is not UTF-8 / valid percent-encoding, or a body over 1 MiB is
  ``badrequest``. Unknown extra fields are ignored.
- ``save`` needs strict base64 (no line breaks) of a JSON list of at most 50
  JSON objects. ``load`` of nothing gives base64 of ``[]``.
- Presence starts as ``offline`` with empty text; ``status`` does not emit a
  feed event.
- Idle expiry: every command on a context (even a failing one) counts as
  use; feed traffic does not. With the default clock a background task
  expires idle contexts on time; with an injected ``clock`` expiry is
  checked lazily (on commands, handshakes and emits) or by
  :meth:`Simulator.check_expiry`.
- Feed handshake: 404 for another path; **503 while handshakes are being
  refused** (the ``refuse_handshakes`` fault, distinct from 403); 403 when
  the context is not logged in, the cookie is unknown or the sub-ID bad.
- Start frame: ``device``/``presence``/``mailbox``/``queue`` default to
  ``true`` when missing. A start frame that is not JSON, not ``type:
  start``, or has a bad ``since`` or flag gets ``error`` errno 1 and the
  feed closes. ``since: null`` replays nothing (live events only). A client
  that sends no start frame within 30 s is closed.
- A live connection that falls more than the ring buffer behind is closed
  with a normal WebSocket close and no error frame; the client resumes.
- The ring buffer keeps exactly the last ``ring_size`` (1000) events of each
  context.

Fault injection and views
-------------------------
Each control is a method of :class:`Simulator` and has an HTTP mirror on the
command port (JSON body in, JSON out; bad input answers 400):

=============================================  ==========================================
``set_delay(seconds, cmd=None)``               ``POST /_sim/delay {"seconds", "cmd"}``
``fail_next(n, cmd=None)`` (HTTP 500)          ``POST /_sim/fail {"n", "cmd"}``
``expire(login=None, *, cookie, subid)``       ``POST /_sim/expire {"login", "cookie", "subid"}``
``restart()``                                  ``POST /_sim/restart``
``emit(kind, data, login=None)``               ``POST /_sim/emit {"kind", "data", "login"}``
``await emit_burst(n, kind, login=None)``      ``POST /_sim/burst {"n", "kind", "login"}``
``set_event_rate(rate)``                       ``POST /_sim/event-rate {"rate"}``
``drop_feeds()`` (cut off, no error frame)     ``POST /_sim/feed/drop``
``feed_error(errno, message="")``              ``POST /_sim/feed/error {"errno", "message"}``
``refuse_handshakes(n)`` (HTTP 503)            ``POST /_sim/feed/refuse {"n"}``
``freeze_feeds()`` (no pongs, nothing sent)    ``POST /_sim/feed/freeze``
``unfreeze_feeds()``                           ``POST /_sim/feed/unfreeze``
``user_view(login)``                           ``GET /_sim/users/{login}`` (404 if unknown)
``contexts()``                                 ``GET /_sim/contexts``
``stats()`` / ``command_count(cmd=None)``      ``GET /_sim/stats``
=============================================  ==========================================

``stats()`` also counts logins: ``password_logins`` (one entry per cookie,
sub-ID and user: how many password logins the rules carried out, whatever
their outcome) and ``logins_alive`` (contexts logged in now). With
``contexts()`` a test can assert "no orphaned login" (every logged-in
context is one a client knows of) and "one password login per user and
context".

``cmd=None`` means every command; a command-specific delay or failure count
wins over the general one. Delays are applied before the command is carried
out; an injected failure answers HTTP 500 without carrying it out (the
command is still counted as received). ``check_expiry()`` expires idle
contexts now. ``emit_burst`` sends in chunks of half the ring and waits for
the feeds to keep up, so a reading client never falls off the ring.
``freeze_feeds`` makes every feed socket a black hole for outgoing data
(pongs included) until ``unfreeze_feeds``, which lets the held-back data
out. ``restart`` forgets every context and cookie and cuts off every feed.
"""

from . import _extra  # noqa: F401 (first: checks that the sim extra is installed)
from ._cli import main
from ._server import open_simulator
from ._simulator import Simulator
from ._users import DEFAULT_USERS, SimAction, SimCompany, SimUser, load_users
from ._wire import CONTENT_TYPE

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_USERS",
    "SimAction",
    "SimCompany",
    "SimUser",
    "Simulator",
    "load_users",
    "main",
    "open_simulator",
]
