"""The plain decisions behind the pool and revoke control commands: a window resized with
its pool, autoscale bounds moved, stamps matched, the --statedb file read and written."""

from __future__ import annotations

import logging

import pytest

from fastq.worker.commands import stamps_matching
from fastq.worker.pools.prefork.autoscale import Autoscaler
from fastq.worker.prefetch import MAX_WINDOW, PrefetchWindow
from fastq.worker.revoked import RevokedSet, load_state, save_state


@pytest.mark.parametrize(("multiplier", "slots", "limit"), [(4, 3, 12), (0, 5, 5), (1, 1, 1)])
def test_a_fixed_window_follows_its_pool(multiplier, slots, limit) -> None:
    window = PrefetchWindow(2, multiplier)
    window.resize(slots)
    assert (window.slots, window.limit) == (slots, limit)


def test_an_adaptive_window_keeps_its_depth_per_slot() -> None:
    window = PrefetchWindow(2, None)
    window.ran(1, 0.01)  # 10 ms tasks: about ten held per slot
    per_slot = window.per_slot
    assert per_slot > 1
    window.resize(4)
    assert window.limit == min(4 * per_slot, MAX_WINDOW)
    window.resize(0)  # never fewer than one slot
    assert window.slots == 1 and window.limit >= 1


class Child:
    def __init__(self, running: str | None, idle_since: float | None) -> None:
        self.running, self.idle_since, self.ready, self.busy_fraction = \
            running, idle_since, True, 0.0


def test_autoscale_bounds_move_and_the_pool_follows() -> None:
    scaler = Autoscaler(4, 1, keepalive=30.0)
    assert scaler.update(2, None) == (2, 1)
    busy, idle = Child("t1", None), Child(None, 5.0)
    # above the new maximum: an idle child goes first, busy or not
    assert scaler.decide([busy, idle, Child("t2", None)], now=6.0) == ("shrink", idle)
    assert scaler.update(None, 2) == (2, 2)
    assert scaler.decide([busy], now=6.0) == ("grow", None)
    with pytest.raises(ValueError, match="min <= max"):
        scaler.update(1, 3)


def stamped(**stamps: object) -> dict:
    return {"id": "t", "stamped_headers": list(stamps), "stamps": stamps}


def test_stamps_revoke_by_any_matching_value() -> None:
    revoked = RevokedSet()
    assert not revoked.stamped(stamped(tenant="a"))  # nothing revoked: nothing matches
    revoked.add_stamps({"tenant": "a"})
    revoked.add_stamps(["batch=7"])  # Celery's command line sends name=value strings
    assert revoked.stamps == {"tenant": {"a"}, "batch": {"7"}}
    assert revoked.stamped(stamped(tenant="a"))
    assert revoked.stamped(stamped(tenant=["x", "a"]))
    assert revoked.stamped(stamped(batch="7", tenant="b"))
    assert not revoked.stamped(stamped(tenant="b"))
    # a stamp named in the headers but not listed as stamped does not count (Celery)
    assert not revoked.stamped({"stamped_headers": [], "stamps": {"tenant": "a"}})
    assert not revoked.stamped({"id": "t", "stamped_headers": None, "stamps": {}})
    assert not revoked.stamped(stamped(tenant={"unhashable": 1}))
    assert stamps_matching(stamped(tenant=["a", "z"]), revoked.stamps) == {"tenant": {"a"}}


def test_the_state_file_round_trips_and_expires(tmp_path) -> None:
    path = str(tmp_path / "sub" / "state.json")
    revoked = RevokedSet(expires=100.0)
    revoked.update(["a", "b"])
    save_state(path, revoked)
    again = RevokedSet(expires=100.0)
    assert load_state(path, again) == 2 and set(again) == {"a", "b"}
    # read by a worker that forgets sooner: what it would have forgotten stays out
    assert load_state(path, RevokedSet(expires=0.0)) == 0


def test_a_missing_state_file_is_a_first_start(tmp_path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert load_state(str(tmp_path / "none.json"), RevokedSet()) == 0
    assert not caplog.records


@pytest.mark.parametrize("content", [b"\x00garbage", b"[]", b'{"version": 9}',
                                     b'{"version": 1, "revoked": {"a": "soon"}}'])
def test_a_corrupt_state_file_is_one_warning(tmp_path, caplog, content) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    revoked = RevokedSet()
    with caplog.at_level(logging.WARNING):
        assert load_state(str(path), revoked) == 0
    assert len(revoked) == 0
    assert [r.getMessage() for r in caplog.records if "state file" in r.getMessage()] \
        and len(caplog.records) == 1
