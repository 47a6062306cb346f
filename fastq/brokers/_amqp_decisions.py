"""Decisions of the AMQP broker and its drivers kept apart from I/O: acks, prefetch, confirms.

Everything here works on plain integers so it is unit-tested with lists of ints
(tests/unit/test_amqp_ack_tracker.py, tests/unit/test_amqp_confirms.py); the broker and
both drivers (rabbitmq-c in ``fastq/_speedups/_amqp.pyx``, py-amqp in ``_amqp_py.py``)
only carry out what they are told.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..exceptions import PublishNacked, PublishTimeout


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
        if type(tags) is list and len(tags) == 1:
            # one task at a time (a prefetch of 1): the set and the sort below cost more
            # than the ack
            tag = tags[0]
            if tag not in outstanding:
                return None, []
            outstanding.discard(tag)
            return None, [tag]
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


class ConfirmTracker:
    """Publisher confirms on one channel (a RabbitMQ extension): the publishes waiting for
    basic.ack or basic.nack, and what waiting for them comes to.

    After confirm.select RabbitMQ numbers the channel's publishes 1, 2, 3, ... and
    answers each number once, with basic.ack or basic.nack; with ``multiple`` set, one
    frame answers every number up to its tag. Both drivers keep one tracker per
    connection and tell it what they publish and read; ``wait_for_confirms`` waits while
    ``len(tracker)`` is not 0, then raises what ``failure()`` returns.

    Compiled for the rabbitmq-c driver as ``fastq._speedups._amqp_decisions``, a cdef
    class whose fields and methods ``fastq/_speedups/_amqp_decisions.pxd`` declares: keep
    the two in step.
    """

    # The waiting numbers are kept as a range, not a set: every number from ``_first`` to
    # ``_published`` waits except those in ``_ahead``, answered singly out of order (rare:
    # RabbitMQ answers a channel's publishes in order). A publish is then one addition,
    # and an answer up to a tag (a batch's confirms, a worker's results) moves ``_first``
    # instead of removing numbers from a set one by one.
    __slots__ = ("selected", "_published", "_first", "_ahead", "_nacked", "_returned")

    def __init__(self) -> None:
        #: confirm.select went through on the current channel: publishes are numbered
        self.selected = False
        self._published = 0
        self._first = 1
        self._ahead: set[int] = set()
        self._nacked = 0
        self._returned: list[tuple[int, str]] = []

    def __len__(self) -> int:
        """How many publishes are neither acked nor nacked yet."""
        return self._published - self._first + 1 - len(self._ahead)

    def select(self) -> None:
        """confirm.select-ok arrived: numbering starts again at 1, earlier nacks are forgotten."""
        self.selected = True
        self._restart()
        self._nacked = 0

    def new_channel(self) -> None:
        """The channel was (re)opened: not in confirm mode, and the old channel's numbers
        mean nothing on it."""
        self.selected = False
        self._restart()

    def _restart(self) -> None:
        self._published = 0
        self._first = 1
        self._ahead.clear()

    def new_connection(self) -> None:
        """A new connection: nothing from the old one counts, nacks and returns included."""
        self.new_channel()
        self._nacked = 0
        self._returned.clear()

    def published(self, count: int = 1) -> None:
        """``count`` more publishes went out (numbered only in confirm mode)."""
        if self.selected and count > 0:
            self._published += count

    def acked(self, tag: int, multiple: bool) -> None:
        """basic.ack (60, 80) from RabbitMQ."""
        self._answer(tag, multiple)

    def nacked(self, tag: int, multiple: bool) -> None:
        """basic.nack (60, 120) from RabbitMQ: those publishes were lost."""
        self._nacked += self._answer(tag, multiple)

    def returned(self, reply_code: int, reply_text: str) -> None:
        """basic.return (60, 50): a ``mandatory`` publish no queue was bound to take."""
        self._returned.append((reply_code, reply_text))

    def _answer(self, tag: int, multiple: bool) -> int:
        """Forget the numbers one frame answers; how many were waiting."""
        first, ahead = self._first, self._ahead
        if tag > self._published:  # numbers never published wait for nothing
            if not multiple:
                return 0
            tag = self._published
        if tag < first:
            return 0
        if not multiple:
            if tag in ahead:
                return 0
            if tag != first:
                ahead.add(tag)
                return 1
            answered = 1
        else:
            answered = tag - first + 1
            if ahead:
                below = [number for number in ahead if number <= tag]
                answered -= len(below)
                ahead.difference_update(below)
        first = tag + 1
        while ahead and first in ahead:  # numbers answered ahead of their turn
            ahead.discard(first)
            first += 1
        self._first = first
        return answered

    def timed_out(self, server: str, timeout: float) -> PublishTimeout:
        """The error for confirms still missing after ``timeout`` seconds."""
        return PublishTimeout(f"RabbitMQ at {server} did not confirm {len(self)} "
                              f"publish(es) within {timeout}s")

    def failure(self) -> PublishNacked | None:
        """What the publishes answered since the last call came to: None when RabbitMQ
        took them all, else the error to raise. Either way they are forgotten."""
        if not self._nacked and not self._returned:
            return None
        nacked, self._nacked = self._nacked, 0
        returned, self._returned = self._returned, []
        if nacked:
            return PublishNacked(f"RabbitMQ nacked {nacked} publish(es); publish them again")
        if returned:
            code, text = returned[0]
            return PublishNacked(f"RabbitMQ returned {len(returned)} unroutable "
                                 f"publish(es): {code} {text}")
        return None
