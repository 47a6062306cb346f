"""Task (a registered function and its options) and Request (the context of one run)."""

from __future__ import annotations

import contextvars
import random
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypedDict, TypeVar, cast

from .canvas import Signature, chain, chord, chunks, group, signature, xmap, xstarmap
from .exceptions import ConfigurationError, Ignore, MaxRetriesExceededError, Reject, Retry

if TYPE_CHECKING:
    from typing import Concatenate, Protocol

    from typing_extensions import Unpack

    from .app import App
    from .brokers.base import Delivery
    from .result import AsyncResult, EagerResult
    from .routing import Exchange, Queue

#: The parameters of a task's function (without the task itself when ``bind=True``).
P = ParamSpec("P")
#: What a task's function returns, and so what ``delay(...).get()`` gives back.
R = TypeVar("R")

#: Headers every Celery v2 message carries; the rest are the caller's custom headers.
STANDARD_HEADERS = frozenset({
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin",
    "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps", "compression",
    "redelivered",
})


class TaskOptions(TypedDict, total=False):
    """The options of ``apply_async``, ``send_task``, ``signature`` and ``Signature.set``.

    Every key is optional; ``None`` means "the task's option, else the app's setting".
    For a wrapper of your own: ``def send(**options: Unpack[TaskOptions])``.
    """

    #: Run no sooner than this many seconds from now.
    countdown: float | None
    #: Run no sooner than this time (an aware datetime; naive is taken as UTC).
    eta: datetime | None
    #: Seconds from now, or a time, after which the task is revoked instead of run.
    expires: float | datetime | None
    #: The queue to send to (default: ``task_routes``, then ``task_default_queue``): a
    #: name or a ``fastq.Queue``.
    queue: str | Queue | None
    #: The exchange to publish to (RabbitMQ; elsewhere only a direct one whose routing
    #: key names the queue): a name or a ``fastq.Exchange``.
    exchange: str | Exchange | None
    #: The routing key for ``exchange``.
    routing_key: str | None
    #: The type of ``exchange`` when it is given by name and not in ``task_queues``.
    exchange_type: str | None
    #: False: one publish attempt, no retry while the broker is unreachable.
    retry: bool | None
    #: Bounds of those retries: ``max_retries``, ``interval_start``, ``interval_step``,
    #: ``interval_max`` (seconds), ``timeout`` (seconds).
    retry_policy: dict[str, Any] | None
    #: How many ``replace()`` calls led to this task (set by ``replace``, Celery's header).
    replaced_task_nesting: int
    #: Message priority (RabbitMQ: higher first; Redis: 0 first).
    priority: int | None
    #: Custom message headers, seen by the task as ``self.request.custom_headers``.
    headers: dict[str, Any] | None
    #: Store no result for this call.
    ignore_result: bool | None
    #: ``json``, ``msgpack``, ``yaml`` or ``pickle`` (when accepted).
    serializer: str | None
    #: ``zlib`` (Celery's ``gzip``) or ``bzip2``.
    compression: str | None
    #: Hard time limit in seconds.
    time_limit: float | None
    #: Soft time limit in seconds (``SoftTimeLimitExceeded`` is raised in the task).
    soft_time_limit: float | None
    #: Signature(s) called with the result when the task succeeds.
    link: Signature | dict[str, Any] | Sequence[Signature | dict[str, Any]] | None
    #: Signature(s) called with the task id when the task fails.
    link_error: Signature | dict[str, Any] | Sequence[Signature | dict[str, Any]] | None
    #: The task id to use (default: a new UUID).
    task_id: str | None
    #: The name shown in logs and monitors instead of the task's.
    shadow: str | None
    #: The retry count the message carries (``Task.retry`` sets it).
    retries: int
    #: The id of the first task of the workflow this call belongs to.
    root_id: str | None
    #: The id of the task that sent this one.
    parent_id: str | None
    #: The rest of a chain, in wire form, next task last (``chain`` sets it).
    chain: list[dict[str, Any]] | None
    #: The chord this task is a member of, in wire form.
    chord: dict[str, Any] | None
    #: The group this task is a member of, and its index there (``group`` sets them).
    group_id: str | None
    group_index: int | None
    #: The queue the ``rpc://`` backend replies to.
    reply_to: str | None


class TaskDecoratorOptions(TypedDict, total=False):
    """The options of ``@app.task(...)`` and ``@shared_task(...)`` besides ``bind`` and
    ``base``; each sets the ``Task`` attribute of the same name (see ``Task``)."""

    name: str
    max_retries: int | None
    default_retry_delay: float | None
    autoretry_for: Iterable[type[BaseException]]
    dont_autoretry_for: Iterable[type[BaseException]]
    retry_kwargs: dict[str, Any]
    retry_backoff: bool | float
    retry_backoff_max: float
    retry_jitter: bool
    acks_late: bool | None
    ignore_result: bool | None
    store_errors_even_if_ignored: bool | None
    track_started: bool | None
    rate_limit: str | float | None
    time_limit: float | None
    soft_time_limit: float | None
    expires: float | datetime | None
    queue: str | None
    priority: int | None
    serializer: str | None
    compression: str | None
    shared: bool
    reject_on_worker_lost: bool | None
    typing: bool


if TYPE_CHECKING:
    _TaskT_co = TypeVar("_TaskT_co", bound="Task[Any, Any]", covariant=True)

    class _SendTaskOptions(TaskOptions, total=False):
        _task: Task[Any, Any]  # the registered task, when the caller holds it

    class _ApplyOptions(TaskOptions, total=False):
        #: re-raise the task's exception here (default: ``task_eager_propagates``)
        throw: bool | None

    class _TaskDecorator(Protocol):
        """``@app.task(...)`` without ``bind=True``: the function's signature is the task's."""

        def __call__(self, fun: Callable[P, R], /) -> Task[P, R]: ...

    class _BoundTaskDecorator(Protocol[_TaskT_co]):
        """``@app.task(bind=True, ...)``: the first parameter receives the task."""

        def __call__(self, fun: Callable[Concatenate[_TaskT_co, P], R], /) -> Task[P, R]: ...


def _is_broker_header(name: str) -> bool:
    # RabbitMQ's dead-lettering bookkeeping must not travel with a retry (celery-protocol §1.7).
    return name == "x-death" or name.startswith(("x-first-death-", "x-last-death-"))


class Request:
    """What a running task can know about its invocation (``self.request`` in bound tasks).

    Built once per delivery from the decoded message. The fields set here are plain slots;
    the rest are read-only properties over the headers, properties and embed, so the hot
    path pays only for what it reads.
    """

    __slots__ = ("id", "name", "args", "kwargs", "embed", "headers", "delivery", "hostname",
                 "is_eager", "properties", "_children")

    #: The task id (the ``id`` header); a retry keeps it.
    id: str
    #: The registered task name (the ``task`` header).
    name: str
    #: Positional arguments of this run.
    args: list[Any]
    #: Keyword arguments of this run.
    kwargs: dict[str, Any]
    #: Celery's embed: ``callbacks``, ``errbacks``, ``chain``, ``chord`` (wire form).
    embed: dict[str, Any]
    #: The message headers (Celery protocol v2), custom headers included.
    headers: dict[str, Any]
    #: The broker delivery this run came from; None in eager mode.
    delivery: Delivery | None
    #: The worker's node name (``"eager"`` in eager mode).
    hostname: str | None
    #: Whether the task runs in the caller (``apply()`` or ``task_always_eager``).
    is_eager: bool
    #: The message properties (``correlation_id``, ``reply_to``, ``priority``, ...).
    properties: dict[str, Any]

    def __init__(self, headers: dict[str, Any], args: list[Any], kwargs: dict[str, Any],
                 embed: dict[str, Any], delivery: Delivery | None = None,
                 hostname: str | None = None, is_eager: bool = False,
                 properties: dict[str, Any] | None = None) -> None:
        self.id = headers["id"]
        self.name = headers["task"]
        self.args = args
        self.kwargs = kwargs
        self.embed = embed
        self.headers = headers
        self.delivery = delivery
        self.hostname = hostname
        self.is_eager = is_eager
        self.properties = properties if properties is not None else (
            delivery.properties if delivery is not None else {})
        #: the results of the tasks sent while it runs; made by the first one
        self._children: list[Any] | None = None

    @property
    def children(self) -> list[Any]:
        """The results of the tasks this run has sent so far (Celery's ``children``),
        stored with its outcome for ``AsyncResult.children``."""
        if self._children is None:
            self._children = []
        return self._children

    def add_child(self, result: Any) -> None:
        """Record ``result`` (an AsyncResult or EagerResult) as sent by this run."""
        if self._children is None:
            self._children = [result]
        else:
            self._children.append(result)

    # Plain properties: the same cost per read as the ``property(lambda ...)`` they replace.
    @property
    def task(self) -> str:
        """The task name (Celery's name for ``name``)."""
        return self.name

    @property
    def retries(self) -> int:
        """How many times this task was retried before this run (0 on the first)."""
        return self.headers.get("retries") or 0

    @property
    def eta(self) -> str | None:
        """The ISO 8601 time the task was scheduled for, or None."""
        return self.headers.get("eta")

    @property
    def expires(self) -> str | None:
        """The ISO 8601 time after which the task is revoked instead of run, or None."""
        return self.headers.get("expires")

    @property
    def parent_id(self) -> str | None:
        """The id of the task that sent this one, or None."""
        return self.headers.get("parent_id")

    @property
    def root_id(self) -> str | None:
        """The id of the first task of this workflow (this task's own id when it is first)."""
        return self.headers.get("root_id")

    @property
    def group(self) -> str | None:
        """The id of the group this task belongs to, or None."""
        return self.headers.get("group")

    @property
    def group_index(self) -> int | None:
        """This task's position in its group, or None."""
        return self.headers.get("group_index")

    @property
    def replaced_task_nesting(self) -> int:
        """How many ``replace()`` calls led to this task (Celery's header, 0 when absent)."""
        return self.headers.get("replaced_task_nesting") or 0

    @property
    def shadow(self) -> str | None:
        """The name the caller asked logs and monitors to show instead of ``name``."""
        return self.headers.get("shadow")

    @property
    def origin(self) -> str | None:
        """The node that sent the task (``gen<pid>@<host>``)."""
        return self.headers.get("origin")

    @property
    def timelimit(self) -> Sequence[float | None]:
        """``(hard, soft)`` time limits in seconds from the message; None where unset."""
        return self.headers.get("timelimit") or (None, None)

    @property
    def correlation_id(self) -> str:
        """The message's correlation id (the task id unless the sender set another)."""
        return self.properties.get("correlation_id") or self.id

    @property
    def reply_to(self) -> str | None:
        """The queue ``rpc://`` results go to, or None."""
        return self.properties.get("reply_to")

    @property
    def ignore_result(self) -> bool:
        """Whether the caller asked that no result be stored for this call."""
        return bool(self.headers.get("ignore_result"))

    @property
    def callbacks(self) -> list[dict[str, Any]] | None:
        """Signatures (wire form) called with the result on success (``link``)."""
        return self.embed.get("callbacks")

    @property
    def errbacks(self) -> list[dict[str, Any]] | None:
        """Signatures (wire form) called with the task id on failure (``link_error``)."""
        return self.embed.get("errbacks")

    @property
    def chain(self) -> list[dict[str, Any]] | None:
        """The rest of the chain (wire form, next task last), or None."""
        return self.embed.get("chain")

    @property
    def chord(self) -> dict[str, Any] | None:
        """The chord's callback (wire form) when this task is a chord member, or None."""
        return self.embed.get("chord")

    @property
    def called_directly(self) -> bool:
        """False: a Request always describes a run sent as a message (or run eagerly)."""
        return False

    @property
    def delivery_info(self) -> dict[str, Any]:
        """Celery's ``delivery_info``: ``exchange``, ``routing_key``, ``priority``,
        ``redelivered``."""
        queue = self.delivery.queue if self.delivery is not None else ""
        return {
            "exchange": "",
            "routing_key": queue,
            "priority": self.properties.get("priority"),
            "redelivered": bool(self.delivery is not None and self.delivery.redeliveries),
        }

    @property
    def custom_headers(self) -> dict[str, Any]:
        """The headers the caller added (``apply_async(headers=...)``), without Celery's
        own and the broker's bookkeeping."""
        return {k: v for k, v in self.headers.items()
                if k not in STANDARD_HEADERS and not _is_broker_header(k)}

    def __repr__(self) -> str:
        return f"<Request {self.name}[{self.id}]>"


class _DirectCall:
    """The request seen by a task called as a plain function, outside any worker."""

    id: None = None
    retries: int = 0
    called_directly: bool = True
    is_eager: bool = False
    args: Sequence[Any] = ()
    kwargs: dict[str, Any] = {}  # noqa: RUF012 - read-only stand-in
    hostname: None = None
    delivery_info: dict[str, Any] = {}  # noqa: RUF012
    eta: None = None
    expires: None = None
    parent_id: None = None
    root_id: None = None
    group: None = None
    group_index: None = None
    headers: dict[str, Any] = {}  # noqa: RUF012
    properties: dict[str, Any] = {}  # noqa: RUF012
    correlation_id: None = None
    reply_to: None = None
    origin: None = None
    chord: None = None
    shadow: None = None
    timelimit: tuple[None, None] = (None, None)
    ignore_result: bool = False


_DIRECT_CALL = _DirectCall()

#: The request running in this thread, greenlet or asyncio task: one variable for every
#: task, so that the task logger finds it too.
_current_request: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
    "fastq.current_request", default=None)


def current_request() -> Request | None:
    """The request of the task running here, or None outside a task."""
    return _current_request.get()


#: The hooks a Task subclass may override; the worker and eager mode call them only when
#: one is overridden, so a plain task pays nothing for them.
HOOKS = ("before_start", "on_success", "on_failure", "on_retry", "after_return")


def _argument_checker(fun: Callable[..., Any], bound: bool) -> Callable[..., None] | None:
    """A function with the parameters of ``fun`` (without the first when ``bound``) and an
    empty body: calling it raises Python's own TypeError when arguments do not fit.
    None when the signature cannot be read (a builtin)."""
    import inspect

    try:
        parameters = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        return None
    if bound and parameters:
        parameters = parameters[1:]
    kinds = inspect.Parameter
    text = []
    for index, parameter in enumerate(parameters):
        kind = parameter.kind
        before = parameters[index - 1].kind if index else None
        if before is kinds.POSITIONAL_ONLY and kind is not kinds.POSITIONAL_ONLY:
            text.append("/")
        if kind is kinds.KEYWORD_ONLY and before not in (kinds.KEYWORD_ONLY,
                                                         kinds.VAR_POSITIONAL):
            text.append("*")
        if kind is kinds.VAR_POSITIONAL:
            text.append(f"*{parameter.name}")
        elif kind is kinds.VAR_KEYWORD:
            text.append(f"**{parameter.name}")
        else:
            default = "" if parameter.default is kinds.empty else "=_default"
            text.append(f"{parameter.name}{default}")
    if parameters and parameters[-1].kind is kinds.POSITIONAL_ONLY:
        text.append("/")
    namespace: dict[str, Any] = {}
    name = getattr(fun, "__name__", "")
    source = f"def {name if name.isidentifier() else 'task'}({', '.join(text)}):\n    pass\n"
    try:
        exec(source, {"_default": None}, namespace)  # noqa: S102 - our own text, names only
    except SyntaxError:
        return None
    checker: Callable[..., None] = next(iter(namespace.values()))
    return checker


class Task(Generic[P, R]):
    """A function registered with an App, plus its options.

    Created by ``@app.task``; call ``delay``/``apply_async`` to run it on a worker, or call
    it directly to run it here. ``Task[P, R]`` is typed after the function: ``P`` its
    parameters (without the task itself when ``bind=True``), ``R`` what it returns.
    """

    #: Option defaults; None means "take the app's setting".
    name: str
    bind = False
    max_retries: int | None = None
    default_retry_delay: float | None = None
    autoretry_for: tuple[type[BaseException], ...] = ()
    dont_autoretry_for: tuple[type[BaseException], ...] = ()
    retry_kwargs: dict[str, Any] = {}  # noqa: RUF012 - replaced per task, never mutated
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter = True
    acks_late: bool | None = None
    ignore_result: bool | None = None
    store_errors_even_if_ignored: bool | None = None
    track_started: bool | None = None
    rate_limit: str | float | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    expires: float | datetime | None = None
    queue: str | None = None
    priority: int | None = None
    serializer: str | None = None
    compression: str | None = None
    #: Accepted for Celery's sake. fastq's late ack already requeues the message of a task
    #: whose worker process died (up to ``broker_max_redeliveries``), so it changes nothing.
    reject_on_worker_lost: bool | None = None
    #: Check at ``delay``/``apply_async`` that the arguments fit the function's signature
    #: (TypeError otherwise), as Celery's ``typing`` does.
    typing = True

    #: Whether a subclass overrides a hook (``HOOKS``) or ``__call__``: set per class.
    #: Each task also has ``_plain`` (neither), an attribute of the instance only: a name
    #: the class also has makes CPython 3.11 look it up the slow way (~200 instructions
    #: per read, callgrind) instead of the specialized one.
    _hooks = False
    _custom_call = False

    #: The app the task is registered with.
    app: App
    #: The function itself (taking the task first when ``bind=True``).
    run: Callable[..., R]

    OPTIONS = frozenset({
        "name", "bind", "max_retries", "default_retry_delay", "autoretry_for",
        "dont_autoretry_for", "retry_kwargs", "retry_backoff", "retry_backoff_max",
        "retry_jitter", "acks_late", "ignore_result", "store_errors_even_if_ignored",
        "track_started", "rate_limit", "time_limit", "soft_time_limit", "expires", "queue",
        "priority", "serializer", "compression", "shared", "base", "reject_on_worker_lost",
        "typing",
    })

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._hooks = any(getattr(cls, hook) is not getattr(Task, hook) for hook in HOOKS)
        cls._custom_call = cls.__call__ is not Task.__call__

    def __init__(self, app: App, fun: Callable[..., R], **options: Any) -> None:
        unknown = set(options) - self.OPTIONS
        if unknown:
            import difflib

            name = sorted(unknown)[0]
            close = difflib.get_close_matches(name, self.OPTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigurationError(f"unknown task option {name!r} for {fun.__qualname__}{hint}")
        options.pop("shared", None)
        options.pop("base", None)
        self.app = app
        self.run = fun
        self.__wrapped__ = fun
        self.__doc__ = fun.__doc__
        self.__module__ = fun.__module__
        self.__name__ = getattr(fun, "__name__", type(self).__name__)
        self.name = options.pop("name", None) or f"{fun.__module__}.{fun.__qualname__}"
        for key, value in options.items():
            setattr(self, key, value)
        self.autoretry_for = tuple(self.autoretry_for)
        self.dont_autoretry_for = tuple(self.dont_autoretry_for)
        #: checks the arguments of a call against the function's signature (``typing``):
        #: False until first needed, None when not checked (``typing=False``, a builtin)
        self._check_arguments: Callable[..., None] | None | bool = False if self.typing else None
        #: no hook and no ``__call__`` to honour: the run calls ``run`` and nothing else
        self._plain = not (self._hooks or self._custom_call)

    # -- the request stack -----------------------------------------------------------
    @property
    def request(self) -> Request | _DirectCall:
        """The current run's Request; a stand-in with ``called_directly=True`` (and
        ``id=None``) when the task is called as a plain function."""
        # a context variable, not a thread-local: each thread, greenlet and asyncio task
        # sees its own request. Matched by name, so a run pays nothing for it; the cost:
        # while a task applied eagerly from another's body runs, the outer task's
        # ``request`` reads as a direct call (Celery keeps a stack per task).
        request = _current_request.get()
        if request is not None and request.name == self.name:
            return request
        return _DIRECT_CALL

    def push_request(self, request: Request | None) -> Request | None:
        """Make ``request`` (one of this task's) the current one; return the one it
        replaces, to be pushed back when the run ends."""
        previous = _current_request.get()
        _current_request.set(request)
        return previous

    # -- hooks (override in a ``base=`` class; Celery's signatures) ---------------------
    def before_start(self, task_id: str, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Called before the body runs (after ``task_prerun``)."""

    def on_success(self, retval: Any, task_id: str, args: Sequence[Any],
                   kwargs: dict[str, Any]) -> None:
        """Called when the task succeeded, with what it returned."""

    def on_failure(self, exc: BaseException, task_id: str, args: Sequence[Any],
                   kwargs: dict[str, Any], einfo: Any) -> None:
        """Called when the task failed; ``einfo`` has ``exception``, ``traceback`` (text)."""

    def on_retry(self, exc: BaseException | None, task_id: str, args: Sequence[Any],
                 kwargs: dict[str, Any], einfo: Any) -> None:
        """Called when the task is to be retried; ``exc`` is the reason given to ``retry``."""

    def after_return(self, status: str, retval: Any, task_id: str, args: Sequence[Any],
                     kwargs: dict[str, Any], einfo: Any) -> None:
        """Called after the task succeeded or failed (not on retry, ignore or reject);
        ``retval`` is the return value or the exception."""

    # -- states ------------------------------------------------------------------------
    def update_state(self, task_id: str | None = None, state: str | None = None,
                     meta: Any = None, **kwargs: Any) -> None:
        """Store a state for ``task_id`` (default: the running task), e.g.
        ``self.update_state(state="PROGRESS", meta={"done": 3, "total": 10})``; clients
        see it as ``AsyncResult.state`` and ``.info``. Nothing is stored when the app
        has no result backend, as in Celery.

        Raises:
            ValueError: no ``task_id`` and no task running.
        """
        request = self.request
        if task_id is None:
            task_id = request.id
            if task_id is None:
                raise ValueError(f"{self.name}.update_state() outside a running task "
                                 "needs a task_id")
        if state is None:
            from .states import PENDING

            state = PENDING
        app = self.app
        if app.backend_url is None:
            return
        backend = app.backend
        extra = None
        if "reply_to" in backend.capabilities and request.id == task_id:
            # rpc:// sends states to the caller's queue, not to a store
            extra = {"_reply_to": request.reply_to, "_correlation_id": request.correlation_id}
        backend.store(task_id, state, meta, kwargs.get("traceback"), extra)

    def _check_call(self, args: Iterable[Any] | None, kwargs: dict[str, Any] | None) -> None:
        """Raise TypeError when ``args``/``kwargs`` do not fit the function (``typing``)."""
        check = self._check_arguments
        if check is False:
            check = self._check_arguments = _argument_checker(self.run, self.bind)
        if check is not None:
            try:
                check(*(args or ()), **(kwargs or {}))  # type: ignore[operator]
            except TypeError as exc:
                raise TypeError(f"{self.name}: {exc}") from None

    # -- calling ---------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.bind:
            return self.run(self, *args, **kwargs)
        return self.run(*args, **kwargs)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task to a worker with these arguments; shortcut for ``apply_async``."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable[Any] | None = None,
                    kwargs: dict[str, Any] | None = None,
                    **options: Unpack[TaskOptions]) -> AsyncResult[R]:
        """Send the task to a worker.

        Options (all optional, see ``TaskOptions``): ``countdown`` (seconds), ``eta``
        (datetime), ``expires`` (seconds or datetime), ``queue``, ``priority``,
        ``task_id``, ``headers``, ``ignore_result``, ``serializer``, ``compression``,
        ``time_limit``, ``soft_time_limit``, ``link``/``link_error`` (signatures),
        ``exchange``/``routing_key`` (see ``fastq.routing``), ``retry``/``retry_policy``
        (publish retries while the broker is unreachable).

        Returns:
            AsyncResult for the task id.
        Raises:
            PublishTimeout: the broker could not be reached in time.
        """
        check = self._check_arguments  # inline: delay() is a hot path
        if check is not None:
            if check is False:
                self._check_call(args, kwargs)
            else:
                try:
                    check(*(args or ()), **(kwargs or {}))  # type: ignore[operator]
                except TypeError as exc:
                    raise TypeError(f"{self.name}: {exc}") from None
        return self.app.send_task(self.name, args, kwargs, _task=self, **options)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """``delay`` for asyncio code; see ``aapply_async``."""
        return await self.aapply_async(args, kwargs)

    async def aapply_async(self, args: Iterable[Any] | None = None,
                           kwargs: dict[str, Any] | None = None,
                           **options: Unpack[TaskOptions]) -> AsyncResult[R]:
        """``apply_async`` for asyncio code: the same options and result.

        The message is published by the blocking producer on a thread of the loop's
        default executor, so the loop goes on while the broker confirms; the brokers'
        producers are safe to share between threads.

        Raises:
            PublishTimeout: the broker could not be reached in time.
        """
        import asyncio
        import functools

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, functools.partial(self.apply_async, args, kwargs, **options))

    def delay_on_commit(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """``delay`` once the current Django transaction commits (at once outside one);
        nothing is sent if it rolls back. Celery 5.4's ``DjangoTask.delay_on_commit``:
        a worker never sees a row that is not committed yet. Returns None, as the task id
        is not known until then."""
        from django.db import transaction  # type: ignore[import-untyped]

        transaction.on_commit(lambda: self.delay(*args, **kwargs))

    def apply_async_on_commit(self, args: Iterable[Any] | None = None,
                              kwargs: dict[str, Any] | None = None, *,
                              using: str | None = None,
                              **options: Unpack[TaskOptions]) -> None:
        """``apply_async`` once the transaction on ``using`` (Django's default database
        when None) commits; see ``delay_on_commit``."""
        from django.db import transaction

        transaction.on_commit(lambda: self.apply_async(args, kwargs, **options), using=using)

    def delay_many(self, arg_list: Iterable[Sequence[Any] | tuple[Sequence[Any], dict[str, Any]]],
                   **options: Unpack[TaskOptions]) -> list[AsyncResult[R]]:
        """Send one task per item of ``arg_list`` in a single broker batch.

        Each item is a tuple of positional args, or ``(args, kwargs)`` when the second
        element is a dict.
        """
        calls: list[tuple[str, Iterable[Any] | None, dict[str, Any] | None]] = []
        for item in arg_list:
            if (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict)
                    and isinstance(item[0], (list, tuple))):
                calls.append((self.name, item[0], item[1]))
            else:
                calls.append((self.name, item, None))
            if self._check_arguments is not None:
                self._check_call(calls[-1][1], calls[-1][2])
        return self.app.send_many(calls, _task=self, **options)

    def apply(self, args: Iterable[Any] | None = None, kwargs: dict[str, Any] | None = None,
              **options: Unpack[_ApplyOptions]) -> EagerResult[R]:
        """Run the task here, now, and return an eager result."""
        return cast("EagerResult[R]", self.app.run_eagerly(self, args, kwargs, **options))

    def AsyncResult(self, task_id: str) -> AsyncResult[R]:  # noqa: N802 - Celery's name
        """A result handle for ``task_id``, typed as this task's result."""
        return self.app.AsyncResult(task_id)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task with partial arguments."""
        return Signature(self.name, args, kwargs, app=self.app)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: the parent's result is not prepended."""
        return Signature(self.name, args, kwargs, app=self.app, immutable=True)

    signature = s

    def chunks(self, it: Iterable[Any], n: int) -> chunks:
        """``it``'s argument tuples in parts of ``n``, each part one task of a group."""
        return chunks(self.s(), it, n, app=self.app)

    def map(self, it: Iterable[Any]) -> xmap:
        """One task that calls this one for each item of ``it`` (Celery's ``celery.map``)."""
        return xmap(self.s(), it, app=self.app)

    def starmap(self, it: Iterable[Any]) -> xstarmap:
        """One task that calls this one with each argument tuple of ``it``."""
        return xstarmap(self.s(), it, app=self.app)

    def replace(self, sig: Signature) -> Any:
        """Replace the running task with ``sig`` (Celery's ``Task.replace``).

        ``sig`` (a task, chain, group or chord) takes over this task's place: its result
        is stored under this task's id (a chain's last task, a chord's body; a group's
        results are gathered as one list by ``celery.accumulate``), it gets this task's
        callbacks, errbacks, rest of chain and chord/group membership. Then ``Ignore``
        ends this run without a result of its own. In eager mode ``sig`` runs here and
        its value is returned.

        Raises:
            ValueError: ``sig`` is already part of a chord, or an empty chain.
            Ignore: always, outside eager mode, once ``sig`` is sent.
        """
        request = self.request
        if isinstance(request, _DirectCall):
            raise ValueError("replace() needs a running task: this one was called directly")
        if "chord" in sig.options:
            raise ValueError("a signature replacing a task must not be part of a chord")
        if isinstance(sig, chain) and not sig.tasks:
            raise ValueError("cannot replace a task with an empty chain")
        sig = sig.clone()
        if isinstance(sig, group):
            # a group has no one result to store under this id: a chord body that
            # returns the list of the group's results stands in for it
            sig = chord(sig, Signature("celery.accumulate", (), {"index": 0}, app=self.app),
                        app=self.app)
        for callback in request.callbacks or ():
            sig.link(signature(callback, app=self.app))
        for errback in request.errbacks or ():
            sig.link_error(signature(errback, app=self.app))
        sig.freeze(request.id)
        membership = {"chord": request.chord, "group_id": request.group,
                      "group_index": request.group_index, "root_id": request.root_id,
                      "replaced_task_nesting": request.replaced_task_nesting + 1}
        sig.options.update({k: v for k, v in membership.items() if v is not None})
        for step in reversed(request.chain or ()):  # the rest of this task's chain
            sig = sig | signature(step, app=self.app)
        if request.is_eager:
            sent = sig.apply() if type(sig) is Signature else sig.apply_async()
            return sent.get()
        sig.apply_async()
        raise Ignore("replaced by a new task")

    # -- retrying --------------------------------------------------------------------
    def retry(self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None,
              exc: BaseException | None = None, throw: bool = True,
              eta: datetime | None = None, countdown: float | None = None,
              max_retries: int | None = None, **options: Any) -> Retry:
        """Republish this task to run again later, then stop it by raising ``Retry``.

        The new message keeps the task id and has ``retries + 1``. Past ``max_retries``,
        raises ``exc`` if given, else ``MaxRetriesExceededError``.
        """
        request = self.request
        if request.called_directly:
            if exc is not None:
                raise exc
            raise Retry("task called directly, outside a worker: not retried", when=countdown)
        assert isinstance(request, Request)
        limit = self.max_retries if max_retries is None else max_retries
        if limit is None:
            limit = self.app.conf.task_max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{request.args} "
                f"kwargs:{request.kwargs}: max_retries={limit} reached")
        if eta is None and countdown is None:
            countdown = self.default_retry_delay
            if countdown is None:
                countdown = self.app.conf.task_default_retry_delay
        when = eta if eta is not None else countdown
        if not request.is_eager:  # eager mode runs the retry in place (fastq/eager.py)
            try:
                self.app.publish_retry(request, args, kwargs, eta=eta, countdown=countdown,
                                       **options)
            except Exception as publish_error:
                # Celery rejects the message when the retry cannot be published; so do
                # we, dead-lettering it rather than losing the task.
                raise Reject(f"retry could not be published: {publish_error}", requeue=False)
        sig = None
        if request.is_eager:
            sig = (request.args if args is None else args,
                   request.kwargs if kwargs is None else kwargs)
        retry = Retry(exc=exc, when=when, sig=sig)
        if throw:
            raise retry
        return retry

    def backoff_countdown(self, retries: int) -> float:
        """The autoretry delay: exponential from ``retry_backoff`` s, capped, with jitter."""
        factor = 1 if self.retry_backoff is True else float(self.retry_backoff)
        countdown: float = min(float(self.retry_backoff_max), factor * (2 ** retries))
        if self.retry_jitter:
            countdown = random.uniform(0, countdown)
        return max(0.0, countdown)

    def __repr__(self) -> str:
        return f"<@task: {self.name} of {self.app.main or 'fastq'}>"


def countdown_to_eta(countdown: float, now: float | None = None) -> datetime:
    """The aware UTC datetime ``countdown`` seconds from now."""
    from datetime import timezone

    base = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
    return base + timedelta(seconds=countdown)


__all__ = ["Task", "Request", "TaskOptions", "TaskDecoratorOptions", "Reject", "Retry",
           "HOOKS", "current_request"]
