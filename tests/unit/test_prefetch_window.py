"""The prefetch window's decisions: fixed by the multiplier, or sized from task durations."""

from __future__ import annotations

import pytest

from fastq.worker.prefetch import HELD_WORK_SECONDS, MAX_PER_SLOT, MAX_WINDOW, PrefetchWindow


@pytest.mark.parametrize(("slots", "multiplier", "limit"), [
    (1, 4, 4), (8, 4, 32), (4, 0, 4), (1, 0, 1), (3, 1, 3)])
def test_a_multiplier_fixes_the_window(slots: int, multiplier: int, limit: int) -> None:
    window = PrefetchWindow(slots, multiplier)
    assert not window.adaptive and window.limit == limit
    window.ran(1000, 0.001)  # very short tasks change nothing
    window.fetched(0.5)
    assert window.limit == limit


def test_adaptive_starts_with_one_message_per_slot() -> None:
    assert PrefetchWindow(1, None).limit == 1
    assert PrefetchWindow(4, None).limit == 4  # nothing held ahead of a first long task


def test_short_tasks_open_the_window_to_its_deepest() -> None:
    window = PrefetchWindow(1, None)
    window.ran(1, 30e-6)
    assert window.limit == MAX_PER_SLOT


def test_millisecond_tasks_hold_about_the_held_work() -> None:
    window = PrefetchWindow(2, None)
    for _ in range(5):
        window.ran(window.limit, window.limit * 0.001)
    per_slot = window.limit // 2
    assert HELD_WORK_SECONDS / 2 <= per_slot * 0.001 <= HELD_WORK_SECONDS


def test_long_tasks_close_the_window_to_one_per_slot() -> None:
    window = PrefetchWindow(2, None)
    window.ran(2, 2 * 20e-6)
    assert window.limit == 2 * MAX_PER_SLOT
    for _ in range(4):  # the estimate moves halfway to each new measurement
        window.ran(2, 2 * 10.0)
    assert window.limit == 2


def test_the_window_does_not_flap_on_an_estimate_near_a_boundary() -> None:
    window = PrefetchWindow(1, None)
    window.ran(1, HELD_WORK_SECONDS / 64)
    assert window.limit == 64
    limits = set()
    for seconds in [HELD_WORK_SECONDS / 60, HELD_WORK_SECONDS / 70] * 10:
        window.ran(1, seconds)
        limits.add(window.limit)
    assert limits == {64}


def test_a_slow_broker_deepens_the_window() -> None:
    fast, slow = PrefetchWindow(1, None), PrefetchWindow(1, None)
    for _ in range(6):
        slow.fetched(0.1)  # SQS-like round trips
    fast.ran(1, 0.01)
    slow.ran(1, 0.01)
    assert slow.limit >= 4 * fast.limit


def test_a_large_pool_stops_at_the_window_cap() -> None:
    window = PrefetchWindow(100, None)
    window.ran(100, 100 * 1e-6)
    assert window.limit == MAX_WINDOW
    assert PrefetchWindow(2000, None).limit == 2000  # never less than one per slot
