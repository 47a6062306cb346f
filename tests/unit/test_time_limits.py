"""Time limits: the ones a request runs under (its header, the task, the settings), and how
each limiter delivers soft and hard limits to a running task."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from fastq import App
from fastq.exceptions import SoftTimeLimitExceeded
from fastq.execution import time_limits
from fastq.limits import AlarmLimiter, HardTimeLimit, ThreadLimiter, await_limited
from fastq.task import Request


def _steps(task, request):
    """Sleeps in short steps and reports what stopped it."""
    try:
        for _ in range(300):
            time.sleep(0.01)
    except SoftTimeLimitExceeded:
        return "soft"
    return "finished"


def _ignores_soft(task, request):
    for _ in range(300):
        try:
            time.sleep(0.01)
        except SoftTimeLimitExceeded:
            pass
    return "finished"


def _on_a_thread(fn, *args):
    box = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    return box


@pytest.mark.parametrize("limiter", [AlarmLimiter(), ThreadLimiter()], ids=["alarm", "thread"])
def test_soft_limit_raises_inside_the_task(limiter):
    started = time.monotonic()
    if isinstance(limiter, AlarmLimiter):
        outcome = {"value": limiter.call(_steps, None, None, None, 0.1)}
    else:
        outcome = _on_a_thread(limiter.call, _steps, None, None, None, 0.1)
    assert outcome == {"value": "soft"}
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("limiter", [AlarmLimiter(), ThreadLimiter()], ids=["alarm", "thread"])
def test_hard_limit_ends_a_task_that_ignores_the_soft_one(limiter):
    if isinstance(limiter, AlarmLimiter):
        with pytest.raises(HardTimeLimit):
            limiter.call(_ignores_soft, None, None, 0.25, 0.1)
    else:
        outcome = _on_a_thread(limiter.call, _ignores_soft, None, None, 0.25, 0.1)
        assert isinstance(outcome.get("error"), HardTimeLimit), outcome


def test_a_thread_limit_never_fires_after_its_task_returned():
    limiter = ThreadLimiter()
    assert _on_a_thread(limiter.call, lambda t, r: "quick", None, None, 0.05, 0.02) == {
        "value": "quick"}
    # the thread goes on to other work past both deadlines, untouched
    assert _on_a_thread(lambda: (time.sleep(0.15), "later")[1]) == {"value": "later"}


def test_await_limited_turns_cancellation_into_the_limit_errors():
    async def sleeper():
        await asyncio.sleep(5)

    async def stubborn():
        for _ in range(100):
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass
        return "finished"

    async def polite():
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return "cleaned up"

    with pytest.raises(SoftTimeLimitExceeded):
        asyncio.run(await_limited(sleeper(), None, 0.05))
    with pytest.raises(HardTimeLimit):
        asyncio.run(await_limited(stubborn(), 0.2, 0.05))
    assert asyncio.run(await_limited(polite(), None, 0.05)) == "cleaned up"


def test_timelimit_header_is_hard_then_soft_and_junk_is_ignored():
    app = App("t", broker="memory://limits")

    @app.task(time_limit=60, soft_time_limit=50)
    def limited():
        return None

    def limits(header):
        request = Request({"id": "i", "task": limited.name, "timelimit": header}, [], {}, {})
        return time_limits(limited, request, app.conf)

    assert limits([10, 5.5]) == (10, 5.5)
    assert limits([None, 3]) == (60, 3)
    assert limits(["10", "x"]) == (60, 50)
    assert limits("garbage") == (60, 50)
    assert limits([7]) == (7, 50)
    assert limits([None, None]) == limits((None, None)) == limits(None) == (60, 50)
    assert limits([0, -1]) == limits([]) == (60, 50)
