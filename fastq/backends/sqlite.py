"""A result store in a SQLite file, shareable by every process on the host: ``sqlite:///path``.

Schema (the file may also hold the SQLite broker's tables)::

    fastq_results(
        task_id    TEXT PRIMARY KEY,
        state      TEXT NOT NULL,      -- Celery state name of the stored document
        document   BLOB NOT NULL,      -- the meta document, JSON
        expires_at REAL                -- unix time; NULL keeps it until forgotten
    )
    fastq_results_expires_at ON fastq_results(expires_at)   -- for cleanup
    fastq_groups(
        group_id   TEXT PRIMARY KEY,
        document   BLOB NOT NULL,      -- {"result": GroupResult.as_tuple()}, JSON
        expires_at REAL
    )
    fastq_chords(                      -- one chord run (``Backend.on_chord_part_return``)
        group_id    TEXT PRIMARY KEY,
        size        INTEGER,           -- members; NULL once the body is sent
        claim       TEXT,              -- token of the member sending the body, or 'done'
        claim_until REAL NOT NULL,     -- unix time the claim lapses
        expires_at  REAL
    )
    fastq_chord_parts(
        group_id   TEXT NOT NULL,
        member     TEXT NOT NULL,      -- "<task id>:<index>": a redelivery adds no row
        position   REAL NOT NULL,      -- group_index, the order of the body's argument
        entry      BLOB NOT NULL,      -- JSON [1, task id, state, result]
        expires_at REAL,
        PRIMARY KEY (group_id, member)
    )

A row is expired when ``expires_at < now``; expired rows are invisible to reads and are
deleted by ``cleanup()`` and, at most once a minute per instance, after a write.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .._fork import getpid
from ..brokers import sqlite_path
from ..brokers.sqlite import open_database
from .base import CHORD_CLAIM_SECONDS, CHORD_DONE_SECONDS, Backend, chord_claimable

_T = TypeVar("_T")

#: Seconds between the cleanups a writing instance runs on its own.
CLEANUP_INTERVAL = 60.0

#: How long SQLite itself waits for another connection's lock, in milliseconds.
BUSY_TIMEOUT_MS = 10000

#: Attempts, and the first sleep in seconds between them, when SQLite still says "locked".
LOCKED_ATTEMPTS = 5
LOCKED_SLEEP = 0.05

#: Bound parameters per ``IN (...)`` list, well under SQLite's variable limit.
IN_CHUNK = 500

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS fastq_results (
        task_id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        document BLOB NOT NULL,
        expires_at REAL
    )""",
    "CREATE INDEX IF NOT EXISTS fastq_results_expires_at ON fastq_results(expires_at)",
    """CREATE TABLE IF NOT EXISTS fastq_groups (
        group_id TEXT PRIMARY KEY,
        document BLOB NOT NULL,
        expires_at REAL
    )""",
    """CREATE TABLE IF NOT EXISTS fastq_chords (
        group_id TEXT PRIMARY KEY,
        size INTEGER,
        claim TEXT,
        claim_until REAL NOT NULL,
        expires_at REAL
    )""",
    """CREATE TABLE IF NOT EXISTS fastq_chord_parts (
        group_id TEXT NOT NULL,
        member TEXT NOT NULL,
        position REAL NOT NULL,
        entry BLOB NOT NULL,
        expires_at REAL,
        PRIMARY KEY (group_id, member)
    )""",
)

# An expired SUCCESS is treated as absent, as reads do, so a reused task id can be stored.
_UPSERT = """
    INSERT INTO fastq_results (task_id, state, document, expires_at) VALUES (?, ?, ?, ?)
    ON CONFLICT(task_id) DO UPDATE SET
        state = excluded.state, document = excluded.document, expires_at = excluded.expires_at
    WHERE fastq_results.state != 'SUCCESS'
        OR (fastq_results.expires_at IS NOT NULL AND fastq_results.expires_at < ?)
"""

_DELETE_EXPIRED = "DELETE FROM fastq_results WHERE expires_at IS NOT NULL AND expires_at < ?"
_DELETE_EXPIRED_GROUPS = "DELETE FROM fastq_groups WHERE expires_at IS NOT NULL AND expires_at < ?"
_DELETE_EXPIRED_CHORDS = (
    "DELETE FROM fastq_chords WHERE expires_at IS NOT NULL AND expires_at < ?",
    "DELETE FROM fastq_chord_parts WHERE expires_at IS NOT NULL AND expires_at < ?",
)


class SQLiteBackend(Backend):
    """Results in a SQLite file in WAL mode.

    Each thread of each process gets its own connection, opened on first use; a forked
    child never touches its parent's connections.
    """

    capabilities = frozenset({"groups", "chords"})

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self.path = sqlite_path(url)
        self._local = threading.local()
        self._pid = getpid()
        self._lock = threading.Lock()
        # every connection this process opened, with its thread, so close() can also
        # close those of threads that have since ended
        self._opened: list[tuple[threading.Thread, sqlite3.Connection]] = []
        # inherited across fork: closing them in the child could disturb the parent's locks
        self._inherited: list[sqlite3.Connection] = []
        self._last_cleanup = 0.0

    # -- connections -----------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._pid != getpid():
            self._after_fork()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._retry(self._open)
            self._local.conn = conn
            with self._lock:
                # threads that ended without close() would otherwise keep theirs forever
                ended = [c for thread, c in self._opened if not thread.is_alive()]
                self._opened = [(thread, c) for thread, c in self._opened if thread.is_alive()]
                self._opened.append((threading.current_thread(), conn))
            for stale in ended:
                stale.close()
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = open_database(self.path, BUSY_TIMEOUT_MS / 1000)
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
        return conn

    def _after_fork(self) -> None:
        with self._lock:
            self._inherited.extend(conn for _thread, conn in self._opened)
            self._opened = []
        self._local = threading.local()
        self._pid = getpid()

    def close(self) -> None:
        """Close this thread's connection and those of threads that have ended."""
        if self._pid != getpid():
            self._after_fork()
            return
        current = threading.current_thread()
        with self._lock:
            closing = [conn for thread, conn in self._opened
                       if thread is current or not thread.is_alive()]
            self._opened = [(thread, conn) for thread, conn in self._opened
                            if thread is not current and thread.is_alive()]
        self._local.conn = None
        for conn in closing:
            conn.close()

    def _retry(self, operation: Callable[[], _T]) -> _T:
        """Run ``operation``, again after a short sleep while SQLite reports the file locked.

        ``busy_timeout`` covers most contention; WAL still returns SQLITE_BUSY at once in a
        few cases (e.g. while another connection recovers the WAL), which a retry outlives.
        """
        for attempt in range(1, LOCKED_ATTEMPTS + 1):
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if attempt == LOCKED_ATTEMPTS or "locked" not in str(exc):
                    raise
            time.sleep(LOCKED_SLEEP * attempt)
        raise AssertionError("unreachable")

    def _write(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` in one write transaction, taking the write lock up front.

        A deferred transaction upgrading from read to write in WAL mode can fail with
        SQLITE_BUSY without waiting; BEGIN IMMEDIATE waits for the lock instead.
        """
        def attempt() -> _T:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        return self._retry(attempt)

    # -- primitives ------------------------------------------------------------------
    def _get_many(self, task_ids: Sequence[str]) -> dict[str, bytes]:
        ids = list(dict.fromkeys(task_ids))
        now = time.time()

        def read() -> dict[str, bytes]:
            conn = self._connection()
            found: dict[str, bytes] = {}
            for start in range(0, len(ids), IN_CHUNK):
                chunk = ids[start:start + IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT task_id, document FROM fastq_results WHERE task_id IN ({marks})"
                    " AND (expires_at IS NULL OR expires_at >= ?)", (*chunk, now))
                for task_id, document in rows:
                    found[task_id] = bytes(document)
            return found

        return self._retry(read)

    def _set_many(self, items: Sequence[tuple[str, str, bytes]], expires_at: float | None) -> None:
        now = time.time()
        rows = [(task_id, state, document, expires_at, now) for task_id, state, document in items]
        cleanup = now - self._last_cleanup >= CLEANUP_INTERVAL
        if cleanup:
            self._last_cleanup = now

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(_UPSERT, rows)
            if cleanup:  # in the same transaction: one lock, one fsync
                self._delete_expired(conn, now)

        self._write(work)

    def _delete(self, task_id: str) -> None:
        self._write(lambda conn: conn.execute(
            "DELETE FROM fastq_results WHERE task_id = ?", (task_id,)))

    @staticmethod
    def _delete_expired(conn: sqlite3.Connection, now: float) -> int:
        return sum(conn.execute(statement, (now,)).rowcount for statement in (
            _DELETE_EXPIRED, _DELETE_EXPIRED_GROUPS, *_DELETE_EXPIRED_CHORDS))

    def _cleanup(self, now: float) -> int:
        return self._write(lambda conn: self._delete_expired(conn, now))

    def _get_group(self, group_id: str) -> bytes | None:
        def read() -> bytes | None:
            row = self._connection().execute(
                "SELECT document FROM fastq_groups WHERE group_id = ?"
                " AND (expires_at IS NULL OR expires_at >= ?)", (group_id, time.time())).fetchone()
            return None if row is None else bytes(row[0])

        return self._retry(read)

    def _set_group(self, group_id: str, document: bytes, expires_at: float | None) -> None:
        self._write(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO fastq_groups (group_id, document, expires_at)"
            " VALUES (?, ?, ?)", (group_id, document, expires_at)))

    def _delete_group(self, group_id: str) -> None:
        self._write(lambda conn: conn.execute(
            "DELETE FROM fastq_groups WHERE group_id = ?", (group_id,)))

    # -- chords: each step one write transaction (BEGIN IMMEDIATE: the file's one writer)
    def _chord_set_size(self, group_id: str, size: int, expires_at: float | None) -> None:
        self._write(lambda conn: conn.execute(
            "INSERT INTO fastq_chords (group_id, size, claim, claim_until, expires_at)"
            " VALUES (?, ?, NULL, 0, ?) ON CONFLICT(group_id) DO UPDATE SET"
            " size = excluded.size, claim = NULL, claim_until = 0,"
            " expires_at = excluded.expires_at", (group_id, size, expires_at)))

    def _chord_add(self, group_id: str, task_id: str, index: str, entry: bytes, token: str,
                   expires_at: float | None) -> bool:
        now = time.time()

        def work(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT size, claim, claim_until FROM fastq_chords WHERE group_id = ?"
                " AND (expires_at IS NULL OR expires_at >= ?)", (group_id, now)).fetchone()
            if row is not None and row[1] == "done":
                return False
            conn.execute(
                "INSERT INTO fastq_chord_parts (group_id, member, position, entry, expires_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (group_id, f"{task_id}:{index}", float(index), entry, expires_at))
            if row is None:
                return False
            count = conn.execute("SELECT COUNT(*) FROM fastq_chord_parts WHERE group_id = ?",
                                 (group_id,)).fetchone()[0]
            conn.execute("UPDATE fastq_chords SET expires_at = ? WHERE group_id = ?",
                         (expires_at, group_id))
            if not chord_claimable(row[0], count, row[1], row[2], token, now):
                return False
            conn.execute("UPDATE fastq_chords SET claim = ?, claim_until = ? WHERE group_id = ?",
                         (token, now + CHORD_CLAIM_SECONDS, group_id))
            return True

        return self._write(work)

    def _chord_entries(self, group_id: str) -> list[bytes]:
        return self._retry(lambda: [bytes(entry) for (entry,) in self._connection().execute(
            "SELECT entry FROM fastq_chord_parts WHERE group_id = ? ORDER BY position",
            (group_id,))])

    def _chord_finish(self, group_id: str, token: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            done = conn.execute(
                "UPDATE fastq_chords SET size = NULL, claim = 'done', expires_at = ?"
                " WHERE group_id = ? AND claim = ?",
                (time.time() + CHORD_DONE_SECONDS, group_id, token)).rowcount
            if done:
                conn.execute("DELETE FROM fastq_chord_parts WHERE group_id = ?", (group_id,))
            return bool(done)

        return self._write(work)
