"""Task (a registered function and its options) and Request (the context of one run)."""

from __future__ import annotations

import contextvars
import random
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .exceptions import MaxRetriesExceededError, Reject, Retry

if TYPE_CHECKING:
    from .app import App
    from .brokers.base import Delivery
    from .result import AsyncResult

#: Headers every Celery v2 message carries; the rest are the caller's custom headers.
STANDARD_HEADERS = frozenset({
    "lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
    "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin",
    "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps", "compression",
    "redelivered",
})


def _is_broker_header(name: str) -> bool:
    # RabbitMQ's dead-lettering bookkeeping must not travel with a retry (celery-protocol §1.7).
    return name == "x-death" or name.startswith(("x-first-death-", "x-last-death-"))


class Request:
    """What a running task can know about its invocation (``self.request`` in bound tasks).

    Built once per delivery from the decoded message; fields that are rarely read are
    properties over the headers, so the hot path pays only for what it uses.
    """

    __slots__ = ("id", "name", "args", "kwargs", "embed", "headers", "delivery", "hostname",
                 "is_eager", "properties")

    def __init__(self, headers: dict, args: list, kwargs: dict, embed: dict,
                 delivery: Delivery | None = None, hostname: str | None = None,
                 is_eager: bool = False, properties: dict | None = None) -> None:
        self.id: str = headers["id"]
        self.name: str = headers["task"]
        self.args = args
        self.kwargs = kwargs
        self.embed = embed
        self.headers = headers
        self.delivery = delivery
        self.hostname = hostname
        self.is_eager = is_eager
        self.properties = properties if properties is not None else (
            delivery.properties if delivery is not None else {})

    task = property(lambda self: self.name)
    retries = property(lambda self: self.headers.get("retries") or 0)
    eta = property(lambda self: self.headers.get("eta"))
    expires = property(lambda self: self.headers.get("expires"))
    parent_id = property(lambda self: self.headers.get("parent_id"))
    root_id = property(lambda self: self.headers.get("root_id"))
    group = property(lambda self: self.headers.get("group"))
    group_index = property(lambda self: self.headers.get("group_index"))
    shadow = property(lambda self: self.headers.get("shadow"))
    origin = property(lambda self: self.headers.get("origin"))
    timelimit = property(lambda self: self.headers.get("timelimit") or (None, None))
    correlation_id = property(lambda self: self.properties.get("correlation_id") or self.id)
    reply_to = property(lambda self: self.properties.get("reply_to"))
    callbacks = property(lambda self: self.embed.get("callbacks"))
    errbacks = property(lambda self: self.embed.get("errbacks"))
    chain = property(lambda self: self.embed.get("chain"))
    chord = property(lambda self: self.embed.get("chord"))
    called_directly = property(lambda self: False)

    @property
    def delivery_info(self) -> dict:
        queue = self.delivery.queue if self.delivery is not None else ""
        return {
            "exchange": "",
            "routing_key": queue,
            "priority": self.properties.get("priority"),
            "redelivered": bool(self.delivery is not None and self.delivery.redeliveries),
        }

    @property
    def custom_headers(self) -> dict:
        return {k: v for k, v in self.headers.items()
                if k not in STANDARD_HEADERS and not _is_broker_header(k)}

    def __repr__(self) -> str:
        return f"<Request {self.name}[{self.id}]>"


class _DirectCall:
    """The request seen by a task called as a plain function, outside any worker."""

    id = None
    retries = 0
    called_directly = True
    is_eager = False
    args: Sequence = ()
    kwargs: dict = {}  # noqa: RUF012 - read-only stand-in
    hostname = None
    delivery_info: dict = {}  # noqa: RUF012
    eta = expires = parent_id = root_id = group = group_index = None
    headers: dict = {}  # noqa: RUF012


_DIRECT_CALL = _DirectCall()


class Task:
    """A function registered with an App, plus its options.

    Created by ``@app.task``; call ``delay``/``apply_async`` to run it on a worker, or call
    it directly to run it here.
    """

    #: Option defaults; None means "take the app's setting".
    name: str
    bind = False
    max_retries: int | None = None
    default_retry_delay: float | None = None
    autoretry_for: tuple = ()
    dont_autoretry_for: tuple = ()
    retry_kwargs: dict = {}  # noqa: RUF012 - replaced per task, never mutated
    retry_backoff: bool | float = False
    retry_backoff_max: float = 600
    retry_jitter = True
    acks_late: bool | None = None
    ignore_result: bool | None = None
    store_errors_even_if_ignored: bool | None = None
    track_started: bool | None = None
    rate_limit: str | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    expires: float | datetime | None = None
    queue: str | None = None
    priority: int | None = None
    serializer: str | None = None
    compression: str | None = None

    OPTIONS = frozenset({
        "name", "bind", "max_retries", "default_retry_delay", "autoretry_for",
        "dont_autoretry_for", "retry_kwargs", "retry_backoff", "retry_backoff_max",
        "retry_jitter", "acks_late", "ignore_result", "store_errors_even_if_ignored",
        "track_started", "rate_limit", "time_limit", "soft_time_limit", "expires", "queue",
        "priority", "serializer", "compression", "shared", "base",
    })

    def __init__(self, app: App, fun: Callable, **options: Any) -> None:
        unknown = set(options) - self.OPTIONS
        if unknown:
            import difflib

            name = sorted(unknown)[0]
            close = difflib.get_close_matches(name, self.OPTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            from .exceptions import ConfigurationError

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
        # a context variable, not a thread-local: each thread, greenlet and asyncio task
        # running this task sees its own request
        self._request_var: contextvars.ContextVar[Request | None] = contextvars.ContextVar(
            f"fastq.request:{self.name}", default=None)

    # -- the request stack -----------------------------------------------------------
    @property
    def request(self) -> Request | _DirectCall:
        return self._request_var.get() or _DIRECT_CALL

    def push_request(self, request: Request | None) -> Request | None:
        var = self._request_var
        previous = var.get()
        var.set(request)
        return previous

    # -- calling ---------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.bind:
            return self.run(self, *args, **kwargs)
        return self.run(*args, **kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send the task to a worker with these arguments; shortcut for ``apply_async``."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable | None = None, kwargs: dict | None = None,
                    **options: Any) -> AsyncResult:
        """Send the task to a worker.

        Options (all optional): ``countdown`` (seconds), ``eta`` (datetime), ``expires``
        (seconds or datetime), ``queue``, ``priority``, ``task_id``, ``headers``,
        ``ignore_result``, ``serializer``, ``compression``, ``time_limit``,
        ``soft_time_limit``, ``link``/``link_error`` (signatures).

        Returns:
            AsyncResult for the task id.
        Raises:
            PublishTimeout: the broker could not be reached in time.
        """
        return self.app.send_task(self.name, args, kwargs, _task=self, **options)

    def delay_many(self, arg_list: Iterable[Sequence | tuple[Sequence, dict]],
                   **options: Any) -> list[AsyncResult]:
        """Send one task per item of ``arg_list`` in a single broker batch.

        Each item is a tuple of positional args, or ``(args, kwargs)`` when the second
        element is a dict.
        """
        calls = []
        for item in arg_list:
            if (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict)
                    and isinstance(item[0], (list, tuple))):
                calls.append((self.name, item[0], item[1]))
            else:
                calls.append((self.name, item, None))
        return self.app.send_many(calls, _task=self, **options)

    def apply(self, args: Iterable | None = None, kwargs: dict | None = None,
              **options: Any) -> AsyncResult:
        """Run the task here, now, and return an eager result."""
        return self.app.run_eagerly(self, args, kwargs, **options)

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's name
        return self.app.AsyncResult(task_id)

    def s(self, *args: Any, **kwargs: Any):
        """A signature of this task with partial arguments."""
        from .canvas import Signature

        return Signature(self.name, args, kwargs, app=self.app)

    def si(self, *args: Any, **kwargs: Any):
        """An immutable signature: the parent's result is not prepended."""
        from .canvas import Signature

        return Signature(self.name, args, kwargs, app=self.app, immutable=True)

    signature = s

    # -- retrying --------------------------------------------------------------------
    def retry(self, args: Sequence | None = None, kwargs: dict | None = None,
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
        if not request.is_eager:  # eager runs retry in place, see executor.run_eager
            try:
                self.app.publish_retry(request, args, kwargs, eta=eta, countdown=countdown,
                                       **options)
            except Exception as publish_error:
                # Celery rejects the message when the retry cannot be published; so do
                # we, dead-lettering it rather than losing the task.
                raise Reject(f"retry could not be published: {publish_error}", requeue=False)
        retry = Retry(exc=exc, when=when)
        if throw:
            raise retry
        return retry

    def backoff_countdown(self, retries: int) -> float:
        """The autoretry delay: exponential from ``retry_backoff`` s, capped, with jitter."""
        factor = 1 if self.retry_backoff is True else float(self.retry_backoff)
        countdown = min(float(self.retry_backoff_max), factor * (2 ** retries))
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


__all__ = ["Task", "Request", "Reject", "Retry"]
