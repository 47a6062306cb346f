"""The Redis broker: kombu's Redis queues on the wire, with leases instead of a visibility timeout.

Producers LPUSH kombu's JSON envelope (``celery-protocol.md`` §2.2) onto the queue's
list or priority band (§2.5, band 0 first), so Celery clients and workers share queues
with fastq both ways. Consumers claim in batches with one Lua script that moves
envelopes into ``fastq:held`` and scores their lease in ``fastq:leases``; a keeper
thread in the holding process extends those leases every third of ``lease_seconds``,
and every consumer's fetch returns lapsed claims to their queue first. A worker killed
with ``kill -9`` therefore loses nothing, and a task that runs longer than the lease
runs once (Celery#5935 is the fixed-visibility-timeout alternative). Key layout and
scripts: ``fastq/brokers/_redis_lua.py``.
"""

from __future__ import annotations

import base64
import bisect
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .. import serialization
from .._fork import getpid
from .._registry import mask_url
from ..exceptions import BrokerConnectionLost, BrokerError, ConfigurationError
from . import _redis_lua
from ._events import EVENT_EXCHANGE, RedisEventChannel
from ._kombu import envelope as kombu_envelope
from ._kombu import unpack
from ._lease import LeaseKeeping
from ._mailbox import (
    PIDBOX_EXCHANGE,
    REPLY_EXCHANGE,
    Mailbox,
    decode_command,
    pidbox_headers,
    reply_body,
    request_with_reply,
)
from .base import DEFAULT_MAX_REDELIVERIES, Broker, Delivery, ServerLossInFetch

logger = logging.getLogger(__name__)

#: Seconds a claim stays valid without renewal; the holder renews every third of it.
DEFAULT_LEASE_SECONDS = 30.0
#: Longest idle wait between claim attempts on queues other than the first, in seconds.
DEFAULT_POLL_INTERVAL_MAX = 0.05
#: kombu's priority bands and the separator in their list names (§2.5).
DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEP = "\x06\x16"
#: Dead-letter lists are capped at this many records and expire this long after the last.
DEFAULT_DEAD_LETTER_MAX = 10_000
DEFAULT_DEAD_LETTER_TTL = 30 * 86400
#: Lapsed claims restored, and due delayed messages promoted per band, by one fetch.
RESTORE_LIMIT = 100
PROMOTE_LIMIT = 1000

#: Options that may also be given in the URL's query string.
_URL_OPTIONS = {"global_keyprefix": str, "master_name": str, "lease_seconds": float,
                "poll_interval_max": float, "publish_timeout": float}
_KNOWN_OPTIONS = frozenset({
    "lease_seconds", "poll_interval_max", "global_keyprefix", "priority_steps",
    "master_name", "sentinel_kwargs", "socket_timeout", "socket_connect_timeout",
    "socket_keepalive", "max_connections", "dead_letter_max", "dead_letter_ttl",
    "health_check_interval", "client_name"})

#: Errors after which the same command can succeed once Redis is reachable again.
_CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError)


def parse_url(url: str) -> dict[str, Any]:
    """Split a broker URL into how to connect and the fastq options it carries.

    ``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS),
    ``redis+socket:///path/to.sock[?db=N]`` and kombu's sentinel form
    ``redis+sentinel://[:password@]host:port[;sentinel://host:port...][/db]``, each with
    fastq options (``global_keyprefix``, ``master_name``, ...) in the query string.

    Returns a dict: ``kind`` (``tcp``, ``unix``, ``sentinel``), ``url`` (for redis-py,
    ``tcp``/``unix``), ``sentinels`` (``[(host, port)]``), ``db``, ``username``,
    ``password``, ``options`` (the fastq options found in the query).
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigurationError(f"not a Redis URL: {mask_url(url)!r}")
    rest, _, query = rest.partition("?")
    options: dict[str, Any] = {}
    passthrough = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in _URL_OPTIONS:
            options[key] = _URL_OPTIONS[key](value)
        else:
            passthrough.append((key, value))
    rest_query = "&".join(f"{k}={v}" for k, v in passthrough)
    parsed: dict[str, Any] = {"kind": "tcp", "url": None, "sentinels": [], "db": 0,
                              "username": None, "password": None, "options": options}
    if scheme in ("redis", "rediss"):
        parsed["url"] = f"{scheme}://{rest}" + (f"?{rest_query}" if rest_query else "")
        path = urlsplit(parsed["url"]).path.strip("/")
        parsed["db"] = int(path) if path.isdigit() else 0
        return parsed
    if scheme == "redis+socket":
        parsed["kind"] = "unix"
        db = dict(passthrough).get("db") or dict(passthrough).get("virtual_host") or "0"
        parsed["db"] = int(db)
        others = "&".join(f"{k}={v}" for k, v in passthrough if k not in ("db", "virtual_host"))
        parsed["url"] = f"unix://{rest}?db={parsed['db']}" + (f"&{others}" if others else "")
        return parsed
    if scheme == "redis+sentinel":
        parsed["kind"] = "sentinel"
        for index, part in enumerate(rest.split(";")):
            part = part.strip()
            if not part:
                continue
            if "://" in part:
                part = part.split("://", 1)[1]
            split = urlsplit(f"//{part}")
            if index == 0 or parsed["password"] is None:
                if split.password:
                    parsed["password"] = unquote(split.password)
                if split.username:
                    parsed["username"] = unquote(split.username)
            path = split.path.strip("/")
            if path.isdigit():
                parsed["db"] = int(path)
            parsed["sentinels"].append((split.hostname or "localhost", split.port or 26379))
        if not parsed["sentinels"]:
            raise ConfigurationError(f"no sentinel hosts in {mask_url(url)!r}")
        return parsed
    raise ConfigurationError(f"not a Redis URL scheme: {scheme!r} in {mask_url(url)!r}")


def connect_client(url: str, parsed: dict[str, Any], options: dict[str, Any]) -> redis.Redis:
    """A redis-py client for a parsed URL; connection errors surface at first use."""
    kwargs: dict[str, Any] = {
        # one immediate retry: a pooled connection that died with a restarted server
        # fails its first command, and a fresh connection then succeeds
        "retry": Retry(NoBackoff(), 1),
        "socket_timeout": options.get("socket_timeout", 5.0),
        "socket_connect_timeout": options.get("socket_connect_timeout", 2.0),
    }
    for name in ("socket_keepalive", "max_connections", "health_check_interval", "client_name"):
        if options.get(name) is not None:
            kwargs[name] = options[name]
    if parsed["kind"] == "sentinel":
        from redis.sentinel import Sentinel

        master_name = options.get("master_name")
        if not master_name:
            raise ConfigurationError(
                "redis+sentinel:// needs the master_name transport option "
                "(broker_transport_options={'master_name': 'mymaster'} or ?master_name=)")
        kwargs.pop("max_connections", None)
        sentinel = Sentinel(parsed["sentinels"], sentinel_kwargs=options.get("sentinel_kwargs"),
                            username=parsed["username"], password=parsed["password"], **kwargs)
        return sentinel.master_for(master_name, db=parsed["db"])
    pool = redis.ConnectionPool.from_url(parsed["url"], **kwargs)
    return redis.Redis(connection_pool=pool)


_noted_visibility_timeout = False


def _note_visibility_timeout() -> None:
    """Celery-on-Redis configs nearly all set ``visibility_timeout``; it has nothing to
    do here, so it is dropped with one note per process rather than refused."""
    global _noted_visibility_timeout
    if not _noted_visibility_timeout:
        _noted_visibility_timeout = True
        logger.warning(
            "broker_transport_options visibility_timeout is not needed and is ignored: the "
            "Redis broker leases each claimed message to its worker, which extends the lease "
            "while the task runs, so a long task is never redelivered early and a dead "
            "worker's tasks return after broker_lease_seconds")


class RedisBroker(LeaseKeeping, ServerLossInFetch, Broker):
    """``redis://host:port/db``, ``rediss://`` (TLS), ``redis+socket:///path``,
    ``redis+sentinel://host:port;sentinel://host:port/db`` (with ``master_name``).

    Options: ``lease_seconds``, ``poll_interval_max``, ``global_keyprefix`` (kombu's:
    prefixes every key), ``priority_steps`` (kombu's bands, default ``[0, 3, 6, 9]``),
    ``master_name``/``sentinel_kwargs`` (sentinel), ``socket_timeout``,
    ``socket_connect_timeout``, ``socket_keepalive``, ``max_connections``,
    ``health_check_interval``, ``client_name``, ``dead_letter_max``, ``dead_letter_ttl``,
    and those of every broker (``publish_timeout``, also in the URL's query).

    Priorities follow kombu on Redis: **0 is served first**, 9 last (§0 #3).
    ``self.state`` is ``"consuming"`` or ``"reconnecting"`` (Redis unreachable: fetch
    returns ``[]`` and retries with backoff; acks are kept and sent once it is back).
    """

    capabilities = frozenset({"delay", "priority", "lease", "dead_letter", "control",
                              "events"})
    reconnect_delays = (0.05, 1.0)

    def __init__(self, url: str, *, max_redeliveries: int = DEFAULT_MAX_REDELIVERIES,
                 **options: Any) -> None:
        parsed = parse_url(url)
        options = {**parsed["options"], **options}
        super().__init__(url, max_redeliveries=max_redeliveries, **options)
        if self.options.pop("visibility_timeout", None) is not None:
            _note_visibility_timeout()
        unknown = set(self.options) - _KNOWN_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) for the Redis broker: {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(_KNOWN_OPTIONS))})")
        self.lease_seconds = float(options.get("lease_seconds", DEFAULT_LEASE_SECONDS))
        if self.lease_seconds <= 0:
            raise ConfigurationError(f"lease_seconds must be positive, not {self.lease_seconds!r}")
        self.poll_interval_max = float(options.get("poll_interval_max",
                                                   DEFAULT_POLL_INTERVAL_MAX))
        self.prefix = str(options.get("global_keyprefix") or "")
        steps = sorted({int(s) for s in options.get("priority_steps", DEFAULT_PRIORITY_STEPS)})
        if not steps or steps[0] != 0:
            raise ConfigurationError(f"priority_steps must start at 0, not {steps!r}")
        self.priority_steps = steps
        self.dead_letter_max = int(options.get("dead_letter_max", DEFAULT_DEAD_LETTER_MAX))
        self.dead_letter_ttl = int(options.get("dead_letter_ttl", DEFAULT_DEAD_LETTER_TTL))
        self._parsed = parsed
        self._held_key = self.prefix + "fastq:held"
        self._owners_key = self.prefix + "fastq:owners"
        self._leases_key = self.prefix + "fastq:leases"
        self.state = "consuming"
        self._lock = threading.Lock()
        self._pid = -1
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._token = ""
        self._held: set[str] = set()
        self._pending: list[tuple[str, list[str], tuple]] = []
        self._known: set[str] = set()
        self._bands: dict[tuple[str, ...], list[tuple[str, str]]] = {}
        self._rotation = 0
        self._keeper: threading.Thread | None = None
        self._stop = threading.Event()
        self._can_block: bool | None = None

    # -- connections -------------------------------------------------------------------
    @property
    def client(self) -> redis.Redis:
        """This process's redis-py client (a new one, and a new owner token, after fork)."""
        if self._pid != getpid():
            with self._lock:
                if self._pid != getpid():
                    # the parent's sockets and keeper are not ours; our claims must never
                    # pass as the parent's either, hence the fresh token
                    self._client = None
                    self._keeper = None
                    self._stop = threading.Event()
                    self._held = set()
                    self._pending = []
                    self._token = f"{socket.gethostname()}:{getpid()}:{uuid.uuid4().hex[:12]}"
                    self._pid = getpid()
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    made = connect_client(self.url, self._parsed, self.options)
                    # the scripts before the client: another thread that finds the client
                    # set reads no lock, and must find the scripts too
                    self._scripts = {name: made.register_script(getattr(_redis_lua, name))
                                     for name in ("CLAIM", "SETTLE", "EXTEND")}
                    self._client = made
                client = self._client
        return client

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a redis-py call; its errors become fastq's (connection loss: recoverable)."""
        try:
            return fn(*args, **kwargs)
        except _CONNECTION_ERRORS as exc:
            raise BrokerConnectionLost(
                f"Redis {mask_url(self.url)} unreachable during {what}: {exc}") from exc
        except redis.ResponseError as exc:
            text = str(exc)
            if text.startswith(("READONLY", "LOADING", "MASTERDOWN")):
                # a failover in progress (sentinel) or a restart still loading: transient
                raise BrokerConnectionLost(f"Redis {mask_url(self.url)} during {what}: "
                                           f"{text}") from exc
            raise BrokerError(f"Redis {mask_url(self.url)} refused {what}: {text}") from exc
        except redis.RedisError as exc:
            raise BrokerError(f"Redis {mask_url(self.url)} during {what}: {exc}") from exc

    def connect(self) -> None:
        self._call("connect", self.client.ping)

    def close(self) -> None:
        if self._pid != getpid():
            return
        self._stop_keeper(10)
        if self._pending:
            try:
                self._replay_pending()
            except BrokerError:
                logger.warning("could not settle %d message(s) on close; their leases will "
                               "lapse and they will be redelivered", len(self._pending))
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
            client.connection_pool.disconnect()

    # -- naming ------------------------------------------------------------------------
    def band_key(self, queue: str, priority: Any) -> str:
        """The list (without prefix) holding ``queue``'s messages of ``priority`` (§2.5)."""
        try:
            p = min(max(int(priority or 0), 0), 9)
        except (TypeError, ValueError):
            p = 0
        step = self.priority_steps[bisect.bisect(self.priority_steps, p) - 1]
        return f"{queue}{PRIORITY_SEP}{step}" if step else queue

    def _queue_bands(self, queues: Sequence[str]) -> list[tuple[str, str]]:
        """(queue, band key) in claim order: each queue's bands, most urgent first."""
        key = tuple(queues)
        bands = self._bands.get(key)
        if bands is None:
            bands = [(q, f"{q}{PRIORITY_SEP}{s}" if s else q)
                     for q in queues for s in self.priority_steps]
            self._bands[key] = bands
            self._known.update(queues)
        return bands

    # -- producing -------------------------------------------------------------------
    def envelope(self, message: Any) -> bytes:
        """kombu's JSON envelope for ``message``, always complete (§0 #9)."""
        return kombu_envelope(message)

    def _publish(self, messages: Sequence[Any]) -> None:
        now = time.time()
        prefix = self.prefix
        commands: list[tuple[str, str, Any]] = []
        for m in messages:
            band = self.band_key(m.queue, m.properties.get("priority"))
            self._known.add(m.queue)
            raw = self.envelope(m)
            if m.not_before and m.not_before > now:
                commands.append(("zadd", f"{prefix}fastq:delayed:{band}", (raw, m.not_before)))
            elif commands and commands[-1][0] == "lpush" and commands[-1][1] == prefix + band:
                commands[-1][2].append(raw)  # one LPUSH of many values keeps their order
            else:
                commands.append(("lpush", prefix + band, [raw]))

        def send() -> None:
            with self.client.pipeline(transaction=True) as pipe:
                for op, key, value in commands:
                    if op == "lpush":
                        pipe.lpush(key, *value)
                    else:
                        pipe.zadd(key, {value[0]: value[1]})
                pipe.execute()

        # one MULTI/EXEC: all of the batch or none of it (base.publish_many retries)
        self._call("publish", send)

    # -- consuming -------------------------------------------------------------------
    def _claim(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        bands = self._queue_bands(queues)
        if len(queues) > 1:
            # rotate the first queue, as kombu's round-robin cycle does, so that a busy
            # queue cannot starve the others
            per = len(self.priority_steps)
            start = (self._rotation % len(queues)) * per
            self._rotation += 1
            bands = bands[start:] + bands[:start]
        prefix = self.prefix
        keys = [self._held_key, self._owners_key, self._leases_key]
        keys.extend(prefix + band for _q, band in bands)
        keys.extend(f"{prefix}fastq:delayed:{band}" for _q, band in bands)
        client = self.client
        reply = self._call("fetch", self._scripts["CLAIM"], keys=keys, args=[
            self._token, self.lease_seconds, limit, len(bands), prefix, RESTORE_LIMIT,
            PROMOTE_LIMIT], client=client)
        if not reply:
            return []
        deliveries = []
        tags = []
        for i in range(0, len(reply), 3):
            queue = bands[int(reply[i]) - 1][0]
            tag = reply[i + 1].decode()
            tags.append(tag)
            deliveries.append(self._delivery(tag, reply[i + 2], queue))
        with self._lock:
            self._held.update(tags)
        self._ensure_keeper()
        return deliveries

    @staticmethod
    def _delivery(tag: str, raw: bytes, queue: str) -> Delivery:
        """A Delivery from a stored envelope; a malformed one still becomes a Delivery
        (empty headers, raw body) so the worker can dead-letter it rather than lose it."""
        try:
            envelope = serialization.json_loads(raw)
            headers, properties, body = unpack(envelope)
            count = envelope.get("fastq-redeliveries")
            redeliveries = count if isinstance(count, int) else 0
            if not redeliveries and isinstance(headers, dict) and headers.get("redelivered"):
                redeliveries = 1  # restored by a Celery worker's kombu: counted once
        except (ValueError, TypeError, KeyError, AttributeError):
            return Delivery(tag, {}, {}, raw, queue, 0)
        return Delivery(tag, headers, properties, body, queue, redeliveries)

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        if not queues:
            raise ConfigurationError("fetch needs at least one queue")
        deadline = time.monotonic() + max(timeout, 0.0)
        wait = 0.001
        while True:
            try:
                if self._pending:
                    self._replay_pending()
                deliveries = self._claim(queues, limit)
                self._on_reachable()
                if deliveries:
                    return deliveries
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._idle_wait(self.prefix + queues[0], min(wait, left))
                wait = min(wait * 2, self.poll_interval_max)
            except BrokerConnectionLost as exc:
                if not self._lost_in_fetch(exc, deadline):
                    return []

    def _idle_wait(self, key: str, seconds: float) -> None:
        """Wait up to ``seconds``, returning early when ``key`` (the first queue) gets work.

        ``BLMOVE key key RIGHT RIGHT`` blocks until the list is non-empty and then moves
        its tail onto itself: the list is unchanged, and the waiting is done by Redis, not
        by polling. Other queues and bands are seen at the next claim; the wait grows to
        ``poll_interval_max`` while idle, so that is their worst-case latency.
        """
        if self._can_block is None:
            info = self._call("server version", self.client.info, "server")
            version = tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:2])
            self._can_block = version >= (6, 2)
        if self._can_block:
            self._call("idle wait", self.client.execute_command, "BLMOVE", key, key,
                       "RIGHT", "RIGHT", max(round(seconds, 3), 0.001))
        else:
            time.sleep(seconds)

    def _server_name(self) -> str:
        return f"Redis {mask_url(self.url)}"

    # -- settling --------------------------------------------------------------------
    def _settle(self, mode: str, tags: list[str], extra: tuple = ("", "", "", "")) -> int:
        """Run the SETTLE script over ``tags`` we hold; kept for later if Redis is down."""
        if not tags:
            return 0
        client = self.client
        try:
            if self._pending:
                self._replay_pending()
            done = self._call(mode, self._scripts["SETTLE"], keys=[
                self._held_key, self._owners_key, self._leases_key],
                args=[self._token, self.prefix, mode, *extra, *tags], client=client)
        except BrokerConnectionLost as exc:
            # Keep the decision: replayed in order once Redis is back, before any new
            # claim. The claims stay ours meanwhile; if this process dies first, their
            # leases lapse and they are redelivered (at least once, never lost).
            self._on_unreachable(exc)
            self._pending.append((mode, tags, extra))
            return 0
        with self._lock:
            self._held.difference_update(tags)
        return int(done)

    def _replay_pending(self) -> None:
        while self._pending:
            mode, tags, extra = self._pending[0]
            self._call(f"{mode} (replayed)", self._scripts["SETTLE"], keys=[
                self._held_key, self._owners_key, self._leases_key],
                args=[self._token, self.prefix, mode, *extra, *tags], client=self.client)
            self._pending.pop(0)
            with self._lock:
                self._held.difference_update(tags)

    def ack_many(self, tags: Iterable[Any]) -> None:
        self._settle("ack", [str(t) for t in tags])

    def release_many(self, tags: Iterable[Any]) -> None:
        self._settle("release", [str(t) for t in tags])

    def reject(self, tag: Any, requeue: bool) -> None:
        if not requeue:
            self.dead_letter(tag, "rejected")
            return
        self._settle("requeue", [str(tag)])

    def defer(self, delivery: Delivery, not_before: float) -> None:
        # re-timed in place: the same envelope waits in the delayed set, not counted
        self._settle("defer", [str(delivery.tag)], (repr(float(not_before)), "", "", ""))

    def dead_letter(self, tag: Any, reason: str) -> None:
        head = serialization.json_dumps({"reason": reason, "dead_lettered_at": time.time()})
        # the script completes the object with the queue and the envelope, verbatim
        head = head.decode()[:-1] + ", "
        self._settle("dead", [str(tag)], (head, str(self.dead_letter_max),
                                          str(self.dead_letter_ttl), PRIORITY_SEP))

    # -- leases ------------------------------------------------------------------------
    _keeper_name = "fastq-redis-lease-keeper"

    def _lease_period(self) -> float:
        return self.lease_seconds

    def extend_leases(self) -> int:
        """Push the lease of every message this instance holds a full period ahead."""
        with self._lock:
            held = list(self._held)
        if not held:
            return 0
        lost = self._call("extend leases", self._scripts["EXTEND"],
                          keys=[self._owners_key, self._leases_key],
                          args=[self._token, self.lease_seconds, *held], client=self.client)
        if lost:
            lost_tags = {t.decode() for t in lost}
            with self._lock:
                self._held.difference_update(lost_tags)
            logger.warning("%d claimed message(s) were no longer ours when extending their "
                           "leases (the lease lapsed); they may run twice", len(lost_tags))
        return len(held) - len(lost or ())

    # -- administration --------------------------------------------------------------
    def _all_keys(self, queue: str) -> tuple[list[str], list[str]]:
        bands = [self.prefix + band for _q, band in self._queue_bands((queue,))]
        delayed = [f"{self.prefix}fastq:delayed:{band}" for _q, band in
                   self._queue_bands((queue,))]
        return bands, delayed

    def purge(self, queue: str) -> int:
        bands, delayed = self._all_keys(queue)

        def run() -> int:
            with self.client.pipeline(transaction=True) as pipe:
                for key in bands:
                    pipe.llen(key)
                for key in delayed:
                    pipe.zcard(key)
                pipe.delete(*bands, *delayed)
                counts = pipe.execute()
            return sum(counts[:-1])

        return self._call("purge", run)

    def queue_sizes(self) -> dict[str, int]:
        queues = sorted(self._known)
        if not queues:
            return {}

        def run() -> list[int]:
            with self.client.pipeline(transaction=False) as pipe:
                for queue in queues:
                    bands, delayed = self._all_keys(queue)
                    for key in bands:
                        pipe.llen(key)
                    for key in delayed:
                        pipe.zcard(key)
                return pipe.execute()

        counts = self._call("queue sizes", run)
        per = 2 * len(self.priority_steps)
        return {q: sum(counts[i * per:(i + 1) * per]) for i, q in enumerate(queues)}

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[dict]:
        client = self.client
        if queue is not None:
            keys = [f"{self.prefix}fastq:dead:{queue}"]
        else:
            pattern = f"{self.prefix}fastq:dead:*"
            keys = list(self._call("dead letters", lambda: list(
                client.scan_iter(match=pattern, count=500))))

        def run() -> list[list[bytes]]:
            with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.lrange(key, 0, limit - 1)
                return pipe.execute()

        letters = []
        for records in self._call("dead letters", run) if keys else []:
            for raw in records:
                try:
                    record = serialization.json_loads(raw)
                except ValueError:  # e.g. a non-UTF-8 envelope: still listed, as bytes
                    record = {"queue": queue, "reason": "unknown", "envelope": raw}
                envelope = record.get("envelope")
                if isinstance(envelope, dict):
                    envelope = serialization.json_dumps(envelope)
                elif isinstance(envelope, str):
                    envelope = envelope.encode("utf-8", "surrogateescape")
                delivery = self._delivery("", envelope or b"", record.get("queue", ""))
                record.update(headers=delivery.headers, properties=delivery.properties,
                              body=delivery.body, deliveries=delivery.redeliveries + 1)
                letters.append(record)
        letters.sort(key=lambda r: r.get("dead_lettered_at") or 0, reverse=True)
        return letters[:limit]

    def retry_dead_letter(self, queue: str, task_id: str) -> bool:
        from ..protocol import Message

        key = f"{self.prefix}fastq:dead:{queue}"
        for raw in self._call("dead letters", lambda: self.client.lrange(key, 0, -1)):
            try:
                envelope = serialization.json_loads(raw).get("envelope")
            except (ValueError, AttributeError):
                continue
            if not isinstance(envelope, dict):
                continue
            delivery = self._delivery("", serialization.json_dumps(envelope), queue)
            if delivery.headers.get("id") != task_id:
                continue
            message = Message(delivery.headers, delivery.properties, delivery.body, queue=queue)
            band = self.prefix + self.band_key(queue, delivery.properties.get("priority"))
            self._known.add(queue)
            # removed and pushed in one step: two admins retrying the same letter at once
            # publish it once
            moved = self._call("retry dead letter", lambda raw=raw, message=message, band=band:
                               self.client.eval(_RETRY_DEAD_LETTER, 2, key, band, raw,
                                                self.envelope(message)))
            return bool(moved)
        return False

    # -- events ----------------------------------------------------------------------
    def event_channel(self, hostname: str) -> RedisEventChannel:
        return RedisEventChannel(self, hostname)

    def event_receiver(self) -> RedisEventReceiver:
        return RedisEventReceiver(self)

    # -- remote control --------------------------------------------------------------
    def mailbox(self, expires: float) -> RedisMailbox:
        return RedisMailbox(self, expires)


#: KEYS: dead-letter list, queue band. ARGV: the dead letter's record, the new envelope.
_RETRY_DEAD_LETTER = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
    redis.call('LPUSH', KEYS[2], ARGV[2])
    return 1
end
return 0
"""


class RedisMailbox(Mailbox):
    """kombu's fanout over Redis pub/sub (``celery-protocol.md`` §2.6): requests are
    PUBLISHed on ``<prefix>/<db>.celery.pidbox``, workers PSUBSCRIBE; replies are LPUSHed
    to the caller's list. Nothing persists: only running workers hear a request."""

    broker: RedisBroker

    def __init__(self, broker: RedisBroker, expires: float) -> None:
        super().__init__(broker, expires)
        self._subscription: PatternSubscription | None = None
        self.channel = f"{broker.prefix}/{broker._parsed['db']}.{PIDBOX_EXCHANGE}"

    @staticmethod
    def _envelope(body: dict, headers: dict, exchange: str, routing_key: str) -> bytes:
        return serialization.json_dumps({
            "body": base64.b64encode(serialization.json_dumps(body)).decode("ascii"),
            "content-encoding": "utf-8", "content-type": "application/json",
            "headers": headers,
            "properties": {"delivery_mode": 2, "priority": 0, "body_encoding": "base64",
                           "delivery_info": {"exchange": exchange, "routing_key": routing_key},
                           "delivery_tag": str(uuid.uuid4())}})

    def send(self, command: dict) -> None:
        broker = self.broker
        broker._call("control request", broker.client.publish, self.channel,
                     self._envelope(command, pidbox_headers(), PIDBOX_EXCHANGE, ""))

    def open(self, node: str) -> list[tuple[dict, float]]:
        self._subscription = PatternSubscription(self.broker, self.channel, "control")
        self._subscription.open()
        return []

    def receive(self, timeout: float) -> list[dict]:
        assert self._subscription is not None
        commands = []
        for data in self._subscription.receive(timeout):
            command = self._decode(data)
            if command is not None:
                commands.append(command)
        return commands

    @staticmethod
    def _decode(raw: bytes) -> dict | None:
        try:
            _headers, properties, body = unpack(serialization.json_loads(raw))
        except (ValueError, TypeError, KeyError, AttributeError):
            logger.warning("ignored a control message that is not a kombu envelope")
            return None
        return decode_command(body, properties.get("content_type"))

    def call(self, command: dict, timeout: float, limit: int | None = None) -> list[dict]:
        broker = self.broker
        prefix = broker.prefix
        oid = str(uuid.uuid4())
        queue = f"{oid}.{REPLY_EXCHANGE}"
        # the caller's reply list, bound in kombu's table so workers find it (§6.1)
        binding = f"{prefix}_kombu.binding.{REPLY_EXCHANGE}"
        member = f"{oid}\x06\x16\x06\x16{queue}"
        client = broker.client
        broker._call("control call", client.sadd, binding, member)
        replies: list[dict] = []
        try:
            request = request_with_reply(command, oid)
            self.send(request)
            deadline = time.monotonic() + timeout
            while limit is None or len(replies) < limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # BRPOP counts whole seconds on old servers: wait in short slices
                popped = broker._call("control call", client.brpop, [prefix + queue],
                                      timeout=min(remaining, 0.5))
                if popped is None:
                    continue
                try:
                    headers, _properties, body = unpack(serialization.json_loads(popped[1]))
                except (ValueError, TypeError, KeyError, AttributeError):
                    continue
                answer = reply_body(body, headers, request["ticket"])
                if answer is not None:
                    replies.append(answer)
        finally:
            broker._call("control call", client.srem, binding, member)
            broker._call("control call", client.delete, prefix + queue)
        return replies

    def reply(self, command: dict, body: dict) -> None:
        reply_to = command["reply_to"]
        exchange = reply_to.get("exchange") or REPLY_EXCHANGE
        routing_key = reply_to["routing_key"]
        broker = self.broker
        prefix = broker.prefix
        # kombu routes a direct exchange through its binding set: "<key>\x06\x16<pattern>
        # \x06\x16<queue>" members of _kombu.binding.<exchange> (§2.1)
        members = broker._call("control reply", broker.client.smembers,
                               f"{prefix}_kombu.binding.{exchange}")
        queues = []
        for member in members:
            key, _pattern, queue = member.decode().split("\x06\x16", 2)
            if key == routing_key:
                queues.append(queue)
        envelope = self._envelope(body, {"ticket": command["ticket"], "clock": 1},
                                  exchange, routing_key)
        for queue in queues or [f"{routing_key}.{exchange}"]:
            broker._call("control reply", broker.client.lpush, prefix + queue, envelope)

    def close(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            subscription.close()


class PatternSubscription:
    """A PSUBSCRIBE on a connection of its own (kombu's fanout readers, §2.6): the
    payloads of the messages published on channels matching ``pattern``."""

    def __init__(self, broker: RedisBroker, pattern: str, what: str) -> None:
        self.broker = broker
        self.pattern = pattern
        self.what = what
        self._pubsub: Any = None

    def open(self) -> None:
        broker = self.broker
        # waits as long as get_message says, not the broker's socket timeout
        options = {**broker.options, "socket_timeout": None}
        client = connect_client(broker.url, broker._parsed, options)
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        broker._call(f"{self.what} subscribe", self._pubsub.psubscribe, self.pattern)

    def receive(self, timeout: float) -> list[bytes]:
        """What arrived within ``timeout`` seconds (all of it once the first is in)."""
        pubsub = self._pubsub
        call = self.broker._call
        what = f"{self.what} receive"
        payloads = []
        message = call(what, pubsub.get_message, timeout=timeout)
        while message is not None:
            if message.get("type") in ("pmessage", "message"):
                payloads.append(message["data"])
            message = call(what, pubsub.get_message, timeout=0)
        return payloads

    def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # pragma: no cover - closing is best effort
                pass


class RedisEventReceiver:
    """Reads every worker's events on Redis (``fastq events``) as Celery's receivers do:
    ``PSUBSCRIBE <prefix>/<db>.celeryev/*``, the pattern kombu makes of the ``#`` binding
    (§2.6), so fastq's and Celery's workers are heard alike."""

    def __init__(self, broker: RedisBroker) -> None:
        topic = f"{broker.prefix}/{broker._parsed['db']}.{EVENT_EXCHANGE}/*"
        self._subscription = PatternSubscription(broker, topic, "events")
        self._opened = False

    def open(self) -> None:
        """Subscribe now: only events published from here on are heard (pub/sub keeps
        nothing)."""
        if not self._opened:
            self._subscription.open()
            self._opened = True

    def receive(self, timeout: float) -> list[dict]:
        """The events that arrived within ``timeout`` seconds, a ``task.multi`` batch
        unpacked; a message that is not a kombu envelope of JSON is skipped."""
        self.open()
        events: list[dict] = []
        for data in self._subscription.receive(timeout):
            try:
                _headers, _properties, body = unpack(serialization.json_loads(data))
                decoded = serialization.json_loads(body)
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
            events.extend(e for e in (decoded if isinstance(decoded, list) else [decoded])
                          if isinstance(e, dict))
        return events

    def close(self) -> None:
        self._subscription.close()
