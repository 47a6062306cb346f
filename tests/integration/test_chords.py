"""Chords joined on Redis: the backend's join (Celery's keys), and fastq worker processes
running chords: each body once under concurrency, redelivery and ``kill -9``; failures."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
import redis

from fastq import App
from fastq.backends.redis import RedisBackend
from fastq.builtins import chord_messages
from fastq.exceptions import ChordError
from tests.integration.redis_support import REDIS_URL, delete_keys, require_redis
from tests.interop.processes import ROOT, Proc, read_health, start_fastq_worker
from tests.unit.test_chord_join import concurrent_checks, join_checks

pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]  # no compiled twin here

#: Seconds results and chord keys live: the test's keys go away by themselves too.
EXPIRES = 600


@pytest.fixture
def prefix() -> Iterator[str]:
    require_redis()
    prefix = f"fastqtest:{uuid.uuid4().hex[:10]}:"
    yield prefix
    delete_keys(prefix + "*")


@pytest.fixture
def backend(prefix) -> Iterator[RedisBackend]:
    backend = RedisBackend(REDIS_URL, global_keyprefix=prefix, expires=EXPIRES)
    yield backend
    backend.close()


def test_redis_join_counts_members_once_and_dispatches_once(backend) -> None:
    join_checks(backend)


def test_redis_join_dispatches_once_under_concurrency(backend) -> None:
    concurrent_checks(backend)


def test_redis_join_uses_celery_keys(backend, prefix) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        backend.set_chord_size("g1", 2)
        base = f"{prefix}celery-taskset-meta-g1"
        assert client.get(base + ".s") == b"2" and 0 < client.ttl(base + ".s") <= EXPIRES
        from fastq.backends.base import ChordPart
        body = {"task": "t.body", "args": [], "kwargs": {}, "options": {}}
        backend.on_chord_part_return(ChordPart("a", "g1", 1, {"chord": body}), "SUCCESS", 5,
                                     lambda ready: None)
        assert client.smembers(base + ".d") == {b"a:1"}
        assert [orjson.loads(v) for v in client.zrange(base + ".j", 0, -1)] == [
            [1, "a", "SUCCESS", 5]]
        assert client.zscore(base + ".j", client.zrange(base + ".j", 0, -1)[0]) == 1
        backend.on_chord_part_return(ChordPart("b", "g1", 0, {"chord": body}), "SUCCESS", 6,
                                     lambda ready: None)
        assert client.get(base + ".c") == b"done"
        assert not client.exists(base + ".j", base + ".s", base + ".d")
    finally:
        client.close()


def test_redis_join_in_finishing_order_as_celery_unordered_chords(prefix) -> None:
    from fastq.backends.base import ChordPart

    backend = RedisBackend(REDIS_URL, global_keyprefix=prefix, expires=EXPIRES,
                           result_chord_ordered=False)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        seen: list = []
        body = {"task": "t.body", "args": [], "kwargs": {}, "options": {}}
        backend.set_chord_size("g2", 2)
        for task_id, index, value in (("b", 1, 20), ("b", 1, 20), ("a", 0, 10)):
            backend.on_chord_part_return(ChordPart(task_id, "g2", index, {"chord": body}),
                                         "SUCCESS", value, seen.append)
        assert [ready.results for ready in seen] == [[20, 10]]
        assert client.get(f"{prefix}celery-taskset-meta-g2.c") == b"done"
    finally:
        client.close()
        backend.close()


# -- fastq worker processes -----------------------------------------------------------

@pytest.fixture
def queue() -> Iterator[str]:
    require_redis()
    name = f"chords-{uuid.uuid4().hex[:10]}"
    yield name
    delete_keys(f"*{name}*")


@pytest.fixture
def env(tmp_path, queue, prefix) -> dict:
    return dict(os.environ, FASTQ_BROKER_URL=REDIS_URL, FASTQ_BROKER_LEASE_SECONDS="2",
                FASTQ_RESULT_BACKEND=REDIS_URL, FASTQ_TASK_DEFAULT_QUEUE=queue,
                FASTQ_RESULT_EXPIRES=str(EXPIRES), FASTQ_TEST_COUNTER_PREFIX=prefix,
                FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
                PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


@pytest.fixture
def start_worker(tmp_path, env, queue) -> Iterator:
    started: list[Proc] = []

    def start(*extra: str) -> tuple[Proc, str]:
        n = len(started)
        health = str(tmp_path / f"health{n}.json")
        started.append(start_fastq_worker("tests.apps.chord_app", queue, env,
                                          str(tmp_path / f"w{n}.log"), health,
                                          "-n", f"w{n}@%h", *extra))
        return started[-1], health

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def client(queue) -> Iterator[App]:
    app = App("chords-client", broker=REDIS_URL, backend=REDIS_URL,
              task_default_queue=queue, result_expires=EXPIRES)
    yield app
    app.close()


@pytest.fixture
def counter(prefix) -> Iterator:
    connection = redis.Redis.from_url(REDIS_URL)

    def read(name: str) -> int:
        return int(connection.get(prefix + name) or 0)
    read.lists = lambda name: [int(x) for x in connection.lrange(prefix + name, 0, -1)]
    yield read
    connection.close()


def sig(task: str, *args, **options) -> dict:
    return {"task": task, "args": list(args), "kwargs": {}, "options": options,
            "subtask_type": None, "immutable": False}


def send_chord(app: App, header: list[dict], body: dict, group_id: str | None = None) -> str:
    """Send a chord the way the client does (size first, then the members); the body's id."""
    body["options"].setdefault("task_id", str(uuid.uuid4()))
    app.publish_many(chord_messages(app, header, body, group_id=group_id))
    return body["options"]["task_id"]


def test_twenty_chords_finishing_together_on_two_workers_each_run_their_body_once(
        start_worker, client, counter) -> None:
    start_worker()
    start_worker()
    bodies = [send_chord(client, [sig("ch.add", i, n) for i in range(8)],
                         {**sig("ch.tsum"), "kwargs": {"tag": str(n)}})
              for n in range(20)]
    results = [client.AsyncResult(body_id).get(timeout=30) for body_id in bodies]
    assert results == [sum(i + n for i in range(8)) for n in range(20)]
    time.sleep(0.3)  # a second run of a body would come now
    assert [counter(f"body:{n}") for n in range(20)] == [1] * 20


def test_a_member_delivered_twice_counts_once(start_worker, client, counter) -> None:
    start_worker()
    body = {**sig("ch.tsum"), "kwargs": {"tag": "dup"}}
    body["options"]["task_id"] = body_id = str(uuid.uuid4())
    messages = chord_messages(client, [sig("ch.add", i, 0) for i in range(3)], body)
    # the first member twice (a redelivery), before the others: still 3 results, one body
    client.publish_many([messages[0], messages[0]])
    time.sleep(0.5)
    client.publish_many(messages[1:])
    assert client.AsyncResult(body_id).get(timeout=20) == 3
    time.sleep(0.3)
    assert counter("body:dup") == 1 and counter.lists("args:dup") == [3]


def test_a_failing_member_fails_the_chord_and_calls_its_errbacks_once(
        start_worker, client, counter) -> None:
    start_worker()
    body = {**sig("ch.tsum"), "kwargs": {"tag": "fail"}}
    body_id = str(uuid.uuid4())
    body["options"] = {"task_id": body_id, "link_error": [sig("ch.on_error"),
                                                          sig("ch.on_error_old")]}
    header = [sig("ch.add", 1, 1), sig("ch.fail", "no"), sig("ch.add", 2, 2)]
    header[1]["options"]["task_id"] = failed_id = str(uuid.uuid4())
    send_chord(client, header, body)
    with pytest.raises(ChordError, match=f"Dependency {failed_id} raised ValueError"):
        client.AsyncResult(body_id).get(timeout=20)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not counter(f"errback-old:{body_id}"):
        time.sleep(0.05)
    time.sleep(0.3)
    assert counter("body:fail") == 0
    assert counter(f"errback:{body_id}") == 1 and counter(f"errback-old:{body_id}") == 1


def test_a_failure_inside_a_chain_inside_a_chord_fails_the_chord(start_worker, client) -> None:
    start_worker()
    chain = {"task": "celery.chain", "args": [], "options": {}, "subtask_type": "chain",
             "immutable": False, "kwargs": {"tasks": [sig("ch.fail", "early"),
                                                      sig("ch.add", 1)]}}
    body_id = send_chord(client, [chain, sig("ch.add", 1, 1)],
                         {**sig("ch.tsum"), "kwargs": {"tag": "chain"}})
    with pytest.raises(ChordError, match="raised ValueError"):
        client.AsyncResult(body_id).get(timeout=20)


def test_kill_9_of_a_child_mid_chord_runs_the_body_once_with_every_result(
        start_worker, client, counter) -> None:
    _, health = start_worker("-P", "prefork", "-c", "2", "--prefetch-multiplier", "4")
    members = 1000
    group_id = str(uuid.uuid4())
    body_id = send_chord(client, [sig("ch.slow_add", i, 0) for i in range(members)],
                         {**sig("ch.tsum"), "kwargs": {"tag": "kill"}}, group_id)
    check = redis.Redis.from_url(REDIS_URL)
    try:
        deadline = time.monotonic() + 30
        # half done: the chord's .j set holds about half the members
        key = f"celery-taskset-meta-{group_id}.j"
        while time.monotonic() < deadline and check.zcard(key) < members // 2:
            time.sleep(0.02)
        assert check.zcard(key) >= members // 2
    finally:
        check.close()
    victim = read_health(health)["children"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    assert client.AsyncResult(body_id).get(timeout=60) == sum(range(members))
    time.sleep(0.5)
    assert counter("body:kill") == 1 and counter.lists("args:kill") == [members]



# -- the SQL backend's join (PostgreSQL, MariaDB, and SQLite through SQLAlchemy) ---------

@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def sql_backend(request, tmp_path) -> Iterator:
    from fastq.backends.sql import SQLBackend
    from tests.integration.sql_support import (
        MARIADB_URL,
        POSTGRES_URL,
        require_server,
        unique_table_prefix,
    )

    if request.param == "postgresql":
        require_server(5432, "PostgreSQL")
        url = POSTGRES_URL
    elif request.param == "mariadb":  # MySQL's dialect: INSERT IGNORE for the member set
        require_server(3306, "MariaDB")
        url = MARIADB_URL
    else:
        url = f"db+sqlite:///{tmp_path / 'results.db'}"
    backend = SQLBackend(url, table_prefix=unique_table_prefix(), expires=EXPIRES)
    yield backend
    backend.drop_tables()
    backend.close()


def test_sql_join_counts_members_once_and_dispatches_once(sql_backend) -> None:
    join_checks(sql_backend)
    concurrent_checks(sql_backend, members=20, threads=4)


def test_memcached_join_counts_members_once_and_dispatches_once() -> None:
    from fastq.backends.memcached import MemcachedBackend
    from tests.integration.test_memcached_backend import URL, require_memcached

    require_memcached()
    backend = MemcachedBackend(URL, global_keyprefix=f"fastqtest:{uuid.uuid4().hex[:10]}:",
                               expires=60)
    try:
        join_checks(backend)
        concurrent_checks(backend, members=20, threads=4)
    finally:
        backend.close()
