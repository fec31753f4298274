"""Tracking writes that could not be stored yet, kept to be applied later.

They are kept beside the database, one JSON line each (``{"kind": ..., "params": ...}``)
in ``<database>.pending.jsonl``; when that file cannot be written either (read-only
folder, full disk), in a bounded queue in memory. An exclusive ``flock`` on the file
makes appending and replaying one at a time across processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

SUFFIX = ".pending.jsonl"
MEMORY_LIMIT = 10_000
# Other processes may add to the journal at any time: it is looked at this often.
CHECK_SECONDS = 0.1
BATCH = 500

log = logging.getLogger("agentmetrics")

Write = tuple[str, dict[str, Any]]


class PendingWrites:
    """The writes waiting for one database, in the order they were made.

    :param path: the journal file, or None to keep writes in memory only
    :param kinds: the statement kinds a journal line may name (others are skipped)
    :param timeout: seconds to wait for another process's lock on the journal
    :param limit: how many writes the memory queue holds; later ones are dropped
    """

    def __init__(
        self, path: str | None, kinds: set[str], timeout: float = 5.0, limit: int | None = None
    ) -> None:
        self.path = path
        self.kinds = kinds
        self.timeout = timeout
        self.limit = MEMORY_LIMIT if limit is None else limit
        self.memory: deque[Write] = deque()
        self.dropped = 0
        self._added = False  # this process wrote to the journal since the last replay
        self._checked_at = -math.inf

    def __len__(self) -> int:
        kept = 0
        if self.path is not None:
            try:
                with open(self.path, "rb") as journal:
                    kept = len(self._parse(journal.read()))
            except OSError:
                pass  # no journal
        return len(self.memory) + kept

    def waiting(self) -> bool:
        """Whether any write may be kept (cheap: at most one ``stat`` per CHECK_SECONDS)."""
        if self.memory or self._added:
            return True
        now = time.monotonic()
        if self.path is None or now - self._checked_at < CHECK_SECONDS:
            return False
        self._checked_at = now
        try:
            return os.stat(self.path).st_size > 0
        except OSError:
            return False

    def add(self, kind: str, params: dict[str, Any]) -> None:
        """Keep a write: in the journal, else in memory, else count it as dropped."""
        # Once a write is in memory the ones after it follow, so the order holds.
        if not self.memory and self.path is not None:
            try:
                with self._locked() as journal:
                    _append(journal, [(kind, params)])
                self._added = True
                return
            except OSError as e:
                log.warning(
                    "agentmetrics: cannot write %s (%s): keeping it in memory", self.path, e
                )
        if len(self.memory) >= self.limit:
            self.dropped += 1
            if self.dropped == 1:
                log.warning(
                    "agentmetrics: more than %d tracking writes waiting in memory: dropping"
                    " the next ones (see Monitor.dropped)",
                    self.limit,
                )
            return
        self.memory.append((kind, params))

    def replay(self, apply: Callable[[list[Write]], None]) -> int:
        """Give every kept write, in order, to ``apply``; forget each batch it returns from.

        Batches of at most BATCH writes keep each of ``apply``'s transactions short. If
        ``apply`` raises, that batch and the ones after it stay kept. Returns how many
        writes were applied.
        """
        with contextlib.ExitStack() as stack:
            stored: list[Write] = []
            journal = None
            if self.path is not None and os.path.exists(self.path):
                try:
                    journal = stack.enter_context(self._locked())
                except TimeoutError:
                    raise  # another process holds it: its writes must go first
                except OSError as e:
                    log.warning("agentmetrics: cannot open %s (%s)", self.path, e)
                else:
                    stored = self._parse(journal.read())
            writes = stored + list(self.memory)
            applied = 0
            try:
                while applied < len(writes):
                    batch = writes[applied : applied + BATCH]
                    apply(batch)
                    applied += len(batch)
            finally:
                self._forget(journal, stored, applied)
            return applied

    def _forget(self, journal: BinaryIO | None, stored: list[Write], applied: int) -> None:
        """Drop the first ``applied`` writes: the journal's, then those in memory."""
        for _ in range(max(0, applied - len(stored))):
            self.memory.popleft()
        rest = stored[applied:]
        if journal is not None:
            try:
                journal.truncate(0)
                _append(journal, rest)
            except OSError as e:
                self.dropped += len(rest)
                log.warning(
                    "agentmetrics: cannot rewrite %s (%s): lost %d", self.path, e, len(rest)
                )
        if not rest:
            self._added = False

    def save_memory(self) -> None:
        """Move the writes kept in memory to the journal, if it can be written now."""
        if not self.memory or self.path is None:
            return
        try:
            with self._locked() as journal:
                _append(journal, list(self.memory))
            self.memory.clear()
        except OSError as e:
            log.warning("agentmetrics: cannot write %s (%s)", self.path, e)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[BinaryIO]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        with os.fdopen(fd, "r+b", buffering=0) as journal:
            deadline = time.monotonic() + self.timeout
            while True:
                try:
                    fcntl.flock(journal, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{self.path} is locked by another process") from None
                    time.sleep(0.005)
            yield journal

    def _parse(self, data: bytes) -> list[Write]:
        writes = []
        for line in data.splitlines():
            try:
                entry = json.loads(line)
                kind, params = entry["kind"], entry["params"]
                if kind not in self.kinds or not isinstance(params, dict):
                    raise ValueError(kind)
            except (ValueError, KeyError, TypeError):
                # A line torn by a process killed while writing it, or not ours.
                if line.strip():
                    log.warning("agentmetrics: skipping an unreadable line in %s", self.path)
                continue
            writes.append((kind, params))
        return writes


def count_kept(database: str) -> int:
    """How many writes wait in the journal beside the ``database`` file (0 without one)."""
    try:
        with open(database + SUFFIX, "rb") as journal:
            return sum(1 for line in journal if line.strip())
    except OSError:
        return 0


def _append(journal: BinaryIO, writes: list[Write]) -> None:
    end = journal.seek(0, os.SEEK_END)
    data = "".join(json.dumps({"kind": k, "params": p}) + "\n" for k, p in writes).encode()
    if end:
        journal.seek(end - 1)
        if journal.read(1) != b"\n":
            data = b"\n" + data  # after a line torn by a process killed while writing it
    view = memoryview(data)
    try:
        while view:
            view = view[journal.write(view) :]
    except OSError:
        journal.truncate(end)  # no half line left behind (full disk)
        raise
