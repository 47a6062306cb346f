"""``fastq events`` against a worker sending events (-E) on RabbitMQ: --dump prints them as
they come, --once renders one frame of the live view."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import orjson
import pytest

from fastq import App
from tests.integration.conftest import amqp_worker_setup
from tests.integration.test_amqp_broker import ROOT, URL, delete_queues, unique

pytest.importorskip("rich")

# the events plumbing only: nothing here has a compiled twin
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


def _events(path) -> list[dict]:
    """The events dumped so far; a last line still being written is left for later."""
    with open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.endswith(b"\n") and line.strip()]


def _wait_for(condition, timeout: float, describe) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, describe()
        time.sleep(0.05)


def test_dump_prints_a_workers_events_one_per_line(tmp_path):
    queue = unique("events-cli")
    hostname = f"{queue}@test"
    env, results_url = amqp_worker_setup(tmp_path, queue, URL)
    app = App("events-cli", broker_url=URL, result_backend=results_url,
              task_default_queue=queue)
    dumped = tmp_path / "events.jsonl"
    with open(tmp_path / "worker.log", "wb") as log, open(dumped, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "fastq", "worker", "-A", "tests.apps.amqp_app", "-P",
             "solo", "-Q", queue, "-n", hostname, "-E"],
            env=env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT)
        dump = subprocess.Popen(
            [sys.executable, "-m", "fastq", "events", "--dump", "--duration", "30"],
            env=env, cwd=str(tmp_path), stdout=out, stderr=subprocess.STDOUT)
    try:
        # the worker's heartbeat (every 2 s) shows the dump is listening
        _wait_for(lambda: any(e.get("hostname") == hostname and e["type"] == "worker-heartbeat"
                              for e in _events(dumped)), 15, dumped.read_text)
        result = app.send_task("t.add", (20, 22))
        assert result.get(timeout=20) == 42
        _wait_for(lambda: [e for e in _events(dumped) if e["type"] == "task-succeeded"
                           and e["uuid"] == result.id], 10, dumped.read_text)
        mine = [e for e in _events(dumped) if e.get("uuid") == result.id]
        assert [e["type"] for e in mine] == ["task-received", "task-started", "task-succeeded"]
        assert mine[0]["name"] == "t.add" and mine[-1]["result"] == "42"
    finally:
        dump.terminate()
        worker.terminate()
        dump.wait(15)
        worker.wait(15)
        app.close()
        delete_queues([queue])


def test_once_renders_one_frame_of_the_live_view(tmp_path):
    env = dict(os.environ, FASTQ_BROKER_URL=URL,
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               COLUMNS="120")
    done = subprocess.run([sys.executable, "-m", "fastq", "events", "--once"], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "Tasks per second" in done.stdout and "Workers" in done.stdout, done.stdout
    assert "heartbeat age" in done.stdout
