"""An in-process broker for tests and single-process apps: ``memory://NAME``."""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from ..protocol import Message
from ._mailbox import Mailbox
from .base import Broker, Delivery


class _Entry:
    """One stored message and what the broker knows about its deliveries."""

    __slots__ = ("headers", "properties", "body", "queue", "priority", "not_before", "seq",
                 "redeliveries")

    def __init__(self, headers: dict, properties: dict, body: bytes, queue: str, priority: int,
                 not_before: float, seq: int) -> None:
        self.headers = headers
        self.properties = properties
        self.body = body
        self.queue = queue
        self.priority = priority
        self.not_before = not_before
        self.seq = seq
        self.redeliveries = 0


class _Queue:
    """Unclaimed messages of one queue: due ones by priority then age, the rest by due time."""

    __slots__ = ("ready", "delayed")

    def __init__(self) -> None:
        self.ready: list[tuple[int, int, _Entry]] = []  # (-priority, seq, entry)
        self.delayed: list[tuple[float, int, _Entry]] = []  # (not_before, seq, entry)

    def push(self, entry: _Entry, now: float) -> None:
        if entry.not_before > now:
            heapq.heappush(self.delayed, (entry.not_before, entry.seq, entry))
        else:
            heapq.heappush(self.ready, (-entry.priority, entry.seq, entry))

    def promote(self, now: float) -> None:
        """Move the delayed messages that have come due to the ready heap."""
        delayed = self.delayed
        while delayed and delayed[0][0] <= now:
            entry = heapq.heappop(delayed)[2]
            heapq.heappush(self.ready, (-entry.priority, entry.seq, entry))

    def __len__(self) -> int:
        return len(self.ready) + len(self.delayed)


class _State:
    """Everything behind one ``memory://`` URL, shared by every broker on that URL."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.queues: dict[str, _Queue] = {}
        self.unacked: dict[int, _Entry] = {}
        self.dead: list[dict] = []
        self.seqs = itertools.count()
        self.tags = itertools.count(1)
        #: remote control requests, oldest first: (number, sent_at, command)
        self.control: list[tuple[int, float, dict]] = []
        self.control_numbers = itertools.count(1)

    def queue(self, name: str) -> _Queue:
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = _Queue()
        return queue


_states: dict[str, _State] = {}
_states_lock = threading.Lock()


def _shared_state(url: str) -> _State:
    name = url.split("://", 1)[1] if "://" in url else ""
    with _states_lock:
        state = _states.get(name)
        if state is None:
            state = _states[name] = _State()
        return state


class MemoryBroker(Broker):
    """Queues in this process's memory; every instance on the same URL sees the same queues.

    Nothing survives the process, and ``close()`` keeps the state so that a producer and
    a worker thread holding different instances keep talking to each other.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset({"delay", "priority", "dead_letter",
                                                        "control"})

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._state = _shared_state(url)

    def declare(self, queue: str, **arguments: Any) -> None:
        with self._state.lock:
            self._state.queue(queue)

    def _publish(self, messages: Sequence[Message]) -> None:
        state = self._state
        now = time.time()
        with state.lock:
            for message in messages:
                # copies: a producer reusing its dicts must not change what was sent
                entry = _Entry(dict(message.headers), dict(message.properties),
                               bytes(message.body), message.queue, message.priority,
                               message.not_before or 0.0, next(state.seqs))
                state.queue(message.queue).push(entry, now)
            state.changed.notify_all()

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        if limit <= 0:
            return []
        state = self._state
        deadline = time.monotonic() + max(timeout, 0.0)
        with state.lock:
            while True:
                now = time.time()
                entries = self._take(queues, limit, now)
                if entries:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                next_due = self._next_due(queues)
                if next_due is not None:
                    left = min(left, max(next_due - now, 0.0))
                state.changed.wait(left)
            deliveries = []
            for entry in entries:
                tag = next(state.tags)
                state.unacked[tag] = entry
                # fresh dicts per delivery, as a broker decoding from the wire would give
                deliveries.append(Delivery(tag, dict(entry.headers), dict(entry.properties),
                                           entry.body, entry.queue, entry.redeliveries))
            return deliveries

    def _take(self, queues: Sequence[str], limit: int, now: float) -> list[_Entry]:
        """Pop up to ``limit`` due entries across ``queues``, best first; lock held."""
        candidates = []
        for name in dict.fromkeys(queues):
            queue = self._state.queues.get(name)
            if queue is not None:
                queue.promote(now)
                if queue.ready:
                    candidates.append(queue.ready)
        taken: list[_Entry] = []
        while candidates and len(taken) < limit:
            # seqs are unique across the state, so comparing heads never reaches the entries
            best = min(candidates, key=lambda heap: heap[0][:2])
            taken.append(heapq.heappop(best)[2])
            if not best:
                candidates.remove(best)
        return taken

    def _next_due(self, queues: Sequence[str]) -> float | None:
        due = [q.delayed[0][0] for name in queues
               if (q := self._state.queues.get(name)) is not None and q.delayed]
        return min(due) if due else None

    def ack_many(self, tags: Iterable[Any]) -> None:
        with self._state.lock:
            unacked = self._state.unacked
            for tag in tags:
                unacked.pop(tag, None)

    def release_many(self, tags: Iterable[Any]) -> None:
        state = self._state
        with state.lock:
            now = time.time()
            for tag in tags:
                entry = state.unacked.pop(tag, None)
                if entry is not None:
                    state.queue(entry.queue).push(entry, now)
            state.changed.notify_all()

    def reject(self, tag: Any, requeue: bool) -> None:
        if not requeue:
            self.dead_letter(tag, "rejected")
            return
        state = self._state
        with state.lock:
            entry = state.unacked.pop(tag, None)
            if entry is not None:
                entry.redeliveries += 1
                state.queue(entry.queue).push(entry, time.time())
                state.changed.notify_all()

    def defer(self, delivery: Delivery, not_before: float) -> None:
        state = self._state
        with state.lock:
            entry = state.unacked.pop(delivery.tag, None)
            if entry is None:
                return
            entry.not_before = not_before
            # it queues behind what arrived meanwhile, like a republished copy would
            entry.seq = next(state.seqs)
            state.queue(entry.queue).push(entry, time.time())
            state.changed.notify_all()

    def dead_letter(self, tag: Any, reason: str) -> None:
        state = self._state
        with state.lock:
            entry = state.unacked.pop(tag, None)
            if entry is not None:
                state.dead.append({
                    "queue": entry.queue, "reason": reason, "headers": entry.headers,
                    "properties": entry.properties, "body": entry.body,
                    "dead_lettered_at": time.time(),
                })

    def purge(self, queue: str) -> int:
        """Delete the unclaimed messages of ``queue``, delayed ones included; return how many."""
        with self._state.lock:
            stored = self._state.queues.get(queue)
            if stored is None:
                return 0
            count = len(stored)
            stored.ready.clear()
            stored.delayed.clear()
            return count

    def queue_sizes(self) -> dict[str, int]:
        """Unclaimed messages per queue, those waiting for their ``not_before`` included."""
        with self._state.lock:
            return {name: len(queue) for name, queue in self._state.queues.items()}

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[dict]:
        with self._state.lock:
            found = []
            for record in reversed(self._state.dead):
                if len(found) >= limit:
                    break
                if queue is None or record["queue"] == queue:
                    found.append(dict(record, headers=dict(record["headers"]),
                                      properties=dict(record["properties"])))
            return found

    def retry_dead_letter(self, queue: str, task_id: str) -> bool:
        with self._state.lock:
            for index, record in enumerate(self._state.dead):
                if record["queue"] == queue and record["headers"].get("id") == task_id:
                    del self._state.dead[index]
                    break
            else:
                return False
        self.publish_many([Message(record["headers"], record["properties"], record["body"],
                                   queue=queue)])
        return True

    def mailbox(self, expires: float) -> MemoryMailbox:
        return MemoryMailbox(self, expires)


class MemoryMailbox(Mailbox):
    """Control requests in the broker's shared state: seen by every broker on its URL in
    this process, kept ``expires`` seconds for workers that start later."""

    broker: MemoryBroker

    def __init__(self, broker: MemoryBroker, expires: float) -> None:
        super().__init__(broker, expires)
        self._state = broker._state
        self._last = 0

    def send(self, command: dict) -> None:
        state = self._state
        now = time.time()
        with state.lock:
            requests = state.control
            # as short as the workers' memory of revokes
            while requests and requests[0][1] < now - self.expires:
                requests.pop(0)
            requests.append((next(state.control_numbers), now, command))

    def open(self, node: str) -> list[tuple[dict, float]]:
        cutoff = time.time() - self.expires
        with self._state.lock:
            requests = list(self._state.control)
        self._last = requests[-1][0] if requests else 0
        return [(command, sent_at) for _n, sent_at, command in requests if sent_at >= cutoff]

    def receive(self, timeout: float) -> list[dict]:
        time.sleep(timeout)
        last = self._last
        with self._state.lock:
            new = [(n, command) for n, _sent_at, command in self._state.control if n > last]
        if new:
            self._last = new[-1][0]
        return [command for _n, command in new]
