"""A real worker process on the embedded SQLite broker, driven by the test process."""

from __future__ import annotations

import signal
import sqlite3
import time
import uuid
import zlib
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from fastq.exceptions import ResultTimeout
from fastq.protocol import Message

pytestmark = pytest.mark.integration


def test_results_come_back(worker, producer):
    worker()
    results = [producer.tasks["t.add"].delay(i, i) for i in range(50)]
    assert [r.get(timeout=20) for r in results] == [2 * i for i in range(50)]
    assert results[0].state == "SUCCESS" and results[0].successful()


def test_failure_reraises_the_same_exception_with_the_remote_traceback(worker, producer):
    worker()
    from tests.apps.sqlite_app import Boom

    result = producer.tasks["t.fail"].delay("it broke")
    with pytest.raises(Boom) as info:
        result.get(timeout=20)
    assert info.value.args == ("it broke", 42)
    assert result.failed() and result.state == "FAILURE"
    assert "raise Boom(message, 42)" in result.traceback
    assert isinstance(result.result, Boom)


def test_retry_republishes_with_incremented_retries(worker, producer):
    w = worker()
    result = producer.tasks["t.flaky"].delay(2)
    assert result.get(timeout=20) == 2
    runs = w.runs(result.id)
    assert [int(r[2]) for r in runs] == [0, 1, 2]
    times = [float(r[3]) for r in runs]
    assert all(b - a >= 0.19 for a, b in zip(times, times[1:])), times  # countdown=0.2


def test_autoretry_gives_up_after_max_retries(worker, producer):
    w = worker()
    result = producer.tasks["t.auto"].delay()
    with pytest.raises(KeyError):
        result.get(timeout=20)
    assert [int(r[2]) for r in w.runs(result.id)] == [0, 1, 2]


def test_countdown_runs_no_earlier_than_asked(worker, producer):
    w = worker()
    sent = time.time()
    result = producer.tasks["t.add"].apply_async((1, 2), countdown=1.0)
    assert result.get(timeout=20) == 3
    (run,) = w.runs(result.id)
    assert float(run[3]) >= sent + 1.0


def test_an_expired_task_is_revoked_not_run(worker, producer):
    w = worker()
    past = datetime.now(timezone.utc) - timedelta(seconds=5)
    result = producer.tasks["t.add"].apply_async((1, 2), expires=past)
    from fastq.exceptions import TaskRevokedError

    with pytest.raises(TaskRevokedError, match="expired"):
        result.get(timeout=20)
    assert result.state == "REVOKED"
    assert producer.tasks["t.add"].delay(2, 2).get(timeout=20) == 4
    assert w.runs(result.id) == []


def test_poison_messages_are_dead_lettered_and_the_worker_keeps_running(worker, producer):
    w = worker()
    good = producer.build_message("t.add", (1, 1))
    bad_json = Message(dict(good.headers, id=str(uuid.uuid4())), good.properties,
                       b"[[1, 1], {", queue="celery")
    two_elements = Message(dict(good.headers, id=str(uuid.uuid4())), good.properties,
                           b"[[1, 1], {}]", queue="celery")
    no_task = Message({k: v for k, v in good.headers.items() if k != "task"},
                      good.properties, b'"hello"', queue="celery")
    bad_type = Message(dict(good.headers, id=str(uuid.uuid4())),
                       dict(good.properties, content_type="application/x-python-serialize"),
                       b"\x80\x04K\x01.", queue="celery")
    unknown = producer.build_message("t.nope", (1,))
    # 128 MiB of zeros in 128 KiB: over the default worker_max_message_size once inflated
    packer = zlib.compressobj(9)
    bomb_body = b"".join(packer.compress(bytes(1 << 20)) for _ in range(128)) + packer.flush()
    bomb = Message(dict(good.headers, id=str(uuid.uuid4()), compression="application/x-gzip"),
                   good.properties, bomb_body, queue="celery")
    producer.broker.publish_many([bad_json, two_elements, no_task, bad_type, unknown, bomb])
    assert producer.tasks["t.add"].delay(20, 22).get(timeout=20) == 42
    # under prefork another child may still be on the last of them
    deadline = time.monotonic() + 20
    while len(letters := producer.broker.dead_letters()) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    reasons = sorted(d["reason"].split(":")[0] for d in letters)
    assert reasons == sorted(["decode-error", "invalid-body", "unknown-format",
                              "content-disallowed", "unknown-task", "too-large"])
    from fastq.exceptions import TaskNotRegistered

    with pytest.raises(TaskNotRegistered):
        producer.AsyncResult(unknown.headers["id"]).get(timeout=5)
    assert w.proc.poll() is None
    assert "moved to the dead letters" in w.log()


def test_rows_fastq_did_not_write_are_dead_lettered(worker, producer, sqlite_env):
    """SQLite keeps whatever a hand (or a damaged file) puts in a row: each such row is
    dead-lettered, and the worker goes on."""
    w = worker()
    hostile = [b"\xff\xfe not json", b"[1, 2, 3]", b'{"a": 1, "b": 2}', b"42", b"[[], []]",
               "[{}, {}]", 7, b"[[1], {}]"]
    with sqlite3.connect(sqlite_env[1].removeprefix("sqlite:///")) as db:
        db.executemany(
            "INSERT INTO fastq_messages (queue, priority, state, visible_at, enqueued_at, "
            "envelope, body) VALUES ('celery', 0, 0, 0, 0, ?, ?)",
            [(envelope, b"[[1, 1], {}, {}]" if n % 2 else "text body")
             for n, envelope in enumerate(hostile)])
    assert producer.tasks["t.add"].delay(20, 22).get(timeout=20) == 42
    deadline = time.monotonic() + 10
    while len(producer.broker.dead_letters()) < len(hostile) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(producer.broker.dead_letters()) == len(hostile)
    assert w.proc.poll() is None


def test_reject_dead_letters_with_the_reason(worker, producer):
    worker()
    result = producer.tasks["t.reject"].delay()
    deadline = time.monotonic() + 20
    while not producer.broker.dead_letters() and time.monotonic() < deadline:
        time.sleep(0.05)
    (letter,) = producer.broker.dead_letters()
    assert "no thanks" in letter["reason"]
    assert letter["headers"]["id"] == result.id


def test_kill_9_mid_task_runs_it_again_in_a_new_worker(worker, producer):
    first = worker()
    result = producer.tasks["t.sleep"].delay(2.0)
    deadline = time.monotonic() + 20
    while not first.runs(result.id) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first.runs(result.id), "the task never started"
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    assert result.state == "PENDING"
    worker()  # a fresh worker claims it once the 1.5 s lease lapses
    assert result.get(timeout=30) == 2.0
    assert len(first.runs(result.id)) == 2


def test_soft_time_limit_raises_inside_the_task(worker, producer):
    worker()
    assert producer.tasks["t.soft"].delay().get(timeout=20) == "SoftTimeLimitExceeded"


def test_hard_time_limit_ends_the_task_and_stores_time_limit_exceeded(worker, producer):
    w = worker()
    from fastq.exceptions import TimeLimitExceeded

    with pytest.raises(TimeLimitExceeded):
        producer.tasks["t.hard"].delay().get(timeout=20)
    assert producer.tasks["t.add"].delay(1, 1).get(timeout=20) == 2
    assert w.proc.poll() is None


def test_warm_shutdown_finishes_the_running_task_and_returns_the_rest(worker, producer):
    w = worker("--prefetch-multiplier", "8")
    running = producer.tasks["t.sleep"].delay(1.0)
    waiting = [producer.tasks["t.add"].delay(i, 1) for i in range(5)]
    deadline = time.monotonic() + 20
    while not w.runs(running.id) and time.monotonic() < deadline:
        time.sleep(0.01)
    w.signal(signal.SIGTERM)
    assert w.proc.wait(timeout=20) == 0
    assert running.get(timeout=1) == 1.0
    assert all(r.state == "PENDING" for r in waiting)
    assert producer.broker.queue_sizes().get("celery") == 5
    # released, not counted as deliveries: a new worker runs each exactly once
    w2 = worker()
    assert [r.get(timeout=20) for r in waiting] == [i + 1 for i in range(5)]
    assert all(len(w2.runs(r.id)) == 1 for r in waiting)


def test_cold_shutdown_requeues_the_running_task(worker, producer):
    w = worker()
    result = producer.tasks["t.sleep"].delay(3.0)
    deadline = time.monotonic() + 20
    while not w.runs(result.id) and time.monotonic() < deadline:
        time.sleep(0.01)
    w.signal(signal.SIGQUIT)
    w.proc.wait(timeout=20)
    assert result.state == "PENDING"
    worker()
    assert result.get(timeout=30) == 3.0


def test_redelivery_limit_dead_letters_a_crash_looping_message(sqlite_env, producer):
    tmp_path, url, _run_log, _env = sqlite_env
    message = producer.build_message("t.add", (1, 2))
    producer.broker.publish_many([message])
    # simulate five workers that died holding it
    db = sqlite3.connect(url.split("///", 1)[1])
    db.execute("UPDATE fastq_messages SET deliveries = 6")
    db.commit()
    db.close()
    from fastq.worker._consumer_py import Consumer
    from fastq.worker.executor import Executor
    from fastq.worker.pools.solo import SoloPool

    executor = Executor(producer, "t")
    consumer = Consumer(producer, producer.broker, executor, SoloPool(executor), ["celery"], 4)
    consumer._prepare(producer.broker.fetch(["celery"], 4, 1.0)[0])
    (letter,) = producer.broker.dead_letters()
    assert letter["reason"].startswith("redelivery-limit")


def test_status_reports_a_consuming_worker(worker, producer, sqlite_env):
    from click.testing import CliRunner

    from fastq.cli import main

    worker()
    out = CliRunner().invoke(main, ["status", "-A", "tests.apps.sqlite_app", "--json"])
    assert out.exit_code == 0, out.output
    report = orjson.loads(out.output)
    assert [x["state"] for x in report["workers"]] == ["consuming"]


def test_get_times_out_with_no_worker(producer):
    with pytest.raises(ResultTimeout):
        producer.tasks["t.add"].delay(1, 1).get(timeout=0.3)
