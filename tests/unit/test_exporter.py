"""The fleet exporter's bookkeeping without a broker: events in, Prometheus samples out (a
worker's up gauge against a clock the test moves, malformed events, bounded labels)."""

from __future__ import annotations

import pytest

pytest.importorskip("prometheus_client")

from fastq.monitor import exporter  # noqa: E402
from fastq.monitor.exporter import FleetMetrics  # noqa: E402

W = "w1@host"


def _task(kind: str, task_id: str, **fields) -> dict:
    return {"type": kind, "hostname": W, "uuid": task_id, "timestamp": 100.0, **fields}


def _sample(fleet: FleetMetrics, metric: str, **labels) -> float | None:
    return fleet.registry.get_sample_value(metric, labels)


def test_a_tasks_events_count_under_its_name_though_only_the_first_names_it():
    fleet = FleetMetrics()
    fleet.add(_task("task-received", "a", name="t.add", timestamp=100.0))
    fleet.add(_task("task-started", "a", timestamp=100.25))
    fleet.add(_task("task-succeeded", "a", runtime=0.5, timestamp=100.75))
    fleet.add(_task("task-received", "b", name="t.fail"))
    fleet.add(_task("task-failed", "b", exception="KeyError()"))
    for state in ("RECEIVED", "STARTED", "SUCCESS"):
        assert _sample(fleet, "fastq_fleet_tasks_total", worker=W, name="t.add",
                       state=state) == 1
    assert _sample(fleet, "fastq_fleet_tasks_total", worker=W, name="t.fail",
                   state="FAILURE") == 1
    assert _sample(fleet, "fastq_fleet_task_runtime_seconds_sum", name="t.add") == 0.5
    assert _sample(fleet, "fastq_fleet_task_wait_seconds_sum", name="t.add") == 0.25
    assert fleet.names == {} and fleet.received_at == {}  # finished: nothing kept


def test_a_worker_is_down_after_two_missed_heartbeats_or_at_once_when_it_says_offline():
    fleet = FleetMetrics()
    fleet.add({"type": "worker-heartbeat", "hostname": W, "freq": 2.0, "active": 3,
               "processed": 7}, now=10.0)
    assert fleet.worker_rows(now=13.9) == [(W, True, 3, 7)]
    assert fleet.worker_rows(now=14.1) == [(W, False, 0, 7)]
    fleet.add({"type": "worker-heartbeat", "hostname": W, "freq": 2.0, "active": 0,
               "processed": 9}, now=15.0)
    assert fleet.worker_rows(now=15.0) == [(W, True, 0, 9)]
    fleet.add({"type": "worker-offline", "hostname": W, "freq": 2.0}, now=15.5)
    assert fleet.worker_rows(now=15.5) == [(W, False, 0, 9)]


def test_a_worker_down_long_enough_is_forgotten_with_its_task_series():
    fleet = FleetMetrics()
    fleet.add({"type": "worker-online", "hostname": W, "freq": 2.0}, now=0.0)
    fleet.add(_task("task-received", "a", name="t.add"), now=0.0)
    fleet.worker_rows(now=10.0)  # seen down from here
    assert fleet.worker_rows(now=10.0 + exporter.FORGET_WORKER_AFTER - 1) != []
    assert fleet.worker_rows(now=11.0 + exporter.FORGET_WORKER_AFTER) == []
    assert _sample(fleet, "fastq_fleet_tasks_total", worker=W, name="t.add",
                   state="RECEIVED") is None


@pytest.mark.parametrize("event", [
    "not a dict", {}, {"type": "task-received"}, {"type": 5, "hostname": W},
    {"type": "task-succeeded", "hostname": W, "uuid": "a", "runtime": "slow"},
    {"type": "task-succeeded", "hostname": W, "uuid": "a"},
    {"type": "task-started", "hostname": 7, "uuid": "a"},
    {"type": "worker-heartbeat", "hostname": W, "freq": "often"},
    {"type": "worker-heartbeat", "hostname": W, "active": "many"},
])
def test_a_malformed_event_is_counted_and_changes_nothing_else(event):
    fleet = FleetMetrics()
    fleet.add(event)
    assert _sample(fleet, "fastq_exporter_malformed_events_total") == 1
    assert fleet.workers == {} and fleet.names == {}
    assert not [s for family in fleet.tasks.collect() for s in family.samples]


def test_task_names_past_the_limit_are_counted_as_other(monkeypatch):
    monkeypatch.setattr(exporter, "MAX_TASK_NAMES", 2)
    fleet = FleetMetrics()
    for i, name in enumerate(["a", "b", "c", "d", "a"]):
        fleet.add(_task("task-received", str(i), name=name))
    counted = {(s.labels["name"], s.value) for family in fleet.tasks.collect()
               for s in family.samples if s.name.endswith("_total")}
    assert counted == {("a", 2), ("b", 1), ("other", 2)}


def test_custom_events_are_ignored_not_malformed():
    fleet = FleetMetrics()
    fleet.add({"type": "task-progress", "hostname": W, "uuid": "a"})
    assert _sample(fleet, "fastq_exporter_events_total") == 1
    assert _sample(fleet, "fastq_exporter_malformed_events_total") == 0
