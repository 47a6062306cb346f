"""Results sent back over AMQP to the caller's reply queue (Celery's ``rpc://``, §3.6).

Nothing is stored on a server. The client (the process calling ``delay()``) declares
one reply queue per backend instance (so per process: a fork gets a new one) and puts
its name in every task message's ``reply_to``; the worker publishes each state of the
task to the default exchange with that routing key and ``correlation_id`` = task id.
The client caches every reply it receives by correlation id, so results for other
tasks wait for their own ``get``. Results expire with the reply queue (``x-expires``),
or with the client's connection, since the queue is exclusive.

The connection is the app's broker URL (``amqp://``, ``amqps://`` or ``pyamqp://``),
through the rabbitmq-c driver when built (unless ``FASTQ_NO_SPEEDUPS=1``) else py-amqp.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from .. import serialization
from .._fork import getpid
from .._registry import mask_url
from .._time import now_isoformat
from ..brokers._amqp_tls import for_driver
from ..brokers.amqp import (
    DEFAULT_CONNECT_TIMEOUT,
    connection_params,
    load_driver,
    open_connection,
    parse_url,
)
from ..exceptions import (
    BrokerError,
    ConfigurationError,
    DecodeError,
    ResultTimeout,
    SecurityError,
)
from ..states import READY_STATES
from .base import Backend, decode_meta, decode_signed_meta, pending_meta

logger = logging.getLogger(__name__)

#: Keys of a record's ``extra`` dict that carry the request's reply address; popped
#: before the meta document is encoded.
REPLY_TO_KEY = "_reply_to"
CORRELATION_ID_KEY = "_correlation_id"

#: How many replies are kept for later ``get``s; the oldest are dropped beyond it, so a
#: client that never reads its results does not grow without bound.
MAX_CACHED = 10_000

#: Longest single wait on the socket while holding the lock, in seconds, so other
#: threads of the process get their turn (and see replies cached for them) quickly.
DRAIN_SLICE = 0.25

_AMQP_SCHEMES = ("amqp", "amqps", "pyamqp")

T = TypeVar("T")


class RPCBackend(Backend):
    """``rpc://``: replies over the broker's AMQP connection (options: ``broker_url``,
    required, the app passes its own; ``connect_timeout``; ``driver``; ``ssl``, the
    app's ``broker_use_ssl``). TLS options in the broker URL's query apply too."""

    capabilities = frozenset({"reply_to"})

    def __init__(self, url: str, *, broker_url: str | None = None, **options: Any) -> None:
        connect_timeout = float(options.pop("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
        driver = options.pop("driver", None)
        use_ssl = options.pop("ssl", None)
        super().__init__(url, **options)
        scheme = (broker_url or "").split("://", 1)[0].lower()
        if scheme not in _AMQP_SCHEMES:
            raise ConfigurationError(
                "the rpc:// result backend needs an AMQP broker (amqp://, amqps://, "
                f"pyamqp://), not {mask_url(broker_url) if broker_url else 'none'}")
        assert broker_url is not None
        self.broker_url = broker_url
        query = parse_url(broker_url)[1]
        # the same TLS as the broker's: its URL's ssl_* options and broker_use_ssl
        params = connection_params(broker_url, {} if use_ssl is None else {"ssl": use_ssl})
        self._driver_cls, self.driver_name = load_driver(scheme, driver or query.get("driver"))
        params["ssl"] = for_driver(params["ssl"], self.driver_name, params["host"])
        self._params = {**params, "connect_timeout": connect_timeout}
        # one connection per process, used by one thread at a time
        self._lock = threading.RLock()
        self._pid = getpid()
        self._conn: Any = None
        self._queue: str | None = None
        self._consuming = False
        self._cache: OrderedDict[str, dict] = OrderedDict()
        #: replies whose signature failed, by correlation id: ``get`` raises, not waits
        self._refused: dict[str, SecurityError] = {}
        self._content_type, self._content_encoding = "application/json", "utf-8"

    def sign_results(self, codec: serialization.Codec) -> None:
        """Send each result signed (``codec`` is the ``auth`` serializer), with its
        content type, as Celery's rpc backend does; verify each reply before caching it.
        The reply queue's own wait stays: it decodes through the verifying reader."""
        self._dump_meta = codec.dumps
        self._read_meta = functools.partial(decode_signed_meta, codec.loads)
        self.signed = True
        self._content_type, self._content_encoding = codec.content_type, codec.content_encoding

    # -- the connection --------------------------------------------------------------
    def _check_pid(self) -> None:
        if self._pid != getpid():
            # the parent's socket is shared with us: a polite close would end the
            # parent's connection, so let go of it, and of the parent's reply queue
            self._pid = getpid()
            self._lock = threading.RLock()
            self._conn = None
            self._queue = None
            self._consuming = False
            self._cache = OrderedDict()
            self._refused = {}

    def _connection(self) -> Any:
        """The open connection; with a reply queue in use, it is (re)declared and consumed."""
        self._check_pid()
        if self._conn is None or not self._conn.is_open:
            self._drop()
            self._conn = open_connection(self._driver_cls, self._params)
        if self._queue is not None and not self._consuming:
            self._declare_and_consume(self._conn, self._queue)
        return self._conn

    def _ready(self) -> Any:
        """The connection when ``_connection()`` would have nothing to do (open, in this
        process, its reply queue consumed if it has one), else None: every delay() and
        get() asks, and this is one test where that is several calls."""
        conn = self._conn
        if conn is not None and self._pid == getpid() and conn.is_open and (
                self._consuming or self._queue is None):
            return conn
        return None

    def _declare_and_consume(self, conn: Any, queue: str) -> None:
        arguments = {"x-expires": int(self.expires * 1000)} if self.expires else {}
        # exclusive + auto-delete: nobody else reads it, and it goes with this client
        conn.declare_queue(queue, durable=False, exclusive=True, auto_delete=True,
                           arguments=arguments)
        conn.consume(queue, no_ack=True)
        self._consuming = True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._consuming = False
        if conn is not None:
            conn.close()

    def _call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(connection)`` under the lock, retrying once on a fresh connection."""
        with self._lock:
            try:
                conn = self._ready()
                return fn(conn if conn is not None else self._connection())
            except BrokerError as exc:
                logger.debug("rpc backend: %s failed (%s); reconnecting", what, exc)
                self._drop()
            try:
                return fn(self._connection())
            except BrokerError as exc:
                self._drop()
                raise ConnectionError(f"result backend rpc:// on {mask_url(self.broker_url)} "
                                      f"failed during {what}: {exc}") from exc

    def close(self) -> None:
        self._check_pid()
        with self._lock:
            self._drop()
            self._queue = None

    # -- client side -----------------------------------------------------------------
    @property
    def reply_queue(self) -> str:
        """This client's reply queue, declared (and consumed) on first use."""
        queue = self._queue
        if queue is not None and self._ready() is not None:
            # read at every delay(): what the slow path below would find, without its
            # lock and calls
            return queue
        self._check_pid()
        with self._lock:
            if self._queue is None:
                # a fresh uuid per backend instance, and so per process (the App and
                # _check_pid replace it after fork); threads share it under the lock
                self._queue = str(uuid.uuid4())
            self._call("declare the reply queue", lambda conn: None)
            return self._queue

    def _drain(self, timeout: float, most: int = 1000) -> None:
        """Move the replies that arrive within ``timeout`` s into the cache, up to ``most``."""
        if self._queue is None:
            return  # nothing was sent from here, so nothing can come back

        def drain(conn: Any) -> list:
            return conn.drain(most, timeout)

        # the cache is updated under the lock too: another thread may be draining
        with self._lock:
            for delivery in self._call("receive replies", drain):
                self._remember(delivery[5], delivery[7])

    def _remember(self, properties: dict, body: bytes) -> None:
        """Cache one reply under its correlation id (the latest state wins)."""
        try:
            meta = self._read_meta(body)
        except SecurityError as exc:
            # unverified: nothing of it is used but the id to fail that task's wait with
            refused = properties.get("correlation_id")
            logger.warning("rpc backend: refused a reply of task %s: %s", refused, exc)
            if isinstance(refused, str) and len(self._refused) < MAX_CACHED:
                self._refused[refused] = exc
                self._cache.pop(refused, None)
            return
        except DecodeError as exc:
            logger.warning("rpc backend: dropped an undecodable reply: %s", exc)
            return
        # very old senders carry the id only in the body
        task_id = properties.get("correlation_id") or meta.get("task_id")
        if not isinstance(task_id, str):
            return
        current = self._cache.get(task_id)
        if current is not None and current["status"] in READY_STATES \
                and meta["status"] not in READY_STATES:
            return  # a late non-final state never hides the outcome
        self._cache[task_id] = meta
        self._cache.move_to_end(task_id)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)

    def get(self, task_id: str) -> dict:
        self._check_pid()
        self._drain(0.0)
        if self._refused:
            self._raise_refused((task_id,))
        meta = self._cache.get(task_id)
        return dict(meta) if meta is not None else pending_meta(task_id)

    def get_many(self, task_ids: Sequence[str]) -> list[dict]:
        self._check_pid()
        self._drain(0.0)
        if self._refused:
            self._raise_refused(task_ids)
        # the cache holds verified documents already: copies of them, not re-verified
        found = self._get_many(task_ids)
        return [decode_meta(found[t]) if t in found else pending_meta(t) for t in task_ids]

    def _raise_refused(self, task_ids: Sequence[str]) -> None:
        for task_id in task_ids:
            if task_id in self._refused:
                raise self._refused.pop(task_id)

    def wait(self, task_id: str, timeout: float | None = None,
             interval: float | None = None) -> dict:
        """Consume the reply queue until ``task_id`` is ready; other replies are cached.

        Raises:
            ResultTimeout: ``timeout`` seconds passed first.
        """
        self._check_pid()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._refused:
                self._raise_refused((task_id,))
            meta = self._cache.get(task_id)
            if meta is not None and meta["status"] in READY_STATES:
                return dict(meta)
            left = DRAIN_SLICE if deadline is None else deadline - time.monotonic()
            if left <= 0:
                status = meta["status"] if meta is not None else "PENDING"
                raise ResultTimeout(f"task {task_id} is still {status} after {timeout}s")
            if self._queue is None:
                # never published from here: no reply can come, just honour the timeout
                time.sleep(min(left, DRAIN_SLICE))
                continue
            # one reply at a time: looking for more after it costs two system calls
            # (an empty read, a poll) on the way back to the caller; the loop comes back
            # for the next one, from the driver's buffer while it holds some
            self._drain(min(left, DRAIN_SLICE), most=1)

    def forget(self, task_id: str) -> None:
        self._cache.pop(task_id, None)
        self._refused.pop(task_id, None)

    # -- worker side -----------------------------------------------------------------
    def store_many(self, records: Iterable[tuple[str, str, Any, str | None, dict | None]]) -> None:
        """Publish each record to its request's ``reply_to`` queue (no reply_to: dropped)."""
        self.send_replies(self.encode_replies(records))

    def send_replies(self, replies: list[tuple[str, bytes, dict]]) -> None:
        """Publish ``encode_replies``' messages on this backend's own connection."""
        if not replies:
            return

        def publish(conn: Any) -> None:
            for reply_to, body, properties in replies:
                # §3.6.2; a vanished reply queue makes this silently unroutable
                conn.publish("", reply_to, body, properties, {})

        self._call("publish results", publish)

    def encode_replies(self, records: Iterable[tuple[str, str, Any, str | None, dict | None]],
                       ) -> list[tuple[str, bytes, dict]]:
        """The reply messages of ``records``: ``(reply_to, body, properties)`` for the
        default exchange. A worker whose broker is this backend's RabbitMQ sends them
        itself, with the acks (``AMQPBroker.ack_many_with_replies``)."""
        replies = []
        content_type, content_encoding = self._content_type, self._content_encoding
        done = now_isoformat()  # one timestamp for the batch
        for task_id, state, result, traceback, extra in records:
            extra = dict(extra) if extra else {}
            reply_to = extra.pop(REPLY_TO_KEY, None)
            correlation_id = extra.pop(CORRELATION_ID_KEY, None) or task_id
            if not reply_to:
                logger.debug("rpc backend: %s of task %s not sent: its message has no "
                             "reply_to", state, task_id)
                continue
            body = self.encode_meta(task_id, state, result, traceback, extra or None, done)
            replies.append((reply_to, body, {
                "content_type": content_type, "content_encoding": content_encoding,
                "delivery_mode": 1, "priority": 0, "correlation_id": correlation_id}))
        return replies

    # -- primitives: there is no store to read from or write to ----------------------
    def _get_many(self, task_ids: Sequence[str]) -> dict[str, bytes]:
        return {t: serialization.json_dumps(self._cache[t]) for t in task_ids if t in self._cache}

    def _set_many(self, items: Sequence[tuple[str, str, bytes]], expires_at: float | None) -> None:
        # reached only without a reply address (store_many is overridden): nowhere to send
        logger.debug("rpc backend: %d result(s) without reply_to not sent", len(items))

    def _delete(self, task_id: str) -> None:
        self._cache.pop(task_id, None)
