"""An in-process result store for tests and single-process apps: ``memory://NAME``."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from ..exceptions import ResultTimeout
from ..states import PENDING, READY_STATES, SUCCESS
from .base import (
    CHORD_CLAIM_SECONDS,
    CHORD_DONE_SECONDS,
    Backend,
    chord_claimable,
)


class _Store:
    """The documents behind one ``memory://`` URL: task id -> (state, document, expires_at)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.documents: dict[str, tuple[str, bytes, float | None]] = {}
        #: group id -> (document, expires_at)
        self.groups: dict[str, tuple[bytes, float | None]] = {}
        #: chord group id -> its join state; the lock makes each step atomic
        self.chords: dict[str, _Chord] = {}

    def lookup(self, task_id: str, now: float) -> tuple[str, bytes, float | None] | None:
        """The unexpired record of ``task_id``; lock held."""
        record = self.documents.get(task_id)
        if record is None or (record[2] is not None and record[2] < now):
            return None
        return record


class _Chord:
    """One chord run: its size, members by (task id, index), the claim or "done"."""

    __slots__ = ("size", "entries", "claim", "claim_until", "expires_at")

    def __init__(self) -> None:
        self.size: int | None = None
        #: (task id, index) -> (sort key, entry)
        self.entries: dict[tuple[str, str], tuple[float, bytes]] = {}
        #: the claimer's token, or "done" once the body is sent
        self.claim: str | None = None
        self.claim_until = 0.0
        self.expires_at: float | None = None


_stores: dict[str, _Store] = {}
_stores_lock = threading.Lock()


def _shared_store(url: str) -> _Store:
    name = url.split("://", 1)[1] if "://" in url else ""
    with _stores_lock:
        store = _stores.get(name)
        if store is None:
            store = _stores[name] = _Store()
        return store


class MemoryBackend(Backend):
    """Results in this process's memory, shared by every instance on the same URL.

    ``wait`` sleeps on a condition that each write notifies instead of polling.
    """

    capabilities = frozenset({"groups", "chords"})

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._store = _shared_store(url)

    def _get_many(self, task_ids: Sequence[str]) -> dict[str, bytes]:
        store = self._store
        now = time.time()
        found = {}
        with store.lock:
            for task_id in task_ids:
                record = store.lookup(task_id, now)
                if record is not None:
                    found[task_id] = record[1]
        return found

    def _set_many(self, items: Sequence[tuple[str, str, bytes]], expires_at: float | None) -> None:
        store = self._store
        now = time.time()
        with store.lock:
            documents = store.documents
            for task_id, state, document in items:
                current = store.lookup(task_id, now)
                if current is not None and current[0] == SUCCESS:
                    continue
                documents[task_id] = (state, document, expires_at)
            store.changed.notify_all()

    def _delete(self, task_id: str) -> None:
        with self._store.lock:
            self._store.documents.pop(task_id, None)

    def _cleanup(self, now: float) -> int:
        with self._store.lock:
            documents, groups = self._store.documents, self._store.groups
            expired = [task_id for task_id, (_s, _d, expires_at) in documents.items()
                       if expires_at is not None and expires_at < now]
            for task_id in expired:
                del documents[task_id]
            expired_groups = [group_id for group_id, (_d, expires_at) in groups.items()
                              if expires_at is not None and expires_at < now]
            for group_id in expired_groups:
                del groups[group_id]
            chords = self._store.chords
            for group_id in [g for g, chord in chords.items()
                             if chord.expires_at is not None and chord.expires_at < now]:
                del chords[group_id]
            return len(expired) + len(expired_groups)

    def _get_group(self, group_id: str) -> bytes | None:
        with self._store.lock:
            record = self._store.groups.get(group_id)
        if record is None or (record[1] is not None and record[1] < time.time()):
            return None
        return record[0]

    def _set_group(self, group_id: str, document: bytes, expires_at: float | None) -> None:
        with self._store.lock:
            self._store.groups[group_id] = (document, expires_at)

    def _delete_group(self, group_id: str) -> None:
        with self._store.lock:
            self._store.groups.pop(group_id, None)

    def _chord(self, group_id: str, now: float) -> _Chord:
        """The live chord ``group_id``, made when missing or expired; lock held."""
        chord = self._store.chords.get(group_id)
        if chord is None or (chord.expires_at is not None and chord.expires_at < now):
            chord = self._store.chords[group_id] = _Chord()
        return chord

    def _chord_set_size(self, group_id: str, size: int, expires_at: float | None) -> None:
        with self._store.lock:
            chord = self._chord(group_id, time.time())
            chord.size, chord.claim, chord.expires_at = size, None, expires_at

    def _chord_add(self, group_id: str, task_id: str, index: str, entry: bytes, token: str,
                   expires_at: float | None) -> bool:
        now = time.time()
        with self._store.lock:
            chord = self._chord(group_id, now)
            if chord.claim == "done":
                return False
            chord.entries.setdefault((task_id, index), (float(index), entry))
            chord.expires_at = expires_at
            if not chord_claimable(chord.size, len(chord.entries), chord.claim,
                                   chord.claim_until, token, now):
                return False
            chord.claim, chord.claim_until = token, now + CHORD_CLAIM_SECONDS
            return True

    def _chord_entries(self, group_id: str) -> list[bytes]:
        with self._store.lock:
            chord = self._store.chords.get(group_id)
            entries = [] if chord is None else sorted(chord.entries.values(),
                                                      key=lambda item: item[0])
        return [entry for _key, entry in entries]

    def _chord_finish(self, group_id: str, token: str) -> bool:
        with self._store.lock:
            chord = self._store.chords.get(group_id)
            if chord is None or chord.claim != token:
                return False
            chord.entries.clear()
            chord.size, chord.claim = None, "done"
            chord.expires_at = time.time() + CHORD_DONE_SECONDS
            return True

    def wait(self, task_id: str, timeout: float | None = None,
             interval: float | None = None) -> dict:
        """Block until ``task_id`` reaches a ready state and return its meta document.

        ``interval`` is accepted for the interface and unused: writes wake the waiter.

        Raises:
            ResultTimeout: ``timeout`` seconds passed first.
        """
        store = self._store
        deadline = None if timeout is None else time.monotonic() + timeout
        with store.changed:
            while True:
                record = store.lookup(task_id, time.time())
                state = PENDING if record is None else record[0]
                if record is not None and state in READY_STATES:
                    document = record[1]
                    break
                if deadline is None:
                    store.changed.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ResultTimeout(f"task {task_id} is still {state} after {timeout}s")
                store.changed.wait(left)
        return self._read_meta(document)
