"""Queues, exchanges and the router: where a task's message goes.

``Queue``, ``Exchange`` and ``Broadcast`` take kombu's constructor shapes, so a Celery
``task_queues`` list works with its imports changed, but nothing here depends on kombu.
``Router`` answers, for one call, the question Celery's ``Router`` and ``send_task_message``
answer together: which queue (if known), which exchange, which routing key. The wire
outcome is Celery's, so Celery workers and fastq workers share exchanges and bindings:
a direct queue given without an exchange is published to the default exchange ``""``
with the queue's name as the key; topic and fanout queues, or an exchange named by the
caller, are published to their exchange with the routing key.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .exceptions import ConfigurationError

#: Exchange types RabbitMQ knows; only ``direct`` maps onto brokers without exchanges.
EXCHANGE_TYPES = ("direct", "topic", "fanout", "headers")


class Exchange:
    """An AMQP exchange: ``Exchange(name, type="direct")`` as kombu's.

    ``durable``/``auto_delete``/``arguments`` are used when fastq declares it on
    RabbitMQ; other kombu keyword arguments (``delivery_mode``, ``passive``,
    ``no_declare``, ...) are accepted and kept in ``options``.
    """

    def __init__(self, name: str = "", type: str = "direct", *,  # noqa: A002 - kombu's name
                 durable: bool = True, auto_delete: bool = False,
                 arguments: Mapping[str, Any] | None = None, **options: Any) -> None:
        if type not in EXCHANGE_TYPES:
            raise ConfigurationError(
                f"exchange {name!r}: unknown type {type!r} (known: {', '.join(EXCHANGE_TYPES)})")
        self.name = name
        self.type = type
        self.durable = durable
        self.auto_delete = auto_delete
        self.arguments = dict(arguments or {})
        self.options = options

    def _key(self) -> tuple:
        return (self.name, self.type, self.durable, self.auto_delete)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Exchange) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"<Exchange {self.name!r} type={self.type}>"


class Queue:
    """A queue and its binding: ``Queue(name, exchange=None, routing_key=None, ...)``.

    ``exchange`` is an ``Exchange`` or its name (a direct exchange); without one the
    queue is bound to ``task_default_exchange`` when the App's queue table takes it in,
    as Celery does. ``routing_key`` defaults to the queue's name. ``max_priority``,
    ``expires`` (seconds), ``message_ttl`` (seconds), ``max_length`` and
    ``queue_arguments`` become the ``x-*`` arguments RabbitMQ declares it with.
    ``bindings`` (kombu's ``binding`` objects or ``(exchange, routing_key)`` pairs) bind
    it to more exchanges than one.
    """

    def __init__(self, name: str = "", exchange: Exchange | str | None = None,
                 routing_key: str | None = None, *, durable: bool = True,
                 exclusive: bool = False, auto_delete: bool = False,
                 queue_arguments: Mapping[str, Any] | None = None,
                 max_priority: int | None = None, expires: float | None = None,
                 message_ttl: float | None = None, max_length: int | None = None,
                 bindings: Iterable[Any] | None = None, alias: str | None = None,
                 **options: Any) -> None:
        self.name = name
        self.exchange = Exchange(exchange) if isinstance(exchange, str) else exchange
        self.routing_key = routing_key or ""
        self.durable = durable
        self.exclusive = exclusive
        self.auto_delete = auto_delete
        self.queue_arguments = dict(queue_arguments or {})
        self.max_priority = max_priority
        self.expires = expires
        self.message_ttl = message_ttl
        self.max_length = max_length
        self.extra_bindings = [_as_binding(b) for b in bindings or ()]
        self.alias = alias
        self.options = options

    @property
    def arguments(self) -> dict[str, Any]:
        """The ``x-*`` arguments of ``queue.declare``."""
        args = dict(self.queue_arguments)
        if self.max_priority is not None:
            args["x-max-priority"] = int(self.max_priority)
        if self.expires is not None:
            args["x-expires"] = int(self.expires * 1000)
        if self.message_ttl is not None:
            args["x-message-ttl"] = int(self.message_ttl * 1000)
        if self.max_length is not None:
            args["x-max-length"] = int(self.max_length)
        return args

    @property
    def bindings(self) -> list[tuple[Exchange, str]]:
        """Every ``(exchange, routing_key)`` this queue is bound with."""
        own = [(self.exchange, self.routing_key or self.name)] if self.exchange else []
        return own + self.extra_bindings

    def __repr__(self) -> str:
        return f"<Queue {self.name!r} -> {self.exchange!r} key={self.routing_key!r}>"


class Broadcast(Queue):
    """A queue per consumer, all bound to the fanout exchange ``name`` (kombu's Broadcast).

    Each worker process group that loads the settings gets its own auto-delete queue
    ``bcast.<uuid>`` (``queue=`` names it instead), so every worker receives every
    message sent to the exchange. Route tasks to it with
    ``{"queue": name, "exchange": name}``; ``-Q name`` selects it.
    """

    def __init__(self, name: str | None = None, queue: str | None = None,
                 unique: bool = False, auto_delete: bool = True,
                 exchange: Exchange | None = None, alias: str | None = None,
                 **options: Any) -> None:
        if unique:
            queue = f"{queue or 'bcast'}.{uuid.uuid4()}"
        else:
            queue = queue or f"bcast.{uuid.uuid4()}"
        super().__init__(queue, exchange if exchange is not None else Exchange(
            name or "", "fanout"), auto_delete=auto_delete, durable=False,
            alias=alias or name, **options)


def _from_kombu(queue: Any) -> Queue:
    """A fastq Queue from a kombu ``Queue`` (a Celery config that still imports kombu),
    read by attribute: kombu itself is not imported."""
    if not all(hasattr(queue, attr) for attr in ("name", "exchange", "routing_key")):
        raise ConfigurationError(f"task_queues holds {queue!r}: use fastq.Queue(...)")
    exchange = queue.exchange
    if exchange is not None and not isinstance(exchange, Exchange):
        exchange = Exchange(exchange.name, exchange.type or "direct",
                            durable=bool(getattr(exchange, "durable", True)),
                            auto_delete=bool(getattr(exchange, "auto_delete", False)))
    return Queue(queue.name, exchange, queue.routing_key,
                 durable=bool(getattr(queue, "durable", True)),
                 exclusive=bool(getattr(queue, "exclusive", False)),
                 auto_delete=bool(getattr(queue, "auto_delete", False)),
                 queue_arguments=getattr(queue, "queue_arguments", None),
                 max_priority=getattr(queue, "max_priority", None),
                 alias=getattr(queue, "alias", None))


def _as_binding(value: Any) -> tuple[Exchange, str]:
    if isinstance(value, tuple):
        exchange, key = value
    else:
        exchange, key = value.exchange, getattr(value, "routing_key", "")
    if not isinstance(exchange, Exchange):
        exchange = Exchange(getattr(exchange, "name", exchange),
                            getattr(exchange, "type", "direct"))
    return exchange, key or ""


@dataclass(frozen=True)
class Route:
    """Where one message goes.

    ``queue`` is the destination queue when one is known; ``exchange`` ``""`` is the
    default exchange (the routing key names the queue). ``source`` names the setting or
    option that chose a non-direct exchange, for the error of a broker that has none.
    """

    queue: Queue | None
    exchange: str
    exchange_type: str
    routing_key: str
    source: str

    @property
    def queue_name(self) -> str:
        """The queue this message lands in on a broker without exchanges."""
        return self.queue.name if self.queue is not None else self.routing_key


class QueueTable:
    """``task_queues`` by name, with Celery's defaults filled in and missing queues made.

    Parameters mirror the settings: ``default_exchange`` (None: the default queue's
    name), ``default_exchange_type``, ``default_routing_key`` (None: the default
    queue's name), ``create_missing`` and ``missing_exchange_type``, ``max_priority``
    (``x-max-priority`` for queues that do not set their own), ``missing_queue_type``
    (``quorum``: queues made on the fly are quorum queues).
    """

    def __init__(self, queues: Iterable[Queue] | Mapping[str, Queue] | None, *,
                 default_queue: str = "celery", default_exchange: str | None = None,
                 default_exchange_type: str = "direct",
                 default_routing_key: str | None = None, create_missing: bool = True,
                 missing_exchange_type: str | None = None,
                 missing_queue_type: str | None = None,
                 max_priority: int | None = None) -> None:
        self.default_queue = default_queue
        self.default_exchange = Exchange(default_exchange or default_queue,
                                         default_exchange_type)
        self.default_routing_key = default_routing_key or default_queue
        self.create_missing = create_missing
        self.missing_exchange_type = missing_exchange_type or "direct"
        if missing_queue_type not in (None, "classic", "quorum"):
            raise ConfigurationError(f"task_create_missing_queue_type must be classic or "
                                     f"quorum, not {missing_queue_type!r}")
        #: x-queue-type of the queues made on the fly (RabbitMQ), when not classic
        self.missing_queue_arguments = (
            {"x-queue-type": missing_queue_type} if missing_queue_type == "quorum" else {})
        self.max_priority = max_priority
        self._queues: dict[str, Queue] = {}
        values = queues.values() if isinstance(queues, Mapping) else queues or ()
        for queue in values:
            self._add(queue if isinstance(queue, Queue) else _from_kombu(queue))
        #: the names task_queues gave, in order: what a worker consumes without -Q
        self.configured = self.names()
        if default_queue not in self._queues:
            self._add(Queue(default_queue, self.default_exchange, self.default_routing_key))

    def _add(self, queue: Queue) -> None:
        if queue.exchange is None or not queue.exchange.name:
            queue.exchange = self.default_exchange
        if self.max_priority is not None and queue.max_priority is None \
                and "x-max-priority" not in queue.queue_arguments:
            queue.max_priority = self.max_priority
        self._queues[queue.name] = queue
        if queue.alias and queue.alias not in self._queues:
            self._queues[queue.alias] = queue

    def __contains__(self, name: str) -> bool:
        return name in self._queues

    def __getitem__(self, name: str) -> Queue:
        """The queue called ``name`` (or aliased so), made on the fly when allowed."""
        queue = self._queues.get(name)
        if queue is None:
            if not self.create_missing:
                raise ConfigurationError(
                    f"queue {name!r} is not in task_queues ({', '.join(self.names())}) and "
                    f"task_create_missing_queues is False")
            queue = Queue(name, Exchange(name, self.missing_exchange_type), name,
                          queue_arguments=self.missing_queue_arguments)
            self._add(queue)
        return queue

    def names(self) -> list[str]:
        """The configured queues' own names (not aliases), default queue included."""
        return list(dict.fromkeys(q.name for q in self._queues.values()))

    def consumed(self, selected: Iterable[str] | None) -> list[Queue]:
        """The queues a worker consumes: ``selected`` (``-Q``; names or aliases), or
        every queue of ``task_queues`` when it is set, or the default queue."""
        names = list(selected or ()) or self.configured or [self.default_queue]
        return list({id(q): q for q in (self[name] for name in names)}.values())

    def bound_to(self, exchange: str, routing_key: str) -> list[Queue]:
        """Queues bound to direct ``exchange`` with ``routing_key``."""
        unique = {id(q): q for q in self._queues.values()}.values()
        return [q for q in unique if any(
            ex.name == exchange and ex.type == "direct" and key == routing_key
            for ex, key in q.bindings)]

    def bound_to_exchange(self, exchange: str) -> list[Queue]:
        """Queues bound to ``exchange`` with any key."""
        unique = {id(q): q for q in self._queues.values()}.values()
        return [q for q in unique if any(ex.name == exchange for ex, _key in q.bindings)]

    def exchange_type(self, name: str) -> str | None:
        """The type of an exchange some queue is bound to, if any is."""
        if name == self.default_exchange.name:
            return self.default_exchange.type
        for queue in self._queues.values():
            for ex, _key in queue.bindings:
                if ex.name == name:
                    return ex.type
        return None


#: a router: a mapping of glob/regex -> route, a callable, or an object with route_for_task
RouterSpec = Any
#: most task names whose route a Router remembers
_NAME_CACHE_SIZE = 4096


class Router:
    """``task_routes`` plus the queue table: ``route(name, ...)`` gives a ``Route``."""

    def __init__(self, routes: RouterSpec, table: QueueTable) -> None:
        self.table = table
        self.routers = [_prepare(r) for r in _as_list(routes)]
        #: some router is a function that may look at a call's arguments, so each call
        #: is routed on its own (a dict of patterns routes by name only)
        self.takes_call_args = any(not isinstance(r, (str, Mapping)) for r in _as_list(routes))
        #: routes by task name alone (no options), when nothing looks at the arguments
        self._by_name: dict[str, Route] = {}

    def lookup(self, name: str, args: Any = (), kwargs: Any = None,
               options: Mapping[str, Any] | None = None, task: Any = None) -> Any:
        """The first route a router gives for ``name`` (a queue name, dict or Queue),
        or None."""
        for router in self.routers:
            found = router(name, args, kwargs or {}, dict(options or {}), task)
            if found is not None:
                return found
        return None

    def route(self, name: str, args: Any = (), kwargs: Any = None,
              options: Mapping[str, Any] | None = None, task: Any = None) -> Route:
        """Where a call of ``name`` goes: the caller's ``queue``/``exchange``/
        ``routing_key`` options win over ``task_routes``, which wins over the default
        queue."""
        if not options and not self.takes_call_args:
            known = self._by_name.get(name)
            if known is None:
                known = self._route(name, args, kwargs, {}, task)
                if len(self._by_name) < _NAME_CACHE_SIZE:
                    self._by_name[name] = known
            return known
        return self._route(name, args, kwargs, options or {}, task)

    def _route(self, name: str, args: Any, kwargs: Any, options: Mapping[str, Any],
               task: Any) -> Route:
        queue = options.get("queue")
        exchange = options.get("exchange")
        routing_key = options.get("routing_key")
        exchange_type = options.get("exchange_type")
        source = "apply_async(exchange=...)" if exchange is not None else ""
        found = self.lookup(name, args, kwargs, options, task)
        if found is not None:
            found = {"queue": found} if isinstance(found, (str, Queue)) else dict(found)
            queue = queue or found.get("queue")
            if exchange is None and found.get("exchange") is not None:
                exchange, source = found["exchange"], "task_routes"
            routing_key = routing_key or found.get("routing_key")
            exchange_type = exchange_type or found.get("exchange_type")
        if queue is None and exchange is None:
            queue = self.table.default_queue
        queue_obj = queue if isinstance(queue, Queue) else (
            self.table[queue] if queue else None)
        if isinstance(exchange, Exchange):
            exchange_type = exchange_type or exchange.type
            exchange = exchange.name
        if exchange_type is None:
            if queue_obj is not None and queue_obj.exchange is not None:
                exchange_type = queue_obj.exchange.type
                source = source or ("task_default_exchange_type"
                                    if queue_obj.exchange is self.table.default_exchange
                                    else "task_queues")
            else:
                exchange_type = self.table.exchange_type(exchange or "") or "direct"
        if exchange_type == "direct" and (not exchange or not routing_key):
            if queue_obj is None:
                raise ConfigurationError(
                    f"task {name!r}: exchange {exchange!r} needs a routing_key (or a queue)")
            # Celery's rule: direct routing without both names goes through the default
            # exchange, keyed by the queue's name
            return Route(queue_obj, "", "direct", queue_obj.name, source)
        if exchange is None:
            exchange = queue_obj.exchange.name if queue_obj and queue_obj.exchange else \
                self.table.default_exchange.name
        if routing_key is None:
            routing_key = (queue_obj.routing_key if queue_obj is not None else "") or \
                self.table.default_routing_key
        return Route(queue_obj, exchange, exchange_type, routing_key, source or "task_queues")


def _as_list(routes: RouterSpec) -> list:
    if routes is None:
        return []
    if isinstance(routes, (list, tuple)):
        return list(routes)
    return [routes]


def _prepare(router: RouterSpec) -> Callable[[str, Any, Any, dict, Any], Any]:
    """One router as a function of ``(name, args, kwargs, options, task)``."""
    if isinstance(router, str):
        module, _, attr = router.replace(":", ".").rpartition(".")
        try:
            router = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigurationError(f"task_routes: cannot import router {router!r} ({exc})") \
                from None
    if isinstance(router, Mapping):
        return _mapping_router(router)
    if hasattr(router, "route_for_task"):
        method = router.route_for_task
        return lambda name, args, kwargs, options, task: method(name, args, kwargs)
    if callable(router):
        if _takes_name_only(router):
            # fastq's earlier form: a function of the task name
            return lambda name, args, kwargs, options, task: router(name)
        return lambda name, args, kwargs, options, task: router(
            name, args, kwargs, options, task=task)
    raise ConfigurationError(
        f"task_routes holds {router!r}: use a dict, a router function, or a list of them")


def _takes_name_only(fun: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fun).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    variadic = any(p.kind is p.VAR_POSITIONAL for p in params)
    return len(positional) == 1 and not variadic


def _mapping_router(table: Mapping[Any, Any]) -> Callable[..., Any]:
    exact: dict[str, Any] = {}
    patterns: list[tuple[re.Pattern[str], Any]] = []
    for key, target in table.items():
        if isinstance(key, re.Pattern):
            patterns.append((key, target))
        elif any(ch in key for ch in "*?["):
            patterns.append((re.compile(fnmatch.translate(key)), target))
        else:
            exact[key] = target

    def route(name: str, args: Any, kwargs: Any, options: dict, task: Any) -> Any:
        if name in exact:
            return _copy(exact[name])
        for pattern, target in patterns:
            if pattern.match(name):
                return _copy(target)
        return None

    return route


def _copy(target: Any) -> Any:
    return dict(target) if isinstance(target, Mapping) else target


__all__ = ["Broadcast", "Exchange", "Queue", "QueueTable", "Route", "Router"]
