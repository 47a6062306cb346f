"""Publisher-confirm bookkeeping both AMQP drivers share (ConfirmTracker), in both builds."""

from __future__ import annotations

import random

import pytest

from fastq.brokers import _amqp_decisions
from fastq.exceptions import PublishNacked, PublishTimeout


@pytest.fixture
def ConfirmTracker(impl):  # noqa: N802 - the class under test
    """The build the rabbitmq-c driver uses ([c]), or the py-amqp driver's ([py])."""
    if impl == "c":
        from fastq._speedups._amqp_decisions import ConfirmTracker as compiled

        return compiled
    return _amqp_decisions.ConfirmTracker


@pytest.fixture
def tracker(ConfirmTracker):  # noqa: N803
    tracker = ConfirmTracker()
    tracker.select()
    return tracker


def test_publishes_count_only_in_confirm_mode(ConfirmTracker) -> None:  # noqa: N803
    tracker = ConfirmTracker()
    tracker.published()
    tracker.published(5)
    assert len(tracker) == 0 and not tracker.selected and tracker.failure() is None


def test_acks_one_by_one_and_up_to_a_tag(tracker) -> None:
    tracker.published()
    tracker.published(4)  # a batch: numbers 2 to 5
    assert len(tracker) == 5
    tracker.acked(2, False)
    tracker.acked(2, False)  # answered already: nothing changes
    assert len(tracker) == 4
    tracker.acked(3, True)  # 1 and 3
    assert len(tracker) == 2
    tracker.acked(5, True)
    assert len(tracker) == 0 and tracker.failure() is None


def test_published_zero_numbers_nothing(tracker) -> None:
    tracker.published(0)
    tracker.published()
    tracker.acked(1, False)
    assert len(tracker) == 0


def test_nacks_count_the_publishes_they_answer(tracker) -> None:
    tracker.published(6)
    tracker.acked(1, False)
    tracker.nacked(4, True)  # 2, 3, 4: not 1, acked already
    tracker.nacked(9, False)  # never published
    tracker.acked(6, True)
    assert len(tracker) == 0
    failure = tracker.failure()
    assert isinstance(failure, PublishNacked) and failure.recoverable
    assert str(failure) == "RabbitMQ nacked 3 publish(es); publish them again"
    assert tracker.failure() is None  # reported once


def test_returned_publishes_fail_after_the_nacks(tracker) -> None:
    tracker.published(2)
    tracker.returned(312, "NO_ROUTE")
    tracker.returned(312, "NO_ROUTE")
    tracker.acked(2, True)
    assert str(tracker.failure()) == "RabbitMQ returned 2 unroutable publish(es): 312 NO_ROUTE"
    tracker.published()
    tracker.returned(312, "NO_ROUTE")
    tracker.nacked(3, False)
    assert "nacked 1" in str(tracker.failure())  # the nack is what the caller hears
    assert tracker.failure() is None  # and the return is forgotten with it


def test_timed_out_names_what_is_missing(tracker) -> None:
    tracker.published(3)
    tracker.acked(1, False)
    error = tracker.timed_out("127.0.0.1:5672", 2.5)
    assert isinstance(error, PublishTimeout) and isinstance(error, TimeoutError)
    assert str(error) == "RabbitMQ at 127.0.0.1:5672 did not confirm 2 publish(es) within 2.5s"


def test_a_new_channel_restarts_numbering_outside_confirm_mode(tracker) -> None:
    tracker.published(3)
    tracker.nacked(1, False)
    tracker.new_channel()
    assert len(tracker) == 0 and not tracker.selected
    tracker.published()  # not in confirm mode on the new channel: not numbered
    assert len(tracker) == 0
    tracker.select()
    tracker.published()
    tracker.acked(1, False)  # number 1 of the new channel
    assert len(tracker) == 0


def test_select_forgets_nacks_a_new_connection_forgets_returns_too(tracker) -> None:
    tracker.published()
    tracker.nacked(1, False)
    tracker.select()
    assert tracker.failure() is None
    tracker.returned(312, "NO_ROUTE")
    tracker.new_connection()
    assert tracker.failure() is None and not tracker.selected


def test_against_a_model_of_random_answers(tracker) -> None:
    seed = random.randrange(2**32)
    rnd = random.Random(seed)
    waiting: set[int] = set()
    nacked = published = 0
    for _ in range(500):
        if rnd.random() < 0.5:
            count = rnd.choice((1, 1, 2, 5))
            tracker.published(count)
            waiting.update(range(published + 1, published + count + 1))
            published += count
            continue
        tag = rnd.randint(1, published + 2)
        multiple = rnd.random() < 0.5
        answered = {n for n in waiting if n <= tag} if multiple else waiting & {tag}
        waiting -= answered
        if rnd.random() < 0.2:
            tracker.nacked(tag, multiple)
            nacked += len(answered)
        else:
            tracker.acked(tag, multiple)
        assert len(tracker) == len(waiting), f"seed {seed}"
    failure = tracker.failure()
    assert (failure is None) == (nacked == 0), f"seed {seed}"
    assert nacked == 0 or f"nacked {nacked} " in str(failure), f"seed {seed}"
