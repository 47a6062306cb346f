"""Remote control of workers: revoking tasks, over Celery's pidbox on RabbitMQ and Redis.

A revoke reaches every worker consuming from the broker; each keeps the revoked ids in
a bounded ``RevokedSet`` (Celery's defaults: 50,000 ids, 3 hours) that the consumer
tests once per task when it receives it and once more just before it runs, so a task
already prefetched is caught too. How a revoke travels:

- **RabbitMQ**: Celery's wire format. The command is published to the ``celery.pidbox``
  fanout exchange; each worker consumes (no ack) its own auto-delete queue
  ``<nodename>.celery.pidbox`` (``celery-protocol.md`` §6). Celery's ``control.revoke``
  and ``celery control revoke`` reach fastq workers, and fastq's revoke reaches Celery
  workers. A worker started after the revoke does not learn of it (the queue lives only
  while its worker does; Celery fills the gap with its "mingle" start-up exchange).
- **Redis**: kombu's fanout, ``PUBLISH <prefix>/<db>.celery.pidbox <envelope>`` received
  by ``PSUBSCRIBE`` (§2.6). No persistence: only running workers hear it.
- **SQLite / memory**: a ``fastq_control`` table (a list in the process, for memory)
  that workers poll about once a second by rowid. Rows older than
  ``worker_revoke_expires`` are deleted; a worker that starts later loads the revokes
  still current, so it never runs them.

The listener runs in a thread of the worker with its own broker connection and
reconnects by itself; the consumer's hot path only does a set membership test.
"""

from __future__ import annotations

import base64
import fnmatch
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .. import _green, serialization

if TYPE_CHECKING:
    from ..app import App
    from ..brokers.base import Broker

logger = logging.getLogger("fastq.worker.control")

#: Revoked task ids a worker remembers (Celery's ``REVOKES_MAX``).
DEFAULT_REVOKES_MAX = 50_000
#: Seconds a worker remembers a revoked id (Celery's ``REVOKE_EXPIRES``, 3 hours).
DEFAULT_REVOKE_EXPIRES = 10_800.0

#: The fanout exchange of control requests, and the direct exchange of replies (§6.1).
PIDBOX_EXCHANGE = "celery.pidbox"
REPLY_EXCHANGE = "reply.celery.pidbox"
#: A worker's queue outlives its connection by this long, and holds a request this long,
#: in milliseconds (Celery's ``control_queue_expires`` 10 s and ``control_queue_ttl`` 300 s).
PIDBOX_QUEUE_EXPIRES_MS = 10_000
PIDBOX_MESSAGE_TTL_MS = 300_000

#: Seconds between looks at the control table (SQLite, memory), and the longest wait for
#: one request on RabbitMQ/Redis before the revoked set is pruned.
POLL_INTERVAL = 1.0
#: Longest pause between attempts to reach an unreachable broker, in seconds.
RECONNECT_BACKOFF_MAX = 5.0

CONTROL_SCHEMA = """
CREATE TABLE IF NOT EXISTS fastq_control (
    id       INTEGER PRIMARY KEY,
    sent_at  REAL NOT NULL,
    command  BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS fastq_control_sent_at ON fastq_control (sent_at);
"""


class RevokedSet:
    """Task ids revoked recently: at most ``maxlen``, each kept ``expires`` seconds.

    The listener adds and prunes; the consumer tests ``task_id in revoked.ids`` (a dict
    lookup, safe while the listener writes, without the Python call ``in revoked`` costs:
    about 40 ns against 100 ns here).
    """

    def __init__(self, maxlen: int = DEFAULT_REVOKES_MAX,
                 expires: float = DEFAULT_REVOKE_EXPIRES) -> None:
        self.maxlen = max(1, int(maxlen))
        self.expires = float(expires)
        #: task id -> unix time it was revoked, oldest first; read-only outside this class
        self.ids: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self):
        return iter(list(self.ids))

    def add(self, task_id: str, revoked_at: float | None = None) -> None:
        self.update((task_id,), revoked_at)

    def update(self, task_ids: Iterable[str], revoked_at: float | None = None) -> None:
        now = time.time()
        at = now if revoked_at is None else revoked_at
        if at < now - self.expires:
            return  # already forgotten everywhere else
        with self._lock:
            entries = self.ids
            for task_id in task_ids:
                entries[task_id] = at
                entries.move_to_end(task_id)
            while len(entries) > self.maxlen:
                entries.popitem(last=False)

    def prune(self, now: float | None = None) -> int:
        """Forget ids revoked more than ``expires`` seconds ago; return how many."""
        cutoff = (time.time() if now is None else now) - self.expires
        dropped = 0
        with self._lock:
            entries = self.ids
            while entries:
                oldest = next(iter(entries))
                if entries[oldest] >= cutoff:
                    break
                del entries[oldest]
                dropped += 1
        return dropped


def revoke_command(task_id: str | Iterable[str], terminate: bool = False,
                   signal: str = "SIGTERM") -> dict:
    """Celery's ``revoke`` request body (§6.4), for one id or several."""
    ids = [task_id] if isinstance(task_id, str) else list(task_id)
    return {"method": "revoke",
            "arguments": {"task_id": ids[0] if len(ids) == 1 else ids,
                          "terminate": bool(terminate), "signal": signal},
            "destination": None, "pattern": None, "matcher": None}


class Control:
    """``app.control``: commands for the workers consuming from the app's broker."""

    def __init__(self, app: App) -> None:
        self.app = app

    def revoke(self, task_id: str | Iterable[str], terminate: bool = False,
               signal: str = "SIGTERM", **_ignored: Any) -> None:
        """Tell every worker not to run these tasks.

        A worker that receives one of them later, or holds it prefetched, stores
        REVOKED (``TaskRevokedError``) and acks it. A task already running finishes:
        ``terminate`` is sent (Celery workers honour it) but fastq workers ignore it.
        """
        self.broadcast(revoke_command(task_id, terminate, signal))

    def broadcast(self, command: dict) -> None:
        """Publish a control request (a cast: no replies are collected)."""
        mailbox_for(self.app.broker, self.app.conf.worker_revoke_expires).send(command)


# -- mailboxes: one per kind of broker ---------------------------------------------------
class Mailbox:
    """Where control requests travel for one broker; one instance per thread.

    ``send`` publishes a request to all workers. A worker's listener calls ``open``
    (returning requests still current that the broker kept for late starters), then
    ``receive`` in a loop, and ``reply`` when a request asks for an answer.
    """

    def __init__(self, broker: Broker, expires: float = DEFAULT_REVOKE_EXPIRES) -> None:
        self.broker = broker
        #: seconds a request stays current (``worker_revoke_expires``)
        self.expires = expires

    def send(self, command: dict) -> None:
        raise NotImplementedError

    def open(self, node: str) -> list[tuple[dict, float]]:
        return []

    def receive(self, timeout: float) -> list[dict]:
        raise NotImplementedError

    def reply(self, command: dict, body: dict) -> None:  # noqa: B027 - casts only by default
        """Answer ``command`` (which carries ``reply_to`` and ``ticket``)."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        pass


def _pidbox_headers() -> dict:
    # kombu's broadcast headers; "expires" 0 = none (Celery doesn't enforce it anyway)
    return {"clock": 1, "expires": 0}


class AMQPMailbox(Mailbox):
    """Celery's pidbox on RabbitMQ (§6.1-6.3)."""

    def __init__(self, broker: Broker, expires: float = DEFAULT_REVOKE_EXPIRES) -> None:
        super().__init__(broker, expires)
        self._conn: Any = None
        self._queue = ""

    def _connection(self) -> Any:
        if self._conn is None or not self._conn.is_open:
            if self._conn is not None:
                self._conn.close()
            self._conn = self.broker._new_connection()  # type: ignore[attr-defined]
            self._conn.declare_exchange(PIDBOX_EXCHANGE, "fanout", durable=False)
        return self._conn

    def send(self, command: dict) -> None:
        try:
            self._connection().publish(
                PIDBOX_EXCHANGE, "", serialization.json_dumps(command),
                {"content_type": "application/json", "content_encoding": "utf-8",
                 "delivery_mode": 2}, _pidbox_headers())
        finally:
            self.close()

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
        commands = []
        conn = self._connection()
        if _green.patched and type(conn).__module__ == "fastq._speedups._amqp":
            # this "thread" is a greenlet: waiting inside rabbitmq-c would stall the hub
            deliveries = conn.drain(100, 0.0)
            if not deliveries:
                _green.wait_readable(conn.fileno(), timeout)
                deliveries = conn.drain(100, 0.0)
        else:
            deliveries = conn.drain(100, timeout)
        for delivery in deliveries:
            properties, body = delivery[5], delivery[7]
            command = _decode_command(body, properties.get("content_type"))
            if command is not None:
                commands.append(command)
        return commands

    def reply(self, command: dict, body: dict) -> None:
        reply_to = command["reply_to"]
        conn = self._connection()
        conn.declare_exchange(reply_to.get("exchange") or REPLY_EXCHANGE, "direct",
                              durable=False)
        conn.publish(reply_to.get("exchange") or REPLY_EXCHANGE, reply_to["routing_key"],
                     serialization.json_dumps(body),
                     {"content_type": "application/json", "content_encoding": "utf-8",
                      "delivery_mode": 1},
                     {"ticket": command["ticket"], "clock": 1})

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class RedisMailbox(Mailbox):
    """kombu's fanout over Redis pub/sub (§2.6); replies are LPUSHed to the caller's list."""

    def __init__(self, broker: Broker, expires: float = DEFAULT_REVOKE_EXPIRES) -> None:
        super().__init__(broker, expires)
        self._pubsub: Any = None
        parsed = broker._parsed  # type: ignore[attr-defined]
        self._prefix = broker.prefix  # type: ignore[attr-defined]
        self.channel = f"{self._prefix}/{parsed['db']}.{PIDBOX_EXCHANGE}"

    def _envelope(self, body: dict, headers: dict, exchange: str, routing_key: str) -> bytes:
        return serialization.json_dumps({
            "body": base64.b64encode(serialization.json_dumps(body)).decode("ascii"),
            "content-encoding": "utf-8", "content-type": "application/json",
            "headers": headers,
            "properties": {"delivery_mode": 2, "priority": 0, "body_encoding": "base64",
                           "delivery_info": {"exchange": exchange, "routing_key": routing_key},
                           "delivery_tag": str(uuid.uuid4())}})

    def send(self, command: dict) -> None:
        self.broker.client.publish(  # type: ignore[attr-defined]
            self.channel, self._envelope(command, _pidbox_headers(), PIDBOX_EXCHANGE, ""))

    def open(self, node: str) -> list[tuple[dict, float]]:
        from ..brokers.redis import connect_client

        broker: Any = self.broker
        options = dict(broker.options)
        options["socket_timeout"] = None  # a subscriber waits as long as get_message says
        client = connect_client(broker.url, broker._parsed, options)
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(self.channel)
        return []

    def receive(self, timeout: float) -> list[dict]:
        message = self._pubsub.get_message(timeout=timeout)
        commands = []
        while message is not None:
            if message.get("type") in ("pmessage", "message"):
                command = _decode_envelope(message["data"])
                if command is not None:
                    commands.append(command)
            message = self._pubsub.get_message(timeout=0)
        return commands

    def reply(self, command: dict, body: dict) -> None:
        reply_to = command["reply_to"]
        exchange = reply_to.get("exchange") or REPLY_EXCHANGE
        routing_key = reply_to["routing_key"]
        client: Any = self.broker.client  # type: ignore[attr-defined]
        # kombu routes a direct exchange through its binding set: "<key>\x06\x16<pattern>
        # \x06\x16<queue>" members of _kombu.binding.<exchange> (§2.1)
        queues = []
        for member in client.smembers(f"{self._prefix}_kombu.binding.{exchange}"):
            key, _pattern, queue = member.decode().split("\x06\x16", 2)
            if key == routing_key:
                queues.append(queue)
        envelope = self._envelope(body, {"ticket": command["ticket"], "clock": 1},
                                  exchange, routing_key)
        for queue in queues or [f"{routing_key}.{exchange}"]:
            client.lpush(self._prefix + queue, envelope)

    def close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # pragma: no cover - closing is best effort
                pass


class SQLiteMailbox(Mailbox):
    """A ``fastq_control`` table in the broker's file, polled by rowid."""

    def __init__(self, broker: Broker, expires: float = DEFAULT_REVOKE_EXPIRES) -> None:
        super().__init__(broker, expires)
        self._conn: sqlite3.Connection | None = None
        self._last_id = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            from ..brokers.sqlite import connect

            conn = connect(self.broker.path)  # type: ignore[attr-defined]
            conn.executescript(CONTROL_SCHEMA)
            self._conn = conn
        return self._conn

    def send(self, command: dict) -> None:
        conn = self._connection()
        now = time.time()
        try:
            with conn:
                conn.execute("INSERT INTO fastq_control (sent_at, command) VALUES (?, ?)",
                             (now, serialization.json_dumps(command)))
                # keep the table as short as the workers' memory of revokes
                conn.execute("DELETE FROM fastq_control WHERE sent_at < ?",
                             (now - self.expires,))
        finally:
            self.close()

    def open(self, node: str) -> list[tuple[dict, float]]:
        conn = self._connection()
        rows = conn.execute("SELECT id, sent_at, command FROM fastq_control WHERE sent_at >= ? "
                            "ORDER BY id", (time.time() - self.expires,)).fetchall()
        (self._last_id,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM fastq_control"
                                        ).fetchone()
        return [(serialization.json_loads(row[2]), row[1]) for row in rows
                if row[0] <= self._last_id]

    def receive(self, timeout: float) -> list[dict]:
        time.sleep(timeout)
        rows = self._connection().execute(
            "SELECT id, command FROM fastq_control WHERE id > ? ORDER BY id",
            (self._last_id,)).fetchall()
        if rows:
            self._last_id = rows[-1][0]
        return [serialization.json_loads(row[1]) for row in rows]

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


#: memory:// brokers' control requests, by broker URL: [(sent_at, command)]
_MEMORY_REQUESTS: dict[str, list[tuple[float, dict]]] = {}
_MEMORY_LOCK = threading.Lock()


class MemoryMailbox(Mailbox):
    """A list per ``memory://`` URL in this process (the broker's own scope)."""

    def __init__(self, broker: Broker, expires: float = DEFAULT_REVOKE_EXPIRES) -> None:
        super().__init__(broker, expires)
        self._seen = 0

    def send(self, command: dict) -> None:
        with _MEMORY_LOCK:
            _MEMORY_REQUESTS.setdefault(self.broker.url, []).append((time.time(), command))

    def open(self, node: str) -> list[tuple[dict, float]]:
        with _MEMORY_LOCK:
            requests = list(_MEMORY_REQUESTS.get(self.broker.url, ()))
        self._seen = len(requests)
        cutoff = time.time() - self.expires
        return [(command, sent_at) for sent_at, command in requests if sent_at >= cutoff]

    def receive(self, timeout: float) -> list[dict]:
        time.sleep(timeout)
        with _MEMORY_LOCK:
            requests = _MEMORY_REQUESTS.get(self.broker.url, [])
            new = requests[self._seen:]
            self._seen = len(requests)
        return [command for _sent_at, command in new]


def mailbox_for(broker: Broker, expires: float = DEFAULT_REVOKE_EXPIRES) -> Mailbox:
    """The mailbox for this kind of broker; ``ConfigurationError`` when it has none."""
    from ..brokers.amqp import AMQPBroker
    from ..brokers.memory import MemoryBroker
    from ..brokers.sqlite import SQLiteBroker

    if isinstance(broker, AMQPBroker):
        return AMQPMailbox(broker, expires)
    if isinstance(broker, SQLiteBroker):
        return SQLiteMailbox(broker, expires)
    if isinstance(broker, MemoryBroker):
        return MemoryMailbox(broker, expires)
    try:
        from ..brokers.redis import RedisBroker
    except ImportError:  # pragma: no cover - the redis extra is not installed
        RedisBroker = None  # type: ignore[assignment,misc]  # noqa: N806
    if RedisBroker is not None and isinstance(broker, RedisBroker):
        return RedisMailbox(broker, expires)
    from ..exceptions import ConfigurationError

    raise ConfigurationError(f"remote control is not available on {type(broker).__name__}")


def _decode_command(body: bytes, content_type: str | None) -> dict | None:
    if content_type not in (None, "application/json"):
        logger.warning("ignored a control request in %s: only JSON is accepted", content_type)
        return None
    try:
        command = serialization.json_loads(body)
    except Exception:
        logger.warning("ignored a control request that is not valid JSON")
        return None
    return command if isinstance(command, dict) else None


def _decode_envelope(raw: bytes) -> dict | None:
    try:
        envelope = serialization.json_loads(raw)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        elif isinstance(body, str):
            body = body.encode()
    except Exception:
        logger.warning("ignored a control message that is not a kombu envelope")
        return None
    return _decode_command(body, envelope.get("content-type"))


# -- the worker side ---------------------------------------------------------------------
class ControlListener:
    """Receives control requests for one worker in a thread and applies them.

    Handles ``revoke`` (adds to ``revoked``) and ``ping``; other requests that ask
    for a reply get Celery's "no such command" error, the rest are ignored.
    """

    def __init__(self, broker: Broker, hostname: str, revoked: RevokedSet, *,
                 node: str | None = None) -> None:
        self.broker = broker
        self.hostname = hostname
        #: the name this listener's queue is declared under (differs for prefork children,
        #: which share their parent's hostname)
        self.node = node or hostname
        self.revoked = revoked
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mailbox: Mailbox | None = None

    def start(self) -> None:
        """Connect once now, so the worker consumes only after it can hear revokes (and
        knows those the broker kept), then listen in a daemon thread."""
        try:
            self._open()
        except Exception as exc:
            logger.warning("%s: cannot listen for remote control yet (%s); retrying in the "
                           "background", self.hostname, exc)
        self._thread = threading.Thread(target=self._run, name="fastq-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(POLL_INTERVAL + 1.0)
        self._close()

    def _open(self) -> None:
        self._close()
        mailbox = mailbox_for(self.broker, self.revoked.expires)
        kept = mailbox.open(self.node)
        self._mailbox = mailbox
        for command, sent_at in kept:
            if command.get("method") == "revoke":
                self.handle(command, sent_at)

    def _close(self) -> None:
        mailbox, self._mailbox = self._mailbox, None
        if mailbox is not None:
            try:
                mailbox.close()
            except Exception:  # pragma: no cover - closing is best effort
                pass

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if self._mailbox is None:
                    self._open()
                    logger.info("%s: listening for remote control again", self.hostname)
                assert self._mailbox is not None
                for command in self._mailbox.receive(POLL_INTERVAL):
                    self.handle(command)
                self.revoked.prune()
                backoff = 0.5
            except Exception as exc:
                if self._stop.is_set():
                    break
                logger.warning("%s: remote control connection lost (%s); reconnecting in "
                               "%.1fs", self.hostname, exc, backoff)
                self._close()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX)

    def handle(self, command: dict, sent_at: float | None = None) -> None:
        """Apply one request, if it is meant for this worker; reply when asked."""
        if not self._is_for_me(command):
            return
        method = command.get("method")
        arguments = command.get("arguments") or {}
        try:
            if method == "revoke":
                answer = self._revoke(sent_at=sent_at, **arguments)
            elif method == "ping":
                answer = {"ok": "pong"}
            else:
                answer = {"error": f"No such control command: {method}"}
        except Exception as exc:
            answer = {"error": repr(exc)}
        if command.get("reply_to") and command.get("ticket") and self._mailbox is not None:
            try:
                self._mailbox.reply(command, {self.hostname: answer})
            except Exception as exc:
                logger.warning("%s: could not reply to %r: %s", self.hostname, method, exc)

    def _revoke(self, task_id: Any = None, terminate: bool = False, signal: Any = None,
                sent_at: float | None = None, **_ignored: Any) -> dict:
        ids = [task_id] if isinstance(task_id, str) else [i for i in task_id or () if i]
        self.revoked.update(ids, sent_at)
        logger.info("%s: tasks flagged as revoked: %s", self.hostname, ", ".join(ids))
        if terminate:
            logger.warning("%s: revoke(terminate=True) is not supported: a task already "
                           "running finishes", self.hostname)
        return {"ok": f"tasks {', '.join(ids)} flagged as revoked"}

    def _is_for_me(self, command: dict) -> bool:
        destination = command.get("destination")
        if destination:
            return self.hostname in destination
        pattern = command.get("pattern")
        if pattern:
            if command.get("matcher") == "pcre":
                return re.match(pattern, self.hostname) is not None
            return fnmatch.fnmatch(self.hostname, pattern)
        return True


def node_name(hostname: str, in_prefork_child: bool) -> str:
    """The pidbox node name a worker listens as: prefork children share their parent's
    hostname, and an exclusive queue admits one connection, so each adds its pid."""
    return f"{hostname}.{os.getpid()}" if in_prefork_child else hostname


__all__ = ["Control", "ControlListener", "RevokedSet", "revoke_command", "mailbox_for",
           "DEFAULT_REVOKES_MAX", "DEFAULT_REVOKE_EXPIRES"]
