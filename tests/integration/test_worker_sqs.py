"""Real worker processes on the SQS broker (a moto server), results in the SQLite backend."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time

import pytest

from tests.integration.conftest import ROOT, WorkerProcess
from tests.integration.sqs_support import moto_endpoint, sqs_client, sqs_prefix  # noqa: F401

# the SQS broker has no compiled twin
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]

#: Seconds a received message stays invisible unless its worker extends it.
VISIBILITY = 2


@pytest.fixture
def sqs_env(tmp_path, monkeypatch, moto_endpoint, sqs_prefix):  # noqa: F811
    """FASTQ_* settings for producer and workers: SQS on moto, results in a SQLite file."""
    run_log = str(tmp_path / "runs.log")
    values = {
        "FASTQ_BROKER_URL": "sqs://",
        "FASTQ_BROKER_TRANSPORT_OPTIONS": json.dumps({
            "endpoint_url": moto_endpoint, "region": "us-east-1",
            "queue_name_prefix": sqs_prefix}),
        "FASTQ_BROKER_LEASE_SECONDS": str(VISIBILITY),
        "FASTQ_RESULT_BACKEND": f"sqlite:///{tmp_path / 'results.sqlite3'}",
        "FASTQ_WORKER_STATE_DIR": str(tmp_path / "workers"),
        "FASTQ_TEST_RUN_LOG": run_log,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return tmp_path, run_log, env


@pytest.fixture
def worker(sqs_env):
    """A factory of worker processes on tests.apps.sqs_app, all stopped after the test."""
    tmp_path, run_log, env = sqs_env
    started: list[WorkerProcess] = []

    def make(*extra: str) -> WorkerProcess:
        w = WorkerProcess(tmp_path, "sqs://", run_log, env)
        started.append(w)
        # WorkerProcess names the SQLite test app; a second -A wins (click keeps the last)
        return w.start("-A", "tests.apps.sqs_app", *extra)

    yield make
    for w in started:
        w.stop()


@pytest.fixture
def producer(sqs_env):
    sys.modules.pop("tests.apps.sqs_app", None)
    module = importlib.import_module("tests.apps.sqs_app")
    yield module.app
    module.app.close()


def wait_for(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_results_come_back(worker, producer):
    w = worker()
    results = [producer.tasks["t.add"].delay(i, i) for i in range(30)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(30)]
    from tests.apps.sqs_app import Boom

    failed = producer.tasks["t.fail"].delay("it broke")
    with pytest.raises(Boom):
        failed.get(timeout=20)
    assert len(w.runs()) == 31


def test_retry_and_countdown_wait_in_sqs(worker, producer):
    w = worker()
    sent = time.time()
    later = producer.tasks["t.add"].apply_async((1, 2), countdown=1.5)
    flaky = producer.tasks["t.flaky"].delay(2)
    assert flaky.get(timeout=30) == 2
    assert later.get(timeout=30) == 3
    (run,) = w.runs(later.id)
    assert float(run[3]) >= sent + 1.5
    assert [int(r[2]) for r in w.runs(flaky.id)] == [0, 1, 2]


def test_a_task_longer_than_the_visibility_timeout_runs_once(worker, producer):
    first, second = worker(), worker()
    result = producer.tasks["t.sleep"].delay(3 * VISIBILITY + 1.0)
    assert result.get(timeout=40) == 3 * VISIBILITY + 1.0
    # the other worker polled all along; the keeper kept the message invisible to it
    assert len(first.runs(result.id)) == 1  # one run log, written by both workers
    assert second.proc.poll() is None
    assert producer.tasks["t.add"].delay(1, 1).get(timeout=20) == 2


def test_kill_9_mid_task_runs_it_again_once_the_visibility_lapses(worker, producer):
    first = worker()
    result = producer.tasks["t.sleep"].delay(1.0)
    wait_for(lambda: first.runs(result.id))
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    worker()
    assert result.get(timeout=30) == 1.0
    assert len(first.runs(result.id)) == 2  # one run log, written by both workers


def test_reject_and_unknown_tasks_are_dead_lettered_with_their_reason(
        worker, producer, sqs_client, sqs_prefix):  # noqa: F811
    worker()
    rejected = producer.tasks["t.reject"].delay()
    unknown = producer.send_task("t.nope", (1,))
    from fastq.exceptions import TaskNotRegistered

    with pytest.raises(TaskNotRegistered):
        unknown.get(timeout=20)
    wait_for(lambda: len(producer.broker.dead_letters()) == 2)
    letters = {d["headers"]["id"]: d for d in producer.broker.dead_letters()}
    assert "no thanks" in letters[rejected.id]["reason"]
    assert letters[unknown.id]["reason"].startswith("unknown-task")
    assert {d["queue"] for d in letters.values()} == {"celery"}
    # in SQS: the dead-letter queue the broker created, the reason as a message attribute
    url = sqs_client.get_queue_url(QueueName=f"{sqs_prefix}celery-dead")["QueueUrl"]
    raw = sqs_client.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                     MessageAttributeNames=["All"], VisibilityTimeout=0)
    reasons = sorted(m["MessageAttributes"]["fastq-reason"]["StringValue"].split(":")[0]
                     for m in raw["Messages"])
    assert reasons == ["rejected", "unknown-task"]
