"""The SQLite broker: the broker contract, plus leases and claims across real processes."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from fastq.brokers import create_broker
from fastq.brokers.sqlite import SQLiteBroker
from fastq.exceptions import ConfigurationError
from fastq.testing.contracts import BrokerContract, make_message

# no compiled twin in the SQLite broker or backend
pytestmark = pytest.mark.twin_neutral


class TestSQLiteBroker(BrokerContract):
    @pytest.fixture
    def broker_url(self, fastq_tmp_sqlite_url) -> str:
        return fastq_tmp_sqlite_url

    def test_url_scheme_selects_it(self, broker) -> None:
        assert isinstance(broker, SQLiteBroker)
        assert {"lease", "delay", "priority", "dead_letter"} <= broker.capabilities

    def test_the_file_is_in_wal_mode(self, broker) -> None:
        broker.publish(make_message())
        db = sqlite3.connect(broker.path)
        try:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            db.close()

    def test_expired_lease_returns_the_message_with_a_redelivery(self) -> None:
        holder = self.make_broker(lease_seconds=0.3)
        holder.publish(make_message(task_id="leased"))
        (first,) = holder.fetch(["celery"], 1, 1)
        holder._stop.set()  # the holder "dies": no more lease renewals
        other = self.make_broker()
        assert other.fetch(["celery"], 1, 0) == []
        time.sleep(0.5)
        (again,) = other.fetch(["celery"], 1, 1)
        assert again.headers["id"] == "leased" and again.redeliveries == 1
        # the dead holder's late ack must not delete the message the other one now holds
        holder.ack_many([first.tag])
        other.release_many([again.tag])
        assert [d.headers["id"] for d in other.fetch(["celery"], 1, 1)] == ["leased"]

    def test_a_live_holder_keeps_its_lease_past_the_period(self) -> None:
        holder = self.make_broker(lease_seconds=0.3)
        holder.publish(make_message())
        assert len(holder.fetch(["celery"], 1, 1)) == 1
        time.sleep(1.0)  # three lease periods, renewed by the keeper thread
        assert self.make_broker().fetch(["celery"], 1, 0) == []

    def test_unknown_option_is_a_configuration_error(self) -> None:
        with pytest.raises(ConfigurationError, match="unknown option.*visibility_timeout"):
            create_broker(self.broker_url, visibility_timeout=10)

    def test_relative_url_is_under_the_working_directory(self, tmp_path, monkeypatch) -> None:
        monkeypatch.chdir(tmp_path)
        broker = create_broker("sqlite:///sub/b.sqlite3")
        try:
            broker.publish(make_message())
            assert os.path.exists(tmp_path / "sub" / "b.sqlite3")
        finally:
            broker.close()


def _consume_all(url: str, out, ready, go) -> None:
    broker = create_broker(url)
    broker.connect()
    ready.put(True)
    go.wait(30)  # all consumers start together, so the work is really contended
    seen = []
    idle_since = time.monotonic()
    while time.monotonic() - idle_since < 1.5:
        batch = broker.fetch(["celery"], 16, 0.1)
        if batch:
            idle_since = time.monotonic()
            seen.extend(d.headers["id"] for d in batch)
            broker.ack_many([d.tag for d in batch])
            # A worker runs its tasks between fetches. Without that pause one process
            # can hold the write lock back to back while SQLite's busy handler keeps
            # the others asleep (up to 100 ms a try) until the queue is empty: a run
            # in CI gave one process all 4,000 messages.
            time.sleep(0.002)
    broker.close()
    out.put(seen)


def test_processes_claim_each_message_exactly_once(fastq_tmp_sqlite_url):
    producer = create_broker(fastq_tmp_sqlite_url)
    total = 4000
    for start in range(0, total, 500):
        producer.publish_many([make_message(task_id=f"m{i}") for i in range(start, start + 500)])
    ctx = multiprocessing.get_context("spawn")
    out, ready, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_consume_all, args=(fastq_tmp_sqlite_url, out, ready, go))
             for _ in range(3)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=60)
    go.set()
    seen = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    producer.close()
    everything = [i for part in seen for i in part]
    assert sorted(everything) == sorted(f"m{i}" for i in range(total))
    assert sum(1 for part in seen if part) >= 2  # the work really was shared


HOLDER = """
import sys, time
from fastq.brokers import create_broker
broker = create_broker(sys.argv[1], lease_seconds=0.5)
got = broker.fetch(["celery"], 10, 5)
print(len(got), flush=True)
time.sleep(60)
"""


def test_kill_9_of_a_holder_returns_its_messages_after_the_lease(fastq_tmp_sqlite_url):
    producer = create_broker(fastq_tmp_sqlite_url)
    producer.publish_many([make_message(task_id=f"k{i}") for i in range(3)])
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, fastq_tmp_sqlite_url],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "3"
        time.sleep(1.0)  # alive: its keeper renews, nothing comes back
        assert producer.fetch(["celery"], 10, 0) == []
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        back = producer.fetch(["celery"], 10, 3)
        while len(back) < 3:
            more = producer.fetch(["celery"], 10, 3)
            assert more, "messages of a killed holder never came back"
            back += more
        assert sorted(d.headers["id"] for d in back) == ["k0", "k1", "k2"]
        assert {d.redeliveries for d in back} == {1}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        producer.close()


def test_forked_child_uses_its_own_connection_and_owner(fastq_tmp_sqlite_url):
    broker = create_broker(fastq_tmp_sqlite_url)
    broker.publish_many([make_message(task_id="p"), make_message(task_id="c")])
    (mine,) = broker.fetch(["celery"], 1, 1)
    parent_owner = broker._owner
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            (child,) = broker.fetch(["celery"], 1, 1)
            ok = child.headers["id"] != mine.headers["id"] and broker._owner != parent_owner
            broker.ack_many([child.tag])
            broker.close()
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.close(read)
    os.waitpid(pid, 0)
    broker.ack_many([mine.tag])
    assert broker.queue_sizes() == {}
    broker.close()


def test_connections_opening_a_new_file_at_once_all_get_it(tmp_path):
    """SQLite does not wait for the lock the switch to WAL needs: four threads opening
    one new file together failed one time in seven with "database is locked"."""
    import threading

    from fastq.brokers.sqlite import open_database

    for n in range(50):
        path = str(tmp_path / f"new-{n}.sqlite3")
        errors: list[BaseException] = []
        together = threading.Barrier(4)

        def open_it(path: str = path, errors: list = errors,
                    together: threading.Barrier = together) -> None:
            together.wait()
            try:
                conn = open_database(path, 10.0)
                conn.execute("CREATE TABLE IF NOT EXISTS t (x)")
                conn.close()
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
