"""The Amazon SQS broker: kombu's SQS messages on the wire, with visibility a live worker extends.

Producers send kombu's envelope, base64-encoded, to the queue named as kombu names it
(``queue_name_prefix`` + the name, dots as hyphens, ``.fifo`` kept), so Celery clients
and workers on SQS share queues with fastq both ways (wire details:
``fastq/brokers/_sqs_wire.py``). Consumers long-poll (``WaitTimeSeconds``, never past
the fetch timeout) for up to ten messages a call, received with a visibility timeout of
``lease_seconds``; a keeper thread in the holding process pushes the visibility of every
message it holds a full period ahead every third of it (ChangeMessageVisibilityBatch).
A task that runs longer than the visibility timeout therefore runs once, and a worker
killed with ``kill -9`` lets its messages reappear within one period.

Delays ride on ``DelaySeconds`` (15 minutes at most): a message due later carries its
due time in an attribute and is re-sent, 15 minutes at a time, until due. FIFO queues
take no per-message delay; their messages wait by visibility instead, in place, so the
order of their group holds. Queues fastq creates get a redrive policy to
``<queue>-dead`` (created too); ``dead_letter`` sends there with the reason attached.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from .. import serialization
from ..exceptions import BrokerConnectionLost, BrokerError, ConfigurationError
from . import _sqs_wire as wire
from ._lease import LeaseKeeping
from .base import (
    DEFAULT_MAX_REDELIVERIES,
    Broker,
    Delivery,
    PartlyPublished,
    ServerLossInFetch,
)

logger = logging.getLogger(__name__)

#: SQS's limits: entries per batch call, bytes per batch request, seconds of long poll,
#: of per-message delay and of visibility timeout.
BATCH_MAX = 10
BATCH_BYTES_MAX = 262_144
WAIT_TIME_MAX = 20
DELAY_MAX = 900
VISIBILITY_MAX = 43_200

#: Seconds a received message stays invisible without renewal; renewed every third.
DEFAULT_LEASE_SECONDS = 30.0
#: kombu's defaults, so that queues fastq creates behave for Celery workers as kombu's do:
#: the queue's own visibility timeout (fastq's receives set theirs) and the long poll.
DEFAULT_QUEUE_VISIBILITY_TIMEOUT = 1800
DEFAULT_WAIT_TIME_SECONDS = 10
DEFAULT_REGION = "us-east-1"
#: Seconds between short polls when the fetch timeout is under a second, SQS's smallest
#: long poll (the worker's idle fetch waits half a second).
DEFAULT_POLLING_INTERVAL = 0.2
#: Dead-letter queues keep messages 14 days, SQS's longest retention.
DEAD_LETTER_RETENTION = 1_209_600
#: Seconds dead letters stay hidden while ``dead_letters()`` pages through them, and the
#: most it reads per dead-letter queue (SQS returns oldest first, roughly: to list the
#: newest, it reads them all, up to this many).
PEEK_VISIBILITY = 30
PEEK_MAX = 1000
#: A message due within this many seconds is delivered rather than re-timed.
DUE_SLACK = 0.002

_KNOWN_OPTIONS = frozenset({
    "region", "endpoint_url", "is_secure", "queue_name_prefix", "visibility_timeout",
    "wait_time_seconds", "polling_interval", "predefined_queues", "sqs-creation-attributes",
    "queue_tags", "client-config", "sqs_base64_encoding", "lease_seconds",
    "max_receive_count", "fifo_group_header"})
#: kombu SQS options fastq does not implement: named in the error, not silently ignored.
_UNSUPPORTED_KOMBU_OPTIONS = frozenset({
    "sts_role_arn", "sts_token_timeout", "sts_token_buffer_time", "predefined_exchanges",
    "supports_fanout", "fetch_message_attributes", "session_token", "regioninfo", "port"})

#: botocore errors after which the same call can succeed once SQS is reachable again.
_CONNECTION_ERRORS = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)


class SQSError(BrokerError):
    """SQS refused a request; ``code`` is SQS's error code (``QueueDoesNotExist``, ...)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class SQSUnavailable(SQSError, BrokerConnectionLost):
    """SQS throttled a request or failed it on its side (HTTP 5xx): the same request
    may succeed later, so it is retried like a lost connection."""


#: Error codes that mean "not now" rather than "no": the request itself was fine.
_TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "RequestThrottled", "RequestThrottledException",
    "TooManyRequestsException", "KmsThrottled", "ServiceUnavailable", "InternalError",
    "InternalFailure", "RequestTimeout", "RequestTimeoutException",
})


@dataclass(slots=True)
class _Queue:
    """One SQS queue as fastq uses it: its fastq (Celery) name, SQS name, URL, client."""

    name: str
    sqs_name: str
    url: str
    fifo: bool
    client: Any


@dataclass(slots=True)
class _Held:
    """A received message this process holds: what settling and re-sending it needs."""

    queue: _Queue
    receipt: str
    message_id: str
    body: str
    attributes: dict
    redeliveries: int


class SQSBroker(LeaseKeeping, ServerLossInFetch, Broker):
    """``sqs://[KEY:SECRET@][host[:port]][?option=value...]`` (kombu's URL form).

    Options (``broker_transport_options``, kombu's names where kombu has them):
    ``region``, ``endpoint_url``, ``is_secure``, ``queue_name_prefix``,
    ``visibility_timeout`` (of the queues fastq creates: what a Celery worker gets;
    default 1800), ``wait_time_seconds`` (longest long poll, 0-20, default 10),
    ``polling_interval``, ``predefined_queues`` (``{name: {"url", "access_key_id",
    "secret_access_key", "region"}}``; nothing is created then, dead-letter queues
    included), ``sqs-creation-attributes``, ``queue_tags``, ``client-config`` (botocore
    ``Config`` arguments), ``sqs_base64_encoding`` (default True), ``lease_seconds``
    (fastq's visibility period, renewed while the holder lives), ``publish_timeout`` (as
    every broker's),
    ``max_receive_count`` (of the redrive policy; default ``max_redeliveries + 2``, so
    the worker's own limit, which records a reason, comes first), ``fifo_group_header``
    (the header giving a FIFO message its group, default ``MessageGroupId``).

    No priorities (SQS has none). ``self.state`` is ``"consuming"`` or
    ``"reconnecting"`` (SQS unreachable: fetch returns ``[]``, settlements are kept and
    sent once it is back).
    """

    capabilities = frozenset({"delay", "lease", "dead_letter"})
    reconnect_delays = (0.05, 2.0)
    #: SQS long-polls in whole seconds: a shorter idle wait would poll without waiting
    idle_fetch_timeout = 1.0

    def __init__(self, url: str, *, max_redeliveries: int = DEFAULT_MAX_REDELIVERIES,
                 **options: Any) -> None:
        parsed = wire.parse_url(url)
        options = {**parsed["options"], **options}
        super().__init__(url, max_redeliveries=max_redeliveries, **options)
        unknown = set(self.options) - _KNOWN_OPTIONS
        if unknown & _UNSUPPORTED_KOMBU_OPTIONS:
            raise ConfigurationError(
                f"kombu SQS option(s) not supported by fastq: "
                f"{', '.join(sorted(unknown & _UNSUPPORTED_KOMBU_OPTIONS))}")
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) for the SQS broker: {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(_KNOWN_OPTIONS))})")
        lease = float(options.get("lease_seconds") or DEFAULT_LEASE_SECONDS)
        if lease <= 0:
            raise ConfigurationError(f"lease_seconds must be positive, not {lease!r}")
        # SQS counts visibility in whole seconds
        self.visibility = min(max(1, math.ceil(lease)), VISIBILITY_MAX)
        self.queue_visibility_timeout = int(options.get("visibility_timeout")
                                            or DEFAULT_QUEUE_VISIBILITY_TIMEOUT)
        self.wait_time_seconds = int(options.get("wait_time_seconds",
                                                 DEFAULT_WAIT_TIME_SECONDS))
        if not 0 <= self.wait_time_seconds <= WAIT_TIME_MAX:
            raise ConfigurationError(f"wait_time_seconds must be 0-{WAIT_TIME_MAX}, "
                                     f"not {self.wait_time_seconds}")
        self.polling_interval = float(options.get("polling_interval", DEFAULT_POLLING_INTERVAL))
        self.prefix = str(options.get("queue_name_prefix") or "")
        self.max_receive_count = int(options.get("max_receive_count") or max_redeliveries + 2)
        self.base64_encoding = bool(options.get("sqs_base64_encoding", True))
        self.group_header = str(options.get("fifo_group_header") or "MessageGroupId")
        self.predefined: dict[str, dict] = dict(options.get("predefined_queues") or {})
        self.creation_attributes = {str(k): str(v) for k, v in
                                    (options.get("sqs-creation-attributes") or {}).items()}
        self.queue_tags = dict(options.get("queue_tags") or {})
        self._credentials = (parsed["access_key_id"], parsed["secret_access_key"])
        self.endpoint_url = options.get("endpoint_url")
        if not self.endpoint_url and parsed["host"]:
            port = f":{parsed['port']}" if parsed["port"] else ""
            self.endpoint_url = (f"{'https' if options.get('is_secure') else 'http'}://"
                                 f"{parsed['host']}{port}")
        self.region = options.get("region")
        self.client_config = dict(options.get("client-config") or {})
        self.state = "consuming"
        self._lock = threading.Lock()
        self._pid = -1
        self._clients: dict[tuple, Any] = {}
        self._queues: dict[str, _Queue] = {}
        self._known: set[str] = set()
        self._held: dict[str, _Held] = {}
        self._pending: list[tuple[str, list[_Held], Callable[[list[_Held]], None]]] = []
        self._keeper: threading.Thread | None = None
        self._stop = threading.Event()
        self._rotation = 0
        self._system_attributes: dict[str, list[str]] | None = None

    # -- connections -------------------------------------------------------------------
    def _check_pid(self) -> None:
        if self._pid != os.getpid():
            # after fork: the parent's clients, keeper and held messages are not ours
            with self._lock:
                self._clients = {}
                self._queues = {}
                self._held = {}
                self._pending = []
                self._keeper = None
                self._stop = threading.Event()
                self._pid = os.getpid()

    def _client(self, region: str | None = None, key: str | None = None,
                secret: str | None = None) -> Any:
        """A boto3 SQS client for these credentials (the URL's by default), made once."""
        self._check_pid()
        if key is None and secret is None:
            key, secret = self._credentials
        region = region or self.region
        cache_key = (region, key, secret)
        client = self._clients.get(cache_key)
        if client is None:
            with self._lock:
                client = self._clients.get(cache_key)
                if client is None:
                    # a Session per client: boto3's default session is not thread-safe
                    session = boto3.session.Session(aws_access_key_id=key,
                                                    aws_secret_access_key=secret)
                    # no retries inside botocore: its pauses (up to a second each, per
                    # call) would run past publish_timeout unseen; fastq's publish retry
                    # and the consumer's reconnect backoff are the only retry loops
                    config = botocore.config.Config(
                        connect_timeout=5, read_timeout=WAIT_TIME_MAX + 10,
                        retries={"mode": "standard", "total_max_attempts": 1},
                    ).merge(botocore.config.Config(**self.client_config))
                    client = session.client(
                        "sqs", region_name=region or session.region_name or DEFAULT_REGION,
                        endpoint_url=self.endpoint_url, config=config)
                    self._clients[cache_key] = client
        return client

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        """Run a boto3 call; its errors become fastq's (connection loss: recoverable)."""
        try:
            return fn(**kwargs)
        except _CONNECTION_ERRORS as exc:
            raise BrokerConnectionLost(
                f"SQS {self.endpoint_url or 'endpoint'} unreachable during {what}: {exc}") from exc
        except botocore.exceptions.NoCredentialsError as exc:
            raise ConfigurationError(
                "no AWS credentials for SQS: put them in the broker URL "
                "(sqs://KEY:SECRET@, URL-quoted) or set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY") from exc
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("QueryErrorCode") or error.get("Code") or "Unknown")
            code = code.removeprefix("AWS.SimpleQueueService.")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code in _TRANSIENT_CODES or status >= 500:
                raise SQSUnavailable(f"SQS could not serve {what} now: {code}: "
                                     f"{error.get('Message', exc)}", code) from exc
            raise SQSError(f"SQS refused {what}: {code}: {error.get('Message', exc)}",
                           code) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise BrokerError(f"SQS {what} failed: {exc}") from exc

    def connect(self) -> None:
        self._client()

    def close(self) -> None:
        if self._pid != os.getpid():
            return
        self._stop_keeper(5)
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
            self._queues = {}
            # what is still held becomes visible again when its visibility runs out
            self._held = {}
            self._pending = []
        for client in clients:
            close = getattr(client, "close", None)
            if close is not None:
                close()

    # -- queues ------------------------------------------------------------------------
    def _queue(self, name: str, create: bool = True) -> _Queue | None:
        """The queue fastq calls ``name``, created with its dead-letter queue if missing
        (``create``), else None when it does not exist."""
        self._check_pid()
        queue = self._queues.get(name)
        if queue is not None:
            return queue
        sqs_name = wire.sqs_queue_name(name, self.prefix)
        fifo = sqs_name.endswith(".fifo")
        if self.predefined:
            spec = self.predefined.get(sqs_name) or self.predefined.get(name)
            if spec is None:
                if not create:
                    return None
                raise ConfigurationError(
                    f"queue {name!r} (SQS name {sqs_name!r}) is not in predefined_queues; "
                    f"add it, or drop predefined_queues to let fastq create queues")
            client = self._client(spec.get("region"), spec.get("access_key_id"),
                                  spec.get("secret_access_key"))
            url = spec["url"]
        else:
            client = self._client()
            url = self._lookup(client, sqs_name)
            if url is None:
                if not create:
                    return None
                url = self._create(client, name, sqs_name, fifo)
        queue = _Queue(name, sqs_name, url, fifo, client)
        self._queues[name] = queue
        if not wire.is_dead_queue(sqs_name):
            self._known.add(name)
        return queue

    def _lookup(self, client: Any, sqs_name: str) -> str | None:
        try:
            return self._call("get queue url", client.get_queue_url,
                              QueueName=sqs_name)["QueueUrl"]
        except SQSError as exc:
            if exc.code in ("NonExistentQueue", "QueueDoesNotExist"):
                return None
            raise

    def _create(self, client: Any, name: str, sqs_name: str, fifo: bool) -> str:
        """Create ``sqs_name``; a queue that is not a dead-letter queue gets one, and a
        redrive policy to it, unless ``sqs-creation-attributes`` brings its own."""
        dead = wire.is_dead_queue(sqs_name)
        wire.check_queue_name(sqs_name if dead else wire.dead_queue_of(sqs_name), name)
        attributes: dict[str, str] = {}
        if fifo:
            attributes["FifoQueue"] = "true"
        if dead:
            attributes["MessageRetentionPeriod"] = str(DEAD_LETTER_RETENTION)
        else:
            attributes["VisibilityTimeout"] = str(self.queue_visibility_timeout)
            attributes.update(self.creation_attributes)
            if "RedrivePolicy" not in attributes:
                dead_queue = self._queue(wire.dead_queue_of(name))
                assert dead_queue is not None
                arn = self._call("get queue arn", client.get_queue_attributes,
                                 QueueUrl=dead_queue.url, AttributeNames=["QueueArn"])
                attributes["RedrivePolicy"] = serialization.json_dumps({
                    "deadLetterTargetArn": arn["Attributes"]["QueueArn"],
                    "maxReceiveCount": self.max_receive_count}).decode()
        kwargs: dict[str, Any] = {"QueueName": sqs_name, "Attributes": attributes}
        if self.queue_tags:
            kwargs["tags"] = self.queue_tags
        try:
            url = self._call("create queue", client.create_queue, **kwargs)["QueueUrl"]
        except SQSError as exc:
            # another process created it first, with other attributes: use theirs
            if exc.code not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
            url = self._lookup(client, sqs_name)
            if url is None:
                raise
            return url
        logger.info("created SQS queue %s%s", sqs_name,
                    "" if dead else f" (dead letters: {wire.dead_queue_of(sqs_name)})")
        return url

    def declare(self, queue: str, **arguments: Any) -> None:
        self._queue(queue)

    # -- producing -------------------------------------------------------------------
    def _entry(self, message: Any, fifo: bool, now: float) -> dict[str, Any]:
        entry: dict[str, Any] = {"MessageBody": wire.encode_body(message, self.base64_encoding)}
        delay = message.not_before - now if message.not_before else 0.0
        if delay > DUE_SLACK:
            if fifo or delay > DELAY_MAX:
                # SQS cannot hold it back long enough (or at all, on FIFO): the fetching
                # broker re-times it until due, knowing when from this attribute
                entry["MessageAttributes"] = {
                    wire.ATTR_NOT_BEFORE: wire.number_attribute(float(message.not_before))}
            if not fifo:
                entry["DelaySeconds"] = min(math.ceil(delay), DELAY_MAX)
        if fifo:
            group = (message.properties.get("MessageGroupId")
                     or message.headers.get(self.group_header) or message.queue)
            entry["MessageGroupId"] = str(group)
            entry["MessageDeduplicationId"] = wire.deduplication_id(message)
        return entry

    def _publish(self, messages: Sequence[Any]) -> None:
        now = time.time()
        # consecutive messages to the same queue go out together, keeping their order
        runs: list[tuple[str, list[Any]]] = []
        for message in messages:
            if runs and runs[-1][0] == message.queue:
                runs[-1][1].append(message)
            else:
                runs.append((message.queue, [message]))
        sent = 0  # the first messages, in batches SQS took: a retry must not copy them
        try:
            for name, run in runs:
                queue = self._queue(name)
                assert queue is not None
                for batch in _size_batches([self._entry(m, queue.fifo, now) for m in run]):
                    self._send_batch(queue, batch)
                    sent += len(batch)
        except BrokerConnectionLost as exc:
            if not sent:
                raise
            raise PartlyPublished(str(exc), sent) from exc

    def _send_batch(self, queue: _Queue, batch: list[dict]) -> None:
        entries = [dict(entry, Id=str(i)) for i, entry in enumerate(batch)]
        reply = self._call("send", queue.client.send_message_batch, QueueUrl=queue.url,
                           Entries=entries)
        failed = reply.get("Failed") or []
        if failed:
            first = failed[0]
            raise BrokerError(
                f"SQS refused {len(failed)} of {len(entries)} message(s) for queue "
                f"{queue.name!r}: {first.get('Code')}: {first.get('Message')}")

    # -- consuming -------------------------------------------------------------------
    def _receive_kwargs(self, client: Any) -> dict[str, list[str]]:
        """The system attributes to ask for, in whichever parameter this botocore knows
        (``AttributeNames`` is deprecated; ``MessageSystemAttributeNames`` is newer)."""
        if self._system_attributes is None:
            members = client.meta.service_model.operation_model(
                "ReceiveMessage").input_shape.members
            parameter = ("MessageSystemAttributeNames" if "MessageSystemAttributeNames"
                         in members else "AttributeNames")
            self._system_attributes = {parameter: ["ApproximateReceiveCount", "SentTimestamp"]}
        return self._system_attributes

    def _receive(self, queue: _Queue, limit: int, wait: int,
                 visibility: int | None = None) -> list[dict]:
        """Up to ``limit`` raw messages, ten a call; only the first call waits."""
        messages: list[dict] = []
        extra = self._receive_kwargs(queue.client)
        while True:
            reply = self._call("receive", queue.client.receive_message, QueueUrl=queue.url,
                               MaxNumberOfMessages=min(limit - len(messages), BATCH_MAX),
                               WaitTimeSeconds=wait,
                               VisibilityTimeout=self.visibility if visibility is None
                               else visibility,
                               MessageAttributeNames=["All"], **extra)
            got = reply.get("Messages") or []
            messages.extend(got)
            if len(got) < BATCH_MAX or len(messages) >= limit:
                return messages
            wait = 0

    def _accept(self, queue: _Queue, messages: list[dict]) -> list[Delivery]:
        """Hold received messages and make Deliveries of those that are due."""
        if not messages:
            return []
        now = time.time()
        entries = []
        for m in messages:
            attributes = wire.sendable_attributes(m.get("MessageAttributes"))
            count = int((m.get("Attributes") or {}).get("ApproximateReceiveCount") or 1)
            carried = int(wire.number_of(attributes, wire.ATTR_REDELIVERIES) or 0)
            entries.append(_Held(queue, m["ReceiptHandle"], m.get("MessageId", ""),
                                 m.get("Body", ""), attributes, carried + count - 1))
        with self._lock:
            for entry in entries:
                self._held[entry.receipt] = entry
        self._ensure_keeper()
        deliveries = []
        for entry in entries:
            not_before = wire.number_of(entry.attributes, wire.ATTR_NOT_BEFORE)
            if not_before is not None and not_before - now > DUE_SLACK:
                self._settle("re-time", [entry], lambda e, t=not_before: self._retime(e[0], t))
                continue
            deliveries.append(self._delivery(entry))
        return deliveries

    @staticmethod
    def _delivery(entry: _Held) -> Delivery:
        try:
            headers, properties, body = wire.decode_body(entry.body)
        except (ValueError, TypeError, KeyError, AttributeError):
            # malformed: still delivered, so that the worker dead-letters it with a reason
            return Delivery(entry.receipt, {}, {}, entry.body.encode("utf-8", "replace"),
                            entry.queue.name, entry.redeliveries)
        return Delivery(entry.receipt, headers, properties, body, entry.queue.name,
                        entry.redeliveries)

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        if not queues:
            raise ConfigurationError("fetch needs at least one queue")
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            waited = False
            try:
                if self._pending:
                    self._replay_pending()
                order = [self._queue(q) for q in queues]
                if len(order) > 1:
                    # start from another queue each time, so a busy one cannot starve the rest
                    start = self._rotation % len(order)
                    self._rotation += 1
                    order = order[start:] + order[:start]
                for index, queue in enumerate(order):
                    assert queue is not None
                    wait = 0
                    left = deadline - time.monotonic()
                    if index == len(order) - 1 and left >= 1:
                        # one long poll per round, on the last queue; with several
                        # queues it lasts a second so the others are looked at again soon
                        wait = min(int(left), self.wait_time_seconds,
                                   1 if len(order) > 1 else WAIT_TIME_MAX)
                    waited = waited or wait > 0
                    deliveries = self._accept(queue, self._receive(queue, limit, wait))
                    if deliveries:
                        self._on_reachable()
                        return deliveries
                self._on_reachable()
            except BrokerConnectionLost as exc:
                if not self._lost_in_fetch(exc, deadline):
                    return []
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            if not waited:
                time.sleep(min(self.polling_interval, left))

    def _server_name(self) -> str:
        return f"SQS {self.endpoint_url or 'endpoint'}"

    # -- settling --------------------------------------------------------------------
    def _entries(self, tags: Iterable[Any]) -> list[_Held]:
        with self._lock:
            return [e for e in (self._held.get(str(t)) for t in tags) if e is not None]

    def _settle(self, what: str, entries: list[_Held],
                operation: Callable[[list[_Held]], None]) -> None:
        """Run ``operation`` on held messages, then forget them; kept for later (and
        still held, so still extended) while SQS is unreachable."""
        if not entries:
            return
        try:
            if self._pending:
                self._replay_pending()
            operation(entries)
        except BrokerConnectionLost as exc:
            self._on_unreachable(exc)
            self._pending.append((what, entries, operation))
            return
        except Exception:
            # refused for good: stop extending them, so SQS delivers them again
            self._forget(entries)
            raise
        self._forget(entries)

    def _replay_pending(self) -> None:
        while self._pending:
            _what, entries, operation = self._pending[0]
            operation(entries)
            self._pending.pop(0)
            self._forget(entries)

    def _forget(self, entries: list[_Held]) -> None:
        with self._lock:
            for entry in entries:
                self._held.pop(entry.receipt, None)

    def _batch(self, what: str, method: str, entries: list[_Held],
               extra: dict | None = None) -> list[tuple[_Held, dict]]:
        """Run an SQS ``*Batch`` call over ``entries``, per queue, ten at a time; the
        entries that failed, with SQS's reason."""
        by_queue: dict[str, list[_Held]] = {}
        for entry in entries:
            by_queue.setdefault(entry.queue.url, []).append(entry)
        failed = []
        for group in by_queue.values():
            queue = group[0].queue
            for start in range(0, len(group), BATCH_MAX):
                chunk = group[start:start + BATCH_MAX]
                reply = self._call(what, getattr(queue.client, method), QueueUrl=queue.url,
                                   Entries=[{"Id": str(i), "ReceiptHandle": e.receipt,
                                             **(extra or {})} for i, e in enumerate(chunk)])
                failed.extend((chunk[int(f["Id"])], f) for f in reply.get("Failed") or ())
        return failed

    def _delete(self, entries: list[_Held]) -> None:
        for entry, failure in self._batch("delete", "delete_message_batch", entries):
            # an invalid handle: the message was acked or purged already, or its
            # visibility lapsed and another consumer holds it now
            logger.debug("SQS did not delete message %s from %s: %s", entry.message_id,
                         entry.queue.sqs_name, failure.get("Code"))

    def _make_visible(self, entries: list[_Held], seconds: int = 0) -> None:
        for entry, failure in self._batch("change visibility", "change_message_visibility_batch",
                                          entries, {"VisibilityTimeout": seconds}):
            logger.debug("SQS did not change the visibility of message %s in %s: %s",
                         entry.message_id, entry.queue.sqs_name, failure.get("Code"))

    def ack_many(self, tags: Iterable[Any]) -> None:
        self._settle("ack", self._entries(tags), self._delete)

    def release_many(self, tags: Iterable[Any]) -> None:
        # visibility 0, as kombu releases: SQS counts the next receive as a redelivery
        self._settle("release", self._entries(tags), self._make_visible)

    def reject(self, tag: Any, requeue: bool) -> None:
        if not requeue:
            self.dead_letter(tag, "rejected")
            return
        self._settle("requeue", self._entries((tag,)), self._make_visible)

    def defer(self, delivery: Delivery, not_before: float) -> None:
        self._settle("defer", self._entries((delivery.tag,)),
                     lambda entries: self._retime(entries[0], not_before))

    def _retime(self, entry: _Held, not_before: float) -> None:
        """Hold a received message back until ``not_before``, outside worker memory.

        On a standard queue a copy is sent with ``DelaySeconds`` (at most 15 minutes;
        the due time and the deliveries so far ride along, so neither the wait nor the
        deferral counts as a delivery) and the original deleted. On a FIFO queue the
        message stays where it is, invisible until due, which keeps its group's order;
        there its next receive does count.
        """
        delay = not_before - time.time()
        if entry.queue.fifo:
            seconds = min(max(0, math.ceil(delay)), VISIBILITY_MAX)
            try:
                self._call("re-time", entry.queue.client.change_message_visibility,
                           QueueUrl=entry.queue.url, ReceiptHandle=entry.receipt,
                           VisibilityTimeout=seconds)
            except SQSError as exc:
                # SQS caps a message's visibility at 12 hours from its first receive
                logger.warning("could not hold FIFO message %s back for %ds (%s); it comes "
                               "back after %ds and is held back again", entry.message_id,
                               seconds, exc, self.visibility)
            return
        attributes = dict(entry.attributes)
        attributes[wire.ATTR_NOT_BEFORE] = wire.number_attribute(float(not_before))
        attributes[wire.ATTR_REDELIVERIES] = wire.number_attribute(entry.redeliveries)
        self._call("re-time", entry.queue.client.send_message, QueueUrl=entry.queue.url,
                   MessageBody=entry.body, MessageAttributes=attributes,
                   DelaySeconds=min(max(0, math.ceil(delay)), DELAY_MAX))
        self._delete([entry])

    def dead_letter(self, tag: Any, reason: str) -> None:
        entries = self._entries((tag,))
        if not entries:
            logger.warning("cannot dead-letter %r: not a message this process holds", tag)
            return
        self._settle("dead-letter", entries, lambda e: self._send_dead(e[0], reason))

    def _send_dead(self, entry: _Held, reason: str) -> None:
        dead = self._queue(wire.dead_queue_of(entry.queue.name), create=not self.predefined)
        if dead is None:
            raise ConfigurationError(
                f"no dead-letter queue for {entry.queue.name!r}: add "
                f"{wire.dead_queue_of(entry.queue.sqs_name)!r} to predefined_queues")
        ours = (wire.ATTR_REASON, wire.ATTR_QUEUE, wire.ATTR_DEAD_AT, wire.ATTR_REDELIVERIES,
                wire.ATTR_NOT_BEFORE)
        kept = [(k, v) for k, v in entry.attributes.items() if k not in ours]
        attributes = dict(kept[:wire.MAX_ATTRIBUTES - 4])
        attributes[wire.ATTR_REASON] = wire.string_attribute(reason)
        attributes[wire.ATTR_QUEUE] = wire.string_attribute(entry.queue.name)
        attributes[wire.ATTR_DEAD_AT] = wire.number_attribute(time.time())
        attributes[wire.ATTR_REDELIVERIES] = wire.number_attribute(entry.redeliveries)
        kwargs: dict[str, Any] = {}
        if dead.fifo:
            # a group per message: one dead letter must never hold up the others, and a
            # replayed send (after a lost connection) is recognised as the same one
            kwargs = {"MessageGroupId": entry.message_id or "dead",
                      "MessageDeduplicationId": entry.message_id or entry.receipt[:128]}
        self._call("dead-letter", dead.client.send_message, QueueUrl=dead.url,
                   MessageBody=entry.body, MessageAttributes=attributes, **kwargs)
        self._delete([entry])

    # -- visibility (leases) -----------------------------------------------------------
    _keeper_name = "fastq-sqs-visibility-keeper"

    def _lease_period(self) -> float:
        return self.visibility

    def extend_leases(self) -> int:
        """Push the visibility of every message this process holds a full period ahead."""
        with self._lock:
            held = list(self._held.values())
        if not held:
            return 0
        failed = self._batch("extend visibility", "change_message_visibility_batch", held,
                             {"VisibilityTimeout": self.visibility})
        with self._lock:
            # a message settled while the call ran fails harmlessly; only those still
            # held are lost (their visibility lapsed, or 12 hours of it ran out)
            lost = [(e, f) for e, f in failed if self._held.pop(e.receipt, None) is not None]
        if lost:
            logger.warning("%d held SQS message(s) could not be kept invisible (%s); they "
                           "may run twice", len(lost), lost[0][1].get("Message"))
        return len(held) - len(failed)

    # -- administration --------------------------------------------------------------
    def _counts(self, queue: _Queue) -> int:
        reply = self._call("queue attributes", queue.client.get_queue_attributes,
                           QueueUrl=queue.url, AttributeNames=[
                               "ApproximateNumberOfMessages",
                               "ApproximateNumberOfMessagesDelayed"])
        attributes = reply.get("Attributes") or {}
        return (int(attributes.get("ApproximateNumberOfMessages", 0))
                + int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)))

    def purge(self, queue: str) -> int:
        """PurgeQueue, counting ready and delayed messages first (SQS's approximate
        counts). SQS's purge takes messages in flight too: their acks then do nothing.
        At most one purge a minute per queue: within it, ready messages are received and
        deleted instead."""
        found = self._queue(queue, create=False)
        if found is None:
            return 0
        count = self._counts(found)
        if not count:
            return 0
        try:
            self._call("purge", found.client.purge_queue, QueueUrl=found.url)
        except SQSError as exc:
            if exc.code != "PurgeQueueInProgress":
                raise
            count = 0
            while batch := self._receive(found, 100, 0):
                entries = [_Held(found, m["ReceiptHandle"], m.get("MessageId", ""), "", {}, 0)
                           for m in batch]
                self._delete(entries)
                count += len(entries)
        return count

    def queue_sizes(self) -> dict[str, int]:
        sizes = {}
        for name in sorted(self._known):
            queue = self._queue(name, create=False)
            if queue is not None:
                sizes[name] = self._counts(queue)
        return sizes

    def _dead_queues(self, queue: str | None) -> list[tuple[str, _Queue]]:
        if queue is not None:
            dead = self._queue(wire.dead_queue_of(queue), create=False)
            return [(queue, dead)] if dead is not None else []
        if self.predefined:
            names = [n for n in self.predefined if wire.is_dead_queue(n)]
        else:
            client = self._client()
            names = []
            kwargs: dict[str, Any] = {"QueueNamePrefix": self.prefix, "MaxResults": 1000}
            while True:
                reply = self._call("list queues", client.list_queues, **kwargs)
                names += [u.rsplit("/", 1)[-1] for u in reply.get("QueueUrls") or ()]
                if not reply.get("NextToken"):
                    break
                kwargs["NextToken"] = reply["NextToken"]
            names = [n for n in names if wire.is_dead_queue(n)]
        found = []
        for sqs_name in names:
            owner = wire.queue_of_dead(sqs_name, self.prefix)
            dead = self._queue(wire.dead_queue_of(owner), create=False)
            if dead is not None:
                found.append((owner, dead))
        return found

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[dict]:
        """Dead letters, newest first, read by receiving them (hidden from other readers
        for a moment, then made visible again): ``fastq-reason`` and the other attributes
        for those fastq moved, "max-receive-count" for those SQS's redrive policy moved.
        At most ``PEEK_MAX`` (or ``limit``) are read per dead-letter queue."""
        letters = []
        for owner, dead in self._dead_queues(queue):
            messages = self._receive(dead, max(limit, PEEK_MAX), 0, visibility=PEEK_VISIBILITY)
            entries = []
            for m in messages:
                attributes = wire.sendable_attributes(m.get("MessageAttributes"))
                system = m.get("Attributes") or {}
                entry = _Held(dead, m["ReceiptHandle"], m.get("MessageId", ""),
                              m.get("Body", ""), attributes, 0)
                entries.append(entry)
                delivery = self._delivery(entry)
                moved_by_fastq = wire.string_of(attributes, wire.ATTR_REASON) is not None
                redeliveries = wire.number_of(attributes, wire.ATTR_REDELIVERIES)
                letters.append({
                    "queue": wire.string_of(attributes, wire.ATTR_QUEUE) or owner,
                    "reason": wire.string_of(attributes, wire.ATTR_REASON) or (
                        f"max-receive-count: received more than {self.max_receive_count} "
                        f"times (the queue's SQS redrive policy)"),
                    "deliveries": int(redeliveries) + 1 if moved_by_fastq and
                    redeliveries is not None else int(system.get("ApproximateReceiveCount")
                                                      or 1) - (0 if moved_by_fastq else 1),
                    "dead_lettered_at": wire.number_of(attributes, wire.ATTR_DEAD_AT) or (
                        int(system.get("SentTimestamp") or 0) / 1000),
                    "headers": delivery.headers, "properties": delivery.properties,
                    "body": delivery.body,
                })
            if entries:
                self._make_visible(entries)
        letters.sort(key=lambda r: r["dead_lettered_at"] or 0, reverse=True)
        return letters[:limit]

    def retry_dead_letter(self, queue: str, task_id: str) -> bool:
        """Send task ``task_id``'s letter from ``queue``'s dead-letter queue to ``queue``
        as a new message, then delete the letter.

        The letters are received as ``dead_letters()`` reads them, hidden for
        ``PEEK_VISIBILITY`` seconds, so a retry from elsewhere meanwhile does not find
        this one: two retries send it once. The others are made visible again. A failure
        between the send and the delete leaves both (at least once).
        """
        from ..protocol import Message

        dead = self._queue(wire.dead_queue_of(queue), create=False)
        if dead is None:
            return False
        read = [_Held(dead, m["ReceiptHandle"], m.get("MessageId", ""), m.get("Body", ""),
                      wire.sendable_attributes(m.get("MessageAttributes")), 0)
                for m in self._receive(dead, PEEK_MAX, 0, visibility=PEEK_VISIBILITY)]
        found = next((e for e in read if self._delivery(e).headers.get("id") == task_id), None)
        try:
            if found is not None:
                letter = self._delivery(found)
                self.publish_many([Message(letter.headers, letter.properties, letter.body,
                                           queue=queue)])
                self._delete([found])
        finally:
            others = [e for e in read if e is not found]
            if others:
                self._make_visible(others)
        return found is not None


def _size_batches(entries: list[dict]) -> list[list[dict]]:
    """Entries in SendMessageBatch-sized groups: ten at most, 256 KiB at most."""
    batches: list[list[dict]] = []
    size = 0
    for entry in entries:
        entry_size = len(entry["MessageBody"]) + sum(
            len(k) + len(v.get("StringValue", "")) + 16
            for k, v in (entry.get("MessageAttributes") or {}).items())
        if not batches or len(batches[-1]) >= BATCH_MAX or size + entry_size > BATCH_BYTES_MAX:
            batches.append([])
            size = 0
        batches[-1].append(entry)
        size += entry_size
    return batches
