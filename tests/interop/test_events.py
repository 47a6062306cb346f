"""Celery events from fastq workers, read by Celery's own receiver, compared field by
field with the events a real Celery 5.7 worker sends for the same tasks."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from fastq import App
from tests.integration.redis_support import REDIS_URL, delete_keys, require_redis
from tests.integration.test_amqp_broker import URL, delete_queues
from tests.interop.processes import ROOT, Proc

pytest.importorskip("celery")

# control and event plumbing only: nothing here has a compiled twin; Celery's clients
# leave sockets for the garbage collector
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral,
              pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


class EventCapture:
    """Celery's ``EventReceiver`` in a thread, keeping every event it reads."""

    def __init__(self, url: str) -> None:
        from celery import Celery

        self.app = Celery("event-capture", broker=url)
        self.events: list[dict] = []
        self._receiver = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self.app.connection() as conn:
            self._receiver = self.app.events.Receiver(
                conn, handlers={"*": self.events.append})
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def of(self, hostname: str, kind: str | None = None) -> list[dict]:
        return [e for e in list(self.events) if e.get("hostname") == hostname
                and (kind is None or e.get("type") == kind)]

    def one(self, hostname: str, kind: str, task_id: str) -> dict:
        """The event of ``kind`` about ``task_id``; the first, if a retry sent more."""
        found = [e for e in self.of(hostname, kind) if e.get("uuid") == task_id]
        assert found, (kind, task_id, self.of(hostname))
        return found[0]

    def stop(self) -> None:
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(5)
        self.app.close()


def wait_for(condition: Callable[[], object], timeout: float, procs: list[Proc],
             capture: EventCapture | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        for proc in procs:
            if proc.proc.poll() is not None:
                raise AssertionError(f"worker exited {proc.proc.returncode}:\n{proc.log()}")
        time.sleep(0.05)
    seen = "".join(f"{e.get('hostname')} {e.get('type')} {e.get('uuid')}\n"
                   for e in (capture.events if capture else ()))
    raise AssertionError(f"not seen in time; events:\n{seen}\nlogs:\n"
                         + "\n---\n".join(p.log() for p in procs))


def kinds(event: dict) -> dict[str, str]:
    """Each field's type name; the receiver's own ``local_received`` left out."""
    return {key: type(value).__name__ for key, value in event.items()
            if key != "local_received"}


@pytest.fixture
def queues() -> Iterator[tuple[str, str]]:
    names = (f"fastq-events-{uuid.uuid4().hex[:8]}", f"celery-events-{uuid.uuid4().hex[:8]}")
    yield names
    delete_queues(names)


@pytest.fixture
def env(tmp_path) -> dict:
    return dict(os.environ, FASTQ_BROKER_URL=URL, CELERY_BROKER_URL=URL,
                FASTQ_RESULT_BACKEND=f"sqlite:///{tmp_path / 'results.sqlite3'}",
                FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
                PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


def test_fastq_events_have_celerys_fields(tmp_path, env, queues) -> None:
    from celery import Celery

    celery_bin = shutil.which("celery") or pytest.skip("the celery command is not installed")
    fastq_queue, celery_queue = queues
    fastq_node, celery_node = f"{fastq_queue}@test", f"{celery_queue}@test"
    capture = EventCapture(URL)
    client = Celery("events-client", broker=URL)
    client.conf.task_send_sent_event = True
    producer = App("events-producer", broker_url=URL, task_send_sent_event=True)
    workers = [
        Proc([sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.monitor_app",
              "-E", "-P", "solo", "-Q", fastq_queue, "-n", fastq_node, "-l", "info"], env,
             str(tmp_path / "fastq-worker.log")),
        Proc([celery_bin, "-A", "tests.apps.celery_monitor_app", "worker", "-E", "-P", "solo",
              "--without-gossip", "--without-mingle", "-Q", celery_queue, "-n", celery_node,
              "-l", "info"], env, str(tmp_path / "celery-worker.log")),
    ]
    try:
        # both heard from: the receiver's queue is bound and both workers send
        wait_for(lambda: capture.of(fastq_node, "worker-heartbeat")
                 and capture.of(celery_node), 30, workers)
        ids: dict[str, dict[str, str]] = {}
        revoked = {node: str(uuid.uuid4()) for node in (fastq_node, celery_node)}
        client.control.revoke(list(revoked.values()))
        # a reply to a ping sent after the revoke: each worker has applied the revoke
        replies = client.control.ping(destination=[fastq_node, celery_node], timeout=5)
        assert len(replies) == 2, replies
        for node, queue in ((fastq_node, fastq_queue), (celery_node, celery_queue)):
            ids[node] = {
                # first, while the worker is idle: RabbitMQ hands a message that expires
                # on arrival (Celery's client sets expiration "0") only to a consumer
                # ready for it, and drops it otherwise
                "expired": client.send_task("m.add", (1, 1), queue=queue, expires=-5).id,
                "add": client.send_task("m.add", (2, 3), queue=queue).id,
                "fail": client.send_task("m.fail", ("boom",), queue=queue).id,
                "retry": client.send_task("m.retry", queue=queue).id,
                "revoked": client.send_task("m.add", (1, 1), queue=queue,
                                            task_id=revoked[node]).id,
                "unknown": client.send_task("m.nope", queue=queue).id,
            }
        sent_by_fastq = producer.send_task("m.add", (4, 5), queue=fastq_queue).id

        def all_in() -> bool:
            return all(
                [e for e in capture.of(node, "task-revoked") if e["uuid"] == ids[node]["expired"]]
                and [e for e in capture.of(node, "task-failed") if e["uuid"] == ids[node]["retry"]]
                and [e for e in capture.of(node, "task-failed")
                     if e["uuid"] == ids[node]["unknown"]]
                for node in ids) and any(
                e.get("type") == "task-succeeded" and e.get("uuid") == sent_by_fastq
                for e in capture.of(fastq_node))
        wait_for(all_in, 20, workers, capture)
        # a second heartbeat of fastq's: every freq seconds
        wait_for(lambda: len(capture.of(fastq_node, "worker-heartbeat")) >= 2, 5, workers)
    finally:
        for worker in workers:
            worker.stop()
        capture.stop()
        client.close()
        producer.close()

    f, c = ids[fastq_node], ids[celery_node]
    compared = [("task-received", "add"), ("task-started", "add"), ("task-succeeded", "add"),
                ("task-received", "fail"), ("task-failed", "fail"),
                ("task-retried", "retry"), ("task-revoked", "revoked"),
                ("task-revoked", "expired"), ("task-failed", "unknown")]
    for kind, task in compared:
        ours = capture.one(fastq_node, kind, f[task])
        theirs = capture.one(celery_node, kind, c[task])
        assert kinds(ours) == kinds(theirs), (kind, task, ours, theirs)

    succeeded = capture.one(fastq_node, "task-succeeded", f["add"])
    assert succeeded["result"] == "5" and 0 <= succeeded["runtime"] < 1
    failed = capture.one(fastq_node, "task-failed", f["fail"])
    assert failed["exception"] == "KeyError('boom')"
    assert "raise KeyError(message)" in failed["traceback"]
    received = capture.one(fastq_node, "task-received", f["add"])
    assert (received["name"], received["args"], received["kwargs"]) == ("m.add", "(2, 3)", "{}")
    assert "m.nope" in capture.one(fastq_node, "task-failed", f["unknown"])["exception"]
    assert capture.one(fastq_node, "task-revoked", f["revoked"])["expired"] is False
    assert capture.one(fastq_node, "task-revoked", f["expired"])["expired"] is True
    # revoked on receipt: no task-received, as with Celery
    assert not [e for e in capture.of(fastq_node, "task-received")
                if e["uuid"] in (f["revoked"], f["expired"])]

    ours, theirs = (capture.of(node, "worker-heartbeat")[0] for node in (fastq_node, celery_node))
    assert kinds(ours) == kinds(theirs)
    assert (ours["sw_ident"], ours["freq"], len(ours["loadavg"])) == ("fastq", 2.0, 3)
    beats = [e["timestamp"] for e in capture.of(fastq_node, "worker-heartbeat")]
    assert 1.5 < beats[1] - beats[0] < 3.0, beats
    assert capture.of(fastq_node, "worker-online")
    assert capture.of(fastq_node, "worker-offline")  # sent on the way out
    assert capture.of(fastq_node, "worker-offline")[0]["processed"] >= 5

    # task-sent from a fastq producer against the same from a Celery client
    ours = [e for e in capture.events if e.get("type") == "task-sent"
            and e.get("uuid") == sent_by_fastq]
    theirs = [e for e in capture.events if e.get("type") == "task-sent"
              and e.get("uuid") == c["add"]]
    assert len(ours) == 1 and len(theirs) == 1
    assert kinds(ours[0]) == kinds(theirs[0])
    assert ours[0]["hostname"].startswith("gen") and ours[0]["queue"] == fastq_queue


def test_task_events_follow_enable_and_disable_events(tmp_path, env, queues) -> None:
    from celery import Celery

    fastq_queue = queues[0]
    node = f"{fastq_queue}@test"
    capture = EventCapture(URL)
    client = Celery("events-toggle", broker=URL)
    worker = Proc([sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.monitor_app",
                   "-P", "solo", "-Q", fastq_queue, "-n", node, "-l", "info"], env,
                  str(tmp_path / "fastq-worker.log"))
    try:
        # no -E: heartbeats, as Celery sends them, but no task events
        wait_for(lambda: capture.of(node, "worker-heartbeat") or capture.of(node, "worker-online"),
                 20, [worker])
        quiet = client.send_task("m.add", (1, 2), queue=fastq_queue).id
        wait_for(lambda: f"m.add[{quiet}] succeeded" in worker.log(), 10, [worker])
        assert client.control.broadcast("enable_events", destination=[node], reply=True,
                                        timeout=5) == [{node: {"ok": "task events enabled"}}]
        heard = client.send_task("m.add", (3, 4), queue=fastq_queue).id
        wait_for(lambda: [e for e in capture.of(node, "task-succeeded") if e["uuid"] == heard],
                 10, [worker])
        assert not [e for e in capture.of(node) if e.get("uuid") == quiet]
        assert client.control.broadcast("disable_events", destination=[node], reply=True,
                                        timeout=5) == [{node: {"ok": "task events disabled"}}]
        after = client.send_task("m.add", (5, 6), queue=fastq_queue).id
        marker = client.send_task("m.add", (7, 8), queue=fastq_queue).id
        # both ran (the worker log says so) and neither was announced
        wait_for(lambda: f"m.add[{marker}] succeeded" in worker.log(), 10, [worker])
        assert f"m.add[{after}] succeeded" in worker.log()
        # the heartbeat the worker sends on request (control heartbeat) is the proof that
        # its event thread has published what it had queued before it
        count = len(capture.of(node, "worker-heartbeat"))
        client.control.broadcast("heartbeat", destination=[node])
        wait_for(lambda: len(capture.of(node, "worker-heartbeat")) > count, 5, [worker])
        assert not [e for e in capture.of(node) if e.get("uuid") in (after, marker)]
    finally:
        worker.stop()
        capture.stop()
        client.close()


def test_events_on_redis_reach_celerys_receiver(tmp_path, env) -> None:
    require_redis()
    queue = f"fastq-events-{uuid.uuid4().hex[:8]}"
    node = f"{queue}@test"
    env = dict(env, FASTQ_BROKER_URL=REDIS_URL, CELERY_BROKER_URL=REDIS_URL)
    capture = EventCapture(REDIS_URL)
    producer = App("events-redis", broker_url=REDIS_URL)
    worker = Proc([sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.monitor_app",
                   "-E", "-P", "threads", "-c", "2", "-Q", queue, "-n", node, "-l", "info"], env,
                  str(tmp_path / "fastq-worker.log"))
    try:
        wait_for(lambda: capture.of(node, "worker-heartbeat"), 20, [worker])
        ok = producer.send_task("m.add", (20, 22), queue=queue).id
        bad = producer.send_task("m.fail", ("x",), queue=queue).id
        wait_for(lambda: [e for e in capture.of(node, "task-succeeded") if e["uuid"] == ok]
                 and [e for e in capture.of(node, "task-failed") if e["uuid"] == bad],
                 10, [worker])
    finally:
        worker.stop()
        capture.stop()
        producer.close()
        delete_keys(f"{queue}*")
    assert capture.one(node, "task-succeeded", ok)["result"] == "42"
    assert [e["type"] for e in capture.of(node) if e.get("uuid") == ok] == [
        "task-received", "task-started", "task-succeeded"]


def test_a_replaced_prefork_child_does_not_take_its_worker_offline(tmp_path, env,
                                                                   queues) -> None:
    from celery import Celery

    queue = queues[0]
    node = f"{queue}@test"
    capture = EventCapture(URL)
    client = Celery("events-prefork", broker=URL)
    worker = Proc([sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.monitor_app",
                   "-E", "-P", "prefork", "-c", "1", "--max-tasks-per-child", "1",
                   "-Q", queue, "-n", node, "-l", "info"], env, str(tmp_path / "worker.log"))
    try:
        wait_for(lambda: capture.of(node, "worker-heartbeat") or capture.of(node, "worker-online"),
                 20, [worker])
        first = client.send_task("m.add", (1, 2), queue=queue).id
        wait_for(lambda: [e for e in capture.of(node, "task-succeeded") if e["uuid"] == first],
                 10, [worker])
        second = client.send_task("m.add", (3, 4), queue=queue).id  # run by the next child
        wait_for(lambda: [e for e in capture.of(node, "task-succeeded") if e["uuid"] == second],
                 10, [worker])
        assert not capture.of(node, "worker-offline")
        worker.stop()
        wait_for(lambda: capture.of(node, "worker-offline"), 5, [])
    finally:
        worker.stop()
        capture.stop()
        client.close()
    pids = {capture.one(node, "task-succeeded", task_id)["pid"] for task_id in (first, second)}
    assert len(pids) == 2  # two children, one after the other
