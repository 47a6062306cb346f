"""The prefork parent answers inspect for the whole worker, one node as Celery's does:
``celery inspect`` and ``fastq inspect`` against ``fastq worker -P prefork -c 2`` get one
reply listing the tasks of both children (real worker process on RabbitMQ and on Redis,
the real CLI)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from fastq import App
from tests.integration.redis_support import REDIS_URL, delete_keys, require_redis
from tests.integration.test_amqp_broker import URL as AMQP_URL
from tests.integration.test_amqp_broker import delete_queues
from tests.interop.processes import ROOT, Proc, read_health

# control plumbing and the prefork parent: nothing here has a compiled twin
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]

#: Tasks queued before the worker starts: more than one child takes, so both run one.
TASKS = 6
#: Long enough that the tasks are still running when the test has asked all it asks.
LONG = 60.0


def _cli(env: dict, *argv: str) -> Any:
    """A command that prints JSON replies; the replies (inspect: by node; control: a
    list of them)."""
    done = subprocess.run(list(argv), env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "DuplicateNodenameWarning" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def _celery_command() -> str:
    command = shutil.which("celery")
    if command is None:
        pytest.fail("the celery command is not on PATH (the dev virtualenv's bin)")
    return command


def _env(url: str, tmp_path) -> dict:
    return dict(os.environ, FASTQ_BROKER_URL=url, FASTQ_RESULT_BACKEND=REDIS_URL,
                FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
                PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


#: (broker URL, task module, the long task and its arguments)
BROKERS = {"redis": (REDIS_URL, "tests.apps.redis_app", "t.sleep", [LONG]),
           "amqp": (AMQP_URL, "tests.apps.amqp_app", "t.sleep_echo", [LONG, "long"])}


@pytest.mark.parametrize("broker", sorted(BROKERS))
def test_one_node_answers_for_both_children(tmp_path, broker):
    url, module, task_name, args = BROKERS[broker]
    if broker == "redis":
        require_redis()
    celery = _celery_command()
    queue = f"prefork-inspect-{uuid.uuid4().hex[:8]}"
    hostname = f"{queue}@test"
    health = str(tmp_path / "health.json")
    env = _env(url, tmp_path)
    app = App("prefork-inspect", broker_url=url, result_backend=REDIS_URL,
              task_default_queue=queue)
    sent = {app.send_task(task_name, args).id for _ in range(TASKS)}
    worker = Proc([sys.executable, "-m", "fastq", "worker", "-A", module,
                   "-P", "prefork", "-c", "2", "-Q", queue, "-n", hostname, "-l", "info",
                   "--health-file", health], env, str(tmp_path / "worker.log"))
    celery_inspect = [celery, "-b", url, "inspect", "-d", hostname, "-t", "3", "-j"]
    fastq_inspect = [sys.executable, "-m", "fastq", "inspect", "-d", hostname, "-t", "3",
                     "--json"]
    try:
        def both_children_busy() -> bool:
            children = read_health(health).get("children") or []
            return len(children) == 2 and all(c["running"] for c in children)
        worker.wait_until(both_children_busy, timeout=30)
        children = sorted(c["pid"] for c in read_health(health)["children"])

        def listed() -> tuple[list, list]:
            active = _cli(env, *celery_inspect, "active")
            reserved = _cli(env, *celery_inspect, "reserved")
            assert list(active) == [hostname] and list(reserved) == [hostname]
            return active[hostname], reserved[hostname]
        # the parent answers from its children's reports, a moment behind them
        deadline = time.monotonic() + 15
        while True:
            active, reserved = listed()
            # every task is running, held by a child, or still in the queue (how many a
            # child holds is its prefetch window's business)
            queued = app.broker.queue_sizes().get(queue, 0)
            held = {t["id"] for t in active + reserved}
            if len(active) == 2 and held <= sent and len(held) + queued == TASKS:
                break
            assert time.monotonic() < deadline, (active, reserved, worker.log())
            time.sleep(0.2)
        assert sorted(t["worker_pid"] for t in active) == children
        assert all(t["name"] == task_name and t["args"] == args and t["hostname"] == hostname
                   and t["acknowledged"] for t in active)
        assert all(not t["acknowledged"] and t["worker_pid"] is None for t in reserved)

        stats = _cli(env, *celery_inspect, "stats")
        assert list(stats) == [hostname]
        assert stats[hostname]["pid"] == worker.proc.pid
        assert sorted(stats[hostname]["pool"]["processes"]) == children
        assert stats[hostname]["pool"]["max-concurrency"] == 2
        assert stats[hostname]["prefetch_count"] >= 2

        # fastq's own client sees the same single node
        mine = _cli(env, *fastq_inspect, "active")
        assert list(mine) == [hostname]
        assert {t["id"] for t in mine[hostname]} == {t["id"] for t in active}
        assert list(_cli(env, *fastq_inspect, "ping")) == [hostname]

        # a revoke reaches the children (each applies it) and the parent lists it once
        waiting = next(iter(sent - {t["id"] for t in active}))
        app.control.revoke(waiting)
        deadline = time.monotonic() + 10
        while waiting not in (revoked := _cli(env, *celery_inspect, "revoked"))[hostname]:
            assert time.monotonic() < deadline, revoked
            time.sleep(0.2)
        assert list(revoked) == [hostname]

        # a control command: every child applies it, the parent alone replies
        limited = _cli(env, celery, "-b", url, "control", "-d", hostname, "-t", "3", "-j",
                       "rate_limit", task_name, "10/m")
        assert limited == [{hostname: {"ok": "new rate limit set successfully"}}]
        enabled = _cli(env, celery, "-b", url, "control", "-d", hostname, "-t", "3", "-j",
                       "enable_events")
        assert enabled == [{hostname: {"ok": "task events enabled"}}]
        registered = _cli(env, *celery_inspect, "registered", "rate_limit")
        assert f"{task_name} [rate_limit=10/m]" in registered[hostname]
    finally:
        # cold: the 60 s tasks go back to the queue, which is deleted below
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGQUIT)
        worker.stop()
        app.close()
        if broker == "redis":
            delete_keys(f"{queue}*")
        else:
            delete_queues([queue])


def test_celery_control_shutdown_stops_the_whole_prefork_worker(tmp_path):
    """The parent hears ``shutdown`` and stops its children (they ignore it): the worker
    exits 0, and no child is left behind."""
    require_redis()
    celery = _celery_command()
    queue = f"prefork-shutdown-{uuid.uuid4().hex[:8]}"
    hostname = f"{queue}@test"
    health = str(tmp_path / "health.json")
    worker = Proc([sys.executable, "-m", "fastq", "worker", "-A", "tests.apps.redis_app",
                   "-P", "prefork", "-c", "2", "-Q", queue, "-n", hostname, "-l", "info",
                   "--health-file", health], _env(REDIS_URL, tmp_path),
                  str(tmp_path / "worker.log"))
    try:
        worker.wait_until(lambda: read_health(health).get("state") == "consuming", timeout=30)
        children = [c["pid"] for c in read_health(health)["children"]]
        done = subprocess.run([celery, "-b", REDIS_URL, "control", "-d", hostname,
                               "shutdown"], env=_env(REDIS_URL, tmp_path), cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        # a node going away does not reply (Celery's workers neither): celery exits 69
        assert done.returncode in (0, 69), done.stdout + done.stderr
        assert worker.proc.wait(30) == 0, worker.log()
        for pid in children:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert "Got shutdown from remote" in worker.log()
    finally:
        worker.stop()
