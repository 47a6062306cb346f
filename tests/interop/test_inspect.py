"""Celery's inspect and control commands against a fastq worker: the replies compared
field by field with a real Celery 5.7 worker's, and the real ``celery`` command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from fastq import App
from tests.integration.test_amqp_broker import URL, delete_queues
from tests.interop.processes import ROOT, Proc

pytest.importorskip("celery")

# control plumbing only: nothing here has a compiled twin; Celery's control client leaves
# sockets for the garbage collector
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral,
              pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

#: How long the tasks the commands look at keep running, in seconds.
BUSY = 4.0


@pytest.fixture
def queues() -> Iterator[tuple[str, str]]:
    names = (f"fastq-inspect-{uuid.uuid4().hex[:8]}", f"celery-inspect-{uuid.uuid4().hex[:8]}")
    yield names
    delete_queues(names)


@pytest.fixture
def env(tmp_path) -> dict:
    return dict(os.environ, FASTQ_BROKER_URL=URL, CELERY_BROKER_URL=URL,
                FASTQ_RESULT_BACKEND=f"sqlite:///{tmp_path / 'results.sqlite3'}",
                FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
                PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


def shape(value: object) -> object:
    """The structure of a reply: dict keys (recursively) and value types, not values."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else type(value).__name__


def celery_cli(env: dict, *args: str) -> subprocess.Popen:
    command = shutil.which("celery") or pytest.skip("the celery command is not installed")
    return subprocess.Popen([command, "-A", "tests.apps.celery_monitor_app", "-b", URL, *args],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    return out


def wait_until(condition, timeout: float, workers: list[Proc]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("not in time:\n" + "\n---\n".join(w.log() for w in workers))


def test_inspect_replies_have_celerys_shape(tmp_path, env, queues) -> None:
    from celery import Celery

    celery_bin = shutil.which("celery") or pytest.skip("the celery command is not installed")
    fastq_queue, celery_queue = queues
    fastq_node, celery_node = f"{fastq_queue}@test", f"{celery_queue}@test"
    client = Celery("inspect-client", broker=URL)
    workers = [
        Proc([sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.monitor_app",
              "-E", "-P", "threads", "-c", "2", "-Q", fastq_queue, "-n", fastq_node,
              # Celery's default window, so the third task is held (reserved) as Celery
              # holds it; fastq's adaptive window holds nothing behind long tasks
              "--prefetch-multiplier", "4", "-l", "info"], env,
             str(tmp_path / "fastq-worker.log")),
        Proc([celery_bin, "-A", "tests.apps.celery_monitor_app", "worker", "-P", "threads",
              "-c", "2", "--without-gossip", "--without-mingle", "-Q", celery_queue,
              "-n", celery_node, "-l", "info"], env, str(tmp_path / "celery-worker.log")),
    ]
    both = [fastq_node, celery_node]
    try:
        wait_until(lambda: len(client.control.ping(destination=both, timeout=0.5)) == 2, 30,
                   workers)
        revoked_id = str(uuid.uuid4())
        client.control.revoke(revoked_id)
        running = {node: [client.send_task("m.sleep", (BUSY,), queue=queue).id
                          for _ in range(3)]
                   for node, queue in ((fastq_node, fastq_queue), (celery_node, celery_queue))}
        inspect = client.control.inspect(destination=both, timeout=2)
        # each worker runs two of its three tasks (concurrency 2) and holds the third
        wait_until(lambda: all(len(v) == 2 for v in (inspect.active() or {}).values())
                   and len(inspect.active() or {}) == 2, 10, workers)
        replies = {name: getattr(inspect, name)() for name in (
            "active", "reserved", "scheduled", "stats", "revoked", "active_queues",
            "registered", "report", "clock", "ping")}
        replies["query_task"] = inspect.query_task(*running[fastq_node], *running[celery_node])
        replies["conf"] = inspect.conf()
        items = client.control.inspect(destination=[fastq_node], timeout=2).registered(
            "rate_limit")
        hello = client.control.broadcast("hello", arguments={"from_node": "other@host",
                                                             "revoked": {}},
                                         destination=both, reply=True, timeout=2)
        # fastq's own client reads both workers' replies the same way
        fastq_client = App("inspect-fastq-client", broker_url=URL)
        try:
            by_fastq = fastq_client.control.inspect(destination=both, timeout=2).active()
        finally:
            fastq_client.close()
    finally:
        for worker in workers:
            worker.proc.kill()  # nothing to keep; a warm stop would wait for the sleeps
            worker.stop()
        client.close()

    for name, by_node in replies.items():
        assert set(by_node) == set(both), (name, by_node)
    assert {node: sorted(t["id"] for t in tasks) for node, tasks in by_fastq.items()} == {
        node: sorted(t["id"] for t in tasks) for node, tasks in replies["active"].items()}
    ours = {name: by_node[fastq_node] for name, by_node in replies.items()}
    theirs = {name: by_node[celery_node] for name, by_node in replies.items()}
    for name in ("active", "reserved", "scheduled", "revoked", "clock", "ping", "registered"):
        assert shape(ours[name]) == shape(theirs[name]), (name, ours[name], theirs[name])
    # Celery's entries, and fastq's one more: the signed messages it refused
    assert set(ours["stats"]) == set(theirs["stats"]) | {"bad_signatures"}
    for key in ("broker", "rusage"):
        assert set(ours["stats"][key]) == set(theirs["stats"][key]), key
    assert set(ours["stats"]["pool"]) == set(theirs["stats"]["pool"])
    assert set(ours["active_queues"][0]) == set(theirs["active_queues"][0])
    assert set(ours["active_queues"][0]["exchange"]) == set(theirs["active_queues"][0]["exchange"])
    assert len(ours["query_task"]) == len(theirs["query_task"]) == 3
    for found in (ours["query_task"], theirs["query_task"]):
        assert {state for state, _info in found.values()} == {"active", "reserved"}
    (state, info), (their_state, their_info) = (next(iter(found.values())) for found in (
        ours["query_task"], theirs["query_task"]))
    assert shape(info) == shape(their_info)
    assert set(ours["report"]) == {"ok"} and "fastq:" in ours["report"]["ok"]

    # the values, where they must agree with what was sent
    assert sorted(t["id"] for t in ours["active"]) == sorted(
        t for t in running[fastq_node] if t not in {r["id"] for r in ours["reserved"]})
    assert [t["id"] for t in ours["reserved"]] == [
        t for t in running[fastq_node] if t not in {a["id"] for a in ours["active"]}]
    active = ours["active"][0]
    assert (active["name"], active["args"], active["acknowledged"]) == ("m.sleep", [BUSY], True)
    assert active["worker_pid"] > 0 and active["time_start"] > 0
    assert active["delivery_info"]["routing_key"] == fastq_queue
    assert ours["reserved"][0]["acknowledged"] is False
    assert revoked_id in ours["revoked"]
    assert ours["stats"]["pool"]["max-concurrency"] == 2
    assert ours["stats"]["total"] == {"m.sleep": 3}
    assert ours["stats"]["broker"]["hostname"] == "127.0.0.1"
    assert ours["active_queues"][0]["name"] == fastq_queue
    assert "m.add" in ours["registered"] and "m.sleep" in ours["registered"]
    assert "m.limited [rate_limit=100/s]" in items[fastq_node]
    assert ours["conf"]["broker_url"] == "amqp://guest:***@127.0.0.1:5672//"
    assert ours["conf"]["result_backend"].startswith("sqlite:///")
    assert {fastq_node: {"revoked": [revoked_id], "clock": ours["clock"]["clock"]}} in hello \
        or any(fastq_node in r and revoked_id in r[fastq_node]["revoked"] for r in hello)


def test_the_celery_command_inspects_and_controls_a_fastq_worker(tmp_path, env, queues) -> None:
    from celery import Celery

    fastq_queue = queues[0]
    node = f"{fastq_queue}@test"
    client = Celery("inspect-cli", broker=URL)
    worker = Proc([sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.monitor_app",
                   "-P", "threads", "-c", "2", "-Q", fastq_queue, "-n", node,
                   "--prefetch-multiplier", "4", "-l", "info"],  # the third task reserved
                  env, str(tmp_path / "fastq-worker.log"))
    try:
        wait_until(lambda: client.control.ping(destination=[node], timeout=0.5), 20, [worker])
        sleeping = [client.send_task("m.sleep", (BUSY,), queue=fastq_queue).id
                    for _ in range(3)]
        wait_until(lambda: len((client.control.inspect(destination=[node], timeout=1)
                                .active() or {}).get(node, [])) == 2, 10, [worker])
        # the real command line, its four runs at once (each takes a second to start)
        runs = {name: celery_cli(env, "inspect", name, "-d", node, "--json", "-t", "5")
                for name in ("active", "reserved", "stats", "registered")}
        runs["rate_limit"] = celery_cli(env, "control", "rate_limit", "m.add", "5/s",
                                        "-d", node, "-t", "5")
        runs["time_limit"] = celery_cli(env, "control", "time_limit", "m.add", "10", "20",
                                        "-d", node, "-t", "5")
        out = {name: finish(proc) for name, proc in runs.items()}
        stats = client.control.inspect(destination=[node], timeout=2).registered(
            "rate_limit", "time_limit", "soft_time_limit")
        # as a Celery worker, the node goes without a reply: the command says so (exit 69)
        shutdown = celery_cli(env, "control", "shutdown", "-d", node, "-t", "1")
        said, _ = shutdown.communicate(timeout=30)
        assert shutdown.returncode == 69 and "No nodes replied" in said, said
        worker.proc.wait(BUSY + 10)  # a warm shutdown: the running tasks finish first
    finally:
        worker.stop()
        client.close()

    def reply(name: str) -> object:
        return json.loads(out[name].strip().splitlines()[-1])[node]

    active_ids = {t["id"] for t in reply("active")}
    reserved_ids = [t["id"] for t in reply("reserved")]
    assert len(active_ids) == 2 and len(reserved_ids) == 1
    assert active_ids | set(reserved_ids) == set(sleeping)
    assert reply("stats")["pool"]["implementation"] == "fastq.worker.pools:threads"
    assert "m.add" in reply("registered")
    assert "new rate limit set successfully" in out["rate_limit"]
    assert "time limits set successfully" in out["time_limit"]
    assert "m.add [rate_limit=5/s time_limit=20.0 soft_time_limit=10.0]" in stats[node]
    assert worker.proc.returncode == 0
    log = worker.log()
    assert "Got shutdown from remote" in log and "warm shutdown" in log
    assert log.count("m.sleep[") >= 4  # received and finished, not cut short
