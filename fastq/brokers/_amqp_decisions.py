"""Decisions of the AMQP broker kept apart from I/O: which acks to send, prefetch, backoff.

Everything here works on plain integers so it is unit-tested with lists of ints
(tests/unit/test_amqp_ack_tracker.py); the broker only carries out what it is told.
"""

from __future__ import annotations

from collections.abc import Iterable


class AckTracker:
    """The delivery tags of one channel that are delivered and not yet settled.

    AMQP's ``multiple=True`` settles *every* outstanding tag up to the one given, so it
    may only be used when the tags being settled are exactly the outstanding tags up to
    their maximum; otherwise a task still running would be acked with the others.
    """

    __slots__ = ("_outstanding",)

    def __init__(self) -> None:
        self._outstanding: set[int] = set()

    def __len__(self) -> int:
        return len(self._outstanding)

    def __contains__(self, tag: object) -> bool:
        return tag in self._outstanding

    def delivered(self, tags: Iterable[int]) -> None:
        """Record tags the broker just delivered."""
        self._outstanding.update(tags)

    def count_above(self, boundary: int) -> int:
        """How many outstanding tags are greater than ``boundary``."""
        return sum(1 for tag in self._outstanding if tag > boundary)

    def discard(self, tag: int) -> bool:
        """Forget one tag settled by other means; False when it was not outstanding."""
        if tag in self._outstanding:
            self._outstanding.discard(tag)
            return True
        return False

    def forget(self) -> None:
        """Forget every tag: the channel is gone, its tags mean nothing on the next one."""
        self._outstanding.clear()

    def settle(self, tags: Iterable[int]) -> tuple[int | None, list[int]]:
        """Plan the frames that settle ``tags`` and stop tracking them.

        Returns:
            ``(upto, singles)``: when ``upto`` is not None, send one frame with
            ``multiple=True`` for it (``singles`` is then empty); otherwise send one
            frame per tag in ``singles`` (ascending). Tags not outstanding (already
            settled, or from an earlier channel) are left out.
        """
        outstanding = self._outstanding
        known = sorted({tag for tag in tags if tag in outstanding})
        if not known:
            return None, []
        top = known[-1]
        outstanding.difference_update(known)
        # any outstanding tag left below the top would be swept up by multiple=True
        if len(known) > 1 and not any(tag < top for tag in outstanding):
            return top, []
        return None, known


def plan_prefetch(held_since_subscribe: int, limit: int, current: int) -> int | None:
    """The prefetch to re-subscribe with before a fetch of ``limit``, or None to carry on.

    RabbitMQ applies basic.qos (per consumer) only to consumers started after it, and a
    consumer stops receiving once it holds ``prefetch`` unacked deliveries. ``fetch(limit)``
    promises up to ``limit`` *more* however many the caller still holds unacked, so when
    the deliveries held since the consumers started fill the window, or the limit
    changed, the consumers are restarted with a prefetch of ``limit``. A worker that acks
    as it goes never fills the window and never restarts its consumers.
    """
    if current != limit or held_since_subscribe >= current:
        return max(1, limit)
    return None


class Backoff:
    """Delays between reconnect attempts: ``initial`` seconds doubling up to ``maximum``."""

    __slots__ = ("initial", "maximum", "delay", "next_attempt")

    def __init__(self, initial: float = 0.1, maximum: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.delay = initial
        self.next_attempt = 0.0

    def due(self, now: float) -> bool:
        """Whether an attempt may be made at monotonic time ``now``."""
        return now >= self.next_attempt

    def failed(self, now: float) -> float:
        """Record a failed attempt at ``now``; the delay until the next one."""
        delay = self.delay
        self.next_attempt = now + delay
        self.delay = min(delay * 2, self.maximum)
        return delay

    def succeeded(self) -> None:
        self.delay = self.initial
        self.next_attempt = 0.0
