"""Per-task, per-worker rate limits: rate strings like "100/s" and a token bucket."""

from __future__ import annotations

import time

from ..exceptions import ConfigurationError

_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: str | float | int | None) -> float | None:
    """Tasks per second for "100/s", "10/m", "5/h" or a bare number; None = unlimited."""
    if rate is None or rate == "":
        return None
    if isinstance(rate, (int, float)):
        value = float(rate)
    else:
        count, _, unit = str(rate).strip().partition("/")
        try:
            per = _UNIT_SECONDS[unit.strip().lower() or "s"]
            value = float(count) / per
        except (KeyError, ValueError):
            raise ConfigurationError(
                f"invalid rate limit {rate!r}: use 'N/s', 'N/m' or 'N/h'") from None
    if value < 0:
        raise ConfigurationError(f"invalid rate limit {rate!r}: must not be negative")
    return value or None


class TokenBucket:
    """``rate`` tokens per second, holding at most ``capacity``; never blocks."""

    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, rate: float, capacity: float = 1.0) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Take a token: 0.0 when one was free, else seconds until the next one is."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate
