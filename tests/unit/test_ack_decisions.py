"""The consumer's ack decisions (AckBatch), both builds, with integer tags and a fake clock."""

from __future__ import annotations

import threading
import time
import uuid
from types import SimpleNamespace

import pytest

from fastq import App
from fastq.execution import ACK, DEAD_LETTER, DEFER, REQUEUE
from fastq.worker import _ack_decisions, _consumer_py
from fastq.worker.executor import Executor
from fastq.worker.pools.base import RELEASE
from fastq.worker.pools.solo import SoloPool


@pytest.fixture
def AckBatch(impl):  # noqa: N802 - the class under test
    """The build the compiled consumer uses ([c]), or the pure-Python one's ([py])."""
    if impl == "c":
        from fastq._speedups._ack_decisions import AckBatch as compiled

        return compiled
    return _ack_decisions.AckBatch


class Early:
    """Stands for the consumer's early-acked request type."""

    def __init__(self, tag: int) -> None:
        self.delivery = SimpleNamespace(tag=tag)


def done(tag: int, action: str = ACK, argument: object = None) -> tuple:
    """A pool's completion for the task delivered with ``tag``."""
    return (SimpleNamespace(delivery=SimpleNamespace(tag=tag)), action, argument)


def tags_of(plan: list[tuple]) -> list[tuple]:
    """A settle plan with each request replaced by its tag."""
    return [(acks, request.delivery.tag, action, argument)
            for acks, request, action, argument in plan]


# -- when the gathered acks go out -----------------------------------------------------------
def test_due_after_size_acks(AckBatch) -> None:
    batch = AckBatch(3, 10.0)
    for tag in (1, 2):
        batch.add(tag, 0.0)
        assert not batch.due(0.0)
    batch.add(3, 0.0)
    assert batch.due(0.0)
    assert batch.take() == [1, 2, 3]
    assert len(batch) == 0 and not batch.due(0.0)


def test_due_after_interval_since_the_oldest(AckBatch) -> None:
    batch = AckBatch(100, 0.05)
    batch.add(1, 10.0)
    batch.add(2, 10.04)
    assert not batch.due(10.049)
    assert batch.due(10.05)  # the oldest has waited the interval; the newest has not


def test_whichever_comes_first(AckBatch) -> None:
    by_count = AckBatch(2, 1.0)
    by_count.add(1, 0.0)
    by_count.add(2, 0.0)
    by_time = AckBatch(2, 1.0)
    by_time.add(1, 0.0)
    assert by_count.due(0.0) and not by_time.due(0.5) and by_time.due(1.0)


def test_an_empty_batch_is_never_due(AckBatch) -> None:
    batch = AckBatch(1, 0.0)
    assert not batch.due(1e9)
    assert batch.take() == []


def test_the_clock_restarts_with_the_first_tag_after_a_take(AckBatch) -> None:
    batch = AckBatch(100, 1.0)
    batch.add(1, 0.0)
    batch.take()
    batch.add(2, 5.0)
    assert not batch.due(5.5) and batch.due(6.0)


def test_the_broker_window_caps_the_size(AckBatch) -> None:
    batch = AckBatch(256, 10.0)
    assert batch.limit(None) == 256 and batch.limit(4) == 4 and batch.limit(1000) == 256
    for tag in range(1, 5):
        batch.add(tag, 0.0)
    assert not batch.due(0.0) and not batch.due(0.0, None)
    assert batch.due(0.0, 4)  # RabbitMQ delivers no fifth message until these are acked


def test_size_is_at_least_one(AckBatch) -> None:
    batch = AckBatch(0, 10.0)
    batch.add(7, 0.0)
    assert batch.due(0.0)


# -- settling a pool's completions ------------------------------------------------------
def test_acked_tasks_join_the_batch_in_order(AckBatch) -> None:
    batch = AckBatch(100, 1.0)
    assert batch.settle([done(3), done(1), done(2)], 4.0) == []
    assert len(batch) == 3
    assert not batch.due(4.9) and batch.due(5.0)  # the settle time starts the clock
    assert batch.take() == [3, 1, 2]


def test_requeue_release_dead_letter_come_back_after_the_acks_before_them(AckBatch) -> None:
    batch = AckBatch(100, 1.0)
    batch.add(1, 0.0)
    plan = batch.settle([done(2), done(3, REQUEUE), done(4), done(5, DEAD_LETTER, "why"),
                         done(6, RELEASE), done(7)], 0.5)
    assert tags_of(plan) == [([1, 2], 3, REQUEUE, None), ([4], 5, DEAD_LETTER, "why"),
                             ([], 6, RELEASE, None)]
    assert batch.take() == [7]  # acked after the last one-by-one: still gathering


def test_acks_gathered_after_a_requeue_wait_their_own_interval(AckBatch) -> None:
    batch = AckBatch(100, 1.0)
    batch.add(1, 0.0)
    batch.settle([done(2, REQUEUE), done(3)], 0.8)
    assert not batch.due(1.5) and batch.due(1.8)


def test_early_acked_and_unknown_actions_are_passed_over(AckBatch) -> None:
    batch = AckBatch(100, 1.0, Early)
    early = (Early(1), ACK, None)
    assert batch.settle([early, done(2, DEFER), done(3)], 0.0) == []
    assert batch.take() == [3]


def test_nothing_to_settle(AckBatch) -> None:
    batch = AckBatch(100, 1.0)
    assert batch.settle([], 0.0) == [] and len(batch) == 0


# -- the consumer carries them out: results first ----------------------------------------
@pytest.fixture
def Consumer(impl):  # noqa: N802
    if impl == "c":
        from fastq._speedups._consumer import Consumer as compiled

        return compiled
    return _consumer_py.Consumer


def test_results_are_stored_before_the_acks_that_cover_them(Consumer) -> None:  # noqa: N803
    app = App("acks", broker=f"memory://{uuid.uuid4()}", task_acks_late=True)
    try:
        @app.task
        def double(x):
            return 2 * x

        executor = Executor(app, "acks@test")
        consumer = Consumer(app, app.broker, executor, SoloPool(executor), ["celery"], 8,
                            ack_batch_size=4, ack_interval=0.01, hostname="acks@test")
        unstored_at_ack: list[int] = []
        send_acks = app.broker.ack_many

        def ack_many(tags):
            unstored_at_ack.append(len(executor.pending_results))
            send_acks(tags)

        app.broker.ack_many = ack_many
        results = [double.delay(i) for i in range(10)]
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        try:
            assert [r.get(timeout=5) for r in results] == [2 * i for i in range(10)]
        finally:
            consumer.stop()
            thread.join(10)
        assert consumer.counters["acked"] == 10
        assert unstored_at_ack and set(unstored_at_ack) == {0}
    finally:
        app.close()


class _RepliesBackend:
    """Stands in for rpc:// where a worker's results can ride with its acks."""

    capabilities = frozenset({"reply_to"})

    def __init__(self, broker_url: str) -> None:
        self.broker_url = broker_url
        self.sent: list[tuple] = []

    def encode_replies(self, records):
        return [(f"reply.{r[0]}", repr(r[2]).encode(), {"correlation_id": r[0]})
                for r in records]

    def send_replies(self, replies):
        self.sent += replies


def test_results_the_broker_could_not_carry_go_by_the_backend(Consumer) -> None:  # noqa: N803
    """When the broker's connection could not take the replies with the acks (it was
    lost), the results still leave, on the backend's own connection."""
    app = App("replies", broker=f"memory://{uuid.uuid4()}", task_acks_late=True)
    try:
        @app.task
        def double(x):
            return 2 * x

        carried: list[tuple] = []

        def ack_many_with_replies(tags, replies):
            carried.append((list(tags), list(replies)))
            app.broker.ack_many(tags)
            return False  # as after a lost connection

        app.broker.ack_many_with_replies = ack_many_with_replies
        executor = Executor(app, "replies@test")
        backend = executor._backend = _RepliesBackend(app.broker.url)
        consumer = Consumer(app, app.broker, executor, SoloPool(executor), ["celery"], 8,
                            ack_batch_size=4, ack_interval=0.01, hostname="replies@test")
        sent = [double.delay(i).id for i in range(10)]
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while len(backend.sent) < 10 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            consumer.stop()
            thread.join(10)
        assert sorted(props["correlation_id"] for _to, _body, props in backend.sent) \
            == sorted(sent)
        assert sum(len(replies) for _tags, replies in carried) == 10
        assert consumer.counters["acked"] == 10
    finally:
        app.close()
