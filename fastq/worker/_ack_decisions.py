"""When the consumer sends its acks, and what each finished task asks of the broker: no I/O.

One file, two builds: the pure-Python consumer uses this module as it is; ``setup.py``
also compiles it with Cython as ``fastq._speedups._ack_decisions``, which the compiled
consumer (``fastq/_speedups/_consumer.pyx``) uses, so both take these decisions from the
same lines. Unit-tested with plain integers and a fake clock
(tests/unit/test_ack_decisions.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastq.execution import ACK, DEAD_LETTER, REQUEUE
from fastq.worker.pools.base import RELEASE

#: The actions the broker carries out one message at a time. The acks gathered before
#: one of them go out first, so the broker settles messages in the order they finished.
ONE_BY_ONE = (RELEASE, REQUEUE, DEAD_LETTER)


class AckBatch:
    """The delivery tags of finished tasks waiting to be acked together.

    They are due once ``size`` have gathered (or the broker's ``window``, when smaller: it
    delivers no more unacked messages than that, so waiting for more would stall) or the
    oldest has waited ``interval`` seconds, whichever comes first. Times are the caller's
    monotonic clock, passed in. The consumer stores the tasks' results before it sends
    the acks it takes from here, so an acked task always has its result.

    ``acked_early``: the type of the requests whose message was acked before they ran
    (``acks_late=False``); their completions have nothing left to settle.
    """

    __slots__ = ("size", "interval", "_early", "_tags", "_oldest")

    def __init__(self, size: int, interval: float, acked_early: type | None = None) -> None:
        self.size = max(1, size)
        self.interval = interval
        self._early = acked_early
        self._tags: list[Any] = []
        self._oldest = 0.0

    def __len__(self) -> int:
        return len(self._tags)

    def add(self, tag: Any, now: float) -> None:
        """Gather ``tag`` at time ``now``."""
        if not self._tags:
            self._oldest = now
        self._tags.append(tag)

    def limit(self, window: int | None = None) -> int:
        """How many to gather before sending: ``size``, or the broker's ``window`` when
        that is smaller (None: the broker has no window)."""
        return self.size if window is None else min(self.size, window)

    def due(self, now: float, window: int | None = None) -> bool:
        """Whether the gathered acks should go out at time ``now``."""
        tags = self._tags
        if not tags:
            return False
        return len(tags) >= self.limit(window) or now - self._oldest >= self.interval

    def take(self) -> list[Any]:
        """The gathered tags, oldest first; the batch starts empty again."""
        tags = self._tags
        self._tags = []
        return tags

    def settle(self, completions: Iterable[tuple], now: float) -> list[tuple]:
        """Take a pool's completions ``(request, action, argument)`` at time ``now``.

        The tags of ACKed tasks join the batch; early-acked requests and other actions
        are passed over. Returns the completions the broker settles one by one
        (``ONE_BY_ONE``), in order, each as ``(acks, request, action, argument)``:
        ``acks`` are the tags gathered before it, which have left the batch and are to
        be sent (results first) before it is carried out.
        """
        tags = self._tags
        early, ack = self._early, ACK  # locals: compiled, a global costs a lookup per task
        starts = not tags  # a batch begun during this call is due from ``now``
        one_by_one: list[tuple] = []
        for request, action, argument in completions:
            if type(request) is early:
                continue  # its ack went out before it ran
            if action is ack:
                tags.append(request.delivery.tag)
            elif action in ONE_BY_ONE:
                one_by_one.append((tags, request, action, argument))
                tags = self._tags = []
                starts = True
        if starts and tags:
            self._oldest = now
        return one_by_one
