"""The backend contract, and the notifying ``wait``, on ``memory://``."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from fastq.backends import create_backend
from fastq.backends.memory import MemoryBackend
from fastq.testing.contracts import BackendContract


class TestMemoryBackend(BackendContract):
    @pytest.fixture
    def backend_url(self) -> str:
        return f"memory://{uuid.uuid4()}"

    def test_url_scheme_selects_it(self, backend) -> None:
        assert isinstance(backend, MemoryBackend)

    def test_different_names_do_not_share(self, backend) -> None:
        task_id = str(uuid.uuid4())
        backend.store(task_id, "SUCCESS", 1)
        other = create_backend(f"memory://{uuid.uuid4()}")
        assert other.get(task_id)["status"] == "PENDING"

    def test_wait_wakes_on_the_write_not_a_poll(self, backend) -> None:
        task_id = str(uuid.uuid4())
        timer = threading.Timer(0.2, backend.store, (task_id, "SUCCESS", 1))
        timer.start()
        started = time.monotonic()
        try:
            # a one-minute poll interval would make a polling wait miss the deadline
            assert backend.wait(task_id, timeout=5, interval=60)["result"] == 1
        finally:
            timer.join()
        assert time.monotonic() - started < 4


def test_celery_exceptions_map_to_fastq_classes_even_with_celery_imported():
    import celery.exceptions  # noqa: F401 - the point is that it is loaded

    from fastq.backends.base import exception_from_dict
    from fastq.exceptions import TaskNotRegistered, TaskRevokedError

    revoked = exception_from_dict({"exc_type": "TaskRevokedError", "exc_message": ["expired"],
                                   "exc_module": "celery.exceptions"})
    unknown = exception_from_dict({"exc_type": "NotRegistered", "exc_message": ["t.x"],
                                   "exc_module": "celery.exceptions"})
    assert type(revoked) is TaskRevokedError and revoked.args == ("expired",)
    assert type(unknown) is TaskNotRegistered
