"""Task states and AsyncResult, the handle a caller keeps to a task's outcome."""

from __future__ import annotations

#: Celery's task states (celery-protocol.md §3.1).
PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
RETRY = "RETRY"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
IGNORED = "IGNORED"

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE, REVOKED,
                        REJECTED, IGNORED})

import sys  # noqa: E402 - the states above are imported by backends before this runs
from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:
    from .app import App
    from .backends.base import Backend


class AsyncResult:
    """A handle to the outcome of a task sent to a worker.

    Reads the result backend on each access until the task is ready, then keeps the
    final document.
    """

    def __init__(self, id: str, app: App | None = None, backend: Backend | None = None) -> None:
        self.id = id
        self.app = app
        self._backend = backend
        self._cache: dict | None = None

    task_id = property(lambda self: self.id)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            if self.app is None:
                from .app import current_app

                self.app = current_app()
            self._backend = self.app.backend
        return self._backend

    def _get_meta(self) -> dict:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get(self.id)
        if meta["status"] in READY_STATES:
            self._cache = meta
        return meta

    @property
    def state(self) -> str:
        """PENDING (unknown), STARTED, RETRY, SUCCESS, FAILURE or REVOKED."""
        return self._get_meta()["status"]

    status = state

    @property
    def result(self) -> Any:
        """The return value, or the exception the task raised (not raised here)."""
        return self._value(self._get_meta())

    info = result

    @property
    def traceback(self) -> str | None:
        """The task's formatted traceback from the worker, when it failed."""
        return self._get_meta().get("traceback")

    @property
    def date_done(self) -> str | None:
        return self._get_meta().get("date_done")

    def ready(self) -> bool:
        return self.state in READY_STATES

    def successful(self) -> bool:
        return self.state == SUCCESS

    def failed(self) -> bool:
        return self.state == FAILURE

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float | None = None) -> Any:
        """Wait for the task to finish and return its value.

        Raises:
            ResultTimeout: ``timeout`` seconds passed first (also ``fastq.TimeoutError``).
            Exception: with ``propagate``, the task's own exception (same type and message,
                remote traceback attached as a note) for FAILURE and REVOKED.
        """
        meta = self._cache or self.backend.wait(self.id, timeout=timeout, interval=interval)
        self._cache = meta
        value = self._value(meta)
        if propagate and meta["status"] in PROPAGATE_STATES and isinstance(value, BaseException):
            raise value
        return value

    wait = get

    def forget(self) -> None:
        """Delete the stored result."""
        self._cache = None
        self.backend.forget(self.id)

    def _value(self, meta: dict) -> Any:
        result = meta.get("result")
        if meta["status"] in EXCEPTION_STATES:
            from .backends.base import exception_from_dict

            exc = exception_from_dict(result)
            tb = meta.get("traceback")
            if tb and sys.version_info >= (3, 11):
                exc.add_note(f"Remote traceback (task {self.id}):\n{tb.rstrip()}")
            return exc
        return result

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        return other == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class EagerResult(AsyncResult):
    """The result of a task run in the caller (``apply()`` or ``task_always_eager``)."""

    def __init__(self, id: str, meta: dict, app: App | None = None) -> None:
        super().__init__(id, app=app)
        self._cache = meta

    def forget(self) -> None:
        self._cache = None
