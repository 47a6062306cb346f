"""Prometheus /metrics of worker processes (--metrics-port) on RabbitMQ: the prefork parent
serves the sum of what its children counted."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from fastq import App
from tests.integration.conftest import amqp_worker_setup
from tests.integration.test_amqp_broker import ROOT, URL, delete_queues, unique

pytest.importorskip("prometheus_client")

# no code with a compiled twin beyond what the first CI pass covers on both drivers
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _value(samples: dict, metric: str, **labels: str) -> float | None:
    for (sample, found), value in samples.items():
        if sample == metric and set(labels.items()) <= found:
            return value
    return None


def test_a_prefork_workers_metrics_add_up_over_its_children(tmp_path):
    queue = unique("metrics")
    hostname = f"{queue}@test"
    port = _free_port()
    env, results_url = amqp_worker_setup(tmp_path, queue, URL)
    app = App("amqp-metrics", broker_url=URL, result_backend=results_url,
              task_default_queue=queue)
    added = [app.send_task("t.add", (i, i)) for i in range(30)]
    failed = [app.send_task("t.fail", ("no", i)) for i in range(3)]
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastq", "worker", "-A", "tests.apps.amqp_app", "-P",
             "prefork", "-c", "2", "-Q", queue, "-n", hostname, "-l", "info",
             "--metrics-port", str(port)],
            env=env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        assert [r.get(timeout=20) for r in added] == [i + i for i in range(30)]
        for r in failed:
            r.get(timeout=20, propagate=False)
        # the children report twice a second: poll until the parent has heard of them all
        deadline = time.monotonic() + 10
        while True:
            samples = _scrape(port)
            succeeded = _value(samples, "fastq_tasks_total", name="t.add", outcome="SUCCESS")
            failures = _value(samples, "fastq_tasks_total", name="t.fail", outcome="FAILURE")
            # acks go in batches, a moment after the outcome is counted
            unacked = _value(samples, "fastq_worker_messages_unacked")
            if (succeeded, failures, unacked) == (30, 3, 0) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert (succeeded, failures, unacked) == (30, 3, 0), samples
        assert _value(samples, "fastq_task_runtime_seconds_count", name="t.add") == 30
        assert _value(samples, "fastq_task_runtime_seconds_bucket", name="t.add",
                      le="+Inf") == 30
        assert _value(samples, "fastq_worker_pool_size", worker=hostname) == 2
        assert _value(samples, "fastq_worker_tasks_running") == 0
        assert _value(samples, "fastq_broker_reconnects_total") == 0
        assert _value(samples, "fastq_worker_resident_memory_bytes") > 10_000_000
    finally:
        proc.terminate()
        proc.wait(15)
        app.close()
        delete_queues([queue])
    output = (tmp_path / "worker.log").read_text()
    assert f"Prometheus metrics on http://127.0.0.1:{port}/metrics" in output, output


def test_a_solo_worker_serves_its_own_counts(tmp_path):
    queue = unique("metrics-solo")
    port = _free_port()
    env, results_url = amqp_worker_setup(tmp_path, queue, URL)
    env["FASTQ_WORKER_METRICS_PORT"] = str(port)
    app = App("amqp-metrics-solo", broker_url=URL, result_backend=results_url,
              task_default_queue=queue)
    added = [app.send_task("t.add", (i, 1)) for i in range(10)]
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastq", "worker", "-A", "tests.apps.amqp_app", "-P",
             "solo", "-Q", queue, "-n", f"{queue}@test"],
            env=env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        assert [r.get(timeout=20) for r in added] == [i + 1 for i in range(10)]
        deadline = time.monotonic() + 10
        while _value(samples := _scrape(port), "fastq_tasks_total", name="t.add",
                     outcome="SUCCESS") != 10:
            assert time.monotonic() < deadline, samples
            time.sleep(0.05)
        assert _value(samples, "fastq_worker_pool_size") == 1, (tmp_path / "worker.log").read_text()
    finally:
        proc.terminate()
        proc.wait(15)
        app.close()
        delete_queues([queue])


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_a_metrics_port_in_use_stops_the_worker_with_one_line(tmp_path, pool):
    env = dict(os.environ, FASTQ_BROKER_URL=URL,
               FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    queue = unique("metrics-port")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            done = subprocess.run(
                [sys.executable, "-m", "fastq", "worker", "-A", "tests.apps.amqp_app", "-P",
                 pool, "-c", "1", "-Q", queue, "--metrics-port", str(port)],
                env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
        finally:
            delete_queues([queue])
    assert done.returncode == 1
    assert f"Error: cannot serve metrics on 127.0.0.1:{port}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
