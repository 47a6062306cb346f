"""The EventChannel interface: how Celery's worker events (Flower, ``celery events``)
travel over a broker, on a connection of the sender's own.

Events are Celery's (``celery-protocol.md`` §5): JSON objects, or a JSON list of them
under the routing key ``task.multi``, published to the ``celeryev`` exchange (a topic
exchange on RabbitMQ, kombu's pub/sub fanout on Redis) with the header ``hostname``.
Only the worker's event thread (``fastq/worker/events.py``) and the producer of
``task-sent`` publish through it; nothing here is on a task's path.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .. import serialization
from .base import Backoff

if TYPE_CHECKING:
    from .amqp import AMQPBroker
    from .base import Broker
    from .redis import RedisBroker

logger = logging.getLogger("fastq.events")

#: Celery's event exchange (``event_exchange``).
EVENT_EXCHANGE = "celeryev"
#: Events are transient: a lost event is no lost work (Celery's ``delivery_mode`` 1).
EVENT_PROPERTIES = {"content_type": "application/json", "content_encoding": "utf-8",
                    "delivery_mode": 1, "priority": 0}


class EventChannel:
    """Publishes serialized events for one sender; one instance per thread.

    ``publish`` takes ``(routing_key, body)`` pairs, ``body`` the JSON of one event or
    of a list of them, and sends them in as few round trips as the broker allows. It may
    raise ``BrokerError``; the caller closes the channel and opens a new one later.
    """

    def __init__(self, broker: Broker, hostname: str) -> None:
        self.broker = broker
        self.hostname = hostname

    def publish(self, events: Sequence[tuple[str, bytes]]) -> None:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        pass


class AMQPEventChannel(EventChannel):
    """Events on RabbitMQ: the durable ``celeryev`` topic exchange, as Celery declares it,
    so Celery's receivers (bound with ``#``) get fastq's events unchanged."""

    broker: AMQPBroker

    def __init__(self, broker: AMQPBroker, hostname: str) -> None:
        super().__init__(broker, hostname)
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None or not self._conn.is_open:
            if self._conn is not None:
                self._conn.close()
            self._conn = self.broker._new_connection()
            self._conn.declare_exchange(EVENT_EXCHANGE, "topic", durable=True)
        return self._conn

    def publish(self, events: Sequence[tuple[str, bytes]]) -> None:
        headers = {"hostname": self.hostname}
        # one write for the whole batch, no confirms: events are best effort, as Celery's
        self._connection().publish_batch(
            [(EVENT_EXCHANGE, key, body, EVENT_PROPERTIES, headers) for key, body in events])

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class RedisEventChannel(EventChannel):
    """Events on Redis: kombu's fanout over pub/sub (``celery-protocol.md`` §2.6), one
    ``PUBLISH <prefix>/<db>.celeryev/<routing key>`` per batch, all in one pipeline.
    Nobody subscribed means nobody hears them, as with Celery."""

    broker: RedisBroker

    def __init__(self, broker: RedisBroker, hostname: str) -> None:
        super().__init__(broker, hostname)
        self.topic = f"{broker.prefix}/{broker._parsed['db']}.{EVENT_EXCHANGE}"

    def envelope(self, routing_key: str, body: bytes) -> bytes:
        return serialization.json_dumps({
            "body": base64.b64encode(body).decode("ascii"),
            "content-encoding": "utf-8", "content-type": "application/json",
            "headers": {"hostname": self.hostname},
            "properties": {"delivery_mode": 1, "priority": 0, "body_encoding": "base64",
                           "delivery_info": {"exchange": EVENT_EXCHANGE,
                                             "routing_key": routing_key},
                           "delivery_tag": str(uuid.uuid4())}})

    def publish(self, events: Sequence[tuple[str, bytes]]) -> None:
        broker = self.broker

        def send() -> None:
            pipe = broker.client.pipeline(transaction=False)
            for key, body in events:
                pipe.publish(f"{self.topic}/{key}", self.envelope(key, body))
            pipe.execute()
        broker._call("events", send)


#: Longest a queued event waits before its thread publishes it, in seconds.
FLUSH_INTERVAL = 0.1
#: Seconds between two looks at the queue while task events are recorded (``polling``):
#: short enough that a worker at 40,000 tasks/s (120,000 events/s) stays well inside
#: ``MAX_PENDING`` between looks.
POLL_INTERVAL = 0.02
#: Task events per ``task.multi`` message; this many queued also wake the thread early.
BATCH_SIZE = 100
#: Events queued at most while the broker is slow or away; past it the oldest are
#: dropped (and counted), so a stalled broker never grows a worker's memory.
MAX_PENDING = 10_000
#: First and longest pause before reconnecting a lost event channel, in seconds.
RECONNECT_DELAYS = (0.5, 5.0)


def utcoffset() -> float:
    """Hours west of UTC now (Celery's sign: UTC+2 is -2.0), as a float (Celery 5.7)."""
    west = time.altzone if time.daylight and time.localtime().tm_isdst > 0 else time.timezone
    return west / 3600.0


class EventSender:
    """Celery events queued by any thread and published by a daemon thread of their
    own, on a channel of their own: whoever sends an event never waits on the broker.

    The queue holds ``(kind, timestamp, *facts)`` entries, turned into events by the
    thread: ``send(type, fields)`` queues a ready dict; ``record`` (the worker's task
    transitions, ``fastq/worker/events.py``) is a bare ``deque.append`` of raw facts that
    ``builders[kind](entry, clock)`` turns into the whole event on the thread (a builder's
    kind is never an event type, which ``send`` queues as is), so the task's thread pays
    neither the dict nor the JSON. Every event carries ``hostname``, ``utcoffset``,
    ``pid``, ``clock``, ``timestamp`` and ``type``; the thread counts the Lamport clock
    as it takes the entries, so it counts in the order they were queued.

    The thread sleeps until the first sent event arrives in an empty queue, lets more
    gather for ``flush_interval`` seconds (or until ``BATCH_SIZE`` wait), and publishes
    them: one event under its own routing key, several task events as one list under
    ``task.multi``. Worker events (``worker-*``) are never batched, as in Celery. While
    ``polling`` is set (task events on) it also looks every ``POLL_INTERVAL`` seconds,
    since ``record`` wakes nobody. ``tick`` (when given) is called by the thread every
    ``tick_interval`` seconds, first at start (the worker's heartbeat); between ticks an
    idle sender that is not polling does not wake at all.
    """

    def __init__(self, broker: Any, hostname: str, *, flush_interval: float = FLUSH_INTERVAL,
                 max_pending: int = MAX_PENDING, tick: Callable[[], None] | None = None,
                 tick_interval: float = 2.0,
                 builders: dict[str, Callable[[tuple, int], dict]] | None = None) -> None:
        self.broker = broker
        self.hostname = hostname
        self.flush_interval = flush_interval
        self.tick = tick
        self.tick_interval = tick_interval
        self.builders = builders or {}
        self.pending: deque[tuple] = deque(maxlen=max_pending)
        #: queue a raw ``(kind, timestamp, *facts)`` entry: no lock, no wake-up, no check
        self.record = self.pending.append
        #: set while entries arrive through ``record``: the thread then looks every
        #: ``POLL_INTERVAL`` seconds instead of waiting to be woken
        self.polling = False
        #: events dropped because the queue was full (counted for ``send``; ``record``
        #: leaves no trace, so a full queue found by the thread counts ``overflows``)
        self.dropped = 0
        self.overflows = 0
        #: events published so far
        self.published = 0
        #: the Lamport clock, counted by the thread as it takes events from the queue
        self.last_clock = 0
        self.pid = os.getpid()
        self.utcoffset = utcoffset()
        #: set by the first event into an empty queue (the thread sleeps until then), and
        #: by a full batch (it stops gathering)
        self._wake = threading.Event()
        self._full = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._channel: EventChannel | None = None

    def clock(self) -> int:
        """The Lamport clock's value now (``inspect clock``)."""
        return self.last_clock

    def send(self, type: str, fields: dict) -> None:  # noqa: A002 - Celery's field name
        """Queue one event; ``fields`` (a fresh dict) becomes the event."""
        pending = self.pending
        if not pending:
            self._wake.set()  # once per batch: the thread drains the queue each time
        else:
            size = len(pending)
            if size >= BATCH_SIZE:
                if not self._full.is_set():
                    self._full.set()
                if size == pending.maxlen:
                    self.dropped += 1  # the oldest goes to make room
        pending.append((type, time.time(), fields))

    def wake(self) -> None:
        """Publish what is queued now, without waiting for more to gather."""
        self._wake.set()
        self._full.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fastq-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish what is queued (within ``timeout`` seconds), then close the channel."""
        self._stop.set()
        self._wake.set()
        self._full.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._close()

    def _close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            try:
                channel.close()
            except Exception:  # pragma: no cover - closing is best effort
                pass

    def _run(self) -> None:
        backoff = Backoff(*RECONNECT_DELAYS)
        next_tick = time.monotonic()
        retry_at = 0.0
        while True:
            stopping = self._stop.is_set()
            now = time.monotonic()
            if self.tick is not None and now >= next_tick and not stopping:
                next_tick = now + self.tick_interval
                try:
                    self.tick()
                except Exception:
                    logger.exception("%s: could not build the heartbeat", self.hostname)
            if self.pending and (now >= retry_at or stopping):
                try:
                    self._publish_pending()
                    backoff.succeeded()
                    retry_at = 0.0
                except Exception as exc:
                    retry_at = now + backoff.failed(now)
                    if backoff.failures == 1:
                        logger.warning("%s: could not publish events (%s); retrying every "
                                       "few seconds, dropping the oldest past %d queued",
                                       self.hostname, exc, self.pending.maxlen)
                    self._close()
            if stopping:
                return
            # asleep until the next tick, a retry, the next look while polling, or the
            # first sent event of a new batch
            deadlines = [d for d in (next_tick if self.tick is not None else None,
                                     retry_at if self.pending else None) if d is not None]
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            if self.polling and not retry_at:
                timeout = POLL_INTERVAL if timeout is None else min(timeout, POLL_INTERVAL)
            elif self.pending and not retry_at:
                timeout = 0.0  # more came while publishing
            if self._wake.wait(timeout):
                self._wake.clear()
                if not self.polling:  # polling, the next look is soon anyway
                    # let the batch gather, unless it fills first or the sender stops
                    self._full.wait(self.flush_interval)
            self._full.clear()

    def _take_pending(self) -> list[dict]:
        """Every queued entry as a stamped event, in queue order."""
        pending = self.pending
        if len(pending) == pending.maxlen:
            self.overflows += 1
            if self.overflows == 1:
                logger.warning("%s: %d events queued: the oldest are dropped until the "
                               "broker takes them faster", self.hostname, pending.maxlen)
        # this thread holds the GIL the tasks need: every step here is paid per event
        builders = self.builders
        stamp = {"hostname": self.hostname, "utcoffset": self.utcoffset, "pid": self.pid}
        clock = self.last_clock
        events = []
        take = pending.popleft
        while pending:
            entry = take()
            build = builders.get(entry[0])
            clock += 1
            if build is None:
                event = entry[2]
                event.update(stamp)
                event["clock"] = clock
                event["timestamp"] = entry[1]
                event["type"] = entry[0]
            else:
                event = build(entry, clock)
            events.append(event)
        self.last_clock = clock
        return events

    def _publish_pending(self) -> None:
        taken = self._take_pending()
        batch: list[tuple[str, bytes]] = []
        tasks: list[dict] = []
        for event in taken:
            if event["type"].startswith("task-"):
                tasks.append(event)
                if len(tasks) >= BATCH_SIZE:
                    batch.append(_task_message(tasks))
                    tasks = []
            else:
                if tasks:  # keep the order the events were sent in
                    batch.append(_task_message(tasks))
                    tasks = []
                batch.append((event["type"].replace("-", "."), _json(event)))
        if tasks:
            batch.append(_task_message(tasks))
        if not batch:
            return
        if self._channel is None:
            self._channel = self.broker.event_channel(self.hostname)
        try:
            self._channel.publish(batch)
        except BaseException:
            # back to the front as ready events, to go out in order once the broker is
            # back (restamped then, so their clocks still count in order)
            self.pending.extendleft(
                (event["type"], event["timestamp"], event) for event in reversed(taken))
            raise
        self.published += len(taken)


def _json(events: dict | list[dict]) -> bytes:
    # events hold strings and numbers only: no UUID objects to envelope, so the walk
    # that looks for them (most of the cost, measured) is skipped
    return serialization.json_dumps(events, uuids=False)


def _task_message(events: list[dict]) -> tuple[str, bytes]:
    if len(events) == 1:
        event = events[0]
        return event["type"].replace("-", "."), _json(event)
    return "task.multi", _json(events)


class AMQPEventReceiver:
    """Reads every event on RabbitMQ's ``celeryev`` exchange (``fastq events``): a private
    auto-delete queue bound with ``#``, as Celery's receivers bind theirs."""

    def __init__(self, broker: AMQPBroker) -> None:
        self.broker = broker
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None:
            conn = self.broker._new_connection()
            queue = f"fastq-events.{uuid.uuid4().hex}"
            conn.declare_exchange(EVENT_EXCHANGE, "topic", durable=True)
            # events are for whoever listens now: nothing queued once we go
            conn.declare_queue(queue, durable=False, exclusive=True, auto_delete=True,
                               arguments={"x-message-ttl": 5000})
            conn.bind_queue(queue, EVENT_EXCHANGE, "#")
            conn.consume(queue, no_ack=True)
            self._conn = conn
        return self._conn

    def open(self) -> None:
        """Bind now, so that events sent from here on are kept for ``receive``."""
        self._connection()

    def receive(self, timeout: float) -> list[dict]:
        """The events that arrived within ``timeout`` seconds, a ``task.multi`` batch
        unpacked; an undecodable body is skipped."""
        events: list[dict] = []
        for delivery in self._connection().drain(100, timeout):
            try:
                decoded = serialization.json_loads(delivery[7])
            except Exception:
                continue
            for event in decoded if isinstance(decoded, list) else [decoded]:
                if isinstance(event, dict):
                    events.append(event)
        return events

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

