"""The control commands that change a running worker, sent by the real ``celery control``
to fastq worker processes on RabbitMQ and Redis: ``pool_grow``/``pool_shrink`` (more or
fewer tasks run at once), ``add_consumer``/``cancel_consumer`` (a queue consumed or not),
``revoke_by_stamped_headers``, ``pool_restart``, and revoked ids kept by ``--statedb``
across a restart."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastq import App
from tests.integration.redis_support import REDIS_URL, delete_keys, require_redis
from tests.integration.test_amqp_broker import URL as AMQP_URL
from tests.integration.test_amqp_broker import delete_queues
from tests.interop.processes import ROOT, Proc, read_health

# control plumbing: nothing here has a compiled twin of its own (the consumer loop's
# queue list is exercised by add_consumer under both builds all the same)
pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

#: Seconds the long tasks sleep: far longer than any test looks at them.
LONG = 60.0
BROKERS = {"amqp": AMQP_URL, "redis": REDIS_URL}


class Node:
    """One fastq worker process on ``url`` and the clients a test talks to it with."""

    def __init__(self, tmp_path, url: str, *worker_args: str, name: str = "worker",
                 env: dict | None = None) -> None:
        self.url = url
        self.queue = f"ctl-{uuid.uuid4().hex[:8]}"
        self.hostname = f"{self.queue}@test"
        self.health = str(tmp_path / f"{name}.json")
        self.env = dict(os.environ, FASTQ_BROKER_URL=url, FASTQ_RESULT_BACKEND=REDIS_URL,
                        FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"), **(env or {}),
                        PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
        self.app = App("control-commands", broker_url=url, result_backend=REDIS_URL,
                       task_default_queue=self.queue)
        self.queues = [self.queue]
        self.worker_args = worker_args
        self.log_path = str(tmp_path / f"{name}.log")
        self.worker: Proc | None = None

    def start(self, *extra: str) -> Node:
        self.worker = Proc([sys.executable, "-m", "fastq", "worker", "-A",
                            "tests.apps.control_app", "-Q", self.queue, "-n", self.hostname,
                            "-l", "info", "--health-file", self.health, *self.worker_args,
                            *extra], self.env, self.log_path)
        self.wait_until(lambda: read_health(self.health).get("state") == "consuming", 30)
        # consuming, and listening for remote control
        self.wait_until(lambda: self.app.control.ping(destination=[self.hostname],
                                                      timeout=0.5), 30)
        return self

    def wait_until(self, condition: Callable[[], Any], timeout: float = 20) -> None:
        assert self.worker is not None
        self.worker.wait_until(condition, timeout)

    def celery(self, *args: str) -> Any:
        """``celery -b URL <args> -d this-node -t 3 -j``: its JSON replies."""
        command = shutil.which("celery")
        if command is None:
            pytest.fail("the celery command is not on PATH (the dev virtualenv's bin)")
        kind, *rest = args
        done = subprocess.run([command, "-b", self.url, kind, "-d", self.hostname, "-t", "3",
                               "-j", *rest], env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    def control(self, *args: str) -> dict:
        """The node's reply to ``celery control <args>``."""
        replies = self.celery("control", *args)
        assert len(replies) == 1 and list(replies[0]) == [self.hostname], replies
        return replies[0][self.hostname]

    def inspect(self, *args: str) -> Any:
        return self.celery("inspect", *args)[self.hostname]

    def running(self) -> int:
        replies = self.app.control.inspect(destination=[self.hostname], timeout=1).active()
        return len((replies or {}).get(self.hostname, []))

    def consumed(self) -> set[str]:
        return {queue["name"] for queue in self.inspect("active_queues")}

    def close(self, cold: bool = True) -> None:
        if self.worker is not None:
            if cold and self.worker.proc.poll() is None:
                self.worker.proc.send_signal(signal.SIGQUIT)  # the long tasks go back
            self.worker.stop()
        self.app.close()
        if self.url == REDIS_URL:
            for queue in self.queues:
                delete_keys(f"{queue}*")
        else:
            delete_queues(self.queues)


@pytest.fixture(params=sorted(BROKERS))
def broker(request) -> str:
    if request.param == "redis":
        require_redis()
    return BROKERS[request.param]


@pytest.fixture
def nodes(tmp_path) -> Iterator[list[Node]]:
    require_redis()  # the results
    made: list[Node] = []
    yield made
    for node in made:
        node.close()


def state_of(node: Node, task_id: str) -> str:
    return node.app.AsyncResult(task_id).state


@pytest.mark.parametrize("pool", ["threads", "asyncio", "gevent"])
def test_pool_grow_runs_more_tasks_at_once_and_shrink_fewer(tmp_path, broker, nodes, pool):
    node = Node(tmp_path, broker, "-P", pool, "-c", "1", "--prefetch-multiplier", "1")
    nodes.append(node)
    node.start()
    assert node.control("pool_grow", "2") == {"ok": "pool will grow"}
    # three tasks that each wait for all three to have started: they return 3 only if
    # the pool ran them at once (with one slot, the first would wait out its timeout)
    key = f"{node.queue}-rendezvous"
    met = [node.app.send_task("c.rendezvous", (key, 3, LONG)) for _ in range(3)]
    assert [result.get(timeout=LONG + 30) for result in met] == [3, 3, 3]
    stats = node.inspect("stats")
    assert stats["pool"]["max-concurrency"] == 3 and stats["prefetch_count"] == 3
    assert node.control("pool_shrink", "2") == {"ok": "pool will shrink"}
    stats = node.inspect("stats")
    assert stats["pool"]["max-concurrency"] == 1 and stats["prefetch_count"] == 1


def test_solo_cannot_be_resized(tmp_path, nodes):
    node = Node(tmp_path, AMQP_URL, "-P", "solo")
    nodes.append(node)
    node.start()
    reply = node.control("pool_grow", "1")
    assert "solo pool runs one task at a time" in reply["error"]
    assert "Autoscale not enabled" in node.control("autoscale", "4", "2")["error"]


def test_memory_samples(tmp_path, nodes):
    node = Node(tmp_path, REDIS_URL, "-P", "threads")
    nodes.append(node)
    node.start()
    samples = [node.inspect("memsample") for _ in range(2)]
    assert all(sample.endswith("MB") and float(sample[:-2]) > 0 for sample in samples)
    dump = node.inspect("memdump")
    assert all(sample in dump for sample in samples), dump
    graph = node.inspect("objgraph")
    if importlib.util.find_spec("objgraph") is None:
        assert graph == {"error": "objgraph needs the objgraph package: pip install objgraph"}
    else:
        assert os.path.exists(graph["filename"])


def test_prefork_pool_grow_starts_children_and_shrink_stops_them(tmp_path, nodes):
    node = Node(tmp_path, REDIS_URL, "-P", "prefork", "-c", "1",
                "--prefetch-multiplier", "1")
    nodes.append(node)
    node.start()

    def children() -> list[dict]:
        return read_health(node.health).get("children") or []
    assert node.control("pool_grow", "1") == {"ok": "pool will grow"}
    node.wait_until(lambda: len(children()) == 2, 30)
    for _ in range(2):
        node.app.send_task("m.sleep", (LONG,))
    # both children run one each: twice the tasks at once
    node.wait_until(lambda: len([c for c in children() if c["running"]]) == 2, 30)
    assert node.control("pool_shrink", "1") == {"ok": "pool will shrink"}
    # the retired child finishes its task first (warm): it is still listed meanwhile
    node.wait_until(lambda: node.inspect("stats")["pool"]["max-concurrency"] == 1, 30)


def test_prefork_autoscale_moves_the_bounds(tmp_path, nodes):
    node = Node(tmp_path, REDIS_URL, "--autoscale", "2,1")
    nodes.append(node)
    node.start()
    assert node.control("autoscale", "3", "2") == {"ok": "autoscale now max=3 min=2"}
    # the new minimum is reached at once
    node.wait_until(lambda: len(read_health(node.health).get("children") or []) == 2, 30)
    assert "not supported with autoscale" in node.control("pool_grow", "1")["error"]


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_add_consumer_then_cancel_consumer(tmp_path, broker, nodes, pool):
    node = Node(tmp_path, broker, "-P", pool, "-c", "2")
    nodes.append(node)
    node.start()
    extra = f"{node.queue}-more"
    node.queues.append(extra)
    assert node.control("add_consumer", extra) == {"ok": f"add consumer {extra}"}
    assert node.consumed() == {node.queue, extra}
    done = node.app.send_task("m.add", (1, 2), queue=extra)
    assert done.get(timeout=30) == 3

    assert node.control("cancel_consumer", extra) == {"ok": f"no longer consuming from {extra}"}
    assert node.consumed() == {node.queue}
    # under prefork the parent replies for children that apply it as they hear it: a
    # task run after the request is a task run after they heard it
    assert node.app.send_task("m.add", (0, 1)).get(timeout=30) == 1
    stranded = node.app.send_task("m.add", (2, 3), queue=extra)
    # a task on the worker's own queue, sent after: once it ran, the other had its chance
    for _ in range(3):
        assert node.app.send_task("m.add", (0, 1)).get(timeout=30) == 1
    assert state_of(node, stranded.id) == "PENDING"


def test_fastq_control_sends_them_too(tmp_path, nodes):
    node = Node(tmp_path, REDIS_URL, "-P", "threads", "-c", "1")
    nodes.append(node)
    node.start()
    extra = f"{node.queue}-more"
    node.queues.append(extra)

    def fastq(kind: str, *args: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "fastq", kind, "-d", node.hostname,
                               "-t", "3", "--json", *args], env=node.env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)[node.hostname]
    assert fastq("control", "pool_grow", "2") == {"ok": "pool will grow"}
    assert fastq("inspect", "stats")["pool"]["max-concurrency"] == 3
    assert fastq("control", "add_consumer", extra) == {"ok": f"add consumer {extra}"}
    assert node.app.send_task("m.add", (1, 2), queue=extra).get(timeout=30) == 3
    assert fastq("control", "revoke_by_stamped_headers", "tenant=x")["ok"].startswith(
        "headers ['tenant=x'] flagged as revoked")
    assert fastq("inspect", "memsample").endswith("MB")


def test_revoke_by_stamped_headers(tmp_path, broker, nodes):
    from celery import Celery

    node = Node(tmp_path, broker, "-P", "threads", "-c", "2")
    nodes.append(node)
    node.start()
    reply = node.control("revoke_by_stamped_headers", "tenant=blocked")
    assert reply == {"ok": "headers ['tenant=blocked'] flagged as revoked, but not terminated"}
    client = Celery("stamping-client", broker=broker)
    try:
        blocked = client.send_task("m.add", (1, 1), queue=node.queue,
                                   stamped_headers=["tenant"], tenant="blocked")
        other = client.send_task("m.add", (2, 2), queue=node.queue,
                                 stamped_headers=["tenant"], tenant="fine")
        plain = client.send_task("m.add", (3, 3), queue=node.queue)
    finally:
        client.close()
    assert node.app.AsyncResult(other.id).get(timeout=30) == 4
    assert node.app.AsyncResult(plain.id).get(timeout=30) == 6
    node.wait_until(lambda: state_of(node, blocked.id) == "REVOKED", 30)


def test_revoke_by_stamped_headers_terminates_a_running_task(tmp_path, nodes):
    from celery import Celery

    node = Node(tmp_path, AMQP_URL, "-P", "asyncio", "-c", "2")
    nodes.append(node)
    node.start()
    client = Celery("stamping-client", broker=AMQP_URL)
    try:
        long = client.send_task("m.sleep", (LONG,), queue=node.queue,
                                stamped_headers=["batch"], batch="b1")
        node.wait_until(lambda: node.running() == 1, 30)
        # Celery's client (its command line has no --terminate for this command)
        replies = client.control.revoke_by_stamped_headers(
            {"batch": ["b1"]}, terminate=True, destination=[node.hostname], reply=True,
            timeout=3)
    finally:
        client.close()
    assert replies == [{node.hostname: {"ok": "headers {'batch': {'b1'}} revoked"}}]
    node.wait_until(lambda: state_of(node, long.id) == "REVOKED", 30)


def test_pool_restart_needs_the_setting(tmp_path, nodes):
    node = Node(tmp_path, REDIS_URL, "-P", "threads")
    nodes.append(node)
    node.start()
    assert "Pool restarts not enabled" in node.control("pool_restart")["error"]


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_pool_restart_restarts_and_keeps_working(tmp_path, nodes, pool):
    node = Node(tmp_path, REDIS_URL, "-P", pool, "-c", "1",
                env={"FASTQ_WORKER_POOL_RESTARTS": "true"})
    nodes.append(node)
    node.start()
    pid = node.worker.proc.pid
    before = read_health(node.health)
    first = [c["pid"] for c in before.get("children") or []]
    assert node.control("pool_restart") == {"ok": "reload started"}
    if pool == "prefork":  # a new child replaces the old one
        node.wait_until(lambda: [c["pid"] for c in read_health(node.health).get(
            "children") or []] not in ([], first), 30)
    else:  # the process starts afresh in place: same pid, a new start time
        node.wait_until(lambda: read_health(node.health).get("started_at", 0) >
                        before["started_at"], 30)
    assert node.worker.proc.pid == pid and node.worker.proc.poll() is None
    assert node.app.send_task("m.add", (2, 2)).get(timeout=30) == 4


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_statedb_keeps_revoked_ids_across_a_restart(tmp_path, broker, nodes, pool):
    statedb = str(tmp_path / "state.json")
    node = Node(tmp_path, broker, "-P", pool, "-c", "1", "--statedb", statedb)
    nodes.append(node)
    node.start()
    revoked_id = str(uuid.uuid4())
    node.celery("control", "revoke", revoked_id)
    node.wait_until(lambda: os.path.exists(statedb) and revoked_id in open(statedb).read(), 30)
    node.close(cold=False)
    nodes.remove(node)

    # another node name: whatever the broker keeps for the first one does not reach it
    # (under prefork the parent writes the file and each child reads it)
    again = Node(tmp_path, broker, "-P", pool, "-c", "1", "--statedb", statedb,
                 name="again")
    nodes.append(again)
    again.start()
    assert revoked_id in again.inspect("revoked")
    skipped = again.app.send_task("m.add", (1, 1), task_id=revoked_id)
    assert again.app.send_task("m.add", (2, 2)).get(timeout=30) == 4
    again.wait_until(lambda: state_of(again, skipped.id) == "REVOKED", 30)


def test_a_corrupt_statedb_costs_one_warning(tmp_path, nodes):
    statedb = tmp_path / "state.json"
    statedb.write_bytes(b"\x00 not json")
    node = Node(tmp_path, REDIS_URL, "-P", "threads", "--statedb", str(statedb))
    nodes.append(node)
    node.start()
    assert node.app.send_task("m.add", (2, 2)).get(timeout=30) == 4
    assert node.worker.log().count("cannot read the worker state file") == 1
