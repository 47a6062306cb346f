"""Results in a SQL database through SQLAlchemy 2 Core: PostgreSQL, MySQL/MariaDB, SQLite.

URLs (Celery's, with the driver fastq installs chosen when none is named)::

    db+postgresql://user:pass@host/db        -> postgresql+psycopg (psycopg 3)
    db+postgresql+psycopg://...
    db+mysql://user:pass@host/db             -> mysql+pymysql (PyMySQL); MariaDB too
    db+mysql+pymysql://...
    db+sqlite:///relative/path  db+sqlite:////absolute/path

Tables, created on first use (names: ``table_prefix`` + ``taskmeta``/``tasksetmeta``,
``fastq_`` by default, or ``table_names={"task": ..., "group": ...}`` like Celery's
``database_table_names``)::

    fastq_taskmeta(
        task_id    VARCHAR(155) PRIMARY KEY,
        status     VARCHAR(50) NOT NULL,    -- Celery state of the stored document
        document   BLOB NOT NULL,           -- the meta document, JSON (bytea; LONGBLOB)
        expires_at DOUBLE                   -- unix time; NULL keeps it until forgotten
    )
    fastq_taskmeta_expires_at ON fastq_taskmeta(expires_at)
    fastq_tasksetmeta(
        group_id   VARCHAR(155) PRIMARY KEY,
        document   BLOB NOT NULL,           -- {"result": GroupResult.as_tuple()}, JSON
        expires_at DOUBLE
    )
    fastq_chord(                            -- one chord run (Backend.on_chord_part_return)
        group_id    VARCHAR(155) PRIMARY KEY,
        size        INTEGER,                -- members; NULL once the body is sent
        claim       VARCHAR(155),           -- the token sending the body, or 'done'
        claim_until DOUBLE NOT NULL,        -- unix time the claim lapses
        expires_at  DOUBLE
    )
    fastq_chordpart(
        group_id   VARCHAR(155),
        member     VARCHAR(200),            -- "<task id>:<index>": a redelivery adds no row
        position   DOUBLE NOT NULL,         -- group_index: the order of the body's argument
        entry      BLOB NOT NULL,           -- JSON [1, task id, state, result]
        expires_at DOUBLE,
        PRIMARY KEY (group_id, member)
    )

A chord member's step is one transaction: the chord's row locked (``FOR UPDATE``), the
part inserted unless present (``ON CONFLICT DO NOTHING``; MySQL ``INSERT IGNORE``),
the parts counted and the claim taken.

The names echo Celery's ``celery_taskmeta``/``celery_tasksetmeta``, but the columns do
not: Celery pickles its result column, fastq stores the same JSON document every other
backend stores, so the row reads the same from any language. A row whose ``expires_at``
has passed is invisible to reads and is deleted by ``cleanup()`` and, at most once a
minute per instance, by a write. A batch of results is one transaction; a stored
SUCCESS is kept against later writes (an upsert whose update is conditional on the
stored status). ``wait()`` polls with the base class's doubling backoff (0.5 ms up to
100 ms), one primary-key read per poll. PostgreSQL's LISTEN/NOTIFY is not used: every
notifying commit takes a cluster-wide lock (serializing the stores of concurrent
workers), and a listening session that stops reading holds back the notification queue
for everyone until NOTIFY itself fails.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from .. import _extras
from .._fork import getpid
from .._registry import mask_url
from ..exceptions import ConfigurationError
from ..states import SUCCESS
from .base import CHORD_CLAIM_SECONDS, CHORD_DONE_SECONDS, Backend, chord_claimable

_T = TypeVar("_T")

#: Table names are this prefix + "taskmeta" / "tasksetmeta" unless given outright.
DEFAULT_TABLE_PREFIX = "fastq_"

#: Seconds between the cleanups a writing instance runs on its own.
CLEANUP_INTERVAL = 60.0

#: Bound parameters per ``IN (...)`` list, under every dialect's limit.
IN_CHUNK = 500

#: Attempts of a transaction that lost a deadlock or lock wait, and the first sleep (s).
CONFLICT_ATTEMPTS = 5
CONFLICT_SLEEP = 0.02

#: How long SQLite waits for another connection's lock, in seconds.
SQLITE_BUSY_TIMEOUT = 10.0

#: The driver used when a URL names none: the ones the ``sql`` extra installs.
_DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql"}

# SQLSTATEs and MySQL error numbers after which the same transaction can simply run again
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_RETRY_MYSQL_ERRORS = frozenset({1205, 1213})  # lock wait timeout, deadlock


def sqlalchemy_url(url: str) -> str:
    """The SQLAlchemy URL for a ``db+...`` URL, with fastq's default driver filled in."""
    if not url.lower().startswith("db+"):
        raise ConfigurationError(f"not a db+ result backend URL: {mask_url(url)!r}")
    scheme, sep, rest = url[3:].partition("://")
    if not sep:
        raise ConfigurationError(f"result backend URL {mask_url(url)!r} has no '://'")
    scheme = _DEFAULT_DRIVERS.get(scheme.lower(), scheme)
    return f"{scheme}://{rest}"


class SQLBackend(Backend):
    """``db+postgresql://``, ``db+mysql://``, ``db+sqlite://`` (see the module docstring).

    Options: ``table_prefix``, ``table_names`` (``{"task": ..., "group": ...}``),
    ``engine_options`` (passed to ``sqlalchemy.create_engine``). An unreachable server
    raises ``ConnectionError``.
    """

    capabilities = frozenset({"groups", "chords"})

    def __init__(self, url: str, **options: Any) -> None:
        prefix = str(options.pop("table_prefix", None) or DEFAULT_TABLE_PREFIX)
        names = dict(options.pop("table_names", None) or {})
        engine_options = dict(options.pop("engine_options", None) or {})
        super().__init__(url, **options)
        unknown = set(names) - {"task", "group"}
        if unknown:
            raise ConfigurationError(
                f"table_names takes the keys 'task' and 'group', not {sorted(unknown)}")
        self.task_table_name = names.get("task") or prefix + "taskmeta"
        self.group_table_name = names.get("group") or prefix + "tasksetmeta"
        self.engine = _create_engine(sqlalchemy_url(url), engine_options)
        self.dialect = self.engine.dialect.name
        self.metadata = sa.MetaData()
        self.tasks, self.groups = _define_tables(
            self.metadata, self.task_table_name, self.group_table_name)
        self.chords, self.chord_parts = _define_chord_tables(self.metadata, prefix)
        self._upsert_task = self._task_upsert_statement()
        self._upsert_group = self._group_upsert_statement()
        tasks = self.tasks
        self._select_documents = (
            sa.select(tasks.c.task_id, tasks.c.document)
            .where(tasks.c.task_id.in_(sa.bindparam("ids", expanding=True)))
            .where(sa.or_(tasks.c.expires_at.is_(None),
                          tasks.c.expires_at >= sa.bindparam("now", type_=sa.Double()))))
        # reads need no transaction: autocommit saves the BEGIN and ROLLBACK round trips
        # (measured on PostgreSQL: 610 -> 450 us per read)
        self._reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._pid = getpid()
        self._lock = threading.Lock()
        self._tables_ready = False
        self._last_cleanup = 0.0

    # -- statements ------------------------------------------------------------------
    def _task_upsert_statement(self) -> Any:
        """INSERT one result, or UPDATE the stored one unless it is a SUCCESS.

        Bind parameters per row: task_id, status, document, expires_at, and ``now``
        (an expired SUCCESS counts as absent, as it does for reads).
        """
        tasks = self.tasks
        if self.dialect in ("postgresql", "sqlite"):
            insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(tasks)
            return insert.on_conflict_do_update(
                index_elements=[tasks.c.task_id],
                set_={"status": insert.excluded.status, "document": insert.excluded.document,
                      "expires_at": insert.excluded.expires_at},
                where=sa.or_(tasks.c.status != SUCCESS,
                             tasks.c.expires_at < sa.bindparam("now", type_=sa.Double())))
        if self.dialect in ("mysql", "mariadb"):
            insert = mysql.insert(tasks)
            # a literal, not a bound parameter: PyMySQL batches executemany into one
            # multi-row INSERT only when the ON DUPLICATE KEY part has no parameters
            keep = tasks.c.status == sa.literal_column(f"'{SUCCESS}'")
            # MySQL applies the assignments left to right, each seeing the ones before:
            # status goes last so that every test of it reads the stored value. Expired
            # rows are deleted first in the same transaction (see _set_many).
            return insert.on_duplicate_key_update([
                ("document", sa.case((keep, tasks.c.document), else_=insert.inserted.document)),
                ("expires_at", sa.case((keep, tasks.c.expires_at),
                                       else_=insert.inserted.expires_at)),
                ("status", sa.case((keep, tasks.c.status), else_=insert.inserted.status)),
            ])
        raise ConfigurationError(
            f"the SQL result backend supports PostgreSQL, MySQL/MariaDB and SQLite, "
            f"not {self.dialect}")

    def _group_upsert_statement(self) -> Any:
        groups = self.groups
        if self.dialect in ("mysql", "mariadb"):
            insert = mysql.insert(groups)
            return insert.on_duplicate_key_update(document=insert.inserted.document,
                                                  expires_at=insert.inserted.expires_at)
        insert = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(groups)
        return insert.on_conflict_do_update(
            index_elements=[groups.c.group_id],
            set_={"document": insert.excluded.document, "expires_at": insert.excluded.expires_at})

    # -- running them ----------------------------------------------------------------
    def _ensure_tables(self) -> None:
        if self._tables_ready:
            return
        with self._lock:
            if self._tables_ready:
                return
            try:
                self.metadata.create_all(self.engine, checkfirst=True)
            except sa_exc.DBAPIError:
                # another process created them between our check and our CREATE
                self.metadata.create_all(self.engine, checkfirst=True)
            self._tables_ready = True

    def _run(self, what: str, work: Callable[[Connection], _T], write: bool) -> _T:
        """Run ``work`` in a transaction (committed when ``write``), retrying conflicts.

        Raises:
            ConnectionError: the database could not be reached.
        """
        if self._pid != getpid():
            # the parent's pooled sockets are the parent's: drop them without closing
            self.engine.dispose(close=False)
            self._pid = getpid()
        attempt = 0
        while True:
            attempt += 1
            try:
                self._ensure_tables()
                if write:
                    with self.engine.begin() as conn:
                        return work(conn)
                with self._reader.connect() as conn:
                    return work(conn)
            except sa_exc.DBAPIError as exc:
                retry = exc.connection_invalidated or _is_conflict(exc)
                if retry and attempt < CONFLICT_ATTEMPTS:
                    time.sleep(CONFLICT_SLEEP * attempt)
                    continue
                if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
                    raise ConnectionError(f"result backend {mask_url(self.url)} failed during "
                                          f"{what}: {exc.orig}") from exc
                raise

    # -- primitives ------------------------------------------------------------------
    def _get_many(self, task_ids: Sequence[str]) -> dict[str, bytes]:
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return {}
        now = time.time()
        select = self._select_documents

        def read(conn: Connection) -> dict[str, bytes]:
            found: dict[str, bytes] = {}
            for start in range(0, len(ids), IN_CHUNK):
                rows = conn.execute(select, {"ids": ids[start:start + IN_CHUNK], "now": now})
                for task_id, document in rows:
                    found[task_id] = bytes(document)
            return found

        return self._run("get", read, write=False)

    def _set_many(self, items: Sequence[tuple[str, str, bytes]], expires_at: float | None) -> None:
        now = time.time()
        rows = [{"task_id": task_id, "status": state, "document": document,
                 "expires_at": expires_at, "now": now} for task_id, state, document in items]
        cleanup = now - self._last_cleanup >= CLEANUP_INTERVAL
        if cleanup:
            self._last_cleanup = now
        tasks = self.tasks
        mysql_like = self.dialect in ("mysql", "mariadb")
        if mysql_like:
            for row in rows:
                del row["now"]

        def work(conn: Connection) -> None:
            if mysql_like:
                # an expired SUCCESS must not block a reused id: gone before the upsert
                ids = [row["task_id"] for row in rows]
                for start in range(0, len(ids), IN_CHUNK):
                    conn.execute(tasks.delete()
                                 .where(tasks.c.task_id.in_(ids[start:start + IN_CHUNK]))
                                 .where(tasks.c.expires_at < now))
            conn.execute(self._upsert_task, rows)
            if cleanup:  # in the same transaction: one round of locks and one commit
                self._delete_expired(conn, now)

        self._run("store", work, write=True)

    def _delete(self, task_id: str) -> None:
        tasks = self.tasks
        self._run("forget", lambda conn: conn.execute(
            tasks.delete().where(tasks.c.task_id == task_id)), write=True)

    def _delete_expired(self, conn: Connection, now: float) -> int:
        removed = 0
        for table in (self.tasks, self.groups, self.chords, self.chord_parts):
            removed += conn.execute(table.delete().where(table.c.expires_at < now)).rowcount
        return removed

    def _cleanup(self, now: float) -> int:
        return self._run("cleanup", lambda conn: self._delete_expired(conn, now), write=True)

    def _get_group(self, group_id: str) -> bytes | None:
        groups = self.groups
        now = time.time()

        def read(conn: Connection) -> bytes | None:
            document = conn.execute(
                sa.select(groups.c.document).where(groups.c.group_id == group_id)
                .where(sa.or_(groups.c.expires_at.is_(None), groups.c.expires_at >= now))
            ).scalar_one_or_none()
            return None if document is None else bytes(document)

        return self._run("restore group", read, write=False)

    def _set_group(self, group_id: str, document: bytes, expires_at: float | None) -> None:
        row = {"group_id": group_id, "document": document, "expires_at": expires_at}
        self._run("save group", lambda conn: conn.execute(self._upsert_group, row), write=True)

    def _delete_group(self, group_id: str) -> None:
        groups = self.groups
        self._run("forget group", lambda conn: conn.execute(
            groups.delete().where(groups.c.group_id == group_id)), write=True)

    # -- chords ----------------------------------------------------------------------
    def _chord_set_size(self, group_id: str, size: int, expires_at: float | None) -> None:
        chords = self.chords

        def work(conn: Connection) -> None:
            # the same group id applied again is a new run: its done marker goes
            conn.execute(chords.delete().where(chords.c.group_id == group_id))
            conn.execute(chords.insert().values(group_id=group_id, size=size, claim=None,
                                                claim_until=0.0, expires_at=expires_at))

        self._run("set chord size", work, write=True)

    def _chord_add(self, group_id: str, task_id: str, index: str, entry: bytes, token: str,
                   expires_at: float | None) -> bool:
        chords, parts = self.chords, self.chord_parts
        now = time.time()
        this = chords.c.group_id == group_id
        if self.dialect in ("mysql", "mariadb"):
            insert_part = parts.insert().prefix_with("IGNORE")
        else:
            insert_part = (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(
                parts).on_conflict_do_nothing(index_elements=[parts.c.group_id, parts.c.member])

        def work(conn: Connection) -> bool:
            # the row lock orders the members of one chord: each counts after the last
            row = conn.execute(
                sa.select(chords.c.size, chords.c.claim, chords.c.claim_until).where(this)
                .where(sa.or_(chords.c.expires_at.is_(None), chords.c.expires_at >= now))
                .with_for_update()).first()
            if row is not None and row.claim == "done":
                return False
            conn.execute(insert_part, {"group_id": group_id, "member": f"{task_id}:{index}",
                                       "position": float(index), "entry": entry,
                                       "expires_at": expires_at})
            if row is None:
                return False
            count = conn.execute(sa.select(sa.func.count()).select_from(parts)
                                 .where(parts.c.group_id == group_id)).scalar_one()
            claimed = chord_claimable(row.size, count, row.claim, row.claim_until, token, now)
            values: dict[str, Any] = {"expires_at": expires_at}
            if claimed:
                values.update(claim=token, claim_until=now + CHORD_CLAIM_SECONDS)
            conn.execute(chords.update().where(this).values(**values))
            return claimed

        return self._run("join chord", work, write=True)

    def _chord_entries(self, group_id: str) -> list[bytes]:
        parts = self.chord_parts
        return self._run("read chord", lambda conn: [bytes(entry) for (entry,) in conn.execute(
            sa.select(parts.c.entry).where(parts.c.group_id == group_id)
            .order_by(parts.c.position))], write=False)

    def _chord_finish(self, group_id: str, token: str) -> bool:
        chords, parts = self.chords, self.chord_parts

        def work(conn: Connection) -> bool:
            done = conn.execute(
                chords.update().where(chords.c.group_id == group_id)
                .where(chords.c.claim == token)
                .values(size=None, claim="done",
                        expires_at=time.time() + CHORD_DONE_SECONDS)).rowcount
            if done:
                conn.execute(parts.delete().where(parts.c.group_id == group_id))
            return bool(done)

        return self._run("finish chord", work, write=True)

    def drop_tables(self) -> None:
        """Drop this backend's tables (for tests and uninstalling)."""
        self.metadata.drop_all(self.engine, checkfirst=True)
        self._tables_ready = False

    def close(self) -> None:
        if self._pid != getpid():
            self.engine.dispose(close=False)
            return
        self.engine.dispose()


def _define_tables(metadata: sa.MetaData, task_name: str,
                   group_name: str) -> tuple[sa.Table, sa.Table]:
    # BLOB is 64 KiB in MySQL; results can be bigger
    document = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
    tasks = sa.Table(
        task_name, metadata,
        sa.Column("task_id", sa.String(155), primary_key=True),
        sa.Column("status", sa.String(50), nullable=False),
        sa.Column("document", document, nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=True),
        sa.Index(f"{task_name}_expires_at", "expires_at"),
    )
    groups = sa.Table(
        group_name, metadata,
        sa.Column("group_id", sa.String(155), primary_key=True),
        sa.Column("document", document, nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=True),
        sa.Index(f"{group_name}_expires_at", "expires_at"),
    )
    return tasks, groups


def _define_chord_tables(metadata: sa.MetaData, prefix: str) -> tuple[sa.Table, sa.Table]:
    entry = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
    chords = sa.Table(
        prefix + "chord", metadata,
        sa.Column("group_id", sa.String(155), primary_key=True),
        sa.Column("size", sa.Integer(), nullable=True),
        sa.Column("claim", sa.String(155), nullable=True),
        sa.Column("claim_until", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=True),
    )
    parts = sa.Table(
        prefix + "chordpart", metadata,
        sa.Column("group_id", sa.String(155), primary_key=True),
        sa.Column("member", sa.String(200), primary_key=True),
        sa.Column("position", sa.Double(), nullable=False),
        sa.Column("entry", entry, nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=True),
    )
    return chords, parts


def _create_engine(url: str, options: dict) -> Engine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        try:
            return sa.create_engine(url, **options)
        except ImportError as exc:  # the DB-API driver (psycopg, PyMySQL) is missing
            raise _extras.error(exc, f"the db+{parsed.drivername}:// result backend") from None
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        directory = os.path.dirname(os.path.abspath(database))
        os.makedirs(directory, exist_ok=True)
    options.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT)
    engine = sa.create_engine(url, **options)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # WAL: readers never wait for the writer, so a polling wait() does not stall stores
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def _is_conflict(exc: sa_exc.DBAPIError) -> bool:
    """Whether the database aborted the transaction for a lock conflict (worth a rerun)."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _RETRY_SQLSTATES:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _RETRY_MYSQL_ERRORS:
        return True
    return "database is locked" in str(orig)
