"""Revoking tasks: the bounded revoked set, the request format, and the whole path on the
in-memory broker (both consumer implementations)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from fastq import App, TaskRevokedError, _speedups
from fastq.brokers._mailbox import Mailbox
from fastq.control import revoke_command
from fastq.worker import _consumer_py, control
from fastq.worker.control import ControlListener
from fastq.worker.executor import Executor
from fastq.worker.pools.solo import SoloPool
from fastq.worker.revoked import RevokedSet


# -- the revoked set -----------------------------------------------------------------------
def test_revoked_set_keeps_the_newest_ids_up_to_its_bound() -> None:
    revoked = RevokedSet(maxlen=3, expires=60)
    for task_id in "abcd":
        revoked.add(task_id)
    assert "a" not in revoked
    assert [*revoked] == ["b", "c", "d"]
    revoked.add("b")  # revoked again: now the newest, so "c" goes next
    revoked.add("e")
    assert [*revoked] == ["d", "b", "e"]
    assert len(revoked) == 3


def test_revoked_set_forgets_ids_after_expires() -> None:
    revoked = RevokedSet(maxlen=10, expires=100)
    now = time.time()
    revoked.add("old", revoked_at=now - 90)
    revoked.add("new", revoked_at=now - 10)
    assert revoked.prune(now) == 0
    assert revoked.prune(now + 20) == 1
    assert "old" not in revoked and "new" in revoked
    revoked.add("ancient", revoked_at=now - 500)  # a replayed revoke already forgotten
    assert "ancient" not in revoked


def test_default_bounds_match_celery(tmp_path) -> None:
    app = App("bounds", broker="memory://bounds")
    executor = Executor(app, "w@test")
    assert (executor.revoked.maxlen, executor.revoked.expires) == (50_000, 10_800.0)
    app.conf.update(worker_revokes_max=7, worker_revoke_expires=5)
    executor = Executor(app, "w@test")
    assert (executor.revoked.maxlen, executor.revoked.expires) == (7, 5.0)


# -- requests ----------------------------------------------------------------------------
def test_revoke_request_is_celerys() -> None:
    assert revoke_command("id-1") == {
        "method": "revoke", "arguments": {"task_id": "id-1", "terminate": False,
                                          "signal": "SIGTERM"},
        "destination": None, "pattern": None, "matcher": None}
    assert revoke_command(["a", "b"], terminate=True)["arguments"]["task_id"] == ["a", "b"]


class _RecordingMailbox(Mailbox):
    def __init__(self) -> None:
        self.replies: list[tuple[dict, dict]] = []

    def reply(self, command: dict, body: dict) -> None:
        self.replies.append((command, body))


def _listener() -> tuple[ControlListener, _RecordingMailbox]:
    listener = ControlListener(None, "fq1@host", RevokedSet())  # type: ignore[arg-type]
    mailbox = listener._mailbox = _RecordingMailbox()
    return listener, mailbox


def test_listener_applies_revokes_meant_for_it_and_replies_when_asked() -> None:
    listener, mailbox = _listener()
    listener.handle({**revoke_command(["a", "b"]), "destination": ["other@host"]})
    assert "a" not in listener.revoked
    listener.handle({**revoke_command(["a", "b"]), "pattern": "fq*@host", "matcher": "glob"})
    assert "a" in listener.revoked and "b" in listener.revoked
    assert mailbox.replies == []  # a cast: no ticket, no reply
    ask = {"ticket": "t-1", "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "k"}}
    listener.handle({**revoke_command("c"), **ask, "destination": ["fq1@host"]})
    listener.handle({"method": "ping", "arguments": {}, **ask})
    listener.handle({"method": "no_such", "arguments": {}, **ask})
    assert [body for _c, body in mailbox.replies] == [
        {"fq1@host": {"ok": "tasks c flagged as revoked"}},
        {"fq1@host": {"ok": "pong"}},
        {"fq1@host": {"error": "No such control command: no_such"}}]


# -- the whole path on the memory broker ---------------------------------------------------
@pytest.fixture
def app(monkeypatch):
    monkeypatch.setattr(control, "POLL_INTERVAL", 0.02)
    app = App("revoke", broker=f"memory://{uuid.uuid4()}", worker_ack_interval=0.01)
    runs: list[str] = []

    @app.task(name="r.sleep", bind=True)
    def sleep(self, seconds):
        runs.append(self.request.id)
        time.sleep(seconds)
        return seconds

    @app.task(name="r.add", bind=True)
    def add(self, x, y):
        runs.append(self.request.id)
        return x + y

    app.runs = runs
    yield app
    app.close()


@pytest.fixture
def start_worker(app, impl):
    Consumer = _consumer_py.Consumer if impl == "py" else _speedups.load("_consumer").Consumer
    started = []

    def start():
        executor = Executor(app, "mem@test")
        pool = SoloPool(executor, 1)
        pool.start()
        consumer = Consumer(app, app.broker, executor, pool, ["celery"], 4,
                            ack_batch_size=64, ack_interval=0.01, hostname="mem@test")
        listener = ControlListener(app.broker, "mem@test", executor.revoked)
        listener.start()
        thread = threading.Thread(target=consumer.run, daemon=True)
        thread.start()
        started.append((consumer, thread, listener))
        return consumer

    yield start
    for consumer, thread, listener in started:
        consumer.stop()
        thread.join(5)
        listener.stop()


def _wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_prefetched_task_revoked_while_it_waits_is_not_run(app, start_worker) -> None:
    long = app.send_task("r.sleep", (0.4,))
    waiting = app.send_task("r.add", (1, 2))
    after = app.send_task("r.add", (3, 4))
    consumer = start_worker()
    _wait(lambda: long.id in app.runs)
    assert consumer.counters["received"] == 3  # all three held: the revoke must find it there
    waiting.revoke()
    assert long.get(timeout=5) == 0.4
    with pytest.raises(TaskRevokedError, match="revoked"):
        waiting.get(timeout=5)
    assert waiting.state == "REVOKED"
    assert after.get(timeout=5) == 7
    assert waiting.id not in app.runs
    _wait(lambda: consumer.counters["acked"] == 3)


def test_a_worker_started_after_the_revoke_still_skips_the_task(app, start_worker) -> None:
    result = app.send_task("r.add", (1, 1))
    app.control.revoke([result.id, "some-other-id"])
    start_worker()
    with pytest.raises(TaskRevokedError):
        result.get(timeout=5)
    assert app.runs == []
    assert app.send_task("r.add", (2, 2)).get(timeout=5) == 4


def test_a_revoke_names_its_signal_as_celery_does() -> None:
    import signal

    from fastq.worker.control import signal_number

    assert signal_number("SIGKILL") == signal_number("KILL") == signal_number(9) == 9
    assert signal_number("sigusr1") == signal.SIGUSR1
    assert signal_number(None) == signal_number("NOPE") == signal.SIGTERM
