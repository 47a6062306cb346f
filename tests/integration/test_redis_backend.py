"""The Redis result backend: the backend contract, Celery's key layout, pub/sub wake-ups."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
import redis

from fastq.backends import Backend, create_backend
from fastq.backends.redis import RedisBackend
from fastq.testing.contracts import BackendContract
from tests.integration.redis_support import REDIS_URL, redis_prefix  # noqa: F401

# no compiled twin in the Redis code
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


class TestRedisBackend(BackendContract):
    expires_natively = True

    @pytest.fixture
    def backend_url(self, redis_prefix) -> str:  # noqa: F811 - the fixture imported above
        self.prefix = redis_prefix
        return REDIS_URL

    def make_backend(self, **options: Any) -> Backend:
        # every key of the test under its own prefix, deleted by the fixture
        backend = create_backend(self.backend_url, global_keyprefix=self.prefix, **options)
        self._made_backends.append(backend)
        return backend

    @pytest.fixture
    def raw(self):
        client = redis.Redis.from_url(REDIS_URL)
        yield client
        client.close()

    def test_url_scheme_selects_it(self, backend) -> None:
        assert isinstance(backend, RedisBackend)

    def test_celerys_key_expiry_and_channel(self, raw) -> None:
        backend = self.make_backend(expires=3600)
        task_id = str(uuid.uuid4())
        key = f"{self.prefix}celery-task-meta-{task_id}"
        pubsub = raw.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(key)
            backend.store(task_id, "SUCCESS", 9)
            message = None
            deadline = time.monotonic() + 5
            while message is None and time.monotonic() < deadline:
                # None also for the subscription's confirmation, which is skipped
                message = pubsub.get_message(timeout=1)
        finally:
            pubsub.close()
        assert message is not None and message["channel"] == key.encode()
        published = json.loads(message["data"])
        stored = json.loads(raw.get(key))
        assert published == stored
        assert stored["status"] == "SUCCESS" and stored["result"] == 9
        assert stored["task_id"] == task_id
        assert 3590 < raw.ttl(key) <= 3600

    def test_a_success_written_by_another_client_is_sticky(self, backend, raw) -> None:
        task_id = str(uuid.uuid4())
        raw.set(f"{self.prefix}celery-task-meta-{task_id}",
                json.dumps({"status": "SUCCESS", "result": "celery's", "traceback": None,
                            "children": [], "date_done": None, "task_id": task_id}))
        backend.store(task_id, "FAILURE", ValueError("late duplicate"))
        assert backend.get(task_id)["result"] == "celery's"

    def test_wait_is_woken_by_the_publish(self, backend) -> None:
        task_id = str(uuid.uuid4())
        writer = self.make_backend()
        stored_at: list[float] = []

        def store() -> None:
            stored_at.append(time.monotonic())
            writer.store(task_id, "SUCCESS", "ok")

        timer = threading.Timer(0.3, store)
        timer.start()
        try:
            # interval=10: without the publish the wait would not re-read for 10 s
            meta = backend.wait(task_id, timeout=5, interval=10)
            woke = time.monotonic()
        finally:
            timer.join()
        assert meta["result"] == "ok"
        assert woke - stored_at[0] < 0.2

    def test_wait_falls_back_to_reading_when_nothing_is_published(self, backend, raw) -> None:
        task_id = str(uuid.uuid4())
        key = f"{self.prefix}celery-task-meta-{task_id}"
        timer = threading.Timer(0.2, raw.set, (key, json.dumps(
            {"status": "SUCCESS", "result": 1, "task_id": task_id})))
        timer.start()
        try:
            assert backend.wait(task_id, timeout=5, interval=0.1)["result"] == 1
        finally:
            timer.join()
