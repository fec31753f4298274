"""Write batches sized by time, so other writers waiting for the lock wait little.

Each commit has a fixed cost, so larger batches write faster in total; a batch that
holds the write lock too long makes every tracker behind it wait. :class:`BatchSize`
grows batches while they are quick and shrinks them when they are slow.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

# SQLite's busy handler retries a writer waiting for the lock after 1, 2, 5, 10 ... ms,
# then every 100 ms once it has waited a quarter of a second.
RETRY_SECONDS = 0.1


def rest(held_seconds: float) -> None:
    """Leave the write lock free after a write transaction that held it ``held_seconds``,
    before the next one of a run: as long again, up to :data:`RETRY_SECONDS`.

    A writer that takes the lock back at once lets waiting writers in only when one
    of their retries happens to fall in the instant between two transactions: a
    tracker call waited through a whole cleanup (seconds) that way. A free lock for
    as long as it was held lets each retry in at least every other time, and a gap of
    100 ms catches every waiter's next retry.
    """
    time.sleep(min(held_seconds, RETRY_SECONDS))


class BatchSize:
    """The size of the next batch: from ``initial`` up to ``initial * max_growth``.

    Time each batch with :meth:`timed`: one that held the lock under half of
    ``target_seconds`` doubles the next size, one over ``target_seconds`` halves it.
    With ``rests``, each batch is followed by a :func:`rest` (for runs of batches with
    no other work between them).
    """

    def __init__(
        self, initial: int, target_seconds: float, max_growth: int = 64, rests: bool = False
    ) -> None:
        self.initial = self.size = initial
        self.target_seconds = target_seconds
        self.max_growth = max_growth
        self.rests = rests

    @contextlib.contextmanager
    def timed(self) -> Iterator[int]:
        """Time the batch run inside the block; yields the size it should have."""
        started = time.perf_counter()
        yield self.size
        seconds = time.perf_counter() - started
        self.update(seconds)
        if self.rests:
            rest(seconds)

    def update(self, seconds: float) -> None:
        if seconds < self.target_seconds / 2:
            self.size = min(self.size * 2, self.initial * self.max_growth)
        elif seconds > self.target_seconds:
            self.size = max(self.size // 2, self.initial)
