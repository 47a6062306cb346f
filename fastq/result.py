"""AsyncResult (the handle to one task's outcome) and GroupResult (to several)."""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ._state import current_app
from ._time import parse_datetime
from .exceptions import DecodeError, IncompleteStream, ResultTimeout
from .states import (  # noqa: F401 - Celery's code reads the states from the result module too
    ALL_STATES,
    EXCEPTION_STATES,
    FAILURE,
    IGNORED,
    PENDING,
    PROPAGATE_STATES,
    READY_STATES,
    RECEIVED,
    REJECTED,
    RETRY,
    REVOKED,
    STARTED,
    SUCCESS,
)

if TYPE_CHECKING:
    from .app import App
    from .backends.base import Backend

#: What the task returns: ``AsyncResult[int].get()`` is an ``int``.
R_co = TypeVar("R_co", covariant=True)


class AsyncResult(Generic[R_co]):
    """A handle to the outcome of a task sent to a worker.

    Reads the result backend on each access until the task is ready, then keeps the
    final document. ``Task[P, R].delay()`` gives an ``AsyncResult[R]``; a result by id or
    name alone (``app.AsyncResult(id)``, ``app.send_task(name)``) is an ``AsyncResult[Any]``.
    """

    def __init__(self, id: str, app: App | None = None, backend: Backend | None = None,
                 parent: AsyncResult[Any] | None = None, task_name: str | None = None) -> None:
        self.id = id
        self.app = app
        self._backend = backend
        self._cache: dict[str, Any] | None = None
        #: the result this one's task was sent by (a chain's previous link), when known
        #: here; otherwise ``parent`` reads the stored ``parent_id``
        self._parent = parent
        self._task_name = task_name
        self._children: list[AsyncResult[Any] | GroupResult] | None = None

    @property
    def task_id(self) -> str:
        """The task id (Celery's other name for ``id``)."""
        return self.id

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            if self.app is None:
                self.app = current_app()
            self._backend = self.app.backend
        return self._backend

    def _get_meta(self) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache
        meta = self.backend.get(self.id)
        if meta["status"] in READY_STATES:
            self._cache = meta
        return meta

    @property
    def state(self) -> str:
        """PENDING (unknown), STARTED, RETRY, SUCCESS, FAILURE or REVOKED."""
        state: str = self._get_meta()["status"]
        return state

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
    def date_done(self) -> datetime | None:
        """When the task ended (an aware UTC datetime), or None before then."""
        raw = self._get_meta().get("date_done")
        if raw is None or isinstance(raw, datetime):
            return raw
        return parse_datetime(raw)

    # -- the workflow around this result ---------------------------------------------
    @property
    def parent(self) -> AsyncResult[Any] | None:
        """The result of the task that sent this one: the previous link of a chain
        (known without a read when the chain was sent here), else the ``parent_id`` the
        worker stored; None for a task sent by no task."""
        if self._parent is None:
            parent_id = self._get_meta().get("parent_id")
            if parent_id:
                self._parent = AsyncResult(parent_id, app=self.app, backend=self._backend)
        return self._parent

    @parent.setter
    def parent(self, value: AsyncResult[Any] | None) -> None:
        self._parent = value

    @property
    def children(self) -> list[AsyncResult[Any] | GroupResult]:
        """The results of the tasks this one set off, as the worker stored them."""
        if self._children is not None:
            return self._children
        stored = self._get_meta().get("children") or []
        children = [result_from_tuple(c, app=self.app, backend=self._backend) for c in stored]
        if self._cache is not None:  # final: will not change
            self._children = children
        return children

    @children.setter
    def children(self, value: list[AsyncResult[Any] | GroupResult]) -> None:
        self._children = value

    def iterdeps(self, intermediate: bool = False
                 ) -> Iterator[tuple[AsyncResult[Any] | GroupResult | None,
                                     AsyncResult[Any] | GroupResult]]:
        """``(parent, result)`` for this result and, breadth first, its descendants.

        Raises:
            IncompleteStream: a result on the way is not ready (unless ``intermediate``).
        """
        todo: deque[tuple[Any, Any]] = deque([(None, self)])
        while todo:
            parent, node = todo.popleft()
            yield parent, node
            if node.ready():
                todo.extend((node, child) for child in node.children or ())
            elif not intermediate:
                raise IncompleteStream(f"result {node.id} is not ready")

    def collect(self, intermediate: bool = False, **kwargs: Any
                ) -> Iterator[tuple[AsyncResult[Any] | GroupResult, Any]]:
        """``(result, value)`` for this result and its descendants (see ``iterdeps``);
        ``kwargs`` go to each ``get()``."""
        for _, result in self.iterdeps(intermediate=intermediate):
            yield result, result.get(**kwargs)

    def get_leaf(self) -> Any:
        """The value of the last result ``iterdeps`` reaches."""
        value = None
        for _, result in self.iterdeps():
            value = result.get()
        return value

    def then(self, callback: Callable[[AsyncResult[R_co]], Any],
             on_error: Callable[[BaseException], Any] | None = None,
             weak: bool = False) -> None:
        """Call ``callback(self)`` once the task has ended: now, if it has, else from a
        daemon thread that waits for it (Celery calls it from its result consumer).
        ``on_error(exc)`` is called if waiting fails; ``weak`` is accepted and ignored."""
        if self.ready():
            callback(self)
            return

        def wait_then_call() -> None:
            try:
                self.get(propagate=False)
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(exc)
                return
            callback(self)

        threading.Thread(target=wait_then_call, name=f"fastq-then-{self.id}",
                         daemon=True).start()

    # -- stored with result_extended ---------------------------------------------------
    @property
    def name(self) -> str | None:
        """The task name (stored with ``result_extended``; known when sent from here)."""
        return self._get_meta().get("name") or self._task_name

    @property
    def args(self) -> list[Any] | None:
        """The positional arguments the task ran with (``result_extended``)."""
        return self._get_meta().get("args")

    @property
    def kwargs(self) -> dict[str, Any] | None:
        """The keyword arguments the task ran with (``result_extended``)."""
        return self._get_meta().get("kwargs")

    @property
    def worker(self) -> str | None:
        """The node name of the worker that ran the task (``result_extended``)."""
        return self._get_meta().get("worker")

    @property
    def retries(self) -> int | None:
        """How many times the task was retried (``result_extended``)."""
        return self._get_meta().get("retries")

    @property
    def queue(self) -> str | None:
        """The queue the task was received from (``result_extended``)."""
        return self._get_meta().get("queue")

    def ready(self) -> bool:
        return self.state in READY_STATES

    def successful(self) -> bool:
        return self.state == SUCCESS

    def failed(self) -> bool:
        return self.state == FAILURE

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float | None = None) -> R_co:
        """Wait for the task to finish and return its value.

        Without ``propagate``, a failed or revoked task's exception is returned instead
        (the value is then not an ``R_co``, whatever the type says).

        Raises:
            ResultTimeout: ``timeout`` seconds passed first; ``fastq.ResultTimeout``, also
                exported as ``fastq.TimeoutError`` (Celery's name), a builtin TimeoutError.
            Exception: with ``propagate``, the task's own exception (same type and message,
                remote traceback attached as a note) for FAILURE and REVOKED.
        """
        meta = self._cache or self.backend.wait(self.id, timeout=timeout, interval=interval)
        self._cache = meta
        value: R_co = self._value(meta)
        if propagate and meta["status"] in PROPAGATE_STATES and isinstance(value, BaseException):
            raise value
        return value

    wait = get

    async def aget(self, timeout: float | None = None, propagate: bool = True) -> R_co:
        """``get`` for asyncio code: await the task's value without blocking the loop.

        Every result awaited on one loop shares its backend's waiter there: Redis
        subscribes them all on one connection; other stores are read by one poller
        thread that backs off to 0.1 s between reads. ``await result`` is
        ``await result.aget()``.

        Raises:
            ResultTimeout: ``timeout`` seconds passed first.
            Exception: with ``propagate``, the task's own exception for FAILURE and
                REVOKED, as ``get`` raises it.
            ConnectionError: the result backend could not be read while waiting.
        """
        meta = self._cache or await self.backend.await_ready(self.id, timeout=timeout)
        self._cache = meta
        value: R_co = self._value(meta)
        if propagate and meta["status"] in PROPAGATE_STATES and isinstance(value, BaseException):
            raise value
        return value

    def __await__(self) -> Generator[Any, None, R_co]:
        return self.aget().__await__()

    def forget(self) -> None:
        """Delete the stored result."""
        self._cache = None
        self.backend.forget(self.id)

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM") -> None:
        """Ask every worker not to run this task (``app.control.revoke``); a worker that
        receives it stores REVOKED, so ``get()`` raises ``TaskRevokedError``."""
        if self.app is None:
            self.app = current_app()
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)

    def _value(self, meta: dict[str, Any]) -> Any:
        result = meta.get("result")
        if meta["status"] in EXCEPTION_STATES:
            from .backends.base import exception_from_dict

            exc = exception_from_dict(result)
            tb = meta.get("traceback")
            if tb and sys.version_info >= (3, 11):
                exc.add_note(f"Remote traceback (task {self.id}):\n{tb.rstrip()}")
            return exc
        return result

    def as_tuple(self) -> list[Any]:
        """Celery's serializable form: ``[[id, parent's tuple or None], None]`` (only a
        parent already known here: making the tuple reads nothing)."""
        parent = self._parent
        return [[self.id, parent.as_tuple() if parent is not None else None], None]

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return other.id == self.id
        return other == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class EagerResult(AsyncResult[R_co]):
    """The result of a task run in the caller (``apply()`` or ``task_always_eager``)."""

    def __init__(self, id: str, meta: dict[str, Any], app: App | None = None,
                 children: list[AsyncResult[Any]] | None = None) -> None:
        super().__init__(id, app=app)
        self._cache = meta
        #: the results of the tasks this one set off (callbacks, the chain's next, the
        #: tasks its body sent): run here, or published when not eager
        children = list(children or [])
        self._children = list(children)
        self._eager_children: list[EagerResult[Any]] = [
            child for child in children if isinstance(child, EagerResult)]
        for child in children:
            child._parent = self

    def find(self, task_id: str) -> EagerResult[Any] | None:
        """This result or one of its descendants, by task id."""
        todo: list[EagerResult[Any]] = [self]
        while todo:
            result = todo.pop()
            if result.id == task_id:
                return result
            todo.extend(result._eager_children)
        return None

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

    def __init__(self, id: str | None = None,
                 results: Iterable[AsyncResult[Any] | GroupResult] = (),
                 app: App | None = None, backend: Backend | None = None,
                 parent: AsyncResult[Any] | GroupResult | None = None) -> None:
        if id is None:
            from .protocol import new_task_id

            id = new_task_id()
        self.id = id
        self.results: list[AsyncResult[Any] | GroupResult] = list(results)
        self.app = app if app is not None else self.default_app
        self._backend = backend
        #: the result before this group in a chain, when the chain was sent from here
        self.parent = parent

    @property
    def children(self) -> list[AsyncResult[Any] | GroupResult]:
        """The members (Celery's other name for ``results``)."""
        return self.results

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            if self.app is None:
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
                app = current_app()
            backend = app.backend
        stored = backend.restore_group(id)
        if stored is None:
            return None
        restored = result_from_tuple(stored, app=app, backend=backend)
        if not isinstance(restored, GroupResult):

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

    def as_tuple(self) -> list[Any]:
        """Celery's form: ``[[group id, parent's tuple or None], [member tuples...]]``."""
        parent = self.parent.as_tuple() if self.parent is not None else None
        return [[self.id, parent], [r.as_tuple() for r in self.results]]

    # -- the members' states -----------------------------------------------------------
    def _leaves(self) -> Iterator[AsyncResult[Any]]:
        for result in self.results:
            if isinstance(result, GroupResult):
                yield from result._leaves()
            else:
                yield result

    def _leaf_states(self) -> dict[str, str]:
        """Task id -> state of every member, nested ones too, in one read per backend."""
        states: dict[str, str] = {}
        unfinished: dict[int, tuple[Backend, list[AsyncResult[Any]]]] = {}
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
             interval: float | None = None) -> list[Any]:
        """Wait for every member and return their values in order.

        ``timeout`` bounds the whole join, not each member.

        Raises:
            ResultTimeout: ``timeout`` seconds passed first.
            Exception: with ``propagate``, the exception of the first member (in order)
                that failed or was revoked; without it, exceptions are returned as values.
        """

        deadline = None if timeout is None else time.monotonic() + timeout
        values: list[Any] = []
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

    async def ajoin(self, timeout: float | None = None, propagate: bool = True) -> list[Any]:
        """``join`` for asyncio code: every member's value in order, awaited together.

        Raises:
            ResultTimeout: ``timeout`` seconds (for the whole group) passed first.
            Exception: with ``propagate``, the exception of the first member (in order)
                that failed or was revoked.
        """
        values: list[Any] = []
        async for _ in self.aiter_completed(timeout=timeout):
            pass
        for result in self.results:
            if isinstance(result, GroupResult):
                values.append(await result.ajoin(propagate=propagate))
            else:
                values.append(await result.aget(propagate=propagate))
        return values

    async def aiter_completed(self, timeout: float | None = None
                              ) -> AsyncIterator[AsyncResult[Any]]:
        """The members (nested groups' members too) as each finishes, in finishing order.

        Each yielded result is ready and keeps its outcome, so ``r.successful()``,
        ``r.result`` and ``await r`` read nothing more; a failed member is yielded like
        any other, not raised. Leaving the loop early stops the waits still running.

        Raises:
            ResultTimeout: ``timeout`` seconds (for the whole iteration) passed first.
        """
        import asyncio

        deadline = None if timeout is None else time.monotonic() + timeout
        pending: dict[asyncio.Future[Any], tuple[int, AsyncResult[Any]]] = {}
        try:
            for position, result in enumerate(self._leaves()):
                if result._cache is not None:
                    yield result
                else:
                    waiting = asyncio.ensure_future(result.backend.await_ready(result.id))
                    pending[waiting] = (position, result)
            while pending:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                done, _ = await asyncio.wait(pending, timeout=left,
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    raise ResultTimeout(f"group {self.id}: {len(pending)} of "
                                        f"{len(list(self._leaves()))} members not ready "
                                        f"after {timeout}s")
                # those found ready in the same read come in the group's order
                for future in sorted(done, key=lambda f: pending[f][0]):
                    _, result = pending.pop(future)
                    result._cache = future.result()
                    yield result
        finally:
            for future in pending:
                future.cancel()

    #: Celery reads a Redis group with one command here; fastq's ``join`` already reads
    #: each member once it is ready, and the values and errors are the same
    join_native = join

    # -- a sequence of results ---------------------------------------------------------
    def __iter__(self) -> Iterator[AsyncResult[Any] | GroupResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: int) -> AsyncResult[Any] | GroupResult:
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
                      backend: Backend | None = None) -> AsyncResult[Any] | GroupResult:
    """An AsyncResult or GroupResult from Celery's ``as_tuple()`` form."""

    try:
        (result_id, parent), members = data
    except (TypeError, ValueError):
        raise DecodeError(f"not a stored result tuple: {data!r:.80}") from None
    if not isinstance(result_id, str):
        raise DecodeError(f"not a stored result tuple: {data!r:.80}")
    if members is None:
        parent_result = None
        if parent:
            found = result_from_tuple(parent, app, backend)
            parent_result = found if isinstance(found, AsyncResult) else None
        return AsyncResult(result_id, app=app, backend=backend, parent=parent_result)
    group_parent = result_from_tuple(parent, app, backend) if parent else None
    return GroupResult(result_id, [result_from_tuple(m, app, backend) for m in members],
                       app=app, backend=backend, parent=group_parent)
