"""Flask end to end: a request enqueues, a worker process runs the task in its own Flask app's context."""

from __future__ import annotations

import os
import time

import pytest

pytest.importorskip("flask")

from tests.apps.flask_app import create_app  # noqa: E402
from tests.integration.conftest import ROOT, WorkerProcess  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


class FlaskWorker(WorkerProcess):
    app_module = "tests.apps.flask_worker:fastq_app"


@pytest.fixture
def flask_deployment(tmp_path):
    broker_url = f"sqlite:///{tmp_path / 'broker.sqlite3'}"
    backend_url = f"sqlite:///{tmp_path / 'results.sqlite3'}"
    # the worker's Flask app reads its settings from FLASK_* variables (from_prefixed_env)
    env = dict(os.environ, FLASK_CELERY_BROKER_URL=broker_url,
               FLASK_FASTQ_RESULT_BACKEND=backend_url, FLASK_GREETING="Bonjour",
               FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    for key in [k for k in env if k.startswith("FASTQ_") and k != "FASTQ_WORKER_STATE_DIR"
                and k not in ("FASTQ_NO_SPEEDUPS", "FASTQ_REQUIRE_SPEEDUPS")]:
        del env[key]  # the Flask config alone must say where the broker is
    worker = FlaskWorker(tmp_path, broker_url, str(tmp_path / "runs.log"), env)
    worker.start("-P", "asyncio", "-c", "4")
    flask_app = create_app(CELERY_BROKER_URL=broker_url, FASTQ_RESULT_BACKEND=backend_url)
    try:
        yield flask_app, worker
    finally:
        flask_app.extensions["fastq"].fastq_app.close()
        worker.stop()


def poll_result(client, task_id: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/result/{task_id}").get_json()
        if body["state"] != "PENDING":
            return body
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} still PENDING after {timeout}s")


def test_a_request_enqueues_and_the_worker_runs_it_in_its_app_context(flask_deployment):
    flask_app, worker = flask_deployment
    client = flask_app.test_client()
    task_id = client.post("/greet/Ada").get_json()["task_id"]
    body = poll_result(client, task_id)
    # "Bonjour" is the worker's own Flask config: the task ran in its app context
    assert body == {"state": "SUCCESS", "value": "Bonjour, Ada, from tests.apps.flask_app"}, \
        worker.log()


def test_an_async_task_keeps_the_app_context_while_awaited(flask_deployment):
    flask_app, _worker = flask_deployment
    from tests.apps.flask_app import agreet

    assert agreet.delay("Grace").get(timeout=20) == "Bonjour (async), Grace"
