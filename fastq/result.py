"""Task states, AsyncResult (the handle to one task's outcome) and GroupResult (to several)."""

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
import time  # noqa: E402
from collections.abc import Iterable, Iterator  # noqa: E402
from typing import TYPE_CHECKING, Any, ClassVar  # noqa: E402

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

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM") -> None:
        """Ask every worker not to run this task (``app.control.revoke``); a worker that
        receives it stores REVOKED, so ``get()`` raises ``TaskRevokedError``."""
        if self.app is None:
            from .app import current_app

            self.app = current_app()
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)

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

    def as_tuple(self) -> list:
        """Celery's serializable form: ``[[id, parent], None]`` (no parent is tracked)."""
        return [[self.id, None], None]

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


class GroupResult:
    """The results of a group of tasks, in the order they were sent.

    ``save()`` stores the member ids in the result backend (Celery's
    ``celery-taskset-meta-<id>`` document) so that another process can
    ``GroupResult.restore(id)`` it; the members' results are stored by the workers as usual.
    """

    #: The App used when none is given (``app.GroupResult`` binds its own).
    default_app: ClassVar[App | None] = None

    def __init__(self, id: str | None = None, results: Iterable[AsyncResult | GroupResult] = (),
                 app: App | None = None, backend: Backend | None = None) -> None:
        if id is None:
            from .protocol import new_task_id

            id = new_task_id()
        self.id = id
        self.results: list[AsyncResult | GroupResult] = list(results)
        self.app = app if app is not None else self.default_app
        self._backend = backend

    children = property(lambda self: self.results)

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            if self.app is None:
                from .app import current_app

                self.app = current_app()
            self._backend = self.app.backend
        return self._backend

    # -- storing the group -------------------------------------------------------------
    def save(self, backend: Backend | None = None) -> GroupResult:
        """Store the member ids under the group id (expiring like results); returns self."""
        (backend or self.backend).save_group(self.id, self.as_tuple())
        return self

    @classmethod
    def restore(cls, id: str, backend: Backend | None = None,
                app: App | None = None) -> GroupResult | None:
        """The group saved as ``id``, or None when it was never saved or has expired."""
        app = app if app is not None else cls.default_app
        if backend is None:
            if app is None:
                from .app import current_app

                app = current_app()
            backend = app.backend
        stored = backend.restore_group(id)
        if stored is None:
            return None
        restored = result_from_tuple(stored, app=app, backend=backend)
        if not isinstance(restored, GroupResult):
            from .exceptions import DecodeError

            raise DecodeError(f"stored group {id} holds a single result, not a group")
        return restored

    def delete(self, backend: Backend | None = None) -> None:
        """Remove the saved group (not its members' results)."""
        (backend or self.backend).forget_group(self.id)

    def forget(self) -> None:
        """Delete the saved group and every member's result."""
        for result in self.results:
            result.forget()
        self.delete()

    def as_tuple(self) -> list:
        """Celery's form: ``[[group id, parent], [member tuples...]]``."""
        return [[self.id, None], [r.as_tuple() for r in self.results]]

    # -- the members' states -----------------------------------------------------------
    def _leaves(self) -> Iterator[AsyncResult]:
        for result in self.results:
            if isinstance(result, GroupResult):
                yield from result._leaves()
            else:
                yield result

    def _leaf_states(self) -> dict[str, str]:
        """Task id -> state of every member, nested ones too, in one read per backend."""
        states: dict[str, str] = {}
        unfinished: dict[int, tuple[Backend, list[AsyncResult]]] = {}
        for result in self._leaves():
            if result._cache is not None:
                states[result.id] = result._cache["status"]
            else:
                backend = result.backend
                unfinished.setdefault(id(backend), (backend, []))[1].append(result)
        for backend, results in unfinished.values():
            for result, meta in zip(results, backend.get_many([r.id for r in results])):
                if meta["status"] in READY_STATES:
                    result._cache = meta
                states[result.id] = meta["status"]
        return states

    def _states(self, leaf_states: dict[str, str] | None = None) -> list[str]:
        """The state of each member; a nested group's is merged from its members'."""
        if leaf_states is None:
            leaf_states = self._leaf_states()
        return [leaf_states[r.id] if isinstance(r, AsyncResult)
                else _merged_state(r._states(leaf_states)) for r in self.results]

    def completed_count(self) -> int:
        """How many members finished successfully."""
        return sum(state == SUCCESS for state in self._states())

    def ready(self) -> bool:
        """Whether every member has finished (successfully or not)."""
        return all(state in READY_STATES for state in self._states())

    def successful(self) -> bool:
        """Whether every member finished successfully."""
        return all(state == SUCCESS for state in self._states())

    def failed(self) -> bool:
        """Whether any member failed or was revoked."""
        return any(state in PROPAGATE_STATES for state in self._states())

    def waiting(self) -> bool:
        """Whether any member has not finished yet."""
        return not self.ready()

    def join(self, timeout: float | None = None, propagate: bool = True,
             interval: float | None = None) -> list:
        """Wait for every member and return their values in order.

        ``timeout`` bounds the whole join, not each member.

        Raises:
            ResultTimeout: ``timeout`` seconds passed first.
            Exception: with ``propagate``, the exception of the first member (in order)
                that failed or was revoked; without it, exceptions are returned as values.
        """
        from .exceptions import ResultTimeout

        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            left = None
            if deadline is not None:
                left = max(0.0, deadline - time.monotonic())
            try:
                if isinstance(result, GroupResult):
                    values.append(result.join(left, propagate=propagate, interval=interval))
                else:
                    values.append(result.get(left, propagate=propagate, interval=interval))
            except ResultTimeout as exc:
                raise ResultTimeout(f"group {self.id}: {exc} (join timed out after "
                                    f"{timeout}s)") from None
        return values

    get = join

    # -- a sequence of results ---------------------------------------------------------
    def __iter__(self) -> Iterator[AsyncResult | GroupResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> AsyncResult | GroupResult:
        return self.results[index]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return other.id == self.id and other.results == self.results
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"


def _merged_state(states: list[str]) -> str:
    """A nested group counts as FAILURE when any member failed, SUCCESS when all succeeded."""
    if any(state in PROPAGATE_STATES for state in states):
        return FAILURE
    if all(state == SUCCESS for state in states):
        return SUCCESS
    return PENDING


def result_from_tuple(data: Any, app: App | None = None,
                      backend: Backend | None = None) -> AsyncResult | GroupResult:
    """An AsyncResult or GroupResult from Celery's ``as_tuple()`` form."""
    from .exceptions import DecodeError

    try:
        (result_id, _parent), members = data
    except (TypeError, ValueError):
        raise DecodeError(f"not a stored result tuple: {data!r:.80}") from None
    if not isinstance(result_id, str):
        raise DecodeError(f"not a stored result tuple: {data!r:.80}")
    if members is None:
        return AsyncResult(result_id, app=app, backend=backend)
    return GroupResult(result_id, [result_from_tuple(m, app, backend) for m in members],
                       app=app, backend=backend)
