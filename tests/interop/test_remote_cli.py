"""``fastq inspect`` and ``fastq control`` against running workers, on RabbitMQ and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from fastq import App
from tests.integration.redis_support import REDIS_URL, delete_keys, require_redis
from tests.integration.test_amqp_broker import URL, delete_queues
from tests.interop.processes import ROOT, Proc, start_fastq_worker

# control plumbing only: nothing here has a compiled twin
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"fastq-cli-{uuid.uuid4().hex[:8]}"
    yield name
    delete_queues([name])


def env_for(tmp_path, url: str) -> dict:
    return dict(os.environ, FASTQ_BROKER_URL=url,
                FASTQ_RESULT_BACKEND=f"sqlite:///{tmp_path / 'results.sqlite3'}",
                FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
                PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


def fastq_cli(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fastq.cli", *args, "-A",
                             "tests.apps.monitor_app"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, out + err
    return out


def start_worker(tmp_path, env: dict, queue: str, node: str) -> Proc:
    return start_fastq_worker("tests.apps.monitor_app", queue, env,
                              str(tmp_path / "worker.log"), str(tmp_path / "health.json"),
                              "-P", "threads", "-c", "2", "-n", node)


def test_fastq_inspect_and_control_on_rabbitmq(tmp_path, queue) -> None:
    env = env_for(tmp_path, URL)
    node = f"{queue}@test"
    worker = start_worker(tmp_path, env, queue, node)
    producer = App("cli-producer", broker_url=URL)
    try:
        sleeping = producer.send_task("m.sleep", (3,), queue=queue).id
        worker.wait_until(lambda: f"m.sleep[{sleeping}] received" in worker.log())
        # the commands at once: each process takes a moment to start
        runs = {
            "active": fastq_cli(env, "inspect", "active", "-d", node, "--json", "-t", "3"),
            "stats": fastq_cli(env, "inspect", "stats", "-d", node, "--json", "-t", "3"),
            "rate": fastq_cli(env, "control", "rate_limit", "m.add", "7/s", "-d", node,
                              "-t", "3"),
            "nobody": fastq_cli(env, "inspect", "ping", "-d", "nobody@nowhere", "-t", "0.5"),
        }
        out = {name: proc.communicate(timeout=30) for name, proc in runs.items()}
        codes = {name: proc.returncode for name, proc in runs.items()}
        registered = finish(fastq_cli(env, "inspect", "registered", "rate_limit", "-d", node,
                                      "-t", "3"))
        finish(fastq_cli(env, "control", "shutdown", "-d", node))
        worker.proc.wait(15)  # warm: the sleeping task finishes first
    finally:
        worker.stop()
        producer.close()
    assert codes == {"active": 0, "stats": 0, "rate": 0, "nobody": 1}, out
    active = json.loads(out["active"][0])[node]
    assert [t["id"] for t in active] == [sleeping]
    assert json.loads(out["stats"][0])[node]["pool"]["max-concurrency"] == 2
    assert f"-> {node}: OK" in out["rate"][0] and "new rate limit set successfully" in out["rate"][0]
    assert "No nodes replied within time constraint" in out["nobody"][1]
    assert "m.add [rate_limit=7/s]" in registered
    assert worker.proc.returncode == 0
    assert f"m.sleep[{sleeping}] succeeded" in worker.log()


def test_fastq_inspect_on_redis(tmp_path) -> None:
    require_redis()
    queue = f"fastq-cli-{uuid.uuid4().hex[:8]}"
    node = f"{queue}@test"
    env = env_for(tmp_path, REDIS_URL)
    worker = start_worker(tmp_path, env, queue, node)
    try:
        ping = fastq_cli(env, "inspect", "ping", "-d", node, "--json", "-t", "3")
        queues = fastq_cli(env, "inspect", "active_queues", "-d", node, "--json", "-t", "3")
        assert json.loads(finish(ping)) == {node: {"ok": "pong"}}
        assert json.loads(finish(queues))[node][0]["name"] == queue
    finally:
        worker.stop()
        delete_keys(f"{queue}*")
