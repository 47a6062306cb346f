"""App: settings, the task registry, routing and the producer side of fastq."""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, overload

from . import builtins, discovery, eager, protocol, signals
from ._fork import getpid
from ._registry import scheme_of
from ._state import current_app, set_current_app
from .app_support import Loader, Logging
from .backends import create_backend
from .backends.base import Backend
from .brokers import DEFAULT_BROKER_URL, create_broker, mask_url
from .brokers._events import EventSender
from .brokers.base import Broker
from .config import Settings
from .discovery import discover_when_ready, is_django_settings
from .exceptions import ConfigurationError, TaskNotRegistered
from .result import AsyncResult, GroupResult
from .routing import QueueTable, Route, Router
from .task import Request, Task, _current_request, countdown_to_eta
from .tracing import Tracing, tracing_for

if TYPE_CHECKING:
    from typing import ParamSpec, TypeVar

    from typing_extensions import Unpack

    from .control import Control
    from .task import (
        TaskDecoratorOptions,
        _BoundTaskDecorator,
        _SendTaskOptions,
        _TaskDecorator,
    )

    _P = ParamSpec("_P")
    _R = TypeVar("_R")
    _TaskT = TypeVar("_TaskT", bound=Task[Any, Any])

#: the functions and options of every ``@shared_task``, registered with each new App
_shared_tasks: list[tuple[Callable[..., Any], dict[str, Any]]] = []

#: ``App._tracing`` before the ``tracing`` setting was first read
_TRACING_UNREAD: Any = object()


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
        #: task-sent events (``task_send_sent_event``): a sender thread started on the
        #: first such publish in this process
        self._sent_events: EventSender | None = None
        #: what publishing and running call while tracing is on, else None; read from the
        #: ``tracing`` setting at the first publish (``setup_tracing`` changes it later)
        self._tracing: Tracing | None = _TRACING_UNREAD
        #: task name -> (the settings it was made from, the template), for send_task
        self._templates: dict[str, tuple[tuple, protocol.TaskMessageTemplate]] = {}
        #: what the templates' keys read of the settings, made again at each change:
        #: ``(conf.version, rpc:// results?, settings part of the key, task name ->
        #: routed queue)``; no such dict while a router function looks at each call
        self._template_settings: tuple[int, bool, tuple, dict[str, str] | None] | None = None
        #: (the settings version they came from, QueueTable, Router)
        self._routing_cache: tuple | None = None
        #: the task modules ``autodiscover_tasks`` found, imported by ``finalize()``
        self._to_discover: list[str] = []
        self.finalized = False
        builtins.register_builtins(self)  # Celery's celery.chord_unlock, celery.chunks, ...
        for fun, options in list(_shared_tasks):
            self._register(fun, dict(options))
        #: Celery's hooks for setting up periodic tasks (``add_periodic_task``); sent
        #: once, by ``send_periodic_task_hooks()``, which the beat calls at start
        self.on_after_configure = signals.Signal("on_after_configure", {"source"})
        self.on_after_finalize = signals.Signal("on_after_finalize")
        self._periodic_hooks_sent = False
        set_current_app(self)

    # -- configuration ---------------------------------------------------------------
    def config_from_object(self, obj: Any, namespace: str | None = None) -> None:
        """Load settings from a module, class, mapping, or dotted path; env still wins.

        From Django's settings (``"django.conf:settings"``), the ``tasks`` module of every
        installed Django app is imported too, once Django is set up.
        """
        self.conf.from_object(obj, namespace=namespace)
        self.conf.apply_env()
        self._reset_connections()
        self._tracing = _TRACING_UNREAD
        if is_django_settings(obj):
            discover_when_ready(self)

    def _reset_connections(self) -> None:
        sender, self._sent_events = self._sent_events, None
        if sender is not None and self._pid == getpid():
            sender.stop()  # what is queued goes out first
        for resource in (self._broker, self._backend):
            if resource is not None:
                resource.close()
        self._broker = self._backend = None

    def setup_tracing(self, tracing: str | Tracing | None = None) -> Tracing | None:
        """Turn tracing of published and run tasks on or off (``fastq/tracing.py``):
        ``"w3c"`` (the trace headers), ``"opentelemetry"`` (spans too), a ``Tracing``, or
        None for what the ``tracing`` setting says. A worker reads it when it starts.

        Returns:
            The ``Tracing`` in use, or None when tracing is off.
        Raises:
            ValueError: an unknown mode.
            ExtraNotInstalled: "opentelemetry" without ``pip install 'fastq[otel]'``.
        """
        self._tracing = tracing_for(self.conf.tracing if tracing is None else tracing)
        return self._tracing

    @property
    def tracing(self) -> Tracing | None:
        """The ``Tracing`` publishing and running use, None when tracing is off."""
        if self._tracing is _TRACING_UNREAD:
            return self.setup_tracing()
        return self._tracing

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
                **self._broker_retry_policy(),
                **{**self._broker_routing_options(), **self.conf.broker_transport_options},
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
            backend = create_backend(url, expires=self.conf.result_expires, **extra)
            if self.conf.result_serializer == "auth":
                try:
                    self._sign_results(backend)
                except BaseException:
                    backend.close()
                    raise
            self._backend = backend
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
            self._sent_events = None  # its thread stayed in the parent
            self._pid = getpid()

    def close(self) -> None:
        """Close the broker and backend connections of this process."""
        self._reset_connections()

    # -- the registry ----------------------------------------------------------------
    # The overloads type the result after the function: ``@app.task def add(x: int,
    # y: int) -> int`` is a ``Task[[int, int], int]``; with ``bind=True`` the first
    # parameter is the task (typed ``base`` when one is given) and not part of the call.
    @overload
    def task(self, fun: Callable[_P, _R], /) -> Task[_P, _R]: ...

    @overload
    def task(self, *, bind: Literal[False] = False, base: type[Task[Any, Any]] | None = None,
             **options: Unpack[TaskDecoratorOptions]) -> _TaskDecorator: ...

    @overload
    def task(self, *, bind: Literal[True], base: type[_TaskT],
             **options: Unpack[TaskDecoratorOptions]) -> _BoundTaskDecorator[_TaskT]: ...

    @overload
    def task(self, *, bind: Literal[True], base: None = None,
             **options: Unpack[TaskDecoratorOptions]) -> _BoundTaskDecorator[Task[Any, Any]]: ...

    def task(self, *args: Any, **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(name=..., ...)``."""
        if len(args) == 1 and callable(args[0]) and not options:
            return self._register(args[0], {})
        if args:
            raise TypeError("use @app.task or @app.task(option=...), not positional arguments")
        return lambda fun: self._register(fun, options)

    def _register(self, fun: Callable[..., Any], options: dict[str, Any]) -> Task[Any, Any]:
        base: type[Task[Any, Any]] = options.get("base") or self.Task
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

    # -- Celery's App methods ----------------------------------------------------------
    def autodiscover_tasks(self, packages: Iterable[str] | Callable[[], Iterable[str]] | None = None,
                           related_name: str | None = "tasks", force: bool = False) -> None:
        """Import ``<package>.<related_name>`` of each package that has one, so the tasks
        it defines register (Celery's ``autodiscover_tasks``).

        ``packages`` is a list or a callable returning one; without it, under Django,
        every installed app (``INSTALLED_APPS``), once Django is set up. The modules are
        found now and imported when the App is finalized: a worker imports them at start
        (they join ``imports``), another process at ``app.finalize()``, or at once with
        ``force=True``. A package without the module is skipped.
        """
        related = related_name or ""
        if packages is None or (callable(packages) and discovery.django_pending()):
            # a callable is often ``lambda: settings.INSTALLED_APPS``: under a Django not
            # set up yet, the installed apps are what it stands for
            if discovery.django_configured():
                discovery.discover_when_ready(self, related or discovery.TASKS_MODULE)
            return
        found = discovery.task_modules(packages() if callable(packages) else packages,
                                       related)
        missing = [name for name in found if name not in self.conf.imports]
        if missing:
            self.conf.imports = (*self.conf.imports, *missing)
        self._to_discover.extend(name for name in found if name not in self._to_discover)
        if force or self.finalized:
            self.finalize()

    def setup_security(self, allowed_serializers: Iterable[str] | None = None,
                       key: str | None = None, key_password: str | bytes | None = None,
                       cert: str | None = None, store: str | None = None,
                       digest: str | None = None, serializer: str = "json") -> None:
        """Sign every task this process sends and accept only signed ones (Celery's
        ``setup_security``; ``fastq.security.setup_security`` says what each argument is).
        Needs ``task_serializer='auth'``, ``accept_content=['auth']`` and the
        ``security_*`` settings (or the arguments); like Celery's, it holds for every app
        in the process."""
        from .security import setup_security

        setup_security(self.conf, allowed_serializers, key, key_password, cert, store,
                       digest, serializer)
        if self._backend is not None and self.conf.result_serializer == "auth":
            self._sign_results(self._backend)  # with the codec just registered

    def _sign_results(self, backend: Backend) -> None:
        from .security import result_codec

        codec = result_codec(self.conf)
        assert codec is not None
        backend.sign_results(codec)

    def finalize(self, auto: bool = False) -> None:
        """Import the task modules ``autodiscover_tasks`` found; idempotent."""
        import importlib

        while self._to_discover:
            importlib.import_module(self._to_discover.pop(0))
        self.finalized = True

    def set_default(self) -> None:
        """Make this the App that results and signatures without one use."""
        set_current_app(self)

    @functools.cached_property
    def log(self) -> Logging:
        """Logging set-up (Celery's ``app.log``): ``app.log.setup(loglevel="INFO")``."""
        return Logging(self)

    @functools.cached_property
    def loader(self) -> Loader:
        """Module imports (Celery's ``app.loader``): ``import_default_modules()``."""
        return Loader(self)

    # -- periodic tasks ----------------------------------------------------------------
    def add_periodic_task(self, schedule: Any, sig: Any, args: Sequence[Any] = (),
                          kwargs: dict[str, Any] | None = None, name: str | None = None,
                          **options: Any) -> str:
        """Add an entry to ``beat_schedule``: ``sig`` (a signature or task) on
        ``schedule`` (seconds, a timedelta, ``crontab``, ``solar``); returns its name
        (``name``, or the signature's repr as Celery names it)."""
        if isinstance(sig, Task):
            sig = sig.s(*args, **(kwargs or {}))
        elif args or kwargs:
            sig = type(sig)(sig.task, tuple(args) or sig.args,
                            {**sig.kwargs, **(kwargs or {})}, sig.options)
        key = name or repr(sig)
        self.conf.beat_schedule = {**self.conf.beat_schedule, key: {
            "task": sig.task, "schedule": schedule, "args": tuple(sig.args),
            "kwargs": dict(sig.kwargs), "options": {**sig.options, **options}}}
        return key

    def send_periodic_task_hooks(self) -> None:
        """Send ``on_after_configure`` then ``on_after_finalize``, once per App (the beat
        calls it at start, after ``finalize()``, so the receivers can add entries)."""
        if self._periodic_hooks_sent:
            return
        self._periodic_hooks_sent = True
        self.on_after_configure.send(sender=self, source=self.conf)
        self.on_after_finalize.send(sender=self)

    # -- routing ---------------------------------------------------------------------
    def route(self, name: str) -> str:
        """The queue ``task_routes`` sends ``name`` to, or the default queue."""
        return self.router.route(name).queue_name

    @property
    def queues(self) -> QueueTable:
        """``task_queues`` by name, with the default queue and exchange settings applied
        (made again when one of those settings changes)."""
        return self._routing()[0]

    @property
    def router(self) -> Router:
        """``task_routes`` over ``queues``: ``router.route(name, args, kwargs, options)``."""
        return self._routing()[1]

    def _routing(self) -> tuple[QueueTable, Router]:
        conf = self.conf
        # every delay() routes: a settings version, not the settings, is compared
        key = conf.version
        cached = self._routing_cache
        if cached is None or cached[0] != key:
            table = QueueTable(
                conf.task_queues, default_queue=conf.task_default_queue,
                default_exchange=conf.task_default_exchange,
                default_exchange_type=conf.task_default_exchange_type,
                default_routing_key=conf.task_default_routing_key,
                create_missing=conf.task_create_missing_queues,
                missing_exchange_type=conf.task_create_missing_queue_exchange_type,
                missing_queue_type=conf.task_create_missing_queue_type,
                max_priority=conf.task_queue_max_priority)
            cached = self._routing_cache = (key, table, Router(conf.task_routes, table))
        return cached[1], cached[2]

    def _broker_routing_options(self) -> dict[str, Any]:
        """The AMQP broker's options from the routing settings (transport options win)."""
        if scheme_of(self.broker_url) not in ("amqp", "amqps", "pyamqp"):
            return {}
        conf = self.conf
        options: dict[str, Any] = {}
        if conf.task_queue_max_priority:
            options["queue_max_priority"] = conf.task_queue_max_priority
        if conf.task_default_queue_type != "classic":
            options["queue_type"] = conf.task_default_queue_type
        if conf.broker_heartbeat is not None:
            options["heartbeat"] = conf.broker_heartbeat
        return options

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
                         reply_to: str | None = None, exchange: Any = None,
                         routing_key: str | None = None, exchange_type: str | None = None,
                         retry: bool | None = None, retry_policy: dict | None = None,
                         replaced_task_nesting: int = 0, _route: Route | None = None,
                         **unknown: Any) -> protocol.TaskMessageTemplate:
        """Task and app defaults merged with ``options``: the shared part of messages.

        ``queue`` (a name or ``fastq.Queue``), ``exchange`` and ``routing_key`` win over
        ``task_routes``; see ``fastq.routing.Router``. ``retry``/``retry_policy`` are
        for ``publish_many`` and leave the template as it is.
        """
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
        if _route is None:
            _route = self.router.route(name, options={
                "queue": queue, "exchange": exchange, "routing_key": routing_key,
                "exchange_type": exchange_type}, task=task)
        return protocol.TaskMessageTemplate(
            name, queue=self.broker.prepare_route(_route, self.queues),
            exchange=_route.exchange, routing_key=_route.routing_key, eta=eta, expires=expires,
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
            replaced_task_nesting=replaced_task_nesting,
        )

    def send_task(self, name: str, args: Iterable[Any] | None = None,
                  kwargs: dict[str, Any] | None = None,
                  **options: Unpack[_SendTaskOptions]) -> AsyncResult[Any]:
        """Publish a task by name (it need not be registered here) and return its result.

        Options as in ``Task.apply_async``. With ``task_always_eager`` a registered task
        runs here instead.
        """
        task = options.get("_task")
        if self.conf.task_always_eager:
            task = task if task is not None else self.get_task(name)
            options.pop("_task", None)
            result = self.run_eagerly(task, args, kwargs, **options)
        else:
            publishing = _publish_options(options) if (
                "retry" in options or "retry_policy" in options) else _NO_OPTIONS
            if self.router.takes_call_args and "_route" not in options:
                # a router function may look at the arguments: ask it for this call
                options["_route"] = self.router.route(  # type: ignore[typeddict-unknown-key]
                    name, args, kwargs, options, task)
            if options.keys() <= _TEMPLATE_FREE_OPTIONS:
                # no per-call option (delay()): the template made for the last such call
                # is reused, unless the settings it came from have changed since
                template = self._default_template(name, task)
                task_id = options.get("task_id") or protocol.new_task_id()
                message = template.build(task_id, tuple(args or ()), dict(kwargs or {}))
            else:
                message = self.build_message(name, args, kwargs, **options)
            self.publish_many([message], **publishing)
            result = AsyncResult(message.headers["id"], app=self)
        parent = _current_request.get()
        if parent is not None:  # sent from a running task: one of its children, as in Celery
            parent.add_child(result)
        return result

    def _default_template(self, name: str, task: Task | None) -> protocol.TaskMessageTemplate:
        """``message_template(name)``, made again only when a setting it reads has changed.

        The key holds every task and app setting ``message_template`` reads without
        options, and the routed queue (asked of ``task_routes`` again when the settings
        change, or each time while a router function is among them), so a changed setting
        makes a new template; one that depends on the time (``expires``) is never kept.
        """
        if task is None:
            task = self.tasks.get(name)
        conf = self.conf
        settings = self._template_settings
        if settings is None or settings[0] != conf.version:
            # every delay() comes here: what it reads of the settings is read once a change
            settings = self._template_settings = (
                conf.version, _is_rpc(conf.result_backend),
                (conf.task_default_priority, conf.task_ignore_result, conf.task_serializer,
                 conf.task_compression),
                None if self.router.takes_call_args else {})
        reply_to = (self.backend.reply_queue  # type: ignore[attr-defined]
                    if settings[1] else None)
        if task is not None and task.expires is not None:
            return self.message_template(name, _task=task)
        queue = task.queue if task is not None else None
        if not queue:
            # task_routes' queue for the name: with no router function, it changes with
            # the settings only
            routed = settings[3]
            queue = routed.get(name) if routed is not None else None
            if queue is None:
                queue = self.route(name)
                if routed is not None and len(routed) < 1024:
                    routed[name] = queue
        if task is None:
            options: tuple = (queue,)
        else:
            options = (queue, task.priority, task.serializer, task.compression,
                       task.time_limit, task.soft_time_limit, task.ignore_result)
        key = (options, settings[2], self.origin, reply_to)
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
        publishing = _publish_options(options)
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
        self.publish_many(messages, **publishing)
        return [AsyncResult(m.headers["id"], self) for m in messages]

    def publish_many(self, messages: Sequence[protocol.Message], *, retry: bool | None = None,
                     retry_policy: dict[str, Any] | None = None, _traced: bool = False) -> None:
        """Publish with the broker, which keeps trying an unreachable server for
        ``broker_connection_timeout`` seconds (see ``_broker_retry_policy``).

        ``retry``/``retry_policy`` are Celery's (default: ``task_publish_retry`` and
        ``task_publish_retry_policy``): ``retry=False`` makes one attempt; the policy's
        ``max_retries``, ``interval_*`` and ``timeout`` bound the wait.

        Raises:
            PublishTimeout: the broker was unreachable for the whole wait.
        """
        if self._tracing is not None and not _traced:
            return self._publish_traced(messages, retry, retry_policy)
        if _BEFORE_PUBLISH:
            for message in messages:
                signals.before_task_publish.send(
                    sender=message.headers.get("task"), body=message.body,
                    exchange=message.exchange, routing_key=message.routing_key or message.queue,
                    headers=message.headers, properties=message.properties,
                    declare=[], retry_policy=None)
        conf = self.conf
        if retry is None and retry_policy is None and conf.task_publish_retry and \
                not conf.task_publish_retry_policy:
            self.broker.publish_many(messages)  # the common case, without a frame more
        else:
            self._publish_with_policy(messages, retry, retry_policy)
        if conf.task_send_sent_event:
            self._send_sent_events(messages)
        if _AFTER_PUBLISH:
            for message in messages:
                signals.after_task_publish.send(
                    sender=message.headers.get("task"), body=message.body,
                    exchange=message.exchange, routing_key=message.routing_key or message.queue,
                    headers=message.headers)

    def _publish_traced(self, messages: Sequence[protocol.Message], retry: bool | None,
                        retry_policy: dict[str, Any] | None) -> None:
        tracing = self.tracing  # read from the setting on the first publish
        if tracing is None:
            self.publish_many(messages, retry=retry, retry_policy=retry_policy)
            return
        started = tracing.start_publish(messages)
        try:
            self.publish_many(messages, retry=retry, retry_policy=retry_policy, _traced=True)
        except BaseException as exc:
            tracing.end_publish(started, exc)
            raise
        tracing.end_publish(started, None)

    def _send_sent_events(self, messages: Sequence[protocol.Message]) -> None:
        """Celery's task-sent event per message, queued for this process's event
        thread (the publish does not wait for them)."""
        sender = self._sent_events
        if sender is None or self._pid != getpid():
            if "events" not in self.broker.capabilities:
                return  # this broker carries no events (Celery's would send them nowhere)
            sender = self._sent_events = EventSender(self.broker, self.origin, tick=None)
            sender.start()
        for message in messages:
            headers = message.headers
            sender.send("task-sent", {
                "uuid": headers.get("id"), "root_id": headers.get("root_id"),
                "parent_id": headers.get("parent_id"), "name": headers.get("task"),
                "args": headers.get("argsrepr"), "kwargs": headers.get("kwargsrepr"),
                "retries": headers.get("retries") or 0, "eta": headers.get("eta"),
                "expires": headers.get("expires"), "queue": message.queue,
                "exchange": message.exchange or "",
                "routing_key": message.routing_key or message.queue})

    def _publish_with_policy(self, messages: Sequence[protocol.Message], retry: bool | None,
                             retry_policy: dict[str, Any] | None) -> None:
        conf = self.conf
        if retry is None:
            retry = conf.task_publish_retry
        policy = {**conf.task_publish_retry_policy, **(retry_policy or {})}
        if retry and not policy:
            self.broker.publish_many(messages)
        else:
            self.broker.publish_many(messages, retry=retry, retry_policy=policy or None)

    def _broker_retry_policy(self) -> dict[str, Any]:
        """How long the broker retries a publish, and how often its consumer reconnects.

        ``broker_connection_retry=False`` means one attempt at each.
        """
        conf = self.conf
        clash = {"publish_timeout", "connection_max_retries"} & set(
            conf.broker_transport_options)
        if clash:
            raise ConfigurationError(
                f"broker_transport_options may not set {', '.join(sorted(clash))}: use "
                f"broker_connection_timeout and broker_connection_max_retries")
        if not conf.broker_connection_retry:
            return {"publish_timeout": 0.0, "connection_max_retries": 0}
        return {"publish_timeout": conf.broker_connection_timeout,
                "connection_max_retries": conf.broker_connection_max_retries}

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
        return eager.apply(self, task, args, kwargs, **options)

    def AsyncResult(self, task_id: str) -> AsyncResult[Any]:  # noqa: N802 - Celery's name
        """A result handle for ``task_id``."""
        return AsyncResult(task_id, app=self)

    @functools.cached_property
    def control(self) -> Control:
        """Remote control of the workers on this app's broker: ``control.revoke(id)``."""
        from .control import Control

        return Control(self)

    @functools.cached_property
    def GroupResult(self) -> type[GroupResult]:  # noqa: N802 - Celery's name
        """GroupResult bound to this App: ``app.GroupResult(id, results)``,
        ``app.GroupResult.restore(id)``."""
        return type("GroupResult", (GroupResult,), {"default_app": self,
                                                    "__module__": GroupResult.__module__})

    def __repr__(self) -> str:
        return f"<fastq.App {self.main or '__main__'} broker={mask_url(self.broker_url)}>"

    # Last in the class: below this line ``Task`` in an annotation would name the property.
    @functools.cached_property
    def Task(self) -> type[Task[Any, Any]]:  # noqa: N802 - Celery's name
        """The default base class of this App's tasks (``class Base(app.Task)``); assign
        another Task subclass to change what ``@app.task`` makes without ``base=``."""
        return Task


def _publish_options(options: Any) -> dict[str, Any]:
    """``retry``/``retry_policy`` taken out of send_task's options, for publish_many."""
    return {key: options.pop(key) for key in ("retry", "retry_policy")
            if options.get(key) is not None}


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


@overload
def shared_task(fun: Callable[_P, _R], /) -> Task[_P, _R]: ...


@overload
def shared_task(*, bind: Literal[False] = False, base: type[Task[Any, Any]] | None = None,
                **options: Unpack[TaskDecoratorOptions]) -> _TaskDecorator: ...


@overload
def shared_task(*, bind: Literal[True], base: type[_TaskT],
                **options: Unpack[TaskDecoratorOptions]) -> _BoundTaskDecorator[_TaskT]: ...


@overload
def shared_task(*, bind: Literal[True], base: None = None,
                **options: Unpack[TaskDecoratorOptions]) -> _BoundTaskDecorator[Task[Any, Any]]: ...


def shared_task(*args: Any, **options: Any) -> Any:
    """Define a task for every App, present and future (Celery's ``shared_task``).

    Returns a proxy that resolves to the task of the current App on each use, so a
    library can define tasks before the application creates its App. The proxy is typed
    as the ``Task`` it stands for (it forwards every attribute to it).
    """

    def register(fun: Callable[..., Any]) -> SharedTask:
        _shared_tasks.append((fun, options))
        name = current_app()._register(fun, dict(options)).name
        return SharedTask(name)

    if len(args) == 1 and callable(args[0]) and not options:
        return register(args[0])
    return register


# The publish signals' receivers, bound once: nothing to pay per message when none listen.
_BEFORE_PUBLISH = signals.before_task_publish.receivers
_AFTER_PUBLISH = signals.after_task_publish.receivers

#: send_task options that leave the message template as it is: only the id differs.
_TEMPLATE_FREE_OPTIONS = frozenset({"_task", "task_id"})
#: what ``_publish_options`` finds in the options of most calls
_NO_OPTIONS: dict[str, Any] = {}


@functools.lru_cache(maxsize=32)
def _is_rpc(url: str | None) -> bool:
    """Whether ``url`` names the rpc:// result backend (a string test: creates nothing)."""
    return bool(url) and url.split("://", 1)[0].lower() == "rpc"  # type: ignore[union-attr]


#: Celery's name for the App: ``from fastq import Celery`` after ``from celery import Celery``.
Celery = App


class SharedTask:
    """Stands for the task called ``name`` in whichever App is current."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _resolve(self) -> Task[Any, Any]:
        return current_app().get_task(self.name)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._resolve(), attr)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<@shared_task: {self.name}>"
