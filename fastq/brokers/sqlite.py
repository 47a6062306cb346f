"""The embedded default broker: one SQLite file in WAL mode, shared by processes on a host.

Each message is a row. Claiming sets ``owner`` and pushes ``visible_at`` a lease ahead;
a thread in the claiming process keeps extending the lease while the process lives, so
a worker killed with ``kill -9`` stops extending and its messages become claimable again
once the lease runs out. Countdowns and ETAs are just a future ``visible_at``: they wait
in the file, not in a worker's memory.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from .. import serialization
from .._fork import getpid
from ..exceptions import BrokerConnectionLost, BrokerError, ConfigurationError
from . import sqlite_path
from ._lease import LeaseKeeping
from ._mailbox import Mailbox
from .base import DEFAULT_MAX_REDELIVERIES, Broker, Delivery

logger = logging.getLogger(__name__)

#: Seconds a claim stays valid without renewal; the holder renews every third of it.
DEFAULT_LEASE_SECONDS = 30.0
#: Longest sleep between claim attempts while idle, in seconds.
DEFAULT_POLL_INTERVAL_MAX = 0.1
#: How often an idle consumer looks for commits by other connections, in seconds.
CHANGE_CHECK_INTERVAL = 0.001
#: Most ids bound in one ``IN (...)`` (SQLite's default variable limit is 32766).
ID_CHUNK = 500

#: Message states. Only READY rows are in the claim index; HELD (claimed) and DELAYED rows
#: are in the timing index, ordered by when they become claimable again.
READY, HELD, DELAYED = 0, 1, 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS fastq_messages (
    id          INTEGER PRIMARY KEY,
    queue       TEXT    NOT NULL,
    priority    INTEGER NOT NULL DEFAULT 0,
    state       INTEGER NOT NULL,
    visible_at  REAL    NOT NULL,
    owner       TEXT,
    deliveries  INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL    NOT NULL,
    envelope    BLOB    NOT NULL,
    body        BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS fastq_messages_ready
    ON fastq_messages (queue, priority DESC, id) WHERE state = 0;
CREATE INDEX IF NOT EXISTS fastq_messages_timing
    ON fastq_messages (visible_at) WHERE state != 0;
CREATE TABLE IF NOT EXISTS fastq_dead_letters (
    id              INTEGER PRIMARY KEY,
    queue           TEXT NOT NULL,
    reason          TEXT NOT NULL,
    deliveries      INTEGER NOT NULL,
    dead_lettered_at REAL NOT NULL,
    envelope        BLOB NOT NULL,
    body            BLOB NOT NULL
);
"""

#: How often a consumer moves due delayed messages and lapsed leases back to READY.
PROMOTE_INTERVAL = 0.05

#: Remote control requests (``SQLiteMailbox``): workers poll by id; rows older than
#: ``worker_revoke_expires`` are deleted by the next send.
CONTROL_SCHEMA = """
CREATE TABLE IF NOT EXISTS fastq_control (
    id       INTEGER PRIMARY KEY,
    sent_at  REAL NOT NULL,
    command  BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS fastq_control_sent_at ON fastq_control (sent_at);
"""


def open_database(path: str, timeout: float = 30.0) -> sqlite3.Connection:
    """A WAL-mode connection in autocommit mode, creating the file and its directory.

    Shared by the SQLite broker and result backend, which use the same file by default.
    ``timeout`` is SQLite's wait for a lock. Raises ``sqlite3.Error``.
    """
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    new_file = path != ":memory:" and not path.startswith("file:") \
        and not os.path.exists(path)
    # check_same_thread=False only so close() may close another thread's connection;
    # in use, a connection never leaves its thread
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                           check_same_thread=False)
    try:
        if new_file:
            # task arguments and results are private to their owner: a file this makes is
            # readable by no one else, and so are the WAL and shared-memory files SQLite
            # creates next (it gives them the database file's mode)
            os.chmod(path, 0o600)
        _switch_to_wal(conn, timeout)
        # NORMAL in WAL mode is durable across process crashes (only an OS crash or power
        # loss can drop the last commits), which is what a kill -9 test needs.
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _switch_to_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """``PRAGMA journal_mode=WAL``, waiting up to ``timeout`` for the lock it needs.

    SQLite does not call its busy handler for this pragma: connections opening a new
    file at the same moment (a worker's threads, a producer) got "database is locked" at
    once, about one start in seven with four of them."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _decode_row(envelope: Any, body: Any) -> tuple[dict, dict, bytes]:
    """``(headers, properties, body)`` of a stored row. A row fastq did not write
    (damaged, or put there by hand: SQLite keeps any type in any column) gives empty
    headers, so that the worker dead-letters it instead of failing on it."""
    if not isinstance(body, bytes):
        body = body.encode("utf-8", "replace") if isinstance(body, str) else b""
    try:
        headers, properties = serialization.json_loads(envelope)
    except (ValueError, TypeError):
        return {}, {}, body
    if type(headers) is not dict or type(properties) is not dict:
        return {}, {}, body
    return headers, properties, body


def connect(path: str, timeout: float = 30.0) -> sqlite3.Connection:
    """``open_database`` with its errors as BrokerError."""
    try:
        return open_database(path, timeout)
    except sqlite3.Error as exc:
        raise BrokerError(f"cannot open SQLite database {path!r}: {exc}") from exc


class SQLiteBroker(LeaseKeeping, Broker):
    """``sqlite:///relative/path`` or ``sqlite:////absolute/path`` (default
    ``.fastq/broker.sqlite3``).

    Options: ``lease_seconds`` (how long a claim survives a dead holder),
    ``poll_interval_max`` (longest idle sleep between claim attempts).
    """

    capabilities = frozenset({"delay", "priority", "lease", "dead_letter", "control"})

    def __init__(self, url: str, *, max_redeliveries: int = DEFAULT_MAX_REDELIVERIES,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS,
                 poll_interval_max: float = DEFAULT_POLL_INTERVAL_MAX,
                 **options: Any) -> None:
        super().__init__(url, max_redeliveries=max_redeliveries, **options)
        unknown = set(self.options)
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) for the SQLite broker: {', '.join(sorted(unknown))} "
                f"(known: lease_seconds, poll_interval_max)")
        if float(lease_seconds) <= 0:
            raise ConfigurationError(f"lease_seconds must be positive, not {lease_seconds!r}")
        self.path = sqlite_path(url)
        self.lease_seconds = float(lease_seconds)
        self.poll_interval_max = float(poll_interval_max)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = -1
        self._owner = ""
        self._keeper: threading.Thread | None = None
        self._stop = threading.Event()
        self._schema_ready = False
        self._connections: list[sqlite3.Connection] = []
        self._held: set[int] = set()
        self._next_promote = 0.0

    # -- connections -------------------------------------------------------------------
    def _check_pid(self) -> None:
        if self._pid != getpid():
            # After fork: the parent's connections and keeper thread are not ours. Start
            # afresh with a new owner token so our claims never pass as the parent's.
            self._pid = getpid()
            self._local = threading.local()
            self._connections = []
            self._keeper = None
            self._stop = threading.Event()
            self._held = set()
            self._owner = f"{socket.gethostname()}:{self._pid}:{uuid.uuid4().hex[:12]}"

    @property
    def _conn(self) -> sqlite3.Connection:
        self._check_pid()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            if not self._schema_ready:
                self._retry(conn.executescript, SCHEMA)
                self._schema_ready = True
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _retry(self, fn: Any, *args: Any) -> Any:
        """Run ``fn``; SQLite errors become BrokerError (a locked database is retried)."""
        for attempt in range(5):
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    if attempt < 4:
                        time.sleep(0.05 * (attempt + 1))
                        continue
                    raise BrokerConnectionLost(f"SQLite database {self.path!r} stayed locked: "
                                               f"{exc}") from exc
                raise BrokerError(f"SQLite broker {self.path!r}: {exc}") from exc
            except sqlite3.Error as exc:
                raise BrokerError(f"SQLite broker {self.path!r}: {exc}") from exc
        raise AssertionError("unreachable")

    def connect(self) -> None:
        self._conn  # noqa: B018 - opening the connection is the point

    def close(self) -> None:
        if self._pid != getpid():
            return
        self._stop_keeper(5)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:  # pragma: no cover - closing is best effort
                pass
        self._local = threading.local()

    # -- producing -------------------------------------------------------------------
    def _publish(self, messages: Sequence[Any]) -> None:
        now = time.time()
        dumps = serialization.json_dumps
        # UUIDs cannot travel in AMQP headers either; they stay plain strings here.
        rows = []
        for m in messages:
            not_before = m.not_before
            delayed = not_before > now
            rows.append((m.queue, m.properties.get("priority") or 0,
                         DELAYED if delayed else READY, not_before if delayed else now, now,
                         dumps((m.headers, m.properties), False), m.body))
        conn = self._conn

        def insert() -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO fastq_messages (queue, priority, state, visible_at, "
                    "enqueued_at, envelope, body) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        self._retry(insert)

    # -- consuming -------------------------------------------------------------------
    def promote(self) -> int:
        """Make due delayed messages and messages whose lease lapsed claimable again."""
        conn = self._conn
        self._next_promote = time.monotonic() + PROMOTE_INTERVAL
        return self._retry(lambda: conn.execute(
            "UPDATE fastq_messages SET state = 0, owner = NULL WHERE state != 0 AND "
            "visible_at <= ?", (time.time(),)).rowcount)

    def _claim(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        if time.monotonic() >= self._next_promote:
            self.promote()
        conn = self._conn
        if len(queues) == 1:
            where = "queue = ?"
        else:
            where = f"queue IN ({','.join('?' * len(queues))})"
        # One statement: the pick and the claim are atomic without an explicit transaction.
        sql = (f"UPDATE fastq_messages SET state = 1, owner = ?, visible_at = ?, "
               f"deliveries = deliveries + 1 WHERE id IN (SELECT id FROM fastq_messages "
               f"WHERE state = 0 AND {where} ORDER BY priority DESC, id LIMIT ?) "
               f"RETURNING id, queue, priority, deliveries, envelope, body")
        params = (self._owner, time.time() + self.lease_seconds, *queues, limit)
        rows = self._retry(lambda: conn.execute(sql, params).fetchall())
        if not rows:
            return []
        self._held.update(row[0] for row in rows)
        self._ensure_keeper()
        if len(rows) > 1:
            rows.sort(key=lambda row: (-row[2], row[0]))
        return [self._row_delivery(tag, queue, count, envelope, body)
                for tag, queue, _priority, count, envelope, body in rows]

    @staticmethod
    def _row_delivery(tag: int, queue: str, count: Any, envelope: Any, body: Any) -> Delivery:
        """A Delivery from a claimed row (see ``_decode_row``)."""
        redeliveries = count - 1 if type(count) is int and count > 0 else 0
        return Delivery(tag, *_decode_row(envelope, body), queue, redeliveries)

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        if not queues:
            raise ConfigurationError("fetch needs at least one queue")
        deliveries = self._claim(queues, limit)
        if deliveries or timeout <= 0:
            return deliveries
        deadline = time.monotonic() + timeout
        conn = self._conn
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        next_claim = time.monotonic() + 0.002
        sleep = 0.002
        check = CHANGE_CHECK_INTERVAL
        while True:
            now = time.monotonic()
            if now >= deadline:
                return []
            # data_version changes when another connection commits, e.g. a publish: a
            # cheap read that lets an idle consumer react within about a millisecond.
            current = conn.execute("PRAGMA data_version").fetchone()[0]
            if current != version or now >= next_claim:
                if current != version:
                    check = CHANGE_CHECK_INTERVAL
                version = current
                deliveries = self._claim(queues, limit)
                if deliveries:
                    return deliveries
                # Nothing claimable: back off the blind retries (they are what notices
                # delayed messages falling due and lapsed leases).
                sleep = min(sleep * 2, self.poll_interval_max)
                next_claim = time.monotonic() + sleep
            else:
                # a quiet broker is checked less and less often, down to a few times
                # per poll interval, so an idle worker costs next to no CPU
                check = min(check * 1.25, self.poll_interval_max / 4)
            time.sleep(min(check, max(0.0, deadline - time.monotonic())))

    def _on_held(self, sql: str, tags: Iterable[Any], *extra: Any, settle: bool = True) -> int:
        """Run ``sql`` (``{ids}`` = the id list) over the claims we hold; rows changed.

        The owner check keeps a worker whose lease lapsed from touching a message another
        worker has claimed since. ``settle``: the claims end here (not a lease renewal).
        """
        ids = [int(tag) for tag in tags]
        if not ids:
            return 0
        conn = self._conn

        def run() -> int:
            count = 0
            conn.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(ids), ID_CHUNK):
                    chunk = ids[start:start + ID_CHUNK]
                    query = sql.format(ids=",".join("?" * len(chunk)))
                    count += conn.execute(query, (*extra, *chunk, self._owner)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return count

        changed = self._retry(run)
        if settle:
            self._held.difference_update(ids)
        return changed

    def ack_many(self, tags: Iterable[Any]) -> None:
        self._on_held("DELETE FROM fastq_messages WHERE id IN ({ids}) AND owner = ?", tags)

    def release_many(self, tags: Iterable[Any]) -> None:
        self._on_held(
            "UPDATE fastq_messages SET state = 0, owner = NULL, deliveries = deliveries - 1 "
            "WHERE id IN ({ids}) AND owner = ?", tags)

    def defer(self, delivery: Delivery, not_before: float) -> None:
        # Re-timed in place; a deferral is not a failed delivery, so it is not counted.
        self._on_held(
            "UPDATE fastq_messages SET state = 2, owner = NULL, visible_at = ?, "
            "deliveries = deliveries - 1 WHERE id IN ({ids}) AND owner = ?",
            (delivery.tag,), float(not_before))

    def reject(self, tag: Any, requeue: bool) -> None:
        if not requeue:
            self.dead_letter(tag, "rejected")
            return
        self._on_held("UPDATE fastq_messages SET state = 0, owner = NULL "
                      "WHERE id IN ({ids}) AND owner = ?", (tag,))

    def dead_letter(self, tag: Any, reason: str) -> None:
        conn = self._conn
        now = time.time()

        def move() -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO fastq_dead_letters (queue, reason, deliveries, "
                    "dead_lettered_at, envelope, body) SELECT queue, ?, deliveries, ?, "
                    "envelope, body FROM fastq_messages WHERE id = ?", (reason, now, int(tag)))
                conn.execute("DELETE FROM fastq_messages WHERE id = ?", (int(tag),))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        self._retry(move)
        self._held.discard(int(tag))

    # -- leases ------------------------------------------------------------------------
    def _lease_period(self) -> float:
        return self.lease_seconds

    def _keeper_exiting(self) -> None:
        # the keeper's own thread-local connection goes with it
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with self._lock:
                if conn in self._connections:
                    self._connections.remove(conn)
            conn.close()

    def extend_leases(self) -> int:
        """Push the lease of every message this process holds a full period ahead."""
        held = list(self._held)
        if not held:
            return 0
        until = time.time() + self.lease_seconds
        return self._on_held("UPDATE fastq_messages SET visible_at = ? "
                             "WHERE id IN ({ids}) AND owner = ?", held, until, settle=False)

    # -- administration --------------------------------------------------------------
    def purge(self, queue: str) -> int:
        conn = self._conn
        return self._retry(lambda: conn.execute(
            "DELETE FROM fastq_messages WHERE queue = ? AND state != 1", (queue,)).rowcount)

    def queue_sizes(self) -> dict[str, int]:
        conn = self._conn
        rows = self._retry(lambda: conn.execute(
            "SELECT queue, SUM(state != 1) FROM fastq_messages GROUP BY queue").fetchall())
        return {queue: int(count or 0) for queue, count in rows}

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[dict]:
        conn = self._conn
        sql = ("SELECT queue, reason, deliveries, dead_lettered_at, envelope, body "
               "FROM fastq_dead_letters")
        params: tuple = ()
        if queue is not None:
            sql += " WHERE queue = ?"
            params = (queue,)
        sql += " ORDER BY id DESC LIMIT ?"
        rows = self._retry(lambda: conn.execute(sql, (*params, limit)).fetchall())
        letters = []
        for q, reason, deliveries, at, envelope, body in rows:
            # kept as it came, readable or not (a row fastq did not write)
            headers, properties, body = _decode_row(envelope, body)
            letters.append({"queue": q, "reason": reason, "deliveries": deliveries,
                            "dead_lettered_at": at, "headers": headers,
                            "properties": properties, "body": body})
        return letters

    def retry_dead_letter(self, queue: str, task_id: str) -> bool:
        conn = self._conn

        def move() -> bool:
            # one write transaction: a letter two callers retry at once moves once
            conn.execute("BEGIN IMMEDIATE")
            try:
                moved = False
                for row_id, envelope, body in conn.execute(
                        "SELECT id, envelope, body FROM fastq_dead_letters WHERE queue = ? "
                        "ORDER BY id DESC", (queue,)).fetchall():
                    headers, properties, _body = _decode_row(envelope, body)
                    if headers.get("id") != task_id:
                        continue
                    now = time.time()
                    # a new row: READY, its delivery count starting over
                    conn.execute(
                        "INSERT INTO fastq_messages (queue, priority, state, visible_at, "
                        "enqueued_at, envelope, body) SELECT queue, ?, ?, ?, ?, envelope, body "
                        "FROM fastq_dead_letters WHERE id = ?",
                        (_priority(properties), READY, now, now, row_id))
                    conn.execute("DELETE FROM fastq_dead_letters WHERE id = ?", (row_id,))
                    moved = True
                    break
                conn.execute("COMMIT")
                return moved
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return self._retry(move)

    # -- remote control --------------------------------------------------------------
    def mailbox(self, expires: float) -> SQLiteMailbox:
        return SQLiteMailbox(self, expires)


def _priority(properties: dict) -> int:
    """The priority column of a message with these properties (0 when it has none)."""
    try:
        return int(properties.get("priority") or 0)
    except (TypeError, ValueError):
        return 0


class SQLiteMailbox(Mailbox):
    """The ``fastq_control`` table in the broker's file, polled by id: a worker that
    starts later still finds the requests younger than ``expires``."""

    broker: SQLiteBroker

    def __init__(self, broker: SQLiteBroker, expires: float) -> None:
        super().__init__(broker, expires)
        self._conn: sqlite3.Connection | None = None
        self._last_id = 0

    def _connection(self) -> sqlite3.Connection:
        # its own connection: the listener's thread, and a producer's send, must not
        # share the broker's per-thread one with its transactions
        if self._conn is None:
            conn = connect(self.broker.path)
            try:
                conn.executescript(CONTROL_SCHEMA)
            except sqlite3.Error as exc:
                conn.close()
                raise BrokerError(f"SQLite broker {self.broker.path!r}: cannot create the "
                                  f"control table: {exc}") from exc
            self._conn = conn
        return self._conn

    def send(self, command: dict) -> None:
        conn = self._connection()
        now = time.time()
        try:
            with conn:
                conn.execute("INSERT INTO fastq_control (sent_at, command) VALUES (?, ?)",
                             (now, serialization.json_dumps(command)))
                # as short as the workers' memory of revokes
                conn.execute("DELETE FROM fastq_control WHERE sent_at < ?",
                             (now - self.expires,))
        except sqlite3.Error as exc:
            raise BrokerError(f"SQLite broker {self.broker.path!r}: cannot send the control "
                              f"request: {exc}") from exc

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
