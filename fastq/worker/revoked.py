"""The task ids a worker has been told not to run: a bounded, expiring set, kept across
restarts in the ``--statedb`` file.

The control listener (``worker/control.py``) adds the ids of revoke requests; the
consumer tests each task once when it receives it and once more just before it runs,
so a task already prefetched is caught too.

The state file is JSON, ``{"version": 1, "revoked": {task id: unix time revoked}}``,
written whole to a temporary file and renamed over the old one, so a crash mid-write
leaves the previous state.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import orjson

logger = logging.getLogger("fastq.worker")

#: The state file's format; a file of another version is ignored with a warning.
STATE_VERSION = 1

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
        #: stamp name -> the values that revoke (``revoke_by_stamped_headers``); empty
        #: unless asked, and the consumer tests a delivery's stamps only when it is not
        self.stamps: dict[str, set] = {}
        #: counts the updates, so a state file is rewritten only when something changed
        self.updates = 0
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
            self.updates += 1

    def add_stamps(self, headers: Any) -> dict[str, set]:
        """Revoke the tasks stamped with ``headers`` (name -> value or values; Celery
        also accepts ``["name=value", ...]``); the stamps revoked, all of them."""
        if isinstance(headers, (list, tuple)):
            headers = dict(str(item).split("=", 1) for item in headers)
        for name, values in (headers or {}).items():
            values = values if isinstance(values, (list, tuple, set)) else [values]
            # a new set swapped in, never one changed: the consumer reads without the lock
            self.stamps[name] = {*self.stamps.get(name, ()), *values}
        return self.stamps

    def stamped(self, headers: dict) -> bool:
        """Whether a task with these message headers carries a revoked stamp."""
        stamps = headers.get("stamps") or {}
        for name in headers.get("stamped_headers") or ():
            wanted = self.stamps.get(name)
            if not wanted:
                continue
            value = stamps.get(name)
            for item in value if isinstance(value, (list, tuple)) else (value,):
                try:
                    if item in wanted:
                        return True
                except TypeError:  # an unhashable stamp revokes nothing
                    continue
        return False

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


def load_state(path: str, revoked: RevokedSet) -> int:
    """Add the revoked ids kept in ``path`` (``--statedb``) to ``revoked``; how many.

    A missing file is a first start; an unreadable or corrupt one costs one warning and
    the worker starts without it, as it would with no state.
    """
    try:
        with open(path, "rb") as fh:
            state = orjson.loads(fh.read())
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a fastq state file of version {STATE_VERSION}")
        kept = {str(task_id): float(at) for task_id, at in state["revoked"].items()}
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        logger.warning("cannot read the worker state file %s (%s): starting without the "
                       "revoked ids it kept; it is rewritten at the next save", path, exc)
        return 0
    before = len(revoked)
    for task_id, at in sorted(kept.items(), key=lambda item: item[1]):
        revoked.add(task_id, at)
    return len(revoked) - before


def save_state(path: str, revoked: RevokedSet) -> None:
    """Write ``revoked``'s ids to ``path``, atomically (a temporary file renamed)."""
    revoked.prune()
    with revoked._lock:
        entries = dict(revoked.ids)
    tmp = f"{path}.tmp"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(orjson.dumps({"version": STATE_VERSION, "revoked": entries}))
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("cannot write the worker state file %s (%s): revoked ids since the "
                       "last save are lost if the worker restarts", path, exc)


__all__ = ["RevokedSet", "load_state", "save_state", "DEFAULT_REVOKES_MAX",
           "DEFAULT_REVOKE_EXPIRES"]
