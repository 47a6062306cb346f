"""The RabbitMQ broker (``amqp://``, ``amqps://``, ``pyamqp://``), on rabbitmq-c or py-amqp.

Topology is Celery's, so Celery clients and workers share queues with fastq: queue
``Q`` (durable, no arguments unless ``queue_max_priority``), a direct durable exchange
``Q`` bound to it with routing key ``Q``, and messages published to the default
exchange ``""`` with routing key ``Q``. Dead letters go to a durable queue
``Q.dead``.

Two connections per broker: the *consumer* connection (one channel in confirm mode)
receives, settles and republishes deliveries, so a republish and the ack of the
original travel on the same channel; the *producer* connection publishes and does
the administrative work (declares, purges, passive declares, dead-letter peeks), whose
channel errors (404, 406) must not cancel the consumers.

Redeliveries are counted in the ``x-fastq-redeliveries`` header, because RabbitMQ's
classic queues only say *whether* a message was redelivered: a requeue republishes a
copy with the count raised and acks the original, and a delivery that comes back with
``redelivered=True`` (its holder died) is counted the same way before it is handed out.
Quorum queues' own ``x-delivery-count`` is used when present.
"""

from __future__ import annotations

import importlib
import logging
import operator
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .. import _extras, _green, _speedups, serialization
from .._fork import getpid
from ..exceptions import (
    AMQPError,
    BrokerConnectionLost,
    BrokerError,
    ConfigurationError,
    ImproperlyInstalled,
)
from ..routing import Queue, QueueTable, Route
from . import _amqp_decisions, _amqp_tls
from ._events import AMQPEventChannel, AMQPEventReceiver
from ._mailbox import (
    PIDBOX_EXCHANGE,
    REPLY_EXCHANGE,
    Mailbox,
    decode_command,
    pidbox_headers,
    reply_body,
    request_with_reply,
)
from .base import DEFAULT_MAX_REDELIVERIES, Broker, Delivery

logger = logging.getLogger(__name__)

#: Header holding how many times a message was delivered before (0 when absent).
REDELIVERIES_HEADER = "x-fastq-redeliveries"
#: Headers added to dead-lettered copies.
DEAD_REASON_HEADER = "x-fastq-dead-reason"
DEAD_AT_HEADER = "x-fastq-dead-at"
SOURCE_QUEUE_HEADER = "x-fastq-source-queue"
#: Suffix of the queue holding a queue's dead letters.
DEAD_SUFFIX = ".dead"

#: A deferred message waits in ``<queue>.delay.<2**k>ms`` queues: each has one fixed TTL
#: (so RabbitMQ expires them in order) and dead-letters back to ``<queue>``. A wait of
#: W ms takes at most popcount(W) hops, largest first: about 27 for a day.
DELAY_INFIX = ".delay."
MAX_DELAY_LEVEL = 36  # 2**36 ms: about two years in one hop
#: Quorum queues count deliveries themselves in this header.
QUORUM_COUNT_HEADER = "x-delivery-count"

#: Delivery.tag = channel generation << GEN_SHIFT | AMQP delivery tag, so a tag from a
#: channel that has since been replaced is recognised and never acked on the new one.
GEN_SHIFT = 48
TAG_MASK = (1 << GEN_SHIFT) - 1

#: Seconds to wait for publisher confirms of one batch.
DEFAULT_CONFIRM_TIMEOUT = 30.0
#: Seconds to wait for the TCP connect and AMQP handshake.
DEFAULT_CONNECT_TIMEOUT = 4.0
#: Seconds a synchronous AMQP method (declare, qos, consume, ...) waits for its reply.
DEFAULT_RPC_TIMEOUT = 30.0
#: Most dead letters read (and requeued) by one ``dead_letters()`` peek.
DEAD_LETTER_PEEK_MAX = 10_000
#: How many released messages are remembered so their return is not counted.
RELEASED_MEMORY = 100_000
#: A worker's pidbox queue outlives its connection by this long, and holds a request this
#: long, in milliseconds (Celery's ``control_queue_expires`` 10 s, ``control_queue_ttl``
#: 300 s).
PIDBOX_QUEUE_EXPIRES_MS = 10_000
PIDBOX_MESSAGE_TTL_MS = 300_000

_OPTIONS = ("connect_timeout", "rpc_timeout", "heartbeat", "confirm_publish", "confirm_timeout",
            "lease_seconds", "queue_max_priority", "frame_max", "driver", "queue_type",
            *_amqp_tls.OPTIONS)
#: ``queue_type`` values: RabbitMQ's classic queues, or replicated quorum queues
QUEUE_TYPES = ("classic", "quorum")
_DRIVERS = {"rabbitmq-c": "rabbitmq-c", "c": "rabbitmq-c", "py-amqp": "py-amqp", "py": "py-amqp"}


_noted_visibility_timeout = False


def _note_visibility_timeout() -> None:
    """Celery configs often set Redis's/SQS's ``visibility_timeout`` for every broker; on
    RabbitMQ it means nothing (Celery ignores it there too): dropped with one note."""
    global _noted_visibility_timeout
    if not _noted_visibility_timeout:
        _noted_visibility_timeout = True
        logger.info("broker_transport_options visibility_timeout is ignored on RabbitMQ: "
                    "a worker's unacknowledged messages return when its connection closes")


def load_driver(scheme: str = "amqp", prefer: str | None = None) -> tuple[type, str]:
    """The driver class and its name: rabbitmq-c when built and allowed, else py-amqp.

    ``pyamqp://`` and ``FASTQ_NO_SPEEDUPS=1`` force py-amqp; ``prefer`` ("rabbitmq-c" or
    "py-amqp") asks for one explicitly (an error when rabbitmq-c is asked for and
    missing). ``FASTQ_REQUIRE_SPEEDUPS=1`` makes a missing rabbitmq-c binding an error
    (see ``fastq._speedups``).
    """
    want = _DRIVERS.get(prefer or "", None)
    if prefer and want is None:
        raise ConfigurationError(f"unknown AMQP driver {prefer!r} (known: rabbitmq-c, py-amqp)")
    if want is None:
        want = "py-amqp" if scheme == "pyamqp" else "rabbitmq-c?"
    if want.startswith("rabbitmq-c"):
        compiled = _speedups.load("_amqp", asked=want == "rabbitmq-c")
        if compiled is not None:
            return compiled.Connection, "rabbitmq-c"
        why = _speedups.status("_amqp").reason
        needed_by = f"{scheme}:// while the rabbitmq-c driver is {why}"
    else:
        needed_by = "pyamqp://" if scheme == "pyamqp" else "driver=py-amqp"
    _extras.require("amqp", needed_by)
    from ._amqp_py import Connection as PyConnection

    return PyConnection, "py-amqp"


def decisions_for(driver_name: str) -> Any:
    """The module of ack and prefetch decisions a broker on this driver uses: beside the
    rabbitmq-c driver, the compiled build of ``_amqp_decisions`` (the driver is built
    with it), whose calls make no Python frame on every fetch and ack; else the source."""
    if driver_name == "rabbitmq-c":
        return importlib.import_module("fastq._speedups._amqp_decisions")
    return _amqp_decisions


#: the delivery tag of a driver's delivery tuple
_TAG_OF = operator.itemgetter(0)


def open_connection(driver_cls: type, params: dict) -> Any:
    """A connection of ``driver_cls`` made with ``params`` and opened; closed again when
    opening fails, so a half-open socket is not left behind."""
    conn = driver_cls(**params)
    try:
        conn.connect()
    except BaseException:
        conn.close()
        raise
    return conn


def parse_url(url: str) -> tuple[dict, dict]:
    """Connection parameters and query-string options from an AMQP URL.

    ``amqp://user:pass@host:port/vhost``: user and password default to guest, host to
    localhost, port to 5672 (5671 for ``amqps://``, which turns TLS on); the vhost is
    URL-decoded and an empty path means ``/`` (so ``amqp://host//`` is ``/`` too).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    tls = scheme == "amqps"
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    params = {
        "host": parts.hostname or "localhost",
        "port": parts.port or (5671 if tls else 5672),
        "vhost": unquote(path) or "/",
        "user": unquote(parts.username) if parts.username else "guest",
        "password": unquote(parts.password) if parts.password is not None else "guest",
    }
    if tls:
        params["ssl"] = True
    return params, dict(parse_qsl(parts.query))


def connection_params(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """``parse_url``'s parameters with TLS settled from the URL and ``options``.

    ``options`` (``ssl`` is Celery's ``broker_use_ssl``) win over the URL's query.
    ``ssl`` becomes None or the normalised TLS dict both drivers take; TLS turned on
    by an option rather than ``amqps://`` defaults to port 5671.
    """
    params, query = parse_url(url)
    tls = _amqp_tls.tls_options(bool(params.pop("ssl", False)), {**query, **options})
    if tls is not None and urlsplit(url).port is None:
        params["port"] = 5671
    params["ssl"] = tls
    return params


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


class AMQPBroker(Broker):
    """RabbitMQ through the rabbitmq-c binding, or py-amqp (``driver_name`` says which).

    Options (broker_transport_options or URL query): ``connect_timeout`` (seconds, for
    the TCP connect and handshake), ``rpc_timeout`` (seconds a synchronous method such as
    a queue declare waits for its reply before the connection counts as lost; default
    30, 0 = for ever), ``heartbeat`` (seconds, 0 = off),
    ``confirm_publish`` (wait for publisher confirms per batch; default True),
    ``confirm_timeout`` (seconds), ``ssl`` (Celery's ``broker_use_ssl``: True or a dict
    of ``ca_certs``, ``certfile``, ``keyfile``, ``cert_reqs``, ``server_hostname``) and
    ``ssl_cafile``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_verify``,
    ``ssl_server_hostname`` (any of them turns TLS on, as ``amqps://`` does),
    ``queue_type`` ("classic" or "quorum": the type of the
    queues this broker creates), ``queue_max_priority`` (``x-max-priority`` for the
    queues this broker creates: the ``priority`` capability needs it, and Celery peers
    must set the same ``task_queue_max_priority``), ``driver`` ("rabbitmq-c" or
    "py-amqp"), ``lease_seconds`` (ignored: RabbitMQ returns the messages of a dead
    connection itself).

    There is no ``delay`` capability at publish time: a message with an ETA goes to its
    queue at once, as Celery sends it, so Celery workers and fastq workers read the same
    queues. A fastq consumer that finds it early ``defer()``s it into delay queues (fixed
    TTL, dead-lettered back to the queue), neither holding it in memory nor circulating it.
    """

    capabilities = frozenset({"priority", "dead_letter", "ack_multiple", "control",
                              "exchanges", "events"})

    #: The driver ``amqp://`` selects in this process (an instance may differ).
    driver_name = "py-amqp"

    def __init__(self, url: str, *, max_redeliveries: int = DEFAULT_MAX_REDELIVERIES,
                 **options: Any) -> None:
        super().__init__(url, max_redeliveries=max_redeliveries, **options)
        merged = {**parse_url(url)[1], **self.options}
        if merged.pop("visibility_timeout", None) is not None:
            _note_visibility_timeout()
        unknown = set(merged) - set(_OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) for the AMQP broker: {', '.join(sorted(unknown))} "
                f"(known: {', '.join(_OPTIONS)})")
        scheme = url.split("://", 1)[0].lower()
        self._driver_cls, self.driver_name = load_driver(scheme, merged.get("driver"))
        self.connect_timeout = float(merged.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
        self.rpc_timeout = float(merged.get("rpc_timeout", DEFAULT_RPC_TIMEOUT))
        self.heartbeat = int(float(merged.get("heartbeat", 0)))
        self.confirm_publish = _as_bool(merged.get("confirm_publish", True))
        self.confirm_timeout = float(merged.get("confirm_timeout", DEFAULT_CONFIRM_TIMEOUT))
        priority = merged.get("queue_max_priority")
        self.queue_max_priority = int(priority) if priority not in (None, "", 0, "0") else None
        self.queue_type = str(merged.get("queue_type") or "classic").lower()
        if self.queue_type not in QUEUE_TYPES:
            raise ConfigurationError(f"queue_type must be one of {', '.join(QUEUE_TYPES)}, "
                                     f"not {self.queue_type!r}")
        if self.queue_type == "quorum" and self.queue_max_priority:
            raise ConfigurationError("quorum queues have no priorities: drop queue_max_priority "
                                     "or use queue_type=classic")
        params = connection_params(url, merged)
        params["ssl"] = _amqp_tls.for_driver(params["ssl"], self.driver_name, params["host"])
        self._params = {**params, "heartbeat": self.heartbeat,
                        "connect_timeout": self.connect_timeout, "rpc_timeout": self.rpc_timeout}
        if "frame_max" in merged:
            self._params["frame_max"] = int(merged["frame_max"])
        self.state = "disconnected"
        self._pid = getpid()
        self._producer: Any = None
        self._producer_confirming = False
        self._producer_lock = threading.RLock()
        self._consumer: Any = None
        self._consumer_confirming = False
        self._gen = 0
        decisions = decisions_for(self.driver_name)
        self._acks = decisions.AckTracker()
        self._plan_prefetch = decisions.plan_prefetch
        #: AMQP tag -> (queue, properties, headers, body, redeliveries) of held deliveries
        self._held: dict[int, tuple[str, dict, dict, bytes, int]] = {}
        self._consumers: dict[str, str] = {}
        #: the queues ``fetch`` was last asked for, while their consumers run
        self._consuming: list[str] | None = None
        self._queue_of_tag: dict[str, str] = {}
        self._qos = 0
        #: highest delivery tag seen on the channel, and its value when the consumers
        #: last (re)started: deliveries above it count against their prefetch
        self._last_tag = 0
        self._subscribed_after = 0
        self._declared: set[str] = set()
        #: queues of task_queues by name: declared with their own exchanges and bindings
        self._topology: dict[str, Queue] = {}
        #: exchanges (name, type) and routed queues declared for publishing
        self._routes_declared: set[tuple] = set()
        #: dead-letter and delay queues declared here
        self._side_declared: set[str] = set()
        self._released: OrderedDict[tuple, None] = OrderedDict()

    def __repr__(self) -> str:
        p = self._params
        return (f"<AMQPBroker {p['user']}@{p['host']}:{p['port']}{p['vhost']} "
                f"driver={self.driver_name} state={self.state}>")

    @property
    def declared_queues(self) -> set[str]:
        """Queues this broker declared (and the dead-letter queues it used)."""
        return self._declared | self._side_declared

    # -- connections -------------------------------------------------------------------
    def _check_pid(self) -> None:
        if self._pid != getpid():
            # After fork the parent's sockets are shared with us: closing them politely
            # would close the parent's connections, so just let go of them.
            self._pid = getpid()
            self._producer = self._consumer = None
            self._producer_confirming = False
            self._forget_channel()
            self.state = "disconnected"
            self._producer_lock = threading.RLock()

    def _new_connection(self) -> Any:
        return open_connection(self._driver_cls, self._params)

    def _producer_conn(self) -> Any:
        """The producer connection, opened (and put in confirm mode) when needed."""
        self._check_pid()
        conn = self._producer
        if conn is None or not conn.is_open:
            if conn is not None:
                conn.close()
            self._producer = None
            conn = self._new_connection()
            self._producer = conn
            self._producer_confirming = False
        if self.confirm_publish and not self._producer_confirming:
            conn.confirm_select()
            self._producer_confirming = True
        return conn

    def _on_producer_error(self, exc: BrokerError) -> None:
        if isinstance(exc, AMQPError):
            # the driver reopens the channel, without confirm mode
            self._producer_confirming = False
        else:
            self._drop_producer()

    def _drop_producer(self) -> None:
        conn, self._producer = self._producer, None
        self._producer_confirming = False
        if conn is not None:
            conn.close()

    def connect(self) -> None:
        with self._producer_lock:
            self._producer_conn()

    def close(self) -> None:
        if self._pid != getpid():
            return
        self._close_consumer()
        with self._producer_lock:
            self._drop_producer()
        self.state = "disconnected"

    def _forget_channel(self) -> None:
        """Everything tied to the consumer channel, which has gone."""
        # an auto-delete queue (a Broadcast's) went with its consumers: declare it again
        self._declared.difference_update(
            name for name, queue in self._topology.items() if queue.auto_delete)
        self._acks.forget()
        self._held.clear()
        self._consumers.clear()
        self._consuming = None
        self._queue_of_tag.clear()
        self._qos = 0
        self._last_tag = self._subscribed_after = 0

    def _close_consumer(self) -> None:
        conn, self._consumer = self._consumer, None
        if conn is not None:
            conn.close()
        self._forget_channel()

    def _open_consumer(self) -> bool:
        """One connect attempt for the consumer connection; False (with backoff) on failure."""
        self.state = "connecting" if self.state == "disconnected" else "reconnecting"
        try:
            conn = self._new_connection()
        except BrokerError as exc:
            self.state = "reconnecting"
            delay = self._reconnect_failed(exc)
            logger.warning("cannot connect to RabbitMQ at %s:%s (%s); retrying in %.1fs",
                           self._params["host"], self._params["port"], exc, delay)
            return False
        if self._gen:
            logger.info("reconnected to RabbitMQ at %s:%s; consuming again",
                        self._params["host"], self._params["port"])
        self._consumer = conn
        # no confirm mode until a republish needs it (_confirming_consumer): in it, every
        # rpc:// result the worker sends with its acks would be confirmed, a frame more
        # for RabbitMQ to send and the worker to read per task, for nothing it waits on
        self._consumer_confirming = False
        self._gen += 1
        self._forget_channel()
        self.reconnect_backoff.succeeded()
        self.state = "consuming"
        return True

    def _lost(self, exc: BaseException) -> None:
        """The consumer connection failed: drop it and what it held, reconnect later."""
        held = len(self._acks)
        logger.warning("lost the consumer connection to RabbitMQ (%s); reconnecting. "
                       "%d unacked delivery(ies) will be redelivered by RabbitMQ", exc, held)
        self._close_consumer()
        self.state = "reconnecting"
        self._reconnect_failed(exc)

    # -- topology ----------------------------------------------------------------------
    def declare(self, queue: str, **arguments: Any) -> None:
        """Declare ``queue`` as Celery does: direct exchange ``queue`` bound with key ``queue``.

        A queue that already exists with other arguments (Celery's
        ``task_queue_max_priority``, a quorum queue) is used as it is.
        """
        if queue in self._topology and not arguments:
            self._declare_entity(self._topology[queue])
            return
        with self._producer_lock:
            conn = self._producer_conn()
            args = dict(arguments)
            if self.queue_max_priority and "x-max-priority" not in args:
                args["x-max-priority"] = self.queue_max_priority
            if self.queue_type == "quorum":
                # RabbitMQ counts deliveries itself there (x-delivery-count): the
                # redelivery limit holds even for messages of connections that died
                args.setdefault("x-queue-type", "quorum")
            try:
                conn.declare_queue(queue, durable=True, auto_delete=False, arguments=args or None)
                conn.declare_exchange(queue, "direct", durable=True, auto_delete=False)
                conn.bind_queue(queue, queue, queue)
            except AMQPError as exc:
                self._on_producer_error(exc)
                if exc.reply_code != 406:
                    raise
                # 406 PRECONDITION_FAILED: declared differently by someone else; make
                # sure it exists and use it as it is rather than fail
                logger.info("queue or exchange %r exists with other arguments (%s); using it "
                            "as declared", queue, exc.reply_text)
                conn = self._producer_conn()
                try:
                    conn.declare_queue(queue, passive=True)
                except AMQPError as again:
                    self._on_producer_error(again)
                    raise
            except BrokerConnectionLost as exc:
                self._on_producer_error(exc)
                raise
            self._declared.add(queue)

    def _declare_entity(self, queue: Queue, bind: bool = True) -> None:
        """Declare a ``task_queues`` queue as kombu does: its exchanges, the queue with
        its arguments, its bindings. An exchange or queue that exists with other
        arguments is used as it is (406), as in ``declare``."""
        args = dict(queue.arguments)
        if self.queue_max_priority and "x-max-priority" not in args:
            args["x-max-priority"] = self.queue_max_priority
        if self.queue_type == "quorum" and not queue.auto_delete:
            args.setdefault("x-queue-type", "quorum")
        with self._producer_lock:
            for exchange, _key in queue.bindings:
                self._declare_exchange(exchange.name, exchange.type, exchange.durable,
                                       exchange.auto_delete)
            conn = self._producer_conn()
            try:
                conn.declare_queue(queue.name, durable=queue.durable, exclusive=queue.exclusive,
                                   auto_delete=queue.auto_delete, arguments=args or None)
            except AMQPError as exc:
                self._on_producer_error(exc)
                if exc.reply_code != 406:
                    raise
                logger.info("queue %r exists with other arguments (%s); using it as declared",
                            queue.name, exc.reply_text)
                conn = self._producer_conn()
                conn.declare_queue(queue.name, passive=True)
            except BrokerConnectionLost as exc:
                self._on_producer_error(exc)
                raise
            if bind:
                for exchange, key in queue.bindings:
                    if exchange.name:
                        self._guarded(lambda c, q=queue.name, e=exchange.name, k=key:
                                      c.bind_queue(q, e, k))
            self._declared.add(queue.name)

    def _declare_exchange(self, name: str, type_: str, durable: bool = True,
                          auto_delete: bool = False) -> None:
        if not name or (name, type_) in self._routes_declared:
            return
        try:
            self._guarded(lambda c: c.declare_exchange(name, type_, durable=durable,
                                                       auto_delete=auto_delete))
        except AMQPError as exc:
            if exc.reply_code != 406:
                raise
            logger.info("exchange %r exists with other arguments (%s); using it as declared",
                        name, exc.reply_text)
        self._routes_declared.add((name, type_))

    def _guarded(self, action: Any) -> None:
        """Run ``action(conn)`` on the producer connection; on an error let it go."""
        with self._producer_lock:
            conn = self._producer_conn()
            try:
                action(conn)
            except BrokerError as exc:
                self._on_producer_error(exc)
                raise

    def prepare_route(self, route: Route, table: QueueTable) -> str:
        """Declare what ``route`` publishes to (its exchange, and its queue with the
        queue's bindings, as Celery's producer does, except a Broadcast's); the queue."""
        queue = route.queue
        if route.exchange:
            self._declare_exchange(route.exchange, route.exchange_type,
                                   *((queue.exchange.durable, queue.exchange.auto_delete)
                                     if queue is not None and queue.exchange is not None
                                     and queue.exchange.name == route.exchange else ()))
        # the queue, or when only an exchange is named the task_queues entries bound to
        # it, so that the first messages are not dropped for want of a binding; never an
        # auto-delete queue (a Broadcast's): it belongs to its consumer, and declared here
        # it would fill up with no consumer
        targets = [queue] if queue is not None else table.bound_to_exchange(route.exchange)
        for target in targets:
            if not target.auto_delete:
                self._topology.setdefault(target.name, target)
                if route.exchange and target.name not in self._declared:
                    self._declare_entity(target)
        return route.queue_name

    def prepare_consume(self, queues: Sequence[Queue]) -> list[str]:
        """Note how to declare the queues a worker consumes (with their exchanges and
        bindings): ``fetch`` declares them when it subscribes, and again after a
        reconnect, so a broker down at start is waited for as usual."""
        for queue in queues:
            self._topology[queue.name] = queue
            self._declared.discard(queue.name)
        return [queue.name for queue in queues]

    def declare_consumed(self, queues: Sequence[str]) -> None:
        """Declare the worker's queues now rather than at its first fetch: a Broadcast's
        auto-delete queue exists only once declared, and a message broadcast after the
        worker reported itself consuming must reach it. RabbitMQ down: ``fetch`` waits."""
        try:
            for name in queues:
                if name not in self._declared:
                    self.declare(name)
        except BrokerError as exc:
            logger.info("cannot declare the queues yet (%s); they are declared once "
                        "RabbitMQ answers", exc)

    def _declare_dead(self, queue: str) -> str:
        dead = queue + DEAD_SUFFIX
        if dead not in self._side_declared:
            with self._producer_lock:
                conn = self._producer_conn()
                try:
                    conn.declare_queue(dead, durable=True, auto_delete=False)
                except BrokerError as exc:
                    self._on_producer_error(exc)
                    raise
            self._side_declared.add(dead)
        return dead

    # -- producing ---------------------------------------------------------------------
    def _publish(self, messages: Sequence[Any]) -> None:
        for message in messages:
            if message.queue not in self._declared and message.exchange in ("", message.queue):
                self.declare(message.queue)
        with self._producer_lock:
            try:
                conn = self._producer_conn()
                conn.publish_batch([
                    (m.exchange or "", m.routing_key if m.routing_key is not None else m.queue,
                     m.body, m.properties, m.headers) for m in messages])
                if self.confirm_publish:
                    conn.wait_for_confirms(self.confirm_timeout)
            except BrokerError as exc:
                self._on_producer_error(exc)
                raise

    # -- consuming ---------------------------------------------------------------------
    def _subscribe(self, queues: Sequence[str]) -> None:
        consumers = self._consumers
        if len(consumers) == len(queues) and all(queue in consumers for queue in queues):
            # consuming what is asked; fetch skips this call while asked the same again
            self._consuming = list(queues)
            return
        self._consuming = None
        conn = self._consumer
        wanted = dict.fromkeys(queues)
        for queue in list(self._consumers):
            if queue not in wanted:
                tag = self._consumers.pop(queue)
                conn.cancel(tag)
        for queue in wanted:
            if queue not in self._consumers:
                if queue not in self._declared:
                    self.declare(queue)
                tag = conn.consume(queue)
                self._consumers[queue] = tag
                self._queue_of_tag[tag] = queue

    @property
    def ack_window(self) -> int | None:  # type: ignore[override]
        return self._qos or None

    def _resubscribe(self, prefetch: int) -> None:
        """Restart the consumers with a new prefetch (qos applies to new consumers only).

        Deliveries still held from the old consumers stay valid on the channel.
        """
        conn = self._consumer
        self._consuming = None
        for queue in list(self._consumers):
            conn.cancel(self._consumers.pop(queue))
        # a consumer started without a prefetch would be sent the whole queue
        conn.qos(prefetch)
        self._qos = prefetch
        self._subscribed_after = self._last_tag

    def _wait_for_reconnect(self, timeout: float) -> bool:
        """Try to (re)connect within ``timeout``, honouring the backoff; True when connected."""
        deadline = time.monotonic() + max(0.0, timeout)
        backoff = self.reconnect_backoff
        while True:
            now = time.monotonic()
            if backoff.due(now) and self._open_consumer():
                return True
            wake = min(deadline, backoff.next_attempt)
            now = time.monotonic()
            if now >= deadline:
                return False
            time.sleep(max(0.0, wake - now))

    def blocking_fd(self) -> int | None:
        if self.driver_name != "rabbitmq-c" or self._consumer is None:
            return None  # py-amqp's socket is patched; a reconnect waits in time.sleep
        try:
            return self._consumer.fileno()
        except BrokerError:
            return None

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        if not queues:
            raise ConfigurationError("fetch needs at least one queue")
        self._check_pid()
        if self._consumer is None and not self._wait_for_reconnect(timeout):
            return []
        try:
            acks = self._acks
            # fewer held in all than the prefetch: fewer held since subscribing too, and
            # the count (a walk over every held tag) is not needed
            held = acks.count_above(self._subscribed_after) if len(acks) >= self._qos else 0
            window = self._plan_prefetch(held, limit, self._qos)
            if window is not None:
                self._resubscribe(window)
            if queues != self._consuming:
                self._subscribe(queues)
            deadline = time.monotonic() + timeout
            while True:
                raw = self._consumer.drain(limit, timeout)
                deliveries = self._accept(raw, queues) if raw else []
                timeout = deadline - time.monotonic()
                # all of them were counted and republished: their copies are on the way
                if deliveries or not raw or timeout <= 0:
                    return deliveries
        except BrokerError as exc:
            # channel errors end the consumers too: start over on a fresh connection
            self._lost(exc)
            return []

    def _accept(self, raw: list[tuple], queues: Sequence[str]) -> list[Delivery]:
        """Deliveries from driver tuples; returned (redelivered) ones are counted first."""
        base = self._gen << GEN_SHIFT
        held = self._held
        self._acks.delivered(map(_TAG_OF, raw))
        self._last_tag = max(self._last_tag, raw[-1][0])
        deliveries: list[Delivery] = []
        recount: list[tuple[int, tuple]] = []
        strays: list[int] = []
        for tag, redelivered, _exchange, routing_key, consumer_tag, props, headers, body in raw:
            queue = self._queue_of_tag.get(consumer_tag, routing_key)
            count = headers.pop(REDELIVERIES_HEADER, 0)
            count = count if type(count) is int else _to_int(count)
            quorum = headers.get(QUORUM_COUNT_HEADER)
            if quorum is not None:
                count = max(count, _to_int(quorum))
            elif redelivered:
                key = _fingerprint(queue, headers, count)
                if key in self._released:
                    del self._released[key]  # released by us: not a failed delivery
                else:
                    recount.append((tag, (queue, props, headers, body, count + 1)))
                    continue
            if queue not in queues:
                # from a consumer cancelled since (fetch asked for other queues)
                held[tag] = (queue, props, headers, body, count)
                strays.append(tag)
                continue
            held[tag] = (queue, props, headers, body, count)
            deliveries.append(Delivery(base | tag, headers, props, body, queue, count))
        if recount:
            self._requeue_counted(recount)
        if strays:
            self.release_many(base | tag for tag in strays)
        return deliveries

    def _requeue_counted(self, items: list[tuple[int, tuple]]) -> None:
        """Republish copies carrying their new redelivery count, then ack the originals."""
        conn = self._confirming_consumer()
        for _tag, (queue, props, headers, body, count) in items:
            conn.publish("", queue, body, props, {**headers, REDELIVERIES_HEADER: count})
        conn.wait_for_confirms(self.confirm_timeout)
        self._send_acks([tag for tag, _ in items])

    def _confirming_consumer(self) -> Any:
        """The consumer connection in confirm mode: a republish on it is waited for
        before the original is acked (put in that mode at the first such republish)."""
        conn = self._consumer
        if not self._consumer_confirming:
            conn.confirm_select()
            self._consumer_confirming = True
        return conn

    def _send_acks(self, tags: list[int]) -> None:
        upto, singles = self._acks.settle(tags)
        conn = self._consumer
        if upto is not None:
            conn.ack(upto, True)
        for tag in singles:
            conn.ack(tag, False)

    def _current(self, tags: Iterable[Any], settle: bool = False) -> list[int]:
        """The AMQP tags among ``tags`` that belong to the live channel; with ``settle``,
        no longer held (in the same loop: that runs for every task acked)."""
        gen = self._gen
        if self._consumer is None:
            return []
        held = self._held
        current = []
        for tag in tags:
            if tag >> GEN_SHIFT == gen:
                tag &= TAG_MASK
                if settle:
                    held.pop(tag, None)
                current.append(tag)
        return current

    def ack_many(self, tags: Iterable[Any]) -> None:
        current = self._current(tags, settle=True)
        if not current:
            return
        try:
            self._send_acks(current)
        except BrokerError as exc:
            self._lost(exc)  # they will be redelivered: at least once, never lost

    def ack_many_with_replies(self, tags: Iterable[Any], replies: list[tuple]) -> bool:
        """``ack_many(tags)``, with ``replies`` published first on the consumer's channel,
        in the same write: a worker's rpc:// results, ``(reply_to, body, properties)``
        each, to the default exchange. Ahead of the acks on the wire, so a task is never
        acked before its result is out. False when they may not have gone out (no
        connection, or it failed on the way): the tasks will be redelivered, and the
        caller sends the results another way meanwhile."""
        conn = self._consumer
        if conn is None:
            return False
        current = self._current(tags, settle=True)
        upto, singles = self._acks.settle(current) if current else (None, ())
        try:
            conn.publish_and_ack([("", reply_to, body, properties, None)
                                  for reply_to, body, properties in replies], upto, singles)
        except BrokerError as exc:
            self._lost(exc)
            return False
        except (TypeError, ValueError) as exc:
            logger.error("a result could not be sent to its caller (the other results "
                         "and the acks were): %s", exc)
        return True

    def release_many(self, tags: Iterable[Any]) -> None:
        current = self._current(tags)
        if not current:
            return
        for tag in current:
            entry = self._held.pop(tag, None)
            if entry is not None:
                queue, _props, headers, _body, count = entry
                self._remember_released(_fingerprint(queue, headers, count))
        upto, singles = self._acks.settle(current)
        try:
            if upto is not None:
                self._consumer.nack(upto, True, True)
            for tag in singles:
                self._consumer.nack(tag, False, True)
        except BrokerError as exc:
            self._lost(exc)

    def _remember_released(self, key: tuple) -> None:
        released = self._released
        released[key] = None
        while len(released) > RELEASED_MEMORY:
            released.popitem(last=False)

    def _take(self, tag: Any) -> tuple[int, tuple] | None:
        current = self._current((tag,))
        if not current or current[0] not in self._acks:
            return None
        entry = self._held.pop(current[0], None)
        return None if entry is None else (current[0], entry)

    def _republish_and_ack(self, tag: int, queue: str, props: dict, headers: dict,
                           body: bytes) -> None:
        try:
            conn = self._confirming_consumer()
            conn.publish("", queue, body, props, headers)
            conn.wait_for_confirms(self.confirm_timeout)
            self._send_acks([tag])
        except BrokerError as exc:
            self._lost(exc)

    def reject(self, tag: Any, requeue: bool) -> None:
        if not requeue:
            self.dead_letter(tag, "rejected")
            return
        taken = self._take(tag)
        if taken is None:
            return
        amqp_tag, (queue, props, headers, body, count) = taken
        self._republish_and_ack(amqp_tag, queue, props,
                                {**headers, REDELIVERIES_HEADER: count + 1}, body)

    def defer(self, delivery: Delivery, not_before: float) -> None:
        """Move ``delivery`` to the largest delay queue that does not overshoot
        ``not_before``, and ack it; RabbitMQ brings it back when that queue's TTL ends.

        Not counted as a redelivery. The consumer defers it again while it is early.
        """
        taken = self._take(delivery.tag)
        if taken is None:
            return
        amqp_tag, (queue, props, headers, body, count) = taken
        target = queue
        wait_ms = int((not_before - time.time()) * 1000)
        if wait_ms >= 1:
            try:
                target = self._declare_delay(queue, min(wait_ms.bit_length() - 1,
                                                        MAX_DELAY_LEVEL))
            except BrokerError:
                target = queue  # no delay queue to be had: back to the tail, as before
        self._republish_and_ack(amqp_tag, target, props,
                                {**headers, REDELIVERIES_HEADER: count}, body)

    def _declare_delay(self, queue: str, level: int) -> str:
        ttl = 1 << level
        name = f"{queue}{DELAY_INFIX}{ttl}ms"
        if name not in self._side_declared:
            with self._producer_lock:
                conn = self._producer_conn()
                try:
                    conn.declare_queue(name, durable=True, auto_delete=False, arguments={
                        "x-message-ttl": ttl, "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": queue})
                except BrokerError as exc:
                    self._on_producer_error(exc)
                    raise
            self._side_declared.add(name)
        return name

    def dead_letter(self, tag: Any, reason: str) -> None:
        taken = self._take(tag)
        if taken is None:
            logger.warning("cannot dead-letter %r: its channel is gone; RabbitMQ will "
                           "redeliver it", tag)
            return
        amqp_tag, (queue, props, headers, body, count) = taken
        try:
            dead = self._declare_dead(queue)
        except BrokerError as exc:
            self._lost(exc)
            return
        # no per-message TTL on a dead letter: it stays until someone looks at it
        props = {k: v for k, v in props.items() if k != "expiration"}
        self._republish_and_ack(amqp_tag, dead, props, {
            **headers, REDELIVERIES_HEADER: count, DEAD_REASON_HEADER: reason,
            DEAD_AT_HEADER: time.time(), SOURCE_QUEUE_HEADER: queue}, body)

    # -- administration ----------------------------------------------------------------
    def _admin(self, fn: Any, *args: Any, missing: Any = None) -> Any:
        """Run ``fn(conn, *args)`` on the producer connection; ``missing`` on a 404."""
        with self._producer_lock:
            conn = self._producer_conn()
            try:
                return fn(conn, *args)
            except AMQPError as exc:
                self._on_producer_error(exc)
                if exc.reply_code == 404:
                    return missing
                raise
            except BrokerError as exc:
                self._on_producer_error(exc)
                raise

    def purge(self, queue: str) -> int:
        return self._admin(lambda conn: conn.purge_queue(queue), missing=0)

    def queue_sizes(self) -> dict[str, int]:
        sizes = {}
        for queue in sorted(self._declared):
            found = self._admin(lambda conn, q: conn.declare_queue(q, passive=True), queue)
            if found is not None:
                sizes[queue] = found[1]
        return sizes

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[dict]:
        """Peek at dead letters (newest first) without removing them.

        Reads the dead-letter queue(s) with basic.get and requeues what it read, so the
        letters stay in their order; with ``queue=None``, those of the queues this
        broker declared.
        """
        sources = [queue] if queue is not None else sorted(self._declared)
        letters: list[tuple[float, int, dict]] = []
        for source in sources:
            # a queue holds its letters oldest first: the position breaks time ties
            found = self._admin(self._peek, source + DEAD_SUFFIX, missing=[])
            letters.extend((letter["dead_lettered_at"], index, letter)
                           for index, letter in enumerate(found))
        letters.sort(key=lambda entry: entry[:2], reverse=True)
        return [letter for _at, _index, letter in letters[:limit]]

    def _peek(self, conn: Any, dead: str) -> list[dict]:
        letters = []
        last = None
        try:
            while len(letters) < DEAD_LETTER_PEEK_MAX:
                item = conn.get(dead)
                if item is None:
                    break
                last = item[0]
                headers = dict(item[6])
                letters.append({
                    "queue": headers.pop(SOURCE_QUEUE_HEADER, dead[:-len(DEAD_SUFFIX)]),
                    "reason": headers.pop(DEAD_REASON_HEADER, ""),
                    "deliveries": _to_int(headers.pop(REDELIVERIES_HEADER, 0)) + 1,
                    "dead_lettered_at": float(headers.pop(DEAD_AT_HEADER, 0.0) or 0.0),
                    "headers": headers, "properties": item[5], "body": item[7]})
        finally:
            if last is not None:
                conn.nack(last, True, True)  # back where they were, in order
        return letters

    def retry_dead_letter(self, queue: str, task_id: str) -> bool:
        """Publish task ``task_id``'s letter from ``<queue>.dead`` to ``queue`` again and
        remove it.

        Reads ``<queue>.dead`` with basic.get until the letter turns up; the copy loses the
        dead-letter headers and the delivery count, and the letter is acked only once the
        copy is confirmed (a failure in between leaves both: a retry is at least once).
        The letters read before it go back in order. One that another client holds at
        that moment (a peek, a retry from elsewhere) is not found, so two retries of
        the same letter publish it once.
        """
        if queue not in self._declared:
            self.declare(queue)
        return self._admin(self._move_dead_letter, queue, task_id, missing=False)

    def _move_dead_letter(self, conn: Any, queue: str, task_id: str) -> bool:
        passed = None  # the tag of the last letter read that is not the one sought
        try:
            for _ in range(DEAD_LETTER_PEEK_MAX):
                item = conn.get(queue + DEAD_SUFFIX)
                if item is None:
                    return False
                headers = dict(item[6])
                if headers.get("id") != task_id:
                    passed = item[0]
                    continue
                for name in (DEAD_REASON_HEADER, DEAD_AT_HEADER, SOURCE_QUEUE_HEADER,
                             REDELIVERIES_HEADER):
                    headers.pop(name, None)
                conn.publish("", queue, item[7], item[5], headers)
                if self.confirm_publish:
                    conn.wait_for_confirms(self.confirm_timeout)
                conn.ack(item[0])
                return True
            return False
        finally:
            if passed is not None:
                conn.nack(passed, True, True)  # back where they were, in order

    # -- events ----------------------------------------------------------------------
    def event_channel(self, hostname: str) -> AMQPEventChannel:
        return AMQPEventChannel(self, hostname)

    def event_receiver(self) -> AMQPEventReceiver:
        return AMQPEventReceiver(self)

    # -- remote control ----------------------------------------------------------------
    def mailbox(self, expires: float) -> AMQPMailbox:
        return AMQPMailbox(self, expires)


class AMQPMailbox(Mailbox):
    """Celery's pidbox (``celery-protocol.md`` §6.1-6.3), on a connection of its own.

    Requests go to the ``celery.pidbox`` fanout exchange; each worker consumes (no ack)
    its own auto-delete queue ``<node>.celery.pidbox``, so Celery's ``control.revoke``
    reaches fastq workers and the other way round. A worker started after a request
    does not see it: the queue lives only while its worker does.
    """

    broker: AMQPBroker

    def __init__(self, broker: AMQPBroker, expires: float) -> None:
        super().__init__(broker, expires)
        self._conn: Any = None
        self._queue = ""

    def _connection(self) -> Any:
        if self._conn is None or not self._conn.is_open:
            if self._conn is not None:
                self._conn.close()
            self._conn = self.broker._new_connection()
            self._conn.declare_exchange(PIDBOX_EXCHANGE, "fanout", durable=False)
        return self._conn

    def send(self, command: dict) -> None:
        self._connection().publish(
            PIDBOX_EXCHANGE, "", serialization.json_dumps(command),
            {"content_type": "application/json", "content_encoding": "utf-8",
             "delivery_mode": 2}, pidbox_headers())

    def open(self, node: str) -> list[tuple[dict, float]]:
        conn = self._connection()
        self._queue = f"{node}.{PIDBOX_EXCHANGE}"
        conn.declare_queue(self._queue, durable=False, exclusive=True, auto_delete=True,
                           arguments={"x-expires": PIDBOX_QUEUE_EXPIRES_MS,
                                      "x-message-ttl": PIDBOX_MESSAGE_TTL_MS})
        conn.bind_queue(self._queue, PIDBOX_EXCHANGE, "")
        conn.consume(self._queue, no_ack=True)
        return []

    def receive(self, timeout: float) -> list[dict]:
        conn = self._connection()
        if _green.patched and type(conn).__module__ == "fastq._speedups._amqp":
            # this "thread" is a greenlet: waiting inside rabbitmq-c would stall the hub
            deliveries = conn.drain(100, 0.0)
            if not deliveries:
                _green.wait_readable(conn.fileno(), timeout)
                deliveries = conn.drain(100, 0.0)
        else:
            deliveries = conn.drain(100, timeout)
        commands = []
        for delivery in deliveries:
            properties, body = delivery[5], delivery[7]
            command = decode_command(body, properties.get("content_type"))
            if command is not None:
                commands.append(command)
        return commands

    def call(self, command: dict, timeout: float, limit: int | None = None) -> list[dict]:
        # the caller's reply queue, as Celery declares it (§6.1)
        conn = self._connection()
        oid = str(uuid.uuid4())
        queue = f"{oid}.{REPLY_EXCHANGE}"
        conn.declare_exchange(REPLY_EXCHANGE, "direct", durable=False)
        conn.declare_queue(queue, durable=False, exclusive=True, auto_delete=True,
                           arguments={"x-expires": PIDBOX_QUEUE_EXPIRES_MS,
                                      "x-message-ttl": PIDBOX_MESSAGE_TTL_MS})
        conn.bind_queue(queue, REPLY_EXCHANGE, oid)
        conn.consume(queue, no_ack=True)
        request = request_with_reply(command, oid)
        self.send(request)
        replies: list[dict] = []
        deadline = time.monotonic() + timeout
        while limit is None or len(replies) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for delivery in conn.drain(100, remaining):
                answer = reply_body(delivery[7], delivery[6], request["ticket"])
                if answer is not None:
                    replies.append(answer)
        return replies

    def reply(self, command: dict, body: dict) -> None:
        reply_to = command["reply_to"]
        exchange = reply_to.get("exchange") or REPLY_EXCHANGE
        conn = self._connection()
        conn.declare_exchange(exchange, "direct", durable=False)
        conn.publish(exchange, reply_to["routing_key"], serialization.json_dumps(body),
                     {"content_type": "application/json", "content_encoding": "utf-8",
                      "delivery_mode": 1},
                     {"ticket": command["ticket"], "clock": 1})

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _to_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _fingerprint(queue: str, headers: dict, count: int) -> tuple:
    return (queue, headers.get("id"), count, headers.get("retries"))


try:
    AMQPBroker.driver_name = load_driver("amqp")[1]
except ImproperlyInstalled:
    if not _speedups.required():
        raise  # neither driver: importing this module says which extra to install
    # rabbitmq-c is required and missing: creating a broker reports it
    AMQPBroker.driver_name = "rabbitmq-c"
