"""Prefork autoscaling: how many children to run, from their busy reports (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ....exceptions import ConfigurationError

if TYPE_CHECKING:
    from .parent import ChildProcess

#: Busy share of a report window above which a child counts as fully busy (autoscale).
BUSY_FRACTION = 0.9
#: Shortest time between two autoscale growth steps, in seconds.
GROW_INTERVAL = 1.0


class Autoscaler:
    """How many children, between ``minimum`` and ``maximum``, from their busy reports.

    Never fewer than one child: the parent holds no broker connection, so only a child
    sees work arrive. Grow by one child when every child was busy for at least
    BUSY_FRACTION of its last report window (the queue is not keeping up) and the last growth is GROW_INTERVAL old;
    shrink by retiring one child that ran nothing for ``keepalive`` seconds. Plain
    decisions, no I/O: the supervisor acts on them.
    """

    def __init__(self, maximum: int, minimum: int, keepalive: float,
                 grow_interval: float = GROW_INTERVAL) -> None:
        if not 0 <= minimum <= maximum or maximum < 1:
            raise ConfigurationError(
                f"--autoscale MAX,MIN needs 0 <= MIN <= MAX and MAX >= 1, got "
                f"{maximum},{minimum}")
        self.maximum = maximum
        self.minimum = max(1, minimum)
        self.keepalive = keepalive
        self.grow_interval = grow_interval
        self._last_growth = float("-inf")

    def update(self, maximum: int | None = None,
               minimum: int | None = None) -> tuple[int, int]:
        """New bounds (the ``autoscale`` command); the parent reaches them through
        ``decide``, a child at a time. The bounds now."""
        new_max = self.maximum if maximum is None else int(maximum)
        new_min = self.minimum if minimum is None else max(1, int(minimum))
        if not 1 <= new_min <= new_max:
            raise ValueError(f"autoscale needs 1 <= min <= max, got max={new_max} "
                             f"min={new_min}")
        self.maximum, self.minimum = new_max, new_min
        return self.maximum, self.minimum

    def decide(self, children: Sequence[ChildProcess],
               now: float) -> tuple[str, ChildProcess | None] | None:
        """("grow", None), ("shrink", the child to retire), or None."""
        if len(children) < self.minimum:
            return ("grow", None)
        if len(children) > self.maximum:  # lowered by the autoscale command
            return ("shrink", min(children, key=lambda c: (c.running is not None,
                                                           c.idle_since or float("inf"))))
        if len(children) < self.maximum and now - self._last_growth >= self.grow_interval:
            if all(c.ready and c.busy_fraction >= BUSY_FRACTION for c in children):
                self._last_growth = now
                return ("grow", None)
        if len(children) > self.minimum:
            idle = [c for c in children if c.ready and c.idle_since is not None
                    and now - c.idle_since >= self.keepalive]
            if idle:
                return ("shrink", min(idle, key=lambda c: c.idle_since or 0.0))
        return None


def parse_autoscale(value: str) -> tuple[int, int]:
    """``"MAX,MIN"`` (or ``"MAX"``, MIN 0) as Celery's --autoscale takes it."""
    parts = [p.strip() for p in value.split(",")]
    try:
        numbers = [int(p) for p in parts if p]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 2) or len(parts) > 2:
        raise ConfigurationError(f"--autoscale takes MAX,MIN (e.g. 10,3), not {value!r}")
    maximum, minimum = numbers[0], numbers[1] if len(numbers) == 2 else 0
    if minimum > maximum:  # Celery accepts either order
        maximum, minimum = minimum, maximum
    minimum = max(1, minimum)  # see Autoscaler
    Autoscaler(maximum, minimum, 0.0)  # validates
    return maximum, minimum
