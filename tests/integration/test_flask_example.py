"""examples/flask_app.py through Flask's test client, with a real worker process on Redis:
a POST sends a task, the worker runs it in its own Flask app's context (reading its
config), a GET reads the result; the Flask config alone says where the broker is."""

from __future__ import annotations

import importlib
import os
import sys

import pytest

from tests.integration.conftest import ROOT, WorkerProcess
from tests.integration.redis_support import REDIS_URL, delete_keys, redis_prefix  # noqa: F401

pytestmark = pytest.mark.integration

pytest.importorskip("flask")


@pytest.fixture
def example(redis_prefix, tmp_path, monkeypatch):  # noqa: F811 - the fixture imported above
    """The example module configured by FLASK_* variables for this test's Redis keys, and
    a worker for it, not started."""
    for key in [key for key in os.environ if key.startswith("FASTQ_")
                and key not in ("FASTQ_NO_SPEEDUPS", "FASTQ_REQUIRE_SPEEDUPS")]:
        monkeypatch.delenv(key)  # the environment would win over the Flask config
    broker_url = f"{REDIS_URL}?global_keyprefix={redis_prefix}"
    monkeypatch.setenv("FLASK_CELERY_BROKER_URL", broker_url)
    monkeypatch.setenv("FLASK_CELERY_RESULT_BACKEND", REDIS_URL)
    # the worker's Flask app alone has an offset: a task that adds it ran in that app
    env = dict(os.environ, PYTHONPATH=ROOT, FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
               FLASK_SUMS_OFFSET="100")
    worker = WorkerProcess(tmp_path, broker_url, str(tmp_path / "runs.log"), env)
    worker.app_module = "examples.flask_app:fastq_app"
    sys.modules.pop("examples.flask_app", None)
    module = importlib.import_module("examples.flask_app")
    try:
        yield module, worker
    finally:
        worker.stop()
        module.fastq_app.close()


def test_a_request_enqueues_a_worker_runs_it_in_its_app_context_a_request_reads_it(example):
    module, worker = example
    client = module.app.test_client()
    answer = client.post("/sums", query_string={"x": 2, "y": 3})
    assert answer.status_code == 200, answer.text
    task_id = answer.get_json()["task_id"]
    try:
        worker.start("-P", "solo")
        read = client.get(f"/sums/{task_id}", query_string={"wait": 30})
        assert read.status_code == 200, worker.log()
        # 2 + 3 + the worker's SUMS_OFFSET
        assert read.get_json() == {"task_id": task_id, "value": 105}
    finally:
        delete_keys(f"celery-task-meta-{task_id}")
    assert client.get("/sums/never-sent", query_string={"wait": 0.2}).status_code == 504
