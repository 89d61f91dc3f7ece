"""Every Python block in the README runs, as printed, against the simulator.

Only the host is substituted (``https://pbx.example.com`` becomes the
simulator's URL). A block with test functions runs under pytest with
``trio_mode``, the way the README tells a reader to; any other block runs as
a program in a process of its own, in an empty folder.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import trio

from pbxsession.sim import Simulator, open_simulator

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README, flags=re.MULTILINE | re.DOTALL)
EXAMPLE_HOST = "https://pbx.example.com"
COMPANY_CA = "corp-ca.pem"


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 6


async def end_the_feeds_once_one_runs(sim: Simulator) -> None:
    """The "Use" example reads the feed until it ends: send one event, then errno 100."""
    with trio.fail_after(30):
        while not sim.stats()["feed_connections"]:
            await trio.sleep(0.02)  # polls the condition; no fixed wait
    sim.emit("presence", {"show": "away"}, login="alice")
    sim.feed_error(100, "PBX upgraded")


async def run(args: list[str], cwd: Path) -> trio.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            args, cwd=cwd, capture_stdout=True, capture_stderr=True, check=False
        )


@pytest.mark.parametrize("number", range(len(BLOCKS)))
async def test_readme_block_runs_as_printed(sim: Simulator, tmp_path: Path, number: int) -> None:
    if COMPANY_CA in BLOCKS[number]:
        # The deployment example: a PBX over https with a certificate from a
        # CA of its own, which the block trusts by the file name it shows.
        async with open_simulator(tls=True) as tls_sim:
            assert tls_sim.ca_path is not None
            shutil.copy(tls_sim.ca_path, tmp_path / COMPANY_CA)
            await run_block(tls_sim, tmp_path, number)
        return
    await run_block(sim, tmp_path, number)


async def run_block(sim: Simulator, tmp_path: Path, number: int) -> None:
    source = BLOCKS[number].replace(EXAMPLE_HOST, sim.url)
    if "async def test_" in source:
        (tmp_path / "test_block.py").write_text(source, encoding="utf-8")
        (tmp_path / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n", encoding="utf-8")
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    else:
        (tmp_path / "block.py").write_text(source, encoding="utf-8")
        args = [sys.executable, str(tmp_path / "block.py")]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(end_the_feeds_once_one_runs, sim)
        result = await run(args, tmp_path)
        nursery.cancel_scope.cancel()
    assert result.returncode == 0, (source, result.stdout.decode(), result.stderr.decode())
    assert b"Traceback" not in result.stderr
