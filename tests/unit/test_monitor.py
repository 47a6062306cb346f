"""The live view of ``fastq events``: rates by task name and state, workers' heartbeats."""

from __future__ import annotations

import pytest

from fastq.monitor import EventView, dump_line

pytest.importorskip("rich")


def test_rates_name_later_events_by_the_received_one_and_forget_old_ones() -> None:
    view = EventView(window=10.0)
    view.add({"type": "task-received", "uuid": "a", "name": "m.add", "hostname": "w"}, now=0.0)
    view.add({"type": "task-succeeded", "uuid": "a", "hostname": "w"}, now=1.0)
    view.add({"type": "task-failed", "uuid": "b", "hostname": "w"}, now=2.0)
    assert view.rates(now=5.0) == {("m.add", "RECEIVED"): 0.1, ("m.add", "SUCCESS"): 0.1,
                                   ("?", "FAILURE"): 0.1}
    assert view.names == {}  # a finished task's name is not kept
    assert view.rates(now=11.5) == {("?", "FAILURE"): 0.1}


def test_workers_show_their_heartbeat_age_and_status() -> None:
    from rich.console import Console

    view = EventView()
    view.add({"type": "worker-heartbeat", "hostname": "w1", "active": 2, "processed": 7},
             now=100.0)
    view.add({"type": "worker-offline", "hostname": "w2"}, now=100.0)
    view.add({"type": "worker-heartbeat", "hostname": "w3"}, now=80.0)
    console = Console(width=120, record=True)
    console.print(view.render(now=103.0))
    text = console.export_text()
    rows = {line.split()[1]: line for line in text.splitlines() if line.startswith("│ w")}
    assert "online" in rows["w1"] and "3.0s" in rows["w1"] and "7" in rows["w1"]
    assert "offline" in rows["w2"]
    assert "lost" in rows["w3"] and "23.0s" in rows["w3"]


def test_a_dumped_event_is_one_line_of_json_with_sorted_keys() -> None:
    assert dump_line({"type": "task-started", "uuid": "x", "clock": 3}) == \
        '{"clock":3,"type":"task-started","uuid":"x"}'
