"""Private files and folders, and a cross-process lock file, on any OS.

POSIX modes exist only on POSIX systems: elsewhere (Windows) a new file or
folder gets the default ACL of its parent, which for a per-user state
folder is already private, and the mode calls are skipped. The lock is the
``filelock`` library's (``flock`` on POSIX, ``msvcrt.locking`` on Windows;
a lock file the kernel releases when its holder dies).
"""

from __future__ import annotations

import os
from pathlib import Path

import filelock

__all__ = ["POSIX", "create_private_file", "make_private_dirs", "open_lock"]

#: Whether POSIX file modes apply (``chmod`` makes a file private).
POSIX = os.name == "posix"


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and any missing parent, each folder exactly 0700 (whatever the umask).

    Folders that exist already are left as they are.
    """
    missing: list[Path] = []
    folder = path
    while not folder.is_dir():
        missing.append(folder)
        if folder.parent == folder:
            break
        folder = folder.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # made at the same time by another process: theirs is 0700 too
        if POSIX:
            os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask


def create_private_file(path: Path) -> None:
    """Create ``path`` empty, exactly 0600, unless it exists (never truncates)."""
    make_private_dirs(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        if POSIX:
            os.fchmod(fd, 0o600)  # os.open's mode is filtered by the umask
    finally:
        os.close(fd)


def open_lock(path: Path) -> filelock.BaseFileLock:
    """A lock on the file ``path`` (created 0600), to be taken without blocking.

    Not thread-local: taken in a worker thread, released in another.
    """
    make_private_dirs(path.parent)
    if POSIX:
        return filelock.FileLock(path, mode=0o600, thread_local=False)
    return filelock.FileLock(path, thread_local=False)  # the folder's ACL applies
