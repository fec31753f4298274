"""Tracking writes that could not be stored yet, kept to be applied later.

They are kept beside the database, one JSON line each (``{"kind": ..., "params": ...}``)
in ``<database>.pending.jsonl``; when that file cannot be written either (read-only
folder, full disk), in a bounded queue in memory. An exclusive ``flock`` on the file
makes appending and replaying one at a time across processes.

A kept write that cannot be applied (a line torn by a process killed while writing it,
not ours, a value the database cannot take, a session taken or missing) is never dropped
silently: it is logged with its line number and moved to
``<database>.pending.rejected.jsonl``, one JSON object per line with ``line`` and
``reason``, then ``kind`` and ``params`` (so the line can be mended and appended to the
journal again) or, for a line that is no write, its ``text``.
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
from typing import Any, BinaryIO, NamedTuple

SUFFIX = ".pending.jsonl"
REJECTED_SUFFIX = ".pending.rejected.jsonl"
MEMORY_LIMIT = 10_000
# Other processes may add to the journal at any time: it is looked at this often.
CHECK_SECONDS = 0.1
BATCH = 500

log = logging.getLogger("agentmetrics")

Write = tuple[str, dict[str, Any]]
# Given a batch of writes, applies them in one transaction and returns why the ones it
# could not apply were refused, by their index in the batch.
Apply = Callable[[list[Write]], dict[int, str]]


class _Kept(NamedTuple):
    line: int | None  # its line in the journal; None: kept in memory
    raw: bytes  # that line as read, or the write as JSON
    write: Write | None  # None: the line is no write
    problem: str = ""  # why it is no write


class _Refused(NamedTuple):
    kept: _Kept
    reason: str


class PendingWrites:
    """The writes waiting for one database, in the order they were made.

    :param path: the journal file, or None to keep writes in memory only
    :param kinds: the statement kinds a journal line may name (others are rejected)
    :param timeout: seconds to wait for another process's lock on the journal
    :param limit: how many writes the memory queue holds; later ones are dropped
    """

    def __init__(
        self, path: str | None, kinds: set[str], timeout: float = 5.0, limit: int | None = None
    ) -> None:
        self.path = path
        self.rejected_path = None if path is None else _rejected_path(path)
        self.kinds = kinds
        self.timeout = timeout
        self.limit = MEMORY_LIMIT if limit is None else limit
        self.memory: deque[Write] = deque()
        self.dropped = 0  # lost: neither the journal nor the rejected file took them
        self.applied = 0
        self.rejected = 0  # moved to the rejected file
        self._added = False  # this process wrote to the journal since the last replay
        self._checked_at = -math.inf

    def __len__(self) -> int:
        kept = 0
        if self.path is not None:
            try:
                with open(self.path, "rb") as journal:
                    kept = sum(k.write is not None for k in self._parse(journal.read()))
            except OSError:
                pass  # no journal
        return len(self.memory) + kept

    def waiting(self, look: bool = False) -> bool:
        """Whether any write may be kept (cheap: at most one ``stat`` per CHECK_SECONDS,
        unless ``look``)."""
        if self.memory or self._added:
            return True
        now = time.monotonic()
        if self.path is None or (not look and now - self._checked_at < CHECK_SECONDS):
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
                    _append(journal, _lines([(kind, params)]))
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

    def replay(self, apply: Apply) -> int:
        """Give every kept write, in order, to ``apply``; forget each batch it returns from.

        Batches of at most BATCH writes keep each of ``apply``'s transactions short. What
        ``apply`` refuses, and every journal line that is no write, is moved to the
        rejected file. If ``apply`` raises, that batch and the ones after it stay kept
        (and if it raises at the first batch, the journal is left as it was). Returns
        how many writes were applied.
        """
        with contextlib.ExitStack() as stack:
            stored: list[_Kept] = []
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
            memory = [_Kept(None, _lines([w]), w) for w in self.memory]
            kept = [k for k in stored if k.write is not None] + memory
            refused = [_Refused(k, k.problem) for k in stored if k.write is None]
            done = applied = 0
            try:
                while done < len(kept):
                    batch = kept[done : done + BATCH]
                    reasons = apply([k.write for k in batch])
                    refused += [_Refused(batch[i], reason) for i, reason in reasons.items()]
                    applied += len(batch) - len(reasons)
                    done += len(batch)
            except BaseException:
                if done:
                    self._forget(journal, stored, kept[:done], refused)
                raise
            finally:
                self.applied += applied
            self._forget(journal, stored, kept, refused)
            return applied

    def _forget(
        self,
        journal: BinaryIO | None,
        stored: list[_Kept],
        done: list[_Kept],
        refused: list[_Refused],
    ) -> None:
        """Drop the writes ``done`` with; move those ``refused`` to the rejected file."""
        for _ in range(sum(k.line is None for k in done)):
            self.memory.popleft()
        stuck = set() if self._reject(refused) else {r.kept.line for r in refused}
        gone = ({k.line for k in done} | {r.kept.line for r in refused}) - stuck
        rest = [k for k in stored if k.line not in gone]
        if journal is not None and len(rest) < len(stored):
            try:
                journal.truncate(0)
                _append(journal, b"".join(k.raw + b"\n" for k in rest))
            except OSError as e:
                self.dropped += len(rest)
                log.warning(
                    "agentmetrics: cannot rewrite %s (%s): lost %d", self.path, e, len(rest)
                )
        if not rest:
            self._added = False

    def _reject(self, refused: list[_Refused]) -> bool:
        """Append ``refused`` to the rejected file and warn; whether they are kept there."""
        if not refused:
            return True
        refused = sorted(refused, key=lambda r: (r.kept.line is None, r.kept.line or 0))
        records = b"".join(_record(r) for r in refused)
        try:
            if self.rejected_path is None:
                raise OSError("no file to keep them in")
            fd = os.open(self.rejected_path, os.O_RDWR | os.O_CREAT, 0o644)
            with os.fdopen(fd, "r+b", buffering=0) as file:
                _append(file, records)
        except OSError as e:
            log.warning(
                "agentmetrics: %d kept tracking writes cannot be applied, nor moved to %s (%s): %s",
                len(refused),
                self.rejected_path,
                e,
                records.decode(),
            )
            # A journal line stays in the journal; one kept in memory is lost.
            self.dropped += sum(r.kept.line is None for r in refused)
            return False
        self.rejected += len(refused)
        for r in refused:
            log.warning(
                "agentmetrics: %s cannot be applied, moved to %s: %s",
                _where(r.kept.line, self.path),
                self.rejected_path,
                r.reason,
            )
        return True

    def save_memory(self) -> None:
        """Move the writes kept in memory to the journal, if it can be written now."""
        if not self.memory or self.path is None:
            return
        try:
            with self._locked() as journal:
                _append(journal, _lines(list(self.memory)))
            self.memory.clear()
        except OSError as e:
            log.warning("agentmetrics: cannot write %s (%s)", self.path, e)

    def drop_memory(self) -> int:
        """Count the writes still in memory as dropped and forget them; how many."""
        lost = len(self.memory)
        self.dropped += lost
        self.memory.clear()
        return lost

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

    def _parse(self, data: bytes) -> list[_Kept]:
        """The journal's lines, numbered from 1; ``write`` is None for one that is no write
        (torn by a process killed while writing it, or not ours)."""
        lines = []
        for number, raw in enumerate(data.split(b"\n"), 1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
            except (ValueError, RecursionError):
                lines.append(_Kept(number, raw, None, "not JSON (torn by a killed process?)"))
                continue
            try:
                kind, params = entry["kind"], entry["params"]
                if kind in self.kinds and isinstance(params, dict):
                    lines.append(_Kept(number, raw, (kind, params)))
                    continue
            except (KeyError, TypeError):
                pass
            lines.append(_Kept(number, raw, None, "not a tracking write"))
        return lines


def count_kept(database: str) -> int:
    """How many lines wait in the journal beside the ``database`` file (0 without one)."""
    try:
        with open(database + SUFFIX, "rb") as journal:
            return sum(1 for line in journal if line.strip())
    except OSError:
        return 0


def _rejected_path(journal: str) -> str:
    """``m.db.pending.rejected.jsonl`` beside ``m.db.pending.jsonl``."""
    return journal.removesuffix(SUFFIX) + REJECTED_SUFFIX


def _lines(writes: list[Write]) -> bytes:
    return "".join(json.dumps({"kind": k, "params": p}) + "\n" for k, p in writes).encode()


def _record(refused: _Refused) -> bytes:
    """One line of the rejected file: where and why, then the write or the line's text."""
    kept = refused.kept
    record: dict[str, Any] = {"line": kept.line, "reason": refused.reason}
    if kept.write is not None:
        record |= {"kind": kept.write[0], "params": kept.write[1]}
    else:
        record["text"] = kept.raw.decode("utf-8", "surrogateescape")  # bytes kept exactly
    return (json.dumps(record) + "\n").encode()


def _where(line: int | None, journal: str | None) -> str:
    return "a write kept in memory" if line is None else f"line {line} of {journal}"


def _append(file: BinaryIO, data: bytes) -> None:
    end = file.seek(0, os.SEEK_END)
    if end:
        file.seek(end - 1)
        if file.read(1) != b"\n":
            data = b"\n" + data  # after a line torn by a process killed while writing it
    view = memoryview(data)
    try:
        while view:
            view = view[file.write(view) :]
    except OSError:
        file.truncate(end)  # no half line left behind (full disk)
        raise
