"""Tasks for the control command tests: monitor_app's, and a rendezvous that proves how
many tasks run at once; broker from FASTQ_BROKER_URL."""

from __future__ import annotations

import time

import redis

from tests.apps.monitor_app import app

__all__ = ["app"]

#: The Redis the rendezvous counts arrivals in (the test suite's own database).
RENDEZVOUS_URL = "redis://127.0.0.1:6379/9"


@app.task(name="c.rendezvous")
def rendezvous(key: str, expected: int, timeout: float) -> int:
    """Arrive at ``key`` and wait until ``expected`` tasks have arrived (or ``timeout``
    seconds passed); how many had when it returned. ``expected`` tasks all returning
    ``expected`` ran at once."""
    client = redis.Redis.from_url(RENDEZVOUS_URL)
    try:
        client.incr(key)
        client.expire(key, 600)
        deadline = time.monotonic() + timeout
        while True:
            arrived = int(client.get(key) or 0)
            if arrived >= expected or time.monotonic() > deadline:
                return arrived
            time.sleep(0.05)
    finally:
        client.close()
