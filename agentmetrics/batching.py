"""Write batches sized by time, so other writers waiting for the lock wait little.

Each commit has a fixed cost, so larger batches write faster in total; a batch that
holds the write lock too long makes every tracker behind it wait. :class:`BatchSize`
grows batches while they are quick and shrinks them when they are slow.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class BatchSize:
    """The size of the next batch: from ``initial`` up to ``initial * max_growth``.

    Time each batch with :meth:`timed`: one that held the lock under half of
    ``target_seconds`` doubles the next size, one over ``target_seconds`` halves it.
    """

    def __init__(self, initial: int, target_seconds: float, max_growth: int = 64) -> None:
        self.initial = self.size = initial
        self.target_seconds = target_seconds
        self.max_growth = max_growth

    @contextlib.contextmanager
    def timed(self) -> Iterator[int]:
        """Time the batch run inside the block; yields the size it should have."""
        started = time.perf_counter()
        yield self.size
        self.update(time.perf_counter() - started)

    def update(self, seconds: float) -> None:
        if seconds < self.target_seconds / 2:
            self.size = min(self.size * 2, self.initial * self.max_growth)
        elif seconds > self.target_seconds:
            self.size = max(self.size // 2, self.initial)
