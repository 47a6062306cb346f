"""``fastq events`` on Redis, where events travel as kombu's pub/sub fanout: a fastq
worker's and a real Celery worker's events read alike by ``--dump``; a broker that carries
no events is refused with one line and exit status 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import orjson
import pytest

from fastq import App
from tests.integration.redis_support import REDIS_URL, require_redis
from tests.interop.processes import ROOT, Proc

pytest.importorskip("rich")

# the events plumbing only: nothing here has a compiled twin
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


@pytest.fixture(autouse=True)
def _redis() -> None:
    require_redis()


def _env(tmp_path) -> dict:
    return dict(os.environ, FASTQ_BROKER_URL=REDIS_URL, FASTQ_RESULT_BACKEND=REDIS_URL,
                FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
                PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


def _dumped(path, hostname: str) -> list[dict]:
    """The events of ``hostname`` dumped so far (pub/sub is not per database: other
    tests' workers may be heard too); a last line still being written waits."""
    with open(path, "rb") as fh:
        events = [orjson.loads(line) for line in fh if line.endswith(b"\n") and line.strip()]
    return [e for e in events if e.get("hostname") == hostname]


def _wait_for(condition, timeout: float, describe) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, describe()
        time.sleep(0.05)


def _dump_events_of(worker_argv: list[str], hostname: str, queue: str, tmp_path) -> None:
    """Start ``fastq events --dump`` and the worker; run one task; check its events."""
    env = _env(tmp_path)
    app = App("events-cli-redis", broker_url=REDIS_URL, result_backend=REDIS_URL,
              task_default_queue=queue)
    dumped = tmp_path / "events.jsonl"
    with open(dumped, "wb") as out:
        dump = subprocess.Popen(
            [sys.executable, "-m", "fastq", "events", "--dump", "--duration", "60"],
            env=env, cwd=str(tmp_path), stdout=out, stderr=subprocess.STDOUT)
    worker = Proc(worker_argv, env, str(tmp_path / "worker.log"))
    try:
        # a heartbeat (every 2 s) or worker-online shows the dump hears this worker
        _wait_for(lambda: any(e["type"].startswith("worker-")
                              for e in _dumped(dumped, hostname)),
                  30, lambda: dumped.read_text() + worker.log())
        result = app.send_task("t.add", (20, 22))
        assert result.get(timeout=30) == 42
        _wait_for(lambda: any(e["type"] == "task-succeeded" and e.get("uuid") == result.id
                              for e in _dumped(dumped, hostname)),
                  15, lambda: dumped.read_text() + worker.log())
        mine = [e for e in _dumped(dumped, hostname) if e.get("uuid") == result.id]
        assert [e["type"] for e in mine] == ["task-received", "task-started",
                                             "task-succeeded"]
        assert mine[0]["name"] == "t.add" and mine[-1]["result"] == "42"
        assert all(isinstance(e["timestamp"], float) and isinstance(e["clock"], int)
                   for e in mine)
    finally:
        dump.terminate()
        worker.stop()
        dump.wait(15)
        app.close()


def test_dump_prints_a_fastq_workers_events_on_redis(tmp_path):
    queue = f"events-redis-{uuid.uuid4().hex[:8]}"
    hostname = f"{queue}@test"
    _dump_events_of([sys.executable, "-m", "fastq", "worker", "-A", "tests.apps.redis_app",
                     "-P", "solo", "-Q", queue, "-n", hostname, "-E"],
                    hostname, queue, tmp_path)


def test_dump_prints_a_celery_workers_events_on_redis(tmp_path):
    """Celery's own worker publishes where fastq listens: the layouts match."""
    pytest.importorskip("celery")
    command = shutil.which("celery")
    if command is None:
        pytest.fail("the celery command is not on PATH (the dev virtualenv's bin)")
    queue = f"events-celery-{uuid.uuid4().hex[:8]}"
    hostname = f"{queue}@test"
    _dump_events_of([command, "-A", "tests.apps.celery_redis_app", "worker", "-P", "solo",
                     "-Q", queue, "-n", hostname, "-E", "--without-mingle",
                     "--without-gossip", "-l", "info"],
                    hostname, queue, tmp_path)


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/broker.sqlite3", "memory://"])
def test_a_broker_without_events_is_refused_in_one_line(tmp_path, url):
    env = dict(_env(tmp_path), FASTQ_BROKER_URL=url.format(tmp=tmp_path))
    done = subprocess.run([sys.executable, "-m", "fastq", "events", "--dump"], env=env,
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs RabbitMQ or Redis" in lines[0], done.stderr
