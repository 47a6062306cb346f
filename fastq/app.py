"""App: settings, the task registry, routing and the producer side of fastq."""

from __future__ import annotations

import fnmatch
import functools
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import protocol
from ._fork import getpid
from .backends import create_backend
from .backends.base import Backend
from .brokers import DEFAULT_BROKER_URL, create_broker, mask_url
from .brokers.base import Broker
from .config import Settings
from .exceptions import (
    BrokerError,
    ConfigurationError,
    PublishTimeout,
    TaskNotRegistered,
)
from .result import AsyncResult, GroupResult
from .task import Request, Task, countdown_to_eta

if TYPE_CHECKING:
    from .worker.control import Control

_current_app: App | None = None
_shared_tasks: list[tuple[Callable, dict]] = []
_lock = threading.Lock()


def current_app() -> App:
    """The most recently created App, or a default one made on first use."""
    global _current_app
    if _current_app is None:
        with _lock:
            if _current_app is None:
                App("default")
    assert _current_app is not None
    return _current_app


class App:
    """A fastq application: configuration, registered tasks, and the way to send them.

    Parameters:
        main: name of the main module; tasks defined in ``__main__`` are named after it.
        broker: broker URL (``sqlite:///path``, ``memory://``); default: embedded SQLite.
        backend: result backend URL; default: the broker's own store when it has one.
        **settings: any setting of ``fastq.config.Settings`` (Celery's lowercase names).
    """

    def __init__(self, main: str | None = None, broker: str | None = None,
                 backend: str | None = None, **settings: Any) -> None:
        global _current_app
        self.main = main
        self.conf = Settings()
        if broker is not None:
            settings["broker_url"] = broker
        if backend is not None:
            settings["result_backend"] = backend
        self.conf.update(settings)
        self.conf.apply_env()
        self.tasks: dict[str, Task] = {}
        self._broker: Broker | None = None
        self._backend: Backend | None = None
        self._pid = getpid()
        self._origin: str | None = None
        #: task name -> (the settings it was made from, the template), for send_task
        self._templates: dict[str, tuple[tuple, protocol.TaskMessageTemplate]] = {}
        for fun, options in list(_shared_tasks):
            self._register(fun, dict(options))
        _current_app = self

    # -- configuration ---------------------------------------------------------------
    def config_from_object(self, obj: Any, namespace: str | None = None) -> None:
        """Load settings from a module, class, mapping, or dotted path; env still wins.

        From Django's settings (``"django.conf:settings"``), the ``tasks`` module of every
        installed Django app is imported too, once Django is set up.
        """
        self.conf.from_object(obj, namespace=namespace)
        self.conf.apply_env()
        self._reset_connections()
        from .contrib.django.discovery import discover_when_ready, is_django_settings

        if is_django_settings(obj):
            discover_when_ready(self)

    def _reset_connections(self) -> None:
        for resource in (self._broker, self._backend):
            if resource is not None:
                resource.close()
        self._broker = self._backend = None

    @property
    def broker_url(self) -> str:
        return self.conf.broker_url or DEFAULT_BROKER_URL

    @property
    def backend_url(self) -> str | None:
        """The result backend URL; by default the broker's store for sqlite/memory."""
        if self.conf.result_backend:
            return self.conf.result_backend
        scheme = self.broker_url.split("://", 1)[0]
        return self.broker_url if scheme in ("sqlite", "memory") else None

    @property
    def broker(self) -> Broker:
        """This process's broker connection (a new one after fork)."""
        if self._broker is None or self._pid != getpid():
            self._after_fork()
            self._broker = create_broker(
                self.broker_url,
                max_redeliveries=self.conf.broker_max_redeliveries,
                lease_seconds=self.conf.broker_lease_seconds,
                **self._broker_tls(),
                **self.conf.broker_transport_options,
            )
        return self._broker

    @property
    def backend(self) -> Backend:
        """This process's result backend."""
        if self._backend is None or self._pid != getpid():
            self._after_fork()
            url = self.backend_url
            if url is None:
                raise ConfigurationError(
                    f"no result backend configured for broker {mask_url(self.broker_url)}; "
                    "set result_backend (e.g. 'sqlite:///.fastq/results.sqlite3')")
            # rpc:// has no server of its own: it talks over the broker's connection
            extra = {"broker_url": self.broker_url, **self._broker_tls()} if _is_rpc(url) else {}
            extra.update(self.conf.result_backend_transport_options)
            if self.conf.database_table_names and url.lower().startswith("db+"):
                extra.setdefault("table_names", self.conf.database_table_names)
            self._backend = create_backend(url, expires=self.conf.result_expires, **extra)
        return self._backend

    def _broker_tls(self) -> dict[str, Any]:
        """``broker_use_ssl`` as the AMQP classes' ``ssl`` option, only when it is set."""
        use_ssl = self.conf.broker_use_ssl
        return {} if use_ssl is None or use_ssl is False else {"ssl": use_ssl}

    def _after_fork(self) -> None:
        if self._pid != getpid():
            # the parent's connections belong to the parent; never close them from here
            self._broker = self._backend = None
            self._origin = None
            self._pid = getpid()

    def close(self) -> None:
        """Close the broker and backend connections of this process."""
        self._reset_connections()

    # -- the registry ----------------------------------------------------------------
    def task(self, *args: Any, **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., ...)``."""
        if len(args) == 1 and callable(args[0]) and not options:
            return self._register(args[0], {})
        if args:
            raise TypeError("use @app.task or @app.task(option=...), not positional arguments")
        return lambda fun: self._register(fun, options)

    def _register(self, fun: Callable, options: dict) -> Task:
        base = options.get("base") or Task
        task = base(self, fun, **options)
        if task.name.startswith("__main__.") and self.main:
            task.name = f"{self.main}.{task.name[len('__main__.'):]}"
        self.tasks[task.name] = task
        return task

    def get_task(self, name: str) -> Task:
        """The registered task called ``name``; a did-you-mean error otherwise."""
        try:
            return self.tasks[name]
        except KeyError:
            raise TaskNotRegistered(unknown_task_message(name, self.tasks)) from None

    def autodiscover(self, modules: Iterable[str]) -> None:
        """Import ``modules`` so the tasks they define register."""
        import importlib

        for module in modules:
            importlib.import_module(module)

    # -- routing ---------------------------------------------------------------------
    def route(self, name: str) -> str:
        """The queue ``task_routes`` sends ``name`` to, or the default queue."""
        routes = self.conf.task_routes
        if routes:
            for table in routes if isinstance(routes, (list, tuple)) else (routes,):
                if callable(table):
                    found = table(name)
                    if found:
                        return found if isinstance(found, str) else found["queue"]
                    continue
                for pattern, target in table.items():
                    if pattern == name or fnmatch.fnmatchcase(name, pattern):
                        return target if isinstance(target, str) else target["queue"]
        return self.conf.task_default_queue

    # -- producing -------------------------------------------------------------------
    @property
    def origin(self) -> str:
        if self._origin is None:
            self._origin = f"gen{getpid()}@{socket.gethostname()}"
        return self._origin

    def build_message(self, name: str, args: Iterable | None = None,
                      kwargs: dict | None = None, *, task_id: str | None = None,
                      **options: Any) -> protocol.Message:
        """The message ``send_task`` would publish, without publishing it."""
        return self.message_template(name, **options).build(
            task_id or protocol.new_task_id(), tuple(args or ()), dict(kwargs or {}))

    def message_template(self, name: str, *, _task: Task | None = None,
                         countdown: float | None = None, eta: datetime | None = None,
                         expires: float | datetime | None = None, queue: str | None = None,
                         priority: int | None = None, headers: dict | None = None,
                         ignore_result: bool | None = None, serializer: str | None = None,
                         compression: str | None = None, time_limit: float | None = None,
                         soft_time_limit: float | None = None, link: Any = None,
                         link_error: Any = None, shadow: str | None = None, retries: int = 0,
                         root_id: str | None = None, parent_id: str | None = None,
                         chain: list | None = None, chord: Any = None,
                         group_id: str | None = None, group_index: int | None = None,
                         reply_to: str | None = None,
                         **unknown: Any) -> protocol.TaskMessageTemplate:
        """Task and app defaults merged with ``options``: the shared part of messages."""
        if unknown:
            raise TypeError(f"unknown option(s) for {name}: {', '.join(sorted(unknown))}")
        task = _task if _task is not None else self.tasks.get(name)
        conf = self.conf
        if task is not None:
            queue = queue or task.queue
            priority = task.priority if priority is None else priority
            expires = task.expires if expires is None else expires
            serializer = serializer or task.serializer
            compression = compression or task.compression
            time_limit = task.time_limit if time_limit is None else time_limit
            soft_time_limit = task.soft_time_limit if soft_time_limit is None else soft_time_limit
            if ignore_result is None:
                ignore_result = task.ignore_result
        if countdown is not None and eta is None:
            eta = countdown_to_eta(countdown)
        if reply_to is None and _is_rpc(conf.result_backend):
            # only rpc:// replies go to the caller, so only then is there a queue to name
            # (Celery sets reply_to always, which makes rpc workers publish in vain)
            reply_to = self.backend.reply_queue  # type: ignore[attr-defined]
        return protocol.TaskMessageTemplate(
            name, queue=queue or self.route(name), eta=eta, expires=expires,
            priority=conf.task_default_priority if priority is None else priority,
            retries=retries, time_limit=time_limit, soft_time_limit=soft_time_limit,
            root_id=root_id, parent_id=parent_id, group_id=group_id, group_index=group_index,
            shadow=shadow,
            ignore_result=bool(conf.task_ignore_result if ignore_result is None else ignore_result),
            headers=headers, reply_to=reply_to, origin=self.origin,
            callbacks=_signature_list(link), errbacks=_signature_list(link_error),
            chain=chain, chord=chord,
            serializer=serializer or conf.task_serializer,
            compression=compression or conf.task_compression,
        )

    def send_task(self, name: str, args: Iterable | None = None, kwargs: dict | None = None,
                  **options: Any) -> AsyncResult:
        """Publish a task by name (it need not be registered here) and return its result.

        Options as in ``Task.apply_async``. With ``task_always_eager`` a registered task
        runs here instead.
        """
        task = options.get("_task")
        if self.conf.task_always_eager:
            task = task if task is not None else self.get_task(name)
            options.pop("_task", None)
            return self.run_eagerly(task, args, kwargs, **options)
        if options.keys() <= _TEMPLATE_FREE_OPTIONS:
            # no per-call option (delay()): the template made for the last such call
            # is reused, unless the settings it came from have changed since
            template = self._default_template(name, task)
            task_id = options.get("task_id") or protocol.new_task_id()
            message = template.build(task_id, tuple(args or ()), dict(kwargs or {}))
        else:
            message = self.build_message(name, args, kwargs, **options)
        self.publish_many([message])
        return AsyncResult(message.headers["id"], app=self)

    def _default_template(self, name: str, task: Task | None) -> protocol.TaskMessageTemplate:
        """``message_template(name)``, made again only when a setting it reads has changed.

        The key holds every task and app setting ``message_template`` reads without
        options (and the routed queue, asked of ``task_routes`` each time), so a changed
        setting makes a new template; one that depends on the time (``expires``) is never
        kept.
        """
        if task is None:
            task = self.tasks.get(name)
        conf = self.conf
        reply_to = (self.backend.reply_queue  # type: ignore[attr-defined]
                    if _is_rpc(conf.result_backend) else None)
        if task is None:
            options: tuple = (self.route(name),)
        else:
            if task.expires is not None:
                return self.message_template(name, _task=task)
            options = (task.queue or self.route(name), task.priority, task.serializer,
                       task.compression, task.time_limit, task.soft_time_limit,
                       task.ignore_result)
        key = (options, conf.task_default_priority, conf.task_ignore_result,
               conf.task_serializer, conf.task_compression, self.origin, reply_to)
        cached = self._templates.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        template = self.message_template(name, _task=task, reply_to=reply_to)
        self._templates[name] = (key, template)
        return template

    def send_many(self, calls: Iterable[tuple[str, Iterable | None, dict | None]],
                  **options: Any) -> list[AsyncResult]:
        """Publish many ``(name, args, kwargs)`` calls as one batch; options apply to all."""
        if "task_id" in options:
            raise TypeError("send_many gives every task its own id; task_id is not allowed")
        templates: dict[str, protocol.TaskMessageTemplate] = {}
        new_id = protocol.new_task_id
        reuse = options.keys() <= _TEMPLATE_FREE_OPTIONS
        messages = []
        for name, args, kwargs in calls:
            template = templates.get(name)
            if template is None:
                template = templates[name] = (
                    self._default_template(name, options.get("_task")) if reuse
                    else self.message_template(name, **options))
            messages.append(template.build(new_id(), tuple(args or ()), dict(kwargs or {})))
        self.publish_many(messages)
        return [AsyncResult(m.headers["id"], app=self) for m in messages]

    def publish_many(self, messages: Sequence[protocol.Message]) -> None:
        """Publish with the broker, retrying until ``broker_connection_timeout`` runs out.

        Raises:
            PublishTimeout: the broker was unreachable for the whole wait.
        """
        deadline = time.monotonic() + self.conf.broker_connection_timeout
        delay = 0.05
        while True:
            try:
                self.broker.publish_many(messages)
                return
            except BrokerError as exc:
                if not (exc.recoverable and self.conf.broker_connection_retry):
                    raise
                if time.monotonic() + delay > deadline:
                    raise PublishTimeout(
                        f"could not publish {len(messages)} message(s) to "
                        f"{mask_url(self.broker_url)} within "
                        f"{self.conf.broker_connection_timeout}s: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def publish_retry(self, request: Request, args: Sequence | None, kwargs: dict | None,
                      eta: datetime | None, countdown: float | None, **options: Any) -> None:
        """Republish ``request`` as Celery does for a retry: same id, ``retries + 1``."""
        headers = request.headers
        hard, soft = (list(headers.get("timelimit") or (None, None)) + [None, None])[:2]
        embed = request.embed or {}
        expires = headers.get("expires")
        if isinstance(expires, str):
            expires = protocol.parse_datetime(expires)
        queue = options.pop("queue", None) or (
            request.delivery.queue if request.delivery is not None else None)
        message = self.build_message(
            request.name, request.args if args is None else args,
            request.kwargs if kwargs is None else kwargs,
            task_id=request.id, countdown=countdown, eta=eta, expires=expires,
            queue=queue, priority=options.pop("priority", request.properties.get("priority")),
            headers=request.custom_headers, retries=request.retries + 1,
            time_limit=hard, soft_time_limit=soft, root_id=headers.get("root_id"),
            parent_id=request.id, group_id=headers.get("group"),
            group_index=headers.get("group_index"), shadow=headers.get("shadow"),
            reply_to=request.reply_to, chain=embed.get("chain"), chord=embed.get("chord"),
            link=embed.get("callbacks"), link_error=embed.get("errbacks"),
            ignore_result=headers.get("ignore_result"),
            **options,
        )
        self.publish_many([message])

    def run_eagerly(self, task: Task, args: Iterable | None, kwargs: dict | None,
                    **options: Any) -> AsyncResult:
        """Run ``task`` in this thread as a worker would and return an EagerResult."""
        from .worker.executor import run_eager

        return run_eager(self, task, args, kwargs, **options)

    def AsyncResult(self, task_id: str) -> AsyncResult:  # noqa: N802 - Celery's name
        """A result handle for ``task_id``."""
        return AsyncResult(task_id, app=self)

    @functools.cached_property
    def control(self) -> Control:
        """Remote control of the workers on this app's broker: ``control.revoke(id)``."""
        from .worker.control import Control

        return Control(self)

    @functools.cached_property
    def GroupResult(self) -> type[GroupResult]:  # noqa: N802 - Celery's name
        """GroupResult bound to this App: ``app.GroupResult(id, results)``,
        ``app.GroupResult.restore(id)``."""
        return type("GroupResult", (GroupResult,), {"default_app": self,
                                                    "__module__": GroupResult.__module__})

    def __repr__(self) -> str:
        return f"<fastq.App {self.main or '__main__'} broker={mask_url(self.broker_url)}>"


def _signature_list(value: Any) -> list | None:
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    return [item.to_dict() if hasattr(item, "to_dict") else item for item in items]


def unknown_task_message(name: str, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown task {name!r}{hint}"


def shared_task(*args: Any, **options: Any) -> Any:
    """Define a task for every App, present and future (Celery's ``shared_task``).

    Returns a proxy that resolves to the task of the current App on each use, so a
    library can define tasks before the application creates its App.
    """

    def register(fun: Callable) -> SharedTask:
        _shared_tasks.append((fun, options))
        name = current_app()._register(fun, dict(options)).name
        return SharedTask(name)

    if len(args) == 1 and callable(args[0]) and not options:
        return register(args[0])
    return register


#: send_task options that leave the message template as it is: only the id differs.
_TEMPLATE_FREE_OPTIONS = frozenset({"_task", "task_id"})


@functools.lru_cache(maxsize=32)
def _is_rpc(url: str | None) -> bool:
    """Whether ``url`` names the rpc:// result backend (a string test: creates nothing)."""
    return bool(url) and url.split("://", 1)[0].lower() == "rpc"  # type: ignore[union-attr]


class SharedTask:
    """Stands for the task called ``name`` in whichever App is current."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _resolve(self) -> Task:
        return current_app().get_task(self.name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._resolve(), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<@shared_task: {self.name}>"
