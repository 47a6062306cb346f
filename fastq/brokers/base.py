"""The Broker interface: what a transport must do for producers and the consumer loop."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..protocol import Message

#: Deliveries a broker keeps unacked past this many redeliveries go to the dead letters.
DEFAULT_MAX_REDELIVERIES = 5


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
    to the queue when their holder dies; ``"dead_letter"``).
    """

    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, url: str, *, max_redeliveries: int = DEFAULT_MAX_REDELIVERIES,
                 **options: Any) -> None:
        self.url = url
        self.max_redeliveries = max_redeliveries
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

    # -- producing -------------------------------------------------------------------
    @abc.abstractmethod
    def publish_many(self, messages: Sequence[Message]) -> None:
        """Publish ``messages`` durably, in order, as one batch where the broker allows.

        Raises:
            PublishTimeout: the broker stayed unreachable past the configured bound.
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
