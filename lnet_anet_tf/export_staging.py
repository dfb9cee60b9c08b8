"""Staging folders that exports write into, and removal of those that killed exports left.

An export writes each result into a staging folder `.tmp-<tag>-<random>` beside
its target, then renames it into place, so that no reader sees a half-written
model. A process killed during the export (SIGKILL, the OOM killer, a lost
machine) leaves its staging folder behind. `remove_stale` deletes such folders
before the next export in the same place writes its own.

Ownership: the writer creates `writer.lock` inside its staging folder and holds
an exclusive `flock` on it until the folder is removed. The kernel releases the
lock when the process ends, however it ends, so a lock that another process can
take marks a folder whose writer is gone. Unlike a process id in the folder name,
a lock cannot be confused by a reused id or by a writer in another PID namespace
(a container that shares the volume).

`remove_stale` leaves a folder alone when
- another process holds its lock: an export is writing it now;
- it has no lock file and changed in the last `UNLOCKED_GRACE_SECONDS`: the
  writer has just created it and not yet its lock file, or is deleting it;
- the lock cannot be tried (`fcntl` missing, or the file system rejects `flock`).
A folder without a lock file that is older than the grace period comes from a
writer killed between creating the folder and its lock, or from a version of this
project that wrote no lock file, and is removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from typing import Iterator

from absl import logging

try:
    import fcntl
except ImportError:  # not POSIX: stale folders are kept, see `_lock_is_free`
    fcntl = None

LOCK_FILENAME = "writer.lock"
UNLOCKED_GRACE_SECONDS = 60.0


def staging_name_pattern(tag_pattern: str) -> re.Pattern:
    """Return the pattern of staging folder names whose tag matches `tag_pattern`.

    `tempfile.mkdtemp` appends 8 characters from [a-z0-9_] to the prefix in
    CPython; the pattern accepts any run of them.
    """
    return re.compile(rf"^\.tmp-(?:{tag_pattern})-[a-z0-9_]+$")


@contextlib.contextmanager
def staging_folder(parent: str, tag: str) -> Iterator[str]:
    """Create `<parent>/.tmp-<tag>-<random>`, locked by this process; remove it on exit.

    Whatever the block moves out of the folder (with `os.rename`) survives it.
    """
    os.makedirs(parent, exist_ok=True)
    folder = tempfile.mkdtemp(prefix=f".tmp-{tag}-", dir=parent)
    lock_fd = None
    try:
        lock_fd = os.open(os.path.join(folder, LOCK_FILENAME), os.O_RDWR | os.O_CREAT, 0o600)
        _lock_own(lock_fd, folder)
        yield folder
    finally:
        # The lock outlives the folder, so no other process can find the folder unlocked.
        shutil.rmtree(folder, ignore_errors=True)
        if lock_fd is not None:
            os.close(lock_fd)


def _lock_own(lock_fd: int, folder: str) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        # Where flock fails for the writer it fails for `remove_stale` too, which
        # then keeps the folder, so the export can go on unlocked.
        logging.warning("Could not lock the export folder %s (%s); writing it unlocked.", folder, error)


def remove_stale(parent: str, tag_pattern: str) -> list[str]:
    """Delete the staging folders in `parent` whose tag matches and whose writer is gone.

    Only directories directly in `parent` whose names match
    `staging_name_pattern(tag_pattern)` are considered. Returns the removed paths.
    A folder that cannot be removed is logged and kept, and the export goes on.
    """
    if not os.path.isdir(parent):
        return []
    pattern = staging_name_pattern(tag_pattern)
    removed = []
    for name in sorted(os.listdir(parent)):
        folder = os.path.join(parent, name)
        if not pattern.match(name) or os.path.islink(folder) or not os.path.isdir(folder):
            continue
        if _remove_if_stale(folder):
            removed.append(folder)
    return removed


def _remove_if_stale(folder: str) -> bool:
    lock_path = os.path.join(folder, LOCK_FILENAME)
    try:
        lock_fd = os.open(lock_path, os.O_RDWR)
    except FileNotFoundError:
        if _seconds_since_change(folder) < UNLOCKED_GRACE_SECONDS:
            return False
        return _remove(folder, "it has no lock file and has not changed for "
                       f"{UNLOCKED_GRACE_SECONDS:.0f} s")
    except OSError as error:
        logging.warning("Keeping %s: its lock file cannot be opened (%s).", folder, error)
        return False
    try:
        if not _lock_is_free(lock_fd, folder):
            return False
        # Still holding the lock, so no writer can start using the folder meanwhile.
        return _remove(folder, "the export that wrote it is no longer running")
    finally:
        os.close(lock_fd)


def _lock_is_free(lock_fd: int, folder: str) -> bool:
    """Take the writer's lock without waiting; return whether it was free."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        logging.warning("Keeping %s: its lock cannot be tried (%s).", folder, error)
        return False
    return True


def _seconds_since_change(folder: str) -> float:
    try:
        return time.time() - os.stat(folder).st_mtime
    except FileNotFoundError:
        return 0.0


def _remove(folder: str, reason: str) -> bool:
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        return False  # another process removed it first
    except OSError as error:
        logging.warning("Could not remove the stale export folder %s: %s.", folder, error)
        return False
    logging.info("Removed the stale export folder %s: %s.", folder, reason)
    return True
