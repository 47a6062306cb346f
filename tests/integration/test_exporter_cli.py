"""``fastq exporter`` against real workers: a fastq worker on RabbitMQ and on Redis and a
Celery worker on Redis run tasks, some failing; the exporter's ``/metrics``, scraped over
HTTP, counts each outcome, shows the worker up, and down once it stops. Bad input: an
unreachable broker, a broker without events, a taken port, a malformed event."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import uuid

import pytest

from fastq import App
from tests.integration.redis_support import REDIS_URL, PrivateRedis, require_redis
from tests.integration.test_amqp_broker import URL as AMQP_URL
from tests.integration.test_amqp_broker import delete_queues
from tests.integration.test_worker_metrics import _free_port, _scrape, _value
from tests.interop.processes import ROOT, Proc, start_fastq_worker

pytest.importorskip("prometheus_client")

# the events plumbing only: nothing here has a compiled twin
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]

#: Tasks that succeed and that fail in each run.
ADDS, FAILS = 12, 4


def _env(broker_url: str, results_url: str, tmp_path) -> dict:
    return dict(os.environ, FASTQ_BROKER_URL=broker_url, FASTQ_RESULT_BACKEND=results_url,
                CELERY_BROKER_URL=broker_url, FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
                PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


class Exporter:
    """A ``fastq exporter`` process and its ``/metrics``."""

    def __init__(self, broker_url: str, tmp_path, *extra: str) -> None:
        self.port = _free_port()
        self.proc = Proc([sys.executable, "-m", "fastq.cli", "exporter", "-b", broker_url,
                          "--port", str(self.port), *extra],
                         _env(broker_url, broker_url, tmp_path), str(tmp_path / "exporter.log"))

    def scrape(self) -> dict:
        """The samples served now; {} while the server is not up yet."""
        try:
            return _scrape(self.port)
        except (urllib.error.URLError, ConnectionError):
            return {}

    def value(self, metric: str, **labels: str) -> float | None:
        return _value(self.scrape(), metric, **labels)

    def wait_for(self, metric: str, expected: float, timeout: float, **labels: str) -> None:
        """Poll until the sample is ``expected``; fail with the exporter's log if not."""
        try:
            self.proc.wait_until(lambda: self.value(metric, **labels) == expected, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{metric}{labels} is {self.value(metric, **labels)}, not "
                                 f"{expected}: {exc}") from None


@pytest.fixture(params=["fastq-amqp", "fastq-redis", "celery-redis"])
def fleet(request, tmp_path):
    """(broker URL, result URL, the argv of a worker on ``queue`` named ``hostname``, how
    it is stopped)."""
    kind = request.param
    if kind.endswith("redis"):
        require_redis()
        broker_url = results_url = REDIS_URL
    else:
        broker_url, results_url = AMQP_URL, f"sqlite:///{tmp_path / 'results.sqlite3'}"
    if kind.startswith("celery"):
        pytest.importorskip("celery")
        if shutil.which("celery") is None:
            pytest.fail("the celery command is not on PATH (the dev virtualenv's bin)")
    return kind, broker_url, results_url


def _start_worker(kind: str, queue: str, hostname: str, env: dict, tmp_path) -> Proc:
    if kind == "celery-redis":
        return Proc([shutil.which("celery"), "-A", "tests.apps.celery_redis_app", "worker",
                     "-P", "solo", "-Q", queue, "-n", hostname, "-E", "--without-mingle",
                     "--without-gossip", "-l", "info"], env, str(tmp_path / "worker.log"))
    app_module = "tests.apps.redis_app" if kind == "fastq-redis" else "tests.apps.amqp_app"
    return start_fastq_worker(app_module, queue, env, str(tmp_path / "worker.log"),
                              str(tmp_path / "health.json"), "-P", "solo", "-n", hostname,
                              "-E")


def test_the_exporter_counts_a_workers_tasks_and_sees_it_come_and_go(fleet, tmp_path):
    kind, broker_url, results_url = fleet
    queue = f"exporter-{kind}-{uuid.uuid4().hex[:8]}"
    hostname = f"{queue}@test"
    env = _env(broker_url, results_url, tmp_path)
    exporter = Exporter(broker_url, tmp_path)
    app = App("exporter-test", broker_url=broker_url, result_backend=results_url,
              task_default_queue=queue, task_send_sent_event=True)
    worker = None
    try:
        # bound to the events before any is sent: pub/sub and the exchange keep nothing
        exporter.wait_for("fastq_exporter_broker_connected", 1, 30)
        worker = _start_worker(kind, queue, hostname, env, tmp_path)
        exporter.wait_for("fastq_fleet_worker_up", 1, 60, worker=hostname)
        added = [app.send_task("t.add", (i, i)) for i in range(ADDS)]
        # amqp_app's t.fail takes a code as well
        fail_args = ("no", 1) if kind == "fastq-amqp" else ("no",)
        failed = [app.send_task("t.fail", fail_args) for _ in range(FAILS)]
        assert [r.get(timeout=60) for r in added] == [i + i for i in range(ADDS)]
        for result in failed:
            result.get(timeout=60, propagate=False)
        for name, state, expected in (("t.add", "RECEIVED", ADDS), ("t.add", "STARTED", ADDS),
                                      ("t.add", "SUCCESS", ADDS), ("t.fail", "FAILURE", FAILS),
                                      ("t.fail", "STARTED", FAILS)):
            exporter.wait_for("fastq_fleet_tasks_total", expected, 30, worker=hostname,
                              name=name, state=state)
        # task-sent comes from the client, under its own name
        exporter.wait_for("fastq_fleet_tasks_total", ADDS, 30, worker=app.origin,
                          name="t.add", state="PENDING")
        samples = exporter.scrape()
        assert _value(samples, "fastq_fleet_tasks_total", worker=hostname, name="t.add",
                      state="FAILURE") is None
        assert _value(samples, "fastq_fleet_task_runtime_seconds_count",
                      name="t.add") >= ADDS
        assert _value(samples, "fastq_fleet_task_wait_seconds_count", name="t.add") >= ADDS
        # the heartbeats (every 2 s) carry how many it processed
        exporter.wait_for("fastq_fleet_worker_tasks_processed_total", ADDS + FAILS, 30,
                          worker=hostname)
        assert exporter.value("fastq_fleet_worker_up", worker=hostname) == 1
        assert exporter.value("fastq_exporter_malformed_events_total") == 0
        if kind == "fastq-redis":
            worker.stop()  # SIGTERM: it says worker-offline
        else:
            worker.proc.kill()  # gone without a word: its heartbeats stop
        # down within two heartbeat intervals (4 s): generous, the machine is shared
        exporter.wait_for("fastq_fleet_worker_up", 0, 20, worker=hostname)
    finally:
        if worker is not None:
            worker.stop()
        exporter.proc.stop()
        app.close()
        if broker_url == AMQP_URL:
            delete_queues([queue])
    assert exporter.proc.proc.returncode == 0, exporter.proc.log()


def test_an_unreachable_broker_is_retried_while_metrics_are_served(tmp_path):
    exporter = Exporter("amqp://guest:guest@127.0.0.1:1//", tmp_path)
    try:
        exporter.wait_for("fastq_exporter_broker_connected", 0, 30)
        exporter.proc.wait_until(lambda: "retrying in" in exporter.proc.log(), 30)
        assert "guest:guest" not in exporter.proc.log()  # the password is masked
    finally:
        exporter.proc.stop()
    assert exporter.proc.proc.returncode == 0, exporter.proc.log()


def test_a_malformed_event_is_counted_and_the_exporter_carries_on(tmp_path):
    require_redis()
    exporter = Exporter(REDIS_URL, tmp_path)
    hostname = f"malformed-{uuid.uuid4().hex[:8]}@test"
    try:
        exporter.wait_for("fastq_exporter_broker_connected", 1, 30)
        _publish_events(REDIS_URL, hostname, [
            ("task.succeeded", b'{"type": "task-succeeded", "hostname": 5}'),
            _heartbeat(hostname)])
        exporter.wait_for("fastq_fleet_worker_up", 1, 30, worker=hostname)
        assert exporter.value("fastq_exporter_malformed_events_total") >= 1
    finally:
        exporter.proc.stop()


def _heartbeat(hostname: str) -> tuple[str, bytes]:
    return ("worker.heartbeat", b'{"type": "worker-heartbeat", "hostname": "%s", '
            b'"freq": 2.0, "active": 0, "processed": 0}' % hostname.encode())


def _publish_events(broker_url: str, hostname: str, events: list[tuple[str, bytes]]) -> None:
    """Publish raw event bodies the way workers do, as ``hostname``."""
    app = App("exporter-events")
    app.conf.update(broker_url=broker_url)
    channel = app.broker.event_channel(hostname)
    try:
        channel.publish(events)
    finally:
        channel.close()
        app.close()


def test_a_lost_broker_is_read_again_once_it_is_back(tmp_path):
    server = PrivateRedis().start()
    exporter = Exporter(server.url, tmp_path)
    try:
        exporter.wait_for("fastq_exporter_broker_connected", 1, 30)
        _publish_events(server.url, "before@test", [_heartbeat("before@test")])
        exporter.wait_for("fastq_fleet_worker_up", 1, 30, worker="before@test")
        server.stop()
        exporter.wait_for("fastq_exporter_broker_connected", 0, 30)
        server.start()  # the same port again
        exporter.wait_for("fastq_exporter_broker_connected", 1, 60)
        _publish_events(server.url, "after@test", [_heartbeat("after@test")])
        exporter.wait_for("fastq_fleet_worker_up", 1, 30, worker="after@test")
        assert "retrying in" in exporter.proc.log()
    finally:
        exporter.proc.stop()
        server.stop()
    assert exporter.proc.proc.returncode == 0, exporter.proc.log()


def _run_exporter(tmp_path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastq.cli", "exporter", *argv],
                          env=_env(REDIS_URL, REDIS_URL, tmp_path), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/broker.sqlite3", "memory://"])
def test_a_broker_without_events_is_refused_in_one_line(tmp_path, url):
    done = _run_exporter(tmp_path, "-b", url.format(tmp=tmp_path), "--port",
                         str(_free_port()))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "RabbitMQ or Redis" in lines[0], done.stderr


def test_a_taken_port_is_refused_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run_exporter(tmp_path, "-b", REDIS_URL, "--port", str(port))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "--port" in lines[0], \
        done.stderr

