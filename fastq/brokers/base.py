"""The Broker interface: what a transport must do for producers and the consumer loop,
and the policy every transport shares (retrying a publish, backing off a reconnect)."""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .._registry import mask_url
from ..exceptions import BrokerConnectionLost, BrokerError, ConfigurationError, PublishTimeout

if TYPE_CHECKING:
    from ..protocol import Message
    from ..routing import Queue, QueueTable, Route
    from ._events import EventChannel
    from ._mailbox import Mailbox

#: Deliveries a broker keeps unacked past this many redeliveries go to the dead letters.
logger = logging.getLogger(__name__)

DEFAULT_MAX_REDELIVERIES = 5
#: Seconds ``publish_many`` keeps trying an unreachable broker (the App passes its
#: ``broker_connection_timeout``).
DEFAULT_PUBLISH_TIMEOUT = 4.0
#: First and longest pause between two attempts of one publish, in seconds.
PUBLISH_RETRY_DELAYS = (0.05, 0.5)
#: The keys of Celery's ``retry_policy`` (``task_publish_retry_policy``).
_RETRY_POLICY_KEYS = frozenset({"max_retries", "interval_start", "interval_step",
                                "interval_max", "timeout"})


class Backoff:
    """Pauses between attempts at something that keeps failing: ``initial`` seconds,
    doubling up to ``maximum``, back to ``initial`` after a success.

    ``failures`` counts the failures since the last success, ``recoveries`` the successes
    that ended a run of failures (a worker's reconnects, for its metrics). No clock of its
    own: the caller passes monotonic time, so it is tested with plain numbers.
    """

    __slots__ = ("initial", "maximum", "step", "delay", "next_attempt", "failures",
                 "recoveries")

    def __init__(self, initial: float = 0.1, maximum: float = 2.0,
                 step: float | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        #: added to the pause after each failure; None doubles it instead
        self.step = step
        self.delay = initial
        self.next_attempt = 0.0
        self.failures = 0
        self.recoveries = 0

    def due(self, now: float) -> bool:
        """Whether an attempt may be made at monotonic time ``now``."""
        return now >= self.next_attempt

    def failed(self, now: float) -> float:
        """Record a failed attempt at ``now``; the delay until the next one."""
        delay = self.delay
        self.failures += 1
        self.next_attempt = now + delay
        grown = delay * 2 if self.step is None else delay + self.step
        self.delay = min(grown, self.maximum)
        return delay

    def succeeded(self) -> None:
        if self.failures:
            self.recoveries += 1
        self.delay = self.initial
        self.next_attempt = 0.0
        self.failures = 0


class PartlyPublished(BrokerConnectionLost):
    """Raised by ``Broker._publish`` when the connection failed after the first
    ``published`` messages certainly reached the broker, so that the retry sends only
    the rest and no copies (as ``BlockingIOError.characters_written`` reports a
    partial write)."""

    def __init__(self, message: str, published: int) -> None:
        super().__init__(message)
        self.published = published


class Delivery:
    """One message as received from a broker, built once and never re-wrapped.

    ``tag`` identifies it for ``ack_many``/``reject``/``dead_letter`` on the broker that
    delivered it. ``headers`` and ``properties`` are dicts (AMQP application headers and
    basic properties, Celery's names); ``body`` is the raw, possibly compressed payload.
    ``redeliveries`` counts earlier deliveries of the same message (0 the first time).
    """

    __slots__ = ("tag", "headers", "properties", "body", "queue", "redeliveries")

    def __init__(self, tag: Any, headers: dict, properties: dict, body: bytes,
                 queue: str = "", redeliveries: int = 0) -> None:
        self.tag = tag
        self.headers = headers
        self.properties = properties
        self.body = body
        self.queue = queue
        self.redeliveries = redeliveries

    def __repr__(self) -> str:
        return (f"<Delivery {self.tag!r} queue={self.queue!r} "
                f"task={self.headers.get('task')!r} id={self.headers.get('id')!r}>")


class Broker(abc.ABC):
    """A message transport.

    Implementations supply the primitives below; policy (the redelivery limit, the
    consume loop) lives here and in the worker. Every method may raise
    ``fastq.exceptions.BrokerError`` subclasses and nothing driver-specific.

    Capabilities a worker may ask about (``"delay"``: holds messages until
    ``Message.not_before`` itself; ``"priority"``; ``"lease"``: claimed messages return
    to the queue when their holder dies; ``"dead_letter"``; ``"control"``: ``mailbox()``
    carries remote control requests, such as revoke, to the workers; ``"events"``:
    ``event_channel()`` publishes Celery's worker events, for Flower).

    Options every broker takes: ``max_redeliveries``; ``publish_timeout`` (seconds
    ``publish_many`` retries an unreachable broker; 0: one attempt, its error as it is);
    ``connection_max_retries`` (reconnect attempts of a consumer before ``fetch`` gives
    up with a ``BrokerError``; None: forever). The App sets the last two from
    ``broker_connection_timeout``, ``broker_connection_max_retries`` and
    ``broker_connection_retry``; the rest of ``options`` is the implementation's.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: First and longest pause between a consumer's reconnect attempts, in seconds.
    reconnect_delays: ClassVar[tuple[float, float]] = (0.1, 2.0)

    def __init__(self, url: str, *, max_redeliveries: int = DEFAULT_MAX_REDELIVERIES,
                 publish_timeout: float = DEFAULT_PUBLISH_TIMEOUT,
                 connection_max_retries: int | None = None, **options: Any) -> None:
        self.url = url
        self.max_redeliveries = max_redeliveries
        self.publish_timeout = float(publish_timeout)
        self.connection_max_retries = (None if connection_max_retries is None
                                       else int(connection_max_retries))
        #: the consumer's reconnect pauses; ``_reconnect_failed`` records into it
        self.reconnect_backoff = Backoff(*self.reconnect_delays)
        self.options = options

    # -- lifecycle -------------------------------------------------------------------
    def connect(self) -> None:
        """Open connections; idempotent. Other methods connect lazily if needed."""

    def close(self) -> None:
        """Release connections and threads; idempotent."""

    def __enter__(self) -> Broker:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- topology --------------------------------------------------------------------
    def declare(self, queue: str, **arguments: Any) -> None:  # noqa: B027 - optional
        """Make sure ``queue`` exists. Brokers without declared queues do nothing."""

    def prepare_route(self, route: Route, table: QueueTable) -> str:
        """The queue a message routed by ``route`` lands in; brokers with exchanges
        (``"exchanges"`` capability) declare what the route needs instead.

        Without exchanges only direct routing maps: the default exchange keyed by a
        queue's name, or a direct exchange whose routing key binds (in ``task_queues``)
        or names the queue.

        Raises:
            ConfigurationError: a topic/fanout/headers exchange, named by ``route.source``.
        """
        if route.exchange_type != "direct":
            raise ConfigurationError(
                f"{type(self).__name__} ({mask_url(self.url)}) has no exchanges: "
                f"{route.exchange_type} exchange {route.exchange!r} (from {route.source}) "
                f"cannot be routed; use RabbitMQ, or route to a queue by name "
                f"(a direct exchange)")
        if not route.exchange:
            return route.routing_key
        bound = table.bound_to(route.exchange, route.routing_key)
        if len(bound) > 1:
            raise ConfigurationError(
                f"{type(self).__name__} has no exchanges: direct exchange {route.exchange!r} "
                f"binds key {route.routing_key!r} to {len(bound)} queues in task_queues "
                f"({', '.join(q.name for q in bound)}), which only RabbitMQ copies to each")
        return bound[0].name if bound else route.queue_name

    def prepare_consume(self, queues: Sequence[Queue]) -> list[str]:
        """Get ``queues`` (``task_queues`` entries) ready to consume; their names.

        Raises:
            ConfigurationError: a queue bound to an exchange this broker cannot honour.
        """
        for queue in queues:
            for exchange, _key in queue.bindings:
                if exchange.type != "direct":
                    raise ConfigurationError(
                        f"{type(self).__name__} ({mask_url(self.url)}) has no exchanges: "
                        f"queue {queue.name!r} of task_queues is bound to "
                        f"{exchange.type} exchange {exchange.name!r}; use RabbitMQ, or a "
                        f"direct exchange")
        return [queue.name for queue in queues]

    def declare_consumed(self, queues: Sequence[str]) -> None:
        """Best effort, before a worker says it consumes: make ``queues`` exist, so that
        what is routed to them from then on is kept. Brokers whose queues exist as soon
        as they are named need nothing; a broker that is down is left to ``fetch``."""

    # -- producing -------------------------------------------------------------------
    def publish_many(self, messages: Sequence[Message], *, retry: bool | None = None,
                     retry_policy: dict[str, Any] | None = None) -> None:
        """Publish ``messages`` durably, in order, as one batch where the broker allows.

        While the broker is unreachable (a recoverable error) the attempt is repeated,
        with growing pauses, until ``publish_timeout`` seconds have passed since the
        call; an attempt already under way is not cut short (each is bounded by its
        broker's own connect timeout). This is the only retry of a publish.

        Parameters:
            retry: False makes one attempt (Celery's ``apply_async(retry=False)``).
            retry_policy: Celery's ``retry_policy``: ``max_retries`` (attempts after the
                first), ``interval_start``, ``interval_step``, ``interval_max`` (seconds
                of the pauses) and ``timeout`` (seconds in all; default
                ``publish_timeout``).

        Raises:
            PublishTimeout: the broker stayed unreachable for ``publish_timeout`` seconds
                (or through the policy's retries).
            BrokerError: the broker refused the messages, or was unreachable and
                ``publish_timeout`` is 0 or ``retry`` False (not retried).
        """
        if not messages:
            return
        started = time.monotonic()
        try:
            self._publish(messages)
        except BrokerError as exc:
            if not exc.recoverable or retry is False:
                raise
            policy = dict(retry_policy or {})
            unknown = set(policy) - _RETRY_POLICY_KEYS
            if unknown:
                raise ConfigurationError(
                    f"unknown retry_policy key(s) {', '.join(sorted(unknown))} (known: "
                    f"{', '.join(sorted(_RETRY_POLICY_KEYS))})") from exc
            timeout = float(policy.pop("timeout", None) or self.publish_timeout)
            if timeout <= 0 or policy.get("max_retries") == 0:
                raise
            self._retry_publish(messages, started, exc, timeout, **policy)

    def _retry_publish(self, messages: Sequence[Message], started: float,
                       error: BrokerError, timeout: float, max_retries: int | None = None,
                       interval_start: float | None = None,
                       interval_step: float | None = None,
                       interval_max: float | None = None) -> None:
        deadline = started + timeout
        first, longest = PUBLISH_RETRY_DELAYS
        backoff = Backoff(first if interval_start is None else float(interval_start),
                          longest if interval_max is None else float(interval_max),
                          None if interval_step is None else float(interval_step))
        unsent = messages
        while True:
            if isinstance(error, PartlyPublished):
                unsent = unsent[error.published:]
                if not unsent:
                    return
            now = time.monotonic()
            left = deadline - now
            if left <= 0 or (max_retries is not None and backoff.failures >= max_retries):
                raise PublishTimeout(
                    f"could not publish {len(messages)} message(s): {mask_url(self.url)} "
                    f"unreachable within {timeout}s ({backoff.failures} retries; {error}); "
                    f"start the broker or raise broker_connection_timeout") from error
            time.sleep(max(0.0, min(backoff.failed(now), left)))
            try:
                self._publish(unsent)
                return
            except BrokerError as exc:
                if not exc.recoverable:
                    raise
                error = exc

    @abc.abstractmethod
    def _publish(self, messages: Sequence[Message]) -> None:
        """One attempt at publishing ``messages`` (never empty); ``publish_many`` retries.

        Raises:
            BrokerConnectionLost: the broker could not be reached (retried);
                ``PartlyPublished`` when the first messages did reach it.
            BrokerError: the broker refused the messages (not retried).
        """

    def publish(self, message: Message) -> None:
        self.publish_many((message,))

    # -- consuming -------------------------------------------------------------------
    @abc.abstractmethod
    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        """Claim up to ``limit`` ready deliveries from ``queues``.

        Waits up to ``timeout`` seconds for the first one; returns ``[]`` when none came.
        Higher priority first, then oldest first. Claimed deliveries are invisible to
        other consumers until acked, rejected, released or (on lease brokers) until
        their holder stops extending the lease.
        """

    #: Most deliveries a consumer may hold unacked before the broker stops sending more
    #: (AMQP's basic.qos), or None when the broker sets no such limit. The worker acks
    #: before it reaches this, however large its ack batches are otherwise.
    ack_window: int | None = None

    #: How long an idle consumer's ``fetch`` should wait, in seconds, when this broker
    #: needs longer than the worker's default half second (SQS long polls whole seconds).
    idle_fetch_timeout: float | None = None

    def blocking_fd(self) -> int | None:
        """The socket a green pool should wait on before a non-blocking ``fetch``, when
        this broker's own waiting happens in C where monkey-patching cannot reach; None
        when ``fetch`` already yields to a patched hub."""
        return None

    def _reconnect_failed(self, error: BaseException) -> float:
        """Record that the consumer lost the broker or failed to reach it again; the
        pause before the next attempt (``reconnect_backoff``).

        Raises:
            BrokerError: more than ``connection_max_retries`` failures in a row (Celery's
                ``broker_connection_max_retries``): the worker stops rather than wait on.
        """
        backoff = self.reconnect_backoff
        delay = backoff.failed(time.monotonic())
        limit = self.connection_max_retries
        if limit is not None and backoff.failures > limit:
            raise BrokerError(
                f"gave up reconnecting to {mask_url(self.url)} after {limit} retries "
                f"({error}); start the broker, or set broker_connection_max_retries=None "
                f"to retry forever") from error
        return delay

    def consume(self, queues: Sequence[str], prefetch: int,
                timeout: float = 1.0) -> Iterator[list[Delivery]]:
        """Batches of at most ``prefetch`` deliveries, forever; empty batches on idle."""
        while True:
            yield self.fetch(queues, prefetch, timeout)

    @abc.abstractmethod
    def ack_many(self, tags: Iterable[Any]) -> None:
        """Acknowledge (delete) the deliveries with these tags; unknown tags are ignored."""

    def ack(self, tag: Any) -> None:
        self.ack_many((tag,))

    @abc.abstractmethod
    def release_many(self, tags: Iterable[Any]) -> None:
        """Return unprocessed deliveries to their queue, not counting them as delivered.

        Used on warm shutdown for prefetched messages that never started.
        """

    def defer(self, delivery: Delivery, not_before: float) -> None:
        """Hold ``delivery`` back until ``not_before`` (unix time), outside worker memory.

        The default republishes a copy with ``not_before`` and acks the original; brokers
        that can re-time a claimed message in place override it.
        """
        from ..protocol import Message

        self.publish_many([Message(delivery.headers, delivery.properties, delivery.body,
                                   queue=delivery.queue, not_before=not_before)])
        self.ack_many((delivery.tag,))

    @abc.abstractmethod
    def reject(self, tag: Any, requeue: bool) -> None:
        """Reject one delivery: requeue it (a redelivery) or dead-letter it as ``rejected``."""

    @abc.abstractmethod
    def dead_letter(self, tag: Any, reason: str) -> None:
        """Move one delivery to the dead letters, recording ``reason``; never drops it."""

    # -- administration --------------------------------------------------------------
    @abc.abstractmethod
    def purge(self, queue: str) -> int:
        """Delete every ready message in ``queue``; return how many."""

    def queue_sizes(self) -> dict[str, int]:
        """Ready (unclaimed) message count per known queue, where the broker can tell."""
        return {}

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[dict]:
        """Dead-lettered messages, newest first: dicts with at least queue, reason, headers."""
        return []

    def retry_dead_letter(self, queue: str, task_id: str) -> bool:
        """Publish the dead letter of task ``task_id`` in ``queue`` to ``queue`` again, as a
        new message (its delivery count starts over), and remove it from the dead letters.

        Returns:
            False when no such dead letter is there (already retried, or expired).

        Raises:
            ConfigurationError: this broker cannot take one letter out of its dead letters.
        """
        raise ConfigurationError(
            f"retrying a dead letter is not available on {type(self).__name__} "
            f"({mask_url(self.url)}); Redis and SQLite have it")

    # -- events ----------------------------------------------------------------------
    def event_channel(self, hostname: str) -> EventChannel:
        """A new channel publishing Celery's worker events as ``hostname`` on a
        connection of its own (one per thread). Brokers with the ``"events"`` capability
        override this.

        Raises:
            ConfigurationError: this broker cannot carry Celery's events.
        """
        raise ConfigurationError(
            f"events (Flower, celery events) are not available on {type(self).__name__} "
            f"({mask_url(self.url)}): it lacks the 'events' capability; use RabbitMQ or Redis")

    def event_receiver(self) -> Any:
        """A reader of every worker's events on this broker (``fastq events``): ``open``,
        ``receive(timeout)`` -> list of event dicts, ``close``.

        Raises:
            ConfigurationError: this broker's events cannot be read by fastq yet.
        """
        raise ConfigurationError(
            f"fastq events needs RabbitMQ or Redis: {type(self).__name__} "
            f"({mask_url(self.url)}) carries no Celery events")

    # -- remote control --------------------------------------------------------------
    def mailbox(self, expires: float) -> Mailbox:
        """A new mailbox carrying remote control requests over this broker (one per
        thread); requests older than ``expires`` seconds are no longer current.

        Brokers with the ``"control"`` capability override this.

        Raises:
            ConfigurationError: this broker has no way to reach the workers.
        """
        raise ConfigurationError(
            f"remote control (revoke) is not available on {type(self).__name__} "
            f"({mask_url(self.url)}): it lacks the 'control' capability; use a broker that "
            f"has it (RabbitMQ, Redis, SQLite, memory), or set "
            f"worker_enable_remote_control=False on its workers")


class ServerLossInFetch:
    """Mixin for a ``Broker`` whose ``fetch`` polls a network server (Redis, SQS): losing
    the server there is said once, paused on with the reconnect backoff, and its return
    said once. ``self.state`` is ``"consuming"`` or ``"reconnecting"``."""

    state = "consuming"
    reconnect_backoff: Backoff
    _reconnect_failed: Any

    def _server_name(self) -> str:
        """The server as the log names it, its password masked."""
        raise NotImplementedError

    def _lost_in_fetch(self, error: BrokerConnectionLost, deadline: float) -> bool:
        """Note the loss and wait the backoff's next pause, never past ``deadline``;
        False when the deadline has come (``fetch`` returns nothing then)."""
        self._on_unreachable(error)
        delay = self._reconnect_failed(error)
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        return True

    def _on_unreachable(self, error: BaseException) -> None:
        if self.state != "reconnecting":
            logger.warning("lost %s (%s); fetching nothing and retrying until it is back",
                           self._server_name(), error)
            self.state = "reconnecting"

    def _on_reachable(self) -> None:
        if self.state != "consuming":
            logger.info("%s is reachable again; consuming", self._server_name())
            self.state = "consuming"
            self.reconnect_backoff.succeeded()
