"""Output files written whole or not at all.

Every file agentmetrics writes on request (``-o``) goes through :func:`atomic_file`:
the content is written to a new temporary file, created exclusively (``O_EXCL``) with
a random name in the target's folder, then renamed onto the target. A reader (a browser,
node_exporter) sees the old file or the new one, never half of one; a failure leaves the
target as it was and no temporary file behind; and a symlink planted at a predictable
temporary name cannot redirect the write. A target that is itself a symlink is
replaced by the new file: the link's destination is never written. A target that is
(or links to) a device, FIFO or socket is refused: renaming over it would replace it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import AgentMetricsError

_TEXT = {"encoding": "utf-8", "newline": ""}  # newline: the csv module's requirement


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
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as e:
        raise AgentMetricsError(f"Cannot write {target}: {e.strerror or e}") from None
    try:
        with open(fd, "wb" if binary else "w", **({} if binary else _TEXT)) as out:
            # mkstemp creates the file 0600; give it the mode open() would have.
            os.fchmod(fd, 0o666 & ~_umask())
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(e, OSError):
            raise AgentMetricsError(f"Cannot write {target}: {e.strerror or e}") from None
        raise
