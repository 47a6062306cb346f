"""Awaiting results on an event loop through the shared poller, on the in-memory store."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from fastq import App, ResultTimeout
from fastq.backends import _async_wait
from fastq.backends.memory import MemoryBackend
from fastq.result import AsyncResult, GroupResult
from fastq.states import STARTED, SUCCESS


@pytest.fixture
def backend():
    backend = MemoryBackend(f"memory://async-{uuid.uuid4().hex}")
    yield backend
    backend.close()


class CountingBackend(MemoryBackend):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reads = 0
        self.read_threads: set[str] = set()

    def get_many(self, task_ids):
        self.reads += 1
        self.read_threads.add(threading.current_thread().name)
        return super().get_many(task_ids)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 20))


def test_await_returns_a_value_stored_later(backend) -> None:
    result = AsyncResult("t-1", backend=backend)

    async def main():
        asyncio.get_running_loop().call_later(0.05, backend.store, "t-1", SUCCESS, 42)
        return await result, await result.aget(timeout=1)

    assert run(main()) == (42, 42)


def test_aget_raises_the_tasks_exception(backend) -> None:
    backend.store("t-2", "FAILURE", KeyError("missing"))

    async def main():
        with pytest.raises(KeyError, match="missing"):
            await AsyncResult("t-2", backend=backend)
        return await AsyncResult("t-2", backend=backend).aget(propagate=False)

    assert isinstance(run(main()), KeyError)


def test_a_timeout_names_the_last_state_seen(backend) -> None:
    backend.store("t-3", STARTED)

    async def main():
        await AsyncResult("t-3", backend=backend).aget(timeout=0.1)

    with pytest.raises(ResultTimeout, match="t-3 is still STARTED after 0.1s"):
        run(main())


def test_many_awaits_share_one_poller_thread() -> None:
    backend = CountingBackend(f"memory://async-{uuid.uuid4().hex}")
    ids = [f"many-{i}" for i in range(300)]

    async def main():
        waits = asyncio.gather(*(AsyncResult(i, backend=backend).aget(timeout=5) for i in ids))
        await asyncio.sleep(0.2)
        for n, task_id in enumerate(ids):
            backend.store(task_id, SUCCESS, n)
        return await waits

    assert run(main()) == list(range(300))
    # one read of all 300 ids per round, backing off: a few dozen rounds, not 300 loops
    assert backend.reads < 40, backend.reads
    assert len(backend.read_threads) == 1
    assert backend.read_threads.pop().startswith("fastq-result-poll")
    backend.close()


def test_a_cancelled_await_stops_being_watched(backend) -> None:
    async def main():
        waiting = asyncio.ensure_future(AsyncResult("t-4", backend=backend).aget())
        await asyncio.sleep(0.05)
        waiter = backend._async_waiter()
        assert "t-4" in waiter.futures
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return waiter

    assert run(main()).futures == {}


def test_an_idle_waiter_closes_and_the_next_wait_starts_another(backend, monkeypatch) -> None:
    monkeypatch.setattr(_async_wait, "IDLE_CLOSE_SECONDS", 0.05)
    backend.store("t-5", SUCCESS, "a")
    backend.store("t-6", SUCCESS, "b")

    async def main():
        first = await AsyncResult("t-5", backend=backend)
        waiter = backend._async_waiter()
        for _ in range(100):
            if waiter.closed:
                break
            await asyncio.sleep(0.01)
        second = await AsyncResult("t-6", backend=backend)
        return first, waiter.closed, second

    assert run(main()) == ("a", True, "b")


def test_group_members_in_finishing_order(backend) -> None:
    group_result = GroupResult("g-1", [AsyncResult(f"g-{i}", backend=backend) for i in range(3)])

    async def main():
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, backend.store, "g-2", SUCCESS, "two")
        # further apart than the poller's longest pause, so each is read in its own round
        loop.call_later(0.3, backend.store, "g-0", "FAILURE", ValueError("zero"))
        loop.call_later(0.55, backend.store, "g-1", SUCCESS, "one")
        order = [(r.id, r.state) async for r in group_result.aiter_completed(timeout=5)]
        with pytest.raises(ValueError, match="zero"):
            await group_result.ajoin()
        return order, await group_result.ajoin(propagate=False)

    order, values = run(main())
    assert order == [("g-2", SUCCESS), ("g-0", "FAILURE"), ("g-1", SUCCESS)]
    assert isinstance(values[0], ValueError) and values[1:] == ["one", "two"]


def test_eager_results_and_adelay_in_eager_mode() -> None:
    app = App("eager-async", broker="memory://", backend="memory://", task_always_eager=True)

    @app.task(name="double")
    def double(x):
        return 2 * x

    async def main():
        return await double.apply((4,)), await (await double.adelay(5))

    assert run(main()) == (8, 10)
    app.close()


def test_an_unreadable_document_fails_only_its_own_wait(backend) -> None:
    from fastq.exceptions import DecodeError

    backend._set_many([("junk", SUCCESS, b"not a meta document")], None)

    async def main():
        loop = asyncio.get_running_loop()
        good = asyncio.ensure_future(AsyncResult("fine", backend=backend).aget(timeout=5))
        bad = asyncio.ensure_future(AsyncResult("junk", backend=backend).aget(timeout=5))
        loop.call_later(0.05, backend.store, "fine", SUCCESS, "ok")
        with pytest.raises(DecodeError):
            await bad
        return await good

    assert run(main()) == "ok"
