"""The task ids a worker has been told not to run: a bounded, expiring set.

The control listener (``worker/control.py``) adds the ids of revoke requests; the
consumer tests each task once when it receives it and once more just before it runs,
so a task already prefetched is caught too.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable

#: Revoked task ids a worker remembers (Celery's ``REVOKES_MAX``).
DEFAULT_REVOKES_MAX = 50_000
#: Seconds a worker remembers a revoked id (Celery's ``REVOKE_EXPIRES``, 3 hours).
DEFAULT_REVOKE_EXPIRES = 10_800.0


class RevokedSet:
    """Task ids revoked recently: at most ``maxlen``, each kept ``expires`` seconds.

    The listener adds and prunes; the consumer tests ``task_id in revoked.ids`` (a dict
    lookup, safe while the listener writes, without the Python call ``in revoked`` costs:
    about 40 ns against 100 ns here).
    """

    def __init__(self, maxlen: int = DEFAULT_REVOKES_MAX,
                 expires: float = DEFAULT_REVOKE_EXPIRES) -> None:
        self.maxlen = max(1, int(maxlen))
        self.expires = float(expires)
        #: task id -> unix time it was revoked, oldest first; read-only outside this class
        self.ids: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self):
        return iter(list(self.ids))

    def add(self, task_id: str, revoked_at: float | None = None) -> None:
        self.update((task_id,), revoked_at)

    def update(self, task_ids: Iterable[str], revoked_at: float | None = None) -> None:
        now = time.time()
        at = now if revoked_at is None else revoked_at
        if at < now - self.expires:
            return  # already forgotten everywhere else
        with self._lock:
            entries = self.ids
            for task_id in task_ids:
                entries[task_id] = at
                entries.move_to_end(task_id)
            while len(entries) > self.maxlen:
                entries.popitem(last=False)

    def prune(self, now: float | None = None) -> int:
        """Forget ids revoked more than ``expires`` seconds ago; return how many."""
        cutoff = (time.time() if now is None else now) - self.expires
        dropped = 0
        with self._lock:
            entries = self.ids
            while entries:
                oldest = next(iter(entries))
                if entries[oldest] >= cutoff:
                    break
                del entries[oldest]
                dropped += 1
        return dropped


__all__ = ["RevokedSet", "DEFAULT_REVOKES_MAX", "DEFAULT_REVOKE_EXPIRES"]
