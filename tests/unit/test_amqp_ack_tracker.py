"""The AMQP broker's I/O-free decisions: which acks to send, prefetch restarts; both
builds (the compiled one is what a broker on the rabbitmq-c driver uses)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from fastq.brokers.amqp import decisions_for


@pytest.fixture
def decisions(impl: str) -> ModuleType:
    return decisions_for("rabbitmq-c" if impl == "c" else "py-amqp")


@pytest.fixture
def tracker(decisions: ModuleType):
    def make(*tags: int) -> Any:
        t = decisions.AckTracker()
        t.delivered(iter(tags))  # the broker hands it an iterator
        return t
    return make


def test_the_builds_are_the_ones_asked_for(impl: str, decisions: ModuleType) -> None:
    compiled = decisions.__name__ == "fastq._speedups._amqp_decisions"
    assert compiled == (impl == "c")
    if compiled:
        assert decisions.__file__.endswith(".so")


def test_all_outstanding_up_to_the_max_is_one_multiple_ack(tracker) -> None:
    t = tracker(1, 2, 3, 4, 5)
    assert t.settle([3, 1, 2]) == (3, [])
    assert len(t) == 2
    assert t.settle([5, 4]) == (5, [])
    assert len(t) == 0


def test_a_gap_below_the_max_means_single_acks(tracker) -> None:
    t = tracker(1, 2, 3, 4)
    # 2 is still running: multiple=True up to 4 would ack it too
    assert t.settle([1, 3, 4]) == (None, [1, 3, 4])
    assert 2 in t and len(t) == 1


def test_one_tag_is_a_single_ack(tracker) -> None:
    t = tracker(7, 8)
    assert t.settle([7]) == (None, [7])
    assert t.settle([8]) == (None, [8])


def test_unknown_and_repeated_tags_are_left_out(tracker) -> None:
    t = tracker(1, 2, 3)
    assert t.settle([2, 2, 99]) == (None, [2])
    assert t.settle([2]) == (None, [])
    assert t.settle([]) == (None, [])
    assert t.settle([1, 3]) == (3, [])


def test_higher_outstanding_tags_do_not_block_a_multiple_ack(tracker) -> None:
    t = tracker(10, 11, 12, 13)
    assert t.settle([10, 11]) == (11, [])
    assert sorted([12, 13]) == [tag for tag in (12, 13) if tag in t]


def test_forget_drops_the_old_channel(tracker) -> None:
    t = tracker(1, 2, 3)
    t.forget()
    assert t.settle([1, 2, 3]) == (None, [])
    t.delivered([1])
    assert t.settle([1]) == (None, [1])


def test_discard_and_count_above(tracker) -> None:
    t = tracker(1, 5, 6, 9)
    assert t.count_above(5) == 2
    assert t.discard(5) and not t.discard(5)
    assert t.settle([1, 6]) == (6, [])


def test_prefetch_restarts_only_when_the_window_is_full_or_the_limit_changes(decisions) -> None:
    plan_prefetch = decisions.plan_prefetch
    assert plan_prefetch(0, 10, 0) == 10       # first subscription
    assert plan_prefetch(3, 10, 10) is None    # room left
    assert plan_prefetch(10, 10, 10) == 10     # full: restart for `limit` more
    assert plan_prefetch(0, 3, 10) == 3        # the limit changed
    assert plan_prefetch(0, 0, 0) == 1
