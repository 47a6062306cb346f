"""examples/django_project served by Django's own ``runserver`` on 127.0.0.1, with a real
worker process on Redis: a POST sends a task, the worker (Django set up from the same
settings) runs it, a GET reads the result from the project's database (``django-db://``).

The project runs in processes of its own: this test process already holds the test
suite's Django settings, and Django's settings cannot be configured twice."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import ROOT, WorkerProcess
from tests.integration.redis_support import REDIS_URL, redis_prefix  # noqa: F401

pytestmark = pytest.mark.integration

pytest.importorskip("django")
httpx = pytest.importorskip("httpx")

PROJECT = os.path.join(ROOT, "examples", "django_project")


class ExampleWorker(WorkerProcess):
    app_module = "proj"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def project(redis_prefix, tmp_path):  # noqa: F811 - the fixture imported above
    """The project migrated into a fresh database, its environment, and a worker for it,
    not started."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("FASTQ_", "DJANGO_"))
           or key in ("FASTQ_NO_SPEEDUPS", "FASTQ_REQUIRE_SPEEDUPS")}
    env.update(PYTHONPATH=os.pathsep.join([PROJECT, ROOT]),
               DJANGO_EXAMPLE_DB=str(tmp_path / "db.sqlite3"),
               FASTQ_BROKER_URL=f"{REDIS_URL}?global_keyprefix={redis_prefix}",
               FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"))
    migrated = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], env=env,
                              cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    # the worker alone has an offset: a sum that includes it ran in the worker
    worker = ExampleWorker(tmp_path, env["FASTQ_BROKER_URL"], str(tmp_path / "runs.log"),
                           dict(env, SUMS_OFFSET="100"))
    yield env, worker
    worker.stop()


@pytest.fixture
def server(project, tmp_path):
    """``manage.py runserver`` on a free port of 127.0.0.1; its base URL once it answers."""
    env, _worker = project
    port = _free_port()
    log_path = tmp_path / "runserver.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            env=env, cwd=PROJECT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                httpx.get(f"{base}/sums/not-sent", params={"wait": 0}, timeout=10)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_request_enqueues_a_worker_runs_it_a_request_reads_it(project, server):
    _env, worker = project
    with httpx.Client(base_url=server, timeout=60) as client:
        sent = client.post("/sums", params={"x": 2, "y": 3})
        assert sent.status_code == 200, sent.text
        task_id = sent.json()["task_id"]
        worker.start("-P", "solo")
        read = client.get(f"/sums/{task_id}", params={"wait": 30})
        assert read.status_code == 200, worker.log()
        # 2 + 3 + the worker's SUMS_OFFSET: Django's settings were set up in the worker
        assert read.json() == {"task_id": task_id, "value": 105}
        assert client.get("/sums/never-sent", params={"wait": 0.2}).status_code == 504
