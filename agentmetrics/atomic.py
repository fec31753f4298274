"""Output files written whole or not at all.

Every file agentmetrics writes on request (``-o``) goes through :func:`atomic_file`:
the content is written to a new temporary file, created exclusively (``O_EXCL``) with
a random name in the target's folder, then renamed onto the target. A reader (a browser,
node_exporter) sees the old file or the new one, never half of one; a failure leaves the
target as it was and no temporary file behind; and a symlink planted at a predictable
temporary name cannot redirect the write. A target that is itself a symlink is
replaced by the new file: the link's destination is never written. A target that is
(or links to) a device, FIFO or socket is refused: renaming over it would replace it.

A process killed outright (SIGKILL, power cut) cannot remove its temporary file: the next
write of the same target does. The file's name says it is ours and which process wrote
it (``.NAME.PID-xxxxxxxx.agentmetrics-tmp``), and its writer holds a lock on it
(``flock``) until the rename: only a regular file of ours, of this user, whose lock is
free and whose writer is gone (or which is over an hour old, its process id reused) is
removed. Anything else beside the target is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import AgentMetricsError

_TEXT = {"encoding": "utf-8", "newline": ""}  # newline: the csv module's requirement
SUFFIX = ".agentmetrics-tmp"
# A temporary file whose lock is free is stale once its writer is gone, or after this
# long whoever has its process id now (a writer holds the lock from its first moments).
STALE_SECONDS = 3600.0


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], binary: bool = False) -> Iterator[IO]:
    """Yield a file to write; on success it replaces ``path``, on failure it vanishes.

    An ``OSError`` (full disk, missing folder, no permission) becomes one
    :class:`~agentmetrics.errors.AgentMetricsError` naming ``path``.
    """
    target = Path(path)
    try:
        kind = stat.S_IFMT(target.stat().st_mode)
    except FileNotFoundError:  # nothing there yet, or a dangling symlink
        kind = stat.S_IFREG
    except OSError as e:
        raise AgentMetricsError(f"Cannot write {target}: {e.strerror or e}") from None
    if kind == stat.S_IFDIR:
        raise AgentMetricsError(f"Cannot write {target}: it is a directory")
    if kind != stat.S_IFREG:
        # Renaming over /dev/null or a FIFO would replace it, for every other user too.
        raise AgentMetricsError(f"Cannot write {target}: not a regular file (a device or FIFO)")
    remove_stale(target)
    try:
        fd, temporary = tempfile.mkstemp(
            prefix=f".{target.name}.{os.getpid()}-", suffix=SUFFIX, dir=target.parent
        )
    except OSError as e:
        raise AgentMetricsError(f"Cannot write {target}: {e.strerror or e}") from None
    try:
        with open(fd, "wb" if binary else "w", **({} if binary else _TEXT)) as out:
            with contextlib.suppress(OSError):  # no locks here: the live pid protects it
                fcntl.flock(fd, fcntl.LOCK_EX)  # remove_stale leaves a locked file be
            # mkstemp creates the file 0600; give it the mode open() would have.
            os.fchmod(fd, 0o666 & ~_umask())
            yield out
            out.flush()
            os.fsync(out.fileno())
            os.replace(temporary, target)  # still locked, so never taken for stale
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(e, OSError):
            raise AgentMetricsError(f"Cannot write {target}: {e.strerror or e}") from None
        raise


def remove_stale(target: str | os.PathLike[str]) -> list[str]:
    """Remove the temporary files that writers of ``target`` killed outright left beside
    it (see the module docstring); return their names. Never fails: a file that cannot
    be checked or removed stays."""
    folder, name = Path(target).parent, Path(target).name
    ours = re.compile(re.escape(f".{name}.") + r"([1-9][0-9]*)-[a-z0-9_]{8}" + re.escape(SUFFIX))
    removed = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            found = ours.fullmatch(entry.name)
            # Not even opened unless a regular file: opening a device can act on it.
            if (
                found
                and entry.is_file(follow_symlinks=False)
                and _remove_if_stale(entry.path, int(found[1]))
            ):
                removed.append(entry.name)
    return removed


def _remove_if_stale(path: str, pid: int) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # gone, a symlink, unreadable
        return False
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return False
        if _running(pid) and time.time() - info.st_mtime < STALE_SECONDS:
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live writer: OSError
        if os.lstat(path).st_ino != info.st_ino:  # replaced meanwhile
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone; no process has such an id
        return False
    except PermissionError:  # another user's process
        return True
    return True
