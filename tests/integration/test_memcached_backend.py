"""The memcached result backend on a real memcached: the contract, Celery's keys, expiry, cas."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from typing import Any

import pytest
from pymemcache.client.base import Client

from fastq.backends import Backend, create_backend
from fastq.backends.memcached import MemcachedBackend, parse_servers
from fastq.testing.contracts import BackendContract

# a result store: no code with a compiled twin
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]

HOST, PORT = "127.0.0.1", 11211
URL = f"cache+memcached://{HOST}:{PORT}/"


def require_memcached() -> None:
    try:
        with socket.create_connection((HOST, PORT), timeout=1):
            return
    except OSError:
        pytest.fail(f"no memcached on {HOST}:{PORT}; start it with `bash ci/services.sh`")


def ttl_of(key: str) -> int | None:
    """The remaining seconds memcached reports for ``key`` (meta get, memcached >= 1.6)."""
    with socket.create_connection((HOST, PORT), timeout=2) as sock:
        sock.sendall(f"mg {key} t\r\n".encode())
        reply = sock.recv(4096).decode()
    if not reply.startswith("HD"):
        return None
    flags = dict((f[0], f[1:]) for f in reply.split()[1:])
    return int(flags["t"])


def memcached_now() -> int:
    """memcached's own clock, in whole seconds (``stats`` time). It is the wall clock read
    at start-up plus a monotonic count since, so a step of the wall clock after memcached
    started leaves it that far off ours for good (7 s behind on one test machine)."""
    with socket.create_connection((HOST, PORT), timeout=2) as sock:
        sock.sendall(b"stats\r\n")
        reply = b""
        while not reply.endswith(b"END\r\n"):
            reply += sock.recv(65536)
    stats = dict(line.split()[1:3] for line in reply.decode().splitlines()
                 if line.startswith("STAT "))
    return int(stats["time"])


class TestMemcachedBackend(BackendContract):
    expires_natively = True
    # memcached counts whole seconds: see the module docstring
    short_expiry = 1.0
    expiry_slack = 2.0

    @pytest.fixture
    def backend_url(self) -> str:
        require_memcached()
        self.prefix = f"fastqtest:{uuid.uuid4().hex[:10]}:"
        return URL

    def make_backend(self, **options: Any) -> Backend:
        # keys of the test under its own prefix; they expire soon (memcached cannot
        # delete by prefix)
        options.setdefault("expires", 600)
        backend = create_backend(self.backend_url, global_keyprefix=self.prefix, **options)
        self._made_backends.append(backend)
        return backend

    @pytest.fixture
    def raw(self):
        # noreply off: a write must have landed before the backend, on its own
        # connection, looks (pymemcache otherwise sends sets without waiting)
        client = Client((HOST, PORT), default_noreply=False)
        yield client
        client.close()

    def test_url_scheme_selects_it(self, backend) -> None:
        assert isinstance(backend, MemcachedBackend)
        assert backend.servers == [(HOST, PORT)]

    def test_celerys_key_names_and_expiry_on_every_key(self, raw) -> None:
        backend = self.make_backend(expires=3600)
        task_id, group_id = str(uuid.uuid4()), str(uuid.uuid4())
        backend.store(task_id, "STARTED")
        backend.store(task_id, "SUCCESS", 9)
        backend.save_group(group_id, [[group_id, None], [[[task_id, None], None]]])
        key = f"{self.prefix}celery-task-meta-{task_id}"
        group_key = f"{self.prefix}celery-taskset-meta-{group_id}"
        stored = json.loads(raw.get(key))
        assert stored["status"] == "SUCCESS" and stored["result"] == 9
        assert stored["task_id"] == task_id
        assert json.loads(raw.get(group_key)) == {
            "result": [[group_id, None], [[[task_id, None], None]]]}
        for name in (key, group_key):
            assert 3595 < ttl_of(name) <= 3602

    def test_expiry_beyond_thirty_days_is_sent_as_a_unix_time(self) -> None:
        backend = self.make_backend(expires=40 * 86400)
        task_id = str(uuid.uuid4())
        backend.store(task_id, "SUCCESS", 1)
        assert backend.get(task_id)["result"] == 1
        # memcached turns the unix time into a TTL by its own clock, which may be seconds
        # off ours (see memcached_now): compare the instants the key expires at instead,
        # memcached's clock ticking once a second either way
        expires_at = memcached_now() + ttl_of(f"{self.prefix}celery-task-meta-{task_id}")
        assert 40 * 86400 - 5 < expires_at - time.time() <= 40 * 86400 + 5
        backend.forget(task_id)

    def test_a_success_written_by_another_client_is_sticky(self, backend, raw) -> None:
        task_id = str(uuid.uuid4())
        raw.set(f"{self.prefix}celery-task-meta-{task_id}",
                json.dumps({"status": "SUCCESS", "result": "celery's", "task_id": task_id}),
                expire=600)
        backend.store(task_id, "FAILURE", ValueError("late duplicate"))
        assert backend.get(task_id)["result"] == "celery's"

    def test_racing_writers_never_overwrite_a_success(self) -> None:
        ids = [str(uuid.uuid4()) for _ in range(100)]
        errors: list[BaseException] = []

        def write(state: str, rounds: int) -> None:
            writer = self.make_backend()
            try:
                for _ in range(rounds):
                    writer.store_many((task_id, state, state.lower(), None, None)
                                      for task_id in ids)
            except BaseException as exc:
                errors.append(exc)
            finally:
                writer.close()

        threads = [threading.Thread(target=write, args=("STARTED", 5)),
                   threading.Thread(target=write, args=("SUCCESS", 1)),
                   threading.Thread(target=write, args=("STARTED", 5))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert {m["status"] for m in self.make_backend().get_many(ids)} == {"SUCCESS"}

    def test_unreachable_server_raises_connection_error(self) -> None:
        backend = create_backend("cache+memcached://127.0.0.1:1/", connect_timeout=0.5)
        try:
            with pytest.raises(ConnectionError, match="unreachable during get"):
                backend.get("x")
        finally:
            backend.close()


@pytest.mark.parametrize(("url", "servers"), [
    ("cache+memcached://127.0.0.1:11211/", [("127.0.0.1", 11211)]),
    ("cache+memcached://cachehost/", [("cachehost", 11211)]),
    ("cache+memcached://a:1;b:2/", [("a", 1), ("b", 2)]),
    ("cache+memcached://[::1]:11212/", [("::1", 11212)]),
])
def test_parse_servers(url, servers) -> None:
    assert parse_servers(url) == servers
