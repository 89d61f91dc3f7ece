"""The simulator in a process of its own, for every benchmark in this folder.

``SimProcess`` starts ``python -m pbxsession.sim --port P --feed-port Q`` on
two free loopback ports, and stops the process (SIGTERM, then SIGKILL) when
its ``with`` block ends; ``await sim.ready()`` waits until ``/_sim/stats``
answers, and ``sim.post()``/``sim.get()`` drive its ``/_sim/`` controls. The
file descriptor soft limit is raised first, so the child inherits it.

``SimProcess(tls=True)`` serves https/wss from a throw-away CA; once ready,
``sim.ca_path`` (read from what the simulator prints) and ``sim.verify()`` (an
``ssl.SSLContext`` trusting it) are set. ``await sim.logins()`` gives the
login counters: password logins per context and user, logins still alive,
and which logged-in contexts no client knows of (orphans).

``run_with_simulator(main, *args, time_limit=...)`` is the usual way in: it
prints the simulator's command line, starts it, and runs
``await main(sim, *args)`` under trio once it is ready, all within
``time_limit`` seconds.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx
import trio

HOST = "127.0.0.1"
SRC = Path(__file__).resolve().parents[1] / "src"
T = TypeVar("T")


def free_port() -> int:
    """A free TCP port on the loopback interface (bind to port 0, read it, let go)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted``; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpu": cpu,
    }


@dataclass(frozen=True)
class LoginCounts:
    """The simulator's login counters, as ``/_sim/stats`` and ``/_sim/contexts`` give them."""

    alive: int
    """Contexts logged in now."""
    password_logins: list[dict[str, Any]]
    """One entry per (cookie, subid, login): ``count`` password logins carried out."""
    logged_in: list[tuple[str, str]]
    """The (cookie, subid) of every context logged in now."""

    def orphans(self, known: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """Logged-in contexts that are not among the (cookie, subid) the clients know of."""
        known_set = set(known)
        return [key for key in self.logged_in if key not in known_set]

    def repeated(self) -> list[dict[str, Any]]:
        """Entries with more than one password login for the same user and context."""
        return [entry for entry in self.password_logins if entry["count"] > 1]


class SimProcess:
    """``with SimProcess() as sim:`` gives ``sim.url``/``sim.ws_url``; ``await sim.ready()``."""

    def __init__(self, *, fd_limit: int = 8192, tls: bool = False) -> None:
        raise_fd_limit(fd_limit)
        self.port, self.feed_port = free_port(), free_port()
        while self.feed_port == self.port:
            self.feed_port = free_port()
        self.tls = tls
        secure = "s" if tls else ""
        self.url = f"http{secure}://{HOST}:{self.port}"
        self.ws_url = f"ws{secure}://{HOST}:{self.feed_port}"
        self.ca_path: str | None = None
        """The CA's PEM file (``tls=True``), known once :meth:`ready` returns."""
        self.command = [
            sys.executable,
            "-m",
            "pbxsession.sim",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--feed-port",
            str(self.feed_port),
            *(["--tls"] if tls else []),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def __enter__(self) -> SimProcess:
        env = dict(os.environ, PYTHONPATH=str(SRC))
        # Files, not pipes: nobody reads a pipe while the benchmark runs.
        self._stdout = tempfile.TemporaryFile()
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            self.command, stdout=self._stdout, stderr=self._stderr, env=env
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for file in (self._stdout, self._stderr):
            if file is not None:
                file.close()

    def describe(self) -> str:
        return shlex.join(self.command)

    def stderr_text(self) -> str:
        """What the simulator has written to its stderr so far."""
        return _read(self._stderr)

    def verify(self) -> ssl.SSLContext | bool:
        """What to pass as httpx's ``verify``: a context trusting the CA under TLS."""
        if not self.tls:
            return True
        if self.ca_path is None:
            raise RuntimeError("the CA path is known once ready() has returned")
        return ssl.create_default_context(cafile=self.ca_path)

    def _find_ca_path(self) -> bool:
        for line in _read(self._stdout).splitlines():
            if "CA certificate:" in line:
                self.ca_path = line.split("CA certificate:", 1)[1].strip()
        return self.ca_path is not None

    async def ready(self, within: float = 15.0) -> None:
        assert self.process is not None
        with trio.fail_after(within):
            while self.tls and not self._find_ca_path():
                self._check_alive()
                await trio.sleep(0.05)
        async with httpx.AsyncClient(trust_env=False, verify=self.verify()) as client:
            with trio.fail_after(within):
                while True:
                    self._check_alive()
                    try:
                        if (await client.get(self.url + "/_sim/stats")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"the simulator exited with {self.process.returncode}: " + self.stderr_text()
            )

    async def logins(self) -> LoginCounts:
        """The login counters now (for "no orphaned login", "one password login each")."""
        stats, contexts = await self.get("stats"), await self.get("contexts")
        return LoginCounts(
            alive=stats["logins_alive"],
            password_logins=stats["password_logins"],
            logged_in=[(c["cookie"], c["subid"]) for c in contexts if c["login"] is not None],
        )

    async def post(self, path: str, body: dict[str, object] | None = None) -> Any:
        async with httpx.AsyncClient(trust_env=False, timeout=60, verify=self.verify()) as client:
            reply = await client.post(self.url + "/_sim/" + path, content=json.dumps(body or {}))
            reply.raise_for_status()
            return reply.json()

    async def get(self, path: str) -> Any:
        async with httpx.AsyncClient(trust_env=False, timeout=60, verify=self.verify()) as client:
            reply = await client.get(self.url + "/_sim/" + path)
            reply.raise_for_status()
            return reply.json()


def _read(file: IO[bytes] | None) -> str:
    if file is None:
        return ""
    file.seek(0)
    return file.read().decode(errors="replace")


def run_with_simulator(
    main: Callable[..., Awaitable[T]],
    *args: Any,
    time_limit: float,
    fd_limit: int = 8192,
    tls: bool = False,
) -> T:
    """Start the simulator, print its command line, ``await main(sim, *args)`` once it is ready.

    Waiting for it and ``main`` together are bounded by ``time_limit`` seconds; the
    simulator is stopped on the way out, however ``main`` ends.
    """
    with SimProcess(fd_limit=fd_limit, tls=tls) as sim:
        print("simulator:", sim.describe(), flush=True)

        async def bounded() -> T:
            with trio.fail_after(time_limit):
                await sim.ready()
                return await main(sim, *args)

        return trio.run(bounded)
