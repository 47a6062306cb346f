"""Real Flower 2.x watching a fastq worker: its HTTP API lists the worker, its registered
tasks and the tasks it ran, in the right states (on RabbitMQ and on Redis)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from fastq import App
from tests.integration.redis_support import REDIS_URL, delete_keys, require_redis
from tests.integration.test_amqp_broker import URL, delete_queues
from tests.interop.processes import ROOT, Proc, start_fastq_worker

pytest.importorskip("flower")

# event and control plumbing only: nothing here has a compiled twin
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(params=["amqp", "redis"])
def broker_url(request) -> Iterator[str]:
    if request.param == "redis":
        require_redis()
        yield REDIS_URL
    else:
        yield URL


@pytest.fixture
def queue(broker_url) -> Iterator[str]:
    name = f"fastq-flower-{uuid.uuid4().hex[:8]}"
    yield name
    if broker_url == URL:
        # with the delay queues the retry's countdown went through (powers of two ms)
        delete_queues([name, *(f"{name}.delay.{1 << level}ms" for level in range(17))])
    else:
        delete_keys(f"{name}*")
        delete_keys(f"fastq:delayed:{name}")  # the retry that waits its countdown


def test_flower_shows_a_fastq_worker_and_its_tasks(tmp_path, broker_url, queue) -> None:
    celery_bin = shutil.which("celery") or pytest.skip("the celery command is not installed")
    node = f"{queue}@test"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, FASTQ_BROKER_URL=broker_url,
               FASTQ_RESULT_BACKEND=f"sqlite:///{tmp_path / 'results.sqlite3'}",
               FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
               FLOWER_UNAUTHENTICATED_API="true",
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    flower = Proc([celery_bin, "-b", broker_url, "flower", "--address=127.0.0.1",
                   f"--port={port}"], env, str(tmp_path / "flower.log"))
    worker = None
    app = App("flower-client", broker_url=broker_url)
    try:
        def flower_up() -> bool:
            try:
                return bool(get_json(f"{base}/api/workers"))  # answers once it is up
            except OSError:
                return False
        # Flower subscribes to events before it answers HTTP (its event thread starts first)
        flower.wait_until(lambda: flower_up() or "Connected to" in flower.log(), 30)
        worker = start_fastq_worker("tests.apps.monitor_app", queue, env,
                                    str(tmp_path / "worker.log"),
                                    str(tmp_path / "health.json"), "-E", "-n", node)
        revoked_id = str(uuid.uuid4())
        app.control.revoke(revoked_id)
        # a ping answered after the revoke: the worker has applied it
        assert app.control.ping(destination=[node], timeout=5) == [{node: {"ok": "pong"}}]
        expected = {
            app.send_task("m.add", (2, 3), queue=queue).id: "SUCCESS",
            app.send_task("m.fail", ("boom",), queue=queue).id: "FAILURE",
            app.send_task("m.retry_later", queue=queue).id: "RETRY",
            app.send_task("m.add", (1, 1), queue=queue, task_id=revoked_id).id: "REVOKED",
        }

        def states() -> dict:
            tasks = get_json(f"{base}/api/tasks")
            return {task_id: tasks.get(task_id, {}).get("state") for task_id in expected}
        deadline = time.monotonic() + 20
        while states() != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        assert states() == expected, (states(), worker.log(), flower.log())
        # Flower asks the workers (inspect stats, registered, ...) at start and when told
        # to refresh; a refresh during its first round (sent before this worker listened,
        # so answered by nobody) joins that round, hence the retries
        deadline = time.monotonic() + 10
        workers = get_json(f"{base}/api/workers?refresh=1")
        while "registered" not in workers.get(node, {}) and time.monotonic() < deadline:
            workers = get_json(f"{base}/api/workers?refresh=1")
        tasks = get_json(f"{base}/api/tasks")
    finally:
        if worker is not None:
            worker.stop()
        flower.stop()
        app.close()

    assert node in workers, (workers, flower.log())
    seen = workers[node]
    assert {"m.add", "m.fail", "m.sleep"} <= set(seen["registered"])
    assert seen["stats"]["pool"]["implementation"] == "fastq.worker.pools:solo"
    assert seen["active_queues"][0]["name"] == queue
    # this test's own tasks: Flower hears every worker's events on the server
    task_of = {state: task_id for task_id, state in expected.items()}
    ok, failed = tasks[task_of["SUCCESS"]], tasks[task_of["FAILURE"]]
    assert (ok["name"], ok["args"], ok["result"], ok["worker"]) == ("m.add", "(2, 3)", "5", node)
    assert failed["exception"] == "KeyError('boom')"
