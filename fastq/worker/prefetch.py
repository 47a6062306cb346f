"""The prefetch window: how many messages a consumer holds for its pool, fixed by
``worker_prefetch_multiplier`` or, when that is not set, sized from how long tasks take.

A deep window makes short tasks fast (one broker round trip brings hundreds of them) and
strands messages behind a long one (they wait for it while another worker idles). The
adaptive window holds about ``HELD_WORK_SECONDS`` of work per slot, or four broker round
trips' worth on a slow broker: no-op tasks get the full ``MAX_PER_SLOT``, 1 ms tasks about
a hundred, and tasks of a tenth of a second or longer one message per slot (nothing held
ahead, like ``worker_prefetch_multiplier=0``). It starts at one per slot, because the first
task tells nothing yet, and moves in powers of two with some hysteresis, because a change
costs a consumer restart on RabbitMQ (basic.qos applies to new consumers only).
"""

from __future__ import annotations

#: Seconds of work a slot may hold, counting its running task.
HELD_WORK_SECONDS = 0.1
#: Round trips of the broker a slot's window should cover, so a slow broker (SQS) does
#: not leave the pool waiting on every fetch.
ROUND_TRIPS_COVERED = 4
#: The deepest adaptive window per slot; deeper measured no faster.
MAX_PER_SLOT = 256
#: The deepest adaptive window of a whole pool (threads -c 100 would hold 25,600).
MAX_WINDOW = 1024
#: Weight of the newest measurement in the running estimates.
SMOOTHING = 0.5


def _power_of_two_at_most(value: float) -> int:
    power = 1
    while power * 2 <= value:
        power *= 2
    return power


class PrefetchWindow:
    """The window of a consumer with ``slots`` tasks running at once.

    ``multiplier`` fixes it at ``multiplier`` messages per slot (0 means one: a message is
    taken only when a slot is free); ``None`` makes it adaptive. The consumer reads
    ``limit`` before each fetch and reports what it measured with ``ran`` and ``fetched``.
    """

    __slots__ = ("slots", "adaptive", "multiplier", "limit", "task_seconds", "fetch_seconds")

    def __init__(self, slots: int, multiplier: int | None) -> None:
        self.slots = max(1, slots)
        self.adaptive = multiplier is None
        self.multiplier = 1 if multiplier is None else max(1, multiplier)
        #: the most messages to hold at once, those running included
        self.limit = self.slots * self.multiplier
        #: the estimated seconds a task keeps a slot busy (None before the first)
        self.task_seconds: float | None = None
        #: the estimated seconds of a fetch that brought messages
        self.fetch_seconds = 0.0

    @property
    def per_slot(self) -> int:
        return max(1, self.limit // self.slots)

    def resize(self, slots: int) -> None:
        """The pool now runs ``slots`` tasks at once (``pool_grow``/``pool_shrink``): the
        same depth per slot, over the new number of slots."""
        per_slot = self.per_slot if self.adaptive else self.multiplier
        self.slots = max(1, slots)
        self.limit = self.slots * per_slot
        if self.adaptive:
            self.limit = max(self.slots, min(self.limit, MAX_WINDOW))

    def fetched(self, seconds: float) -> None:
        """A fetch that brought messages took ``seconds``."""
        if self.adaptive:
            self.fetch_seconds += SMOOTHING * (seconds - self.fetch_seconds)

    def ran(self, tasks: int, slot_seconds: float) -> None:
        """``tasks`` finished, having kept slots busy ``slot_seconds`` in all."""
        if not self.adaptive or tasks <= 0:
            return
        sample = slot_seconds / tasks
        estimate = self.task_seconds
        estimate = sample if estimate is None else estimate + SMOOTHING * (sample - estimate)
        self.task_seconds = estimate
        held = max(HELD_WORK_SECONDS, ROUND_TRIPS_COVERED * self.fetch_seconds)
        fits = held / max(estimate, 1e-9)  # messages per slot holding that much work
        current = self.per_slot
        # grow as soon as more fits; shrink only once clearly less does, so an estimate
        # wavering near a power of two does not restart the consumers back and forth
        if fits >= 2 * current or fits < current / 2:
            per_slot = min(MAX_PER_SLOT, _power_of_two_at_most(fits))
            self.limit = max(self.slots, min(per_slot * self.slots, MAX_WINDOW))
