"""Where beats share their state: who sent which run, when each entry last ran, and the
entries added with ``fastq schedule``. One store per App, found from its URLs.

A run is named by its entry and its scheduled instant (``due``, integer microseconds
since the epoch). ``claim`` takes runs atomically: a run is claimed once, unless its
claimant's lease ran out before it said "sent", and never when the entry's last run is
at or after it. ``complete`` marks runs sent and moves each entry's last run forwards.

SQL schema (the embedded SQLite file, or a db+ backend's database)::

    fastq_beat_state(name TEXT PRIMARY KEY,
                     last_run_at DOUBLE PRECISION NOT NULL,  -- unix time runs count from
                     last_due BIGINT NOT NULL)  -- the last run claimed, microseconds
    fastq_beat_claims(name TEXT, due BIGINT,      -- PRIMARY KEY (name, due): the run
                      owner TEXT NOT NULL, lease_until DOUBLE PRECISION NOT NULL,
                      sent INTEGER NOT NULL, created DOUBLE PRECISION NOT NULL)
    fastq_beat_entries(name TEXT PRIMARY KEY, document TEXT NOT NULL,  -- JSON
                       enabled INTEGER NOT NULL, updated_at DOUBLE PRECISION NOT NULL)

On MySQL/MariaDB the names are ``VARCHAR(191)`` (an index of utf8mb4 columns holds at
most 767 bytes on older row formats) with the binary collation (names are
case-sensitive); a longer entry name is kept as its first characters and its SHA-256.
MySQL has neither ``ON CONFLICT`` nor ``RETURNING``: the claim is an ``INSERT ... ON
DUPLICATE KEY UPDATE`` that takes over only a lapsed unsent claim, then a read of the
rows now carrying this call's owner and lease, in the same transaction.

Redis keys: ``fastq:beat:state`` (hash name -> "last_run_at last_due"),
``fastq:beat:claim:<name>:<due>`` (``SET NX PX lease``, then kept ``CLAIM_RETENTION``
once sent), ``fastq:beat:entries`` (hash name -> JSON document with ``enabled``).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

#: Seconds a sent claim is kept (SQL rows are deleted after it; Redis keys expire).
CLAIM_RETENTION = 3600.0

#: Rows per claim statement (bound parameters stay under every database's limit).
CLAIM_CHUNK = 400

#: Longest name MySQL/MariaDB keys hold: 191 utf8mb4 characters fit a 767-byte index.
MYSQL_NAME_LENGTH = 191

#: Times a transaction the database aborted for a lock conflict (a deadlock between two
#: beats claiming the same runs) is run again before the error goes up.
CONFLICT_RETRIES = 5

# PostgreSQL serialization failure / deadlock; MySQL lock wait timeout / deadlock
_CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})
_CONFLICT_MYSQL_ERRORS = frozenset({1205, 1213})

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS fastq_beat_state (
        name TEXT PRIMARY KEY, last_run_at DOUBLE PRECISION NOT NULL,
        last_due BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS fastq_beat_claims (
        name TEXT NOT NULL, due BIGINT NOT NULL, owner TEXT NOT NULL,
        lease_until DOUBLE PRECISION NOT NULL, sent INTEGER NOT NULL,
        created DOUBLE PRECISION NOT NULL, PRIMARY KEY (name, due))""",
    """CREATE TABLE IF NOT EXISTS fastq_beat_entries (
        name TEXT PRIMARY KEY, document TEXT NOT NULL, enabled INTEGER NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL)""",
)

# A run is claimable when no claim exists, or its claimant's lease ran out unsent, and
# the entry has not run at or after it. VALUES columns are column1, column2 in SQLite
# and PostgreSQL alike.
_CLAIM = """
    INSERT INTO fastq_beat_claims (name, due, owner, lease_until, sent, created)
    SELECT v.column1, v.column2, ?, ?, 0, ? FROM (VALUES {rows}) AS v
    WHERE NOT EXISTS (SELECT 1 FROM fastq_beat_state s
                      WHERE s.name = v.column1 AND s.last_due >= v.column2)
    ON CONFLICT (name, due) DO UPDATE SET
        owner = excluded.owner, lease_until = excluded.lease_until
    WHERE fastq_beat_claims.sent = 0 AND fastq_beat_claims.lease_until < ?
    RETURNING name, due
"""

_MARK_SENT = "UPDATE fastq_beat_claims SET sent = 1 WHERE name = ? AND due = ?"

_SET_STATE = """
    INSERT INTO fastq_beat_state (name, last_run_at, last_due) VALUES (?, ?, ?)
    ON CONFLICT (name) DO UPDATE SET
        last_run_at = excluded.last_run_at, last_due = excluded.last_due
    WHERE fastq_beat_state.last_due < excluded.last_due
"""

_INIT = """
    INSERT INTO fastq_beat_state (name, last_run_at, last_due) VALUES (?, ?, ?)
    ON CONFLICT (name) DO NOTHING
"""

_PUT_ENTRY = """
    INSERT INTO fastq_beat_entries (name, document, enabled, updated_at)
    VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET
        document = excluded.document, enabled = excluded.enabled,
        updated_at = excluded.updated_at
"""

# MySQL/MariaDB. utf8mb4_bin: names compare as they are written ("Tick" is not "tick").
_MYSQL_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS fastq_beat_state (
        name VARCHAR(191) NOT NULL PRIMARY KEY, last_run_at DOUBLE PRECISION NOT NULL,
        last_due BIGINT NOT NULL) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    """CREATE TABLE IF NOT EXISTS fastq_beat_claims (
        name VARCHAR(191) NOT NULL, due BIGINT NOT NULL, owner VARCHAR(191) NOT NULL,
        lease_until DOUBLE PRECISION NOT NULL, sent INTEGER NOT NULL,
        created DOUBLE PRECISION NOT NULL, PRIMARY KEY (name, due))
        DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    """CREATE TABLE IF NOT EXISTS fastq_beat_entries (
        name VARCHAR(191) NOT NULL PRIMARY KEY, document LONGTEXT NOT NULL,
        enabled INTEGER NOT NULL, updated_at DOUBLE PRECISION NOT NULL)
        DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
)

# The same claim: a new row, or a lapsed unsent claim taken over (the row is locked by
# the statement, so of several beats exactly one sees it lapsed and takes it); the
# others leave the row as it is. The parameters: owner, lease_until, created, the rows,
# then now, owner, now, lease_until. MySQL applies the assignments left to right, so the
# owner's condition reads the old lease_until and the lease's is unaffected by the owner.
_MYSQL_CLAIM = """
    INSERT INTO fastq_beat_claims (name, due, owner, lease_until, sent, created)
    SELECT v.name, v.due, ?, ?, 0, ? FROM ({rows}) AS v
    WHERE NOT EXISTS (SELECT 1 FROM fastq_beat_state s
                      WHERE s.name = v.name AND s.last_due >= v.due)
    ON DUPLICATE KEY UPDATE
        owner = IF(fastq_beat_claims.sent = 0 AND fastq_beat_claims.lease_until < ?,
                   ?, fastq_beat_claims.owner),
        lease_until = IF(fastq_beat_claims.sent = 0 AND fastq_beat_claims.lease_until < ?,
                         ?, fastq_beat_claims.lease_until)
"""

# Which of them this call got (or kept): an owner is one beat, and its lease_until this
# call's. (name, due) IN (...) is a range of the primary key in every database here.
_CLAIMED_BY = """
    SELECT name, due FROM fastq_beat_claims
    WHERE owner = ? AND lease_until = ? AND sent = 0 AND (name, due) IN ({pairs})
"""

# A claim stays its owner's while the owner is the one named in it: a takeover (of a
# lapsed claim) renames it, so a renewal can never take back what another beat holds.
_EXTEND = """
    UPDATE fastq_beat_claims SET lease_until = ?
    WHERE owner = ? AND sent = 0 AND (name, due) IN ({pairs})
"""

_MYSQL_MARK_SENT = "UPDATE fastq_beat_claims SET sent = 1 WHERE (name, due) IN ({pairs})"

# last_run_at first: its condition reads the last_due before this statement moves it
_MYSQL_SET_STATE = """
    INSERT INTO fastq_beat_state (name, last_run_at, last_due) VALUES (?, ?, ?)
    ON DUPLICATE KEY UPDATE
        last_run_at = IF(last_due < VALUES(last_due), VALUES(last_run_at), last_run_at),
        last_due = GREATEST(last_due, VALUES(last_due))
"""

# (not INSERT IGNORE: it would also turn a too-long value into a warning)
_MYSQL_INIT = """
    INSERT INTO fastq_beat_state (name, last_run_at, last_due) VALUES (?, ?, ?)
    ON DUPLICATE KEY UPDATE name = name
"""

_MYSQL_PUT_ENTRY = """
    INSERT INTO fastq_beat_entries (name, document, enabled, updated_at)
    VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE
        document = VALUES(document), enabled = VALUES(enabled),
        updated_at = VALUES(updated_at)
"""


def _is_conflict(exc: BaseException) -> bool:
    """Whether the database aborted the transaction for a lock conflict (worth a rerun)."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) in _CONFLICT_SQLSTATES:
        return True
    args = getattr(orig, "args", ())
    return bool(args) and isinstance(args[0], int) and args[0] in _CONFLICT_MYSQL_ERRORS


class BeatStore:
    """The interface; ``round_trips`` counts the requests made to the server."""

    #: what the log says the store is
    description = "store"

    def __init__(self) -> None:
        self.round_trips = 0

    def load(self) -> dict[str, tuple[float, int]]:
        """name -> (last_run_at, last_due) of every entry that has run."""
        raise NotImplementedError

    def init(self, first_runs: dict[str, float]) -> None:
        """Give entries never seen before their first last_run_at, unless one is there."""
        raise NotImplementedError

    def claim(self, runs: Sequence[tuple[str, int]], owner: str,
              lease: float) -> set[tuple[str, int]]:
        """Claim ``runs`` (name, due) for ``lease`` seconds; the ones this call got."""
        raise NotImplementedError

    def extend(self, runs: Sequence[tuple[str, int]], owner: str,
               lease: float) -> set[tuple[str, int]]:
        """Renew ``owner``'s unsent claims of ``runs`` for ``lease`` seconds from now; the
        ones still its own (the others were taken over after their lease ran out)."""
        raise NotImplementedError

    def complete(self, runs: Sequence[tuple[str, int, float]]) -> None:
        """Mark runs (name, due, last_run_at) sent and record them as each entry's last."""
        raise NotImplementedError

    # the database schedule source
    def entries(self) -> dict[str, dict[str, Any]]:
        """name -> document ({"task", "schedule", "args", "kwargs", "options", "enabled"})."""
        raise NotImplementedError

    def put_entry(self, name: str, document: dict[str, Any]) -> None:
        raise NotImplementedError

    def remove_entry(self, name: str) -> bool:
        raise NotImplementedError

    def set_enabled(self, name: str, enabled: bool) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SQLStore(BeatStore):
    """Over a sqlite3 connection (the embedded default) or a SQLAlchemy engine (db+)."""

    def __init__(self, *, path: str | None = None, engine: Any = None) -> None:
        super().__init__()
        self._path, self._engine = path, engine
        self._conn: Any = None
        self._lock = threading.Lock()
        self._last_cleanup = 0.0
        self._mysql = False
        if engine is not None:
            self.description = f"the {engine.dialect.name} database of the result backend"
            style = engine.dialect.paramstyle
            self._mark = "%s" if style in ("format", "pyformat") else "?"
            self._mysql = engine.dialect.name in ("mysql", "mariadb")
        else:
            self.description = f"SQLite file {path}"
            self._mark = "?"
        self._ready = False
        #: MySQL keys of the names longer than MYSQL_NAME_LENGTH -> the names
        self._long_names: dict[str, str] = {}

    def _sql(self, text: str) -> str:
        return text if self._mark == "?" else text.replace("?", self._mark)

    def _key(self, name: str) -> str:
        """The name as the tables hold it: on MySQL, a name too long for its key columns
        becomes its first characters and its SHA-256 (``_name`` turns it back)."""
        if not self._mysql or len(name) <= MYSQL_NAME_LENGTH:
            return name
        digest = hashlib.sha256(name.encode()).hexdigest()
        key = f"{name[:MYSQL_NAME_LENGTH - len(digest) - 1]}#{digest}"
        self._long_names[key] = name
        return key

    def _name(self, key: str) -> str:
        return self._long_names.get(key, key)

    def _transaction(self, work: Any) -> Any:
        """Run ``work(execute)`` in one transaction; ``execute(sql, params, many)``."""
        with self._lock:
            if self._engine is not None:
                for attempt in range(CONFLICT_RETRIES + 1):
                    try:
                        return self._engine_transaction(work)
                    except Exception as exc:
                        # a deadlock between beats claiming the same runs rolled the whole
                        # transaction back: running it again is safe
                        if attempt == CONFLICT_RETRIES or not _is_conflict(exc):
                            raise
                        time.sleep(0.01 * (attempt + 1))
            if self._conn is None:
                from .brokers.sqlite import open_database

                self._conn = open_database(self._path or "")
            conn = self._conn

            def execute(sql: str, params: Any = (), many: bool = False) -> list:
                if many:
                    conn.executemany(sql, list(params))
                    return []
                return conn.execute(sql, tuple(params)).fetchall()
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._ensure(execute)
                out = work(execute)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return out

    def _engine_transaction(self, work: Any) -> Any:
        with self._engine.begin() as conn:
            def execute(sql: str, params: Any = (), many: bool = False) -> list:
                if many:
                    if params:
                        conn.exec_driver_sql(self._sql(sql), list(params))
                    return []
                result = conn.exec_driver_sql(self._sql(sql), tuple(params))
                return list(result.fetchall()) if result.returns_rows else []
            self._ensure(execute)
            return work(execute)

    def _ensure(self, execute: Any) -> None:
        if not self._ready:
            for statement in _MYSQL_SCHEMA if self._mysql else _SCHEMA:
                execute(statement)
            self._ready = True

    def load(self) -> dict[str, tuple[float, int]]:
        self.round_trips += 1
        rows = self._transaction(lambda ex: ex(
            "SELECT name, last_run_at, last_due FROM fastq_beat_state"))
        return {self._name(name): (float(last), int(due)) for name, last, due in rows}

    def claim(self, runs: Sequence[tuple[str, int]], owner: str,
              lease: float) -> set[tuple[str, int]]:
        got: set[tuple[str, int]] = set()
        for start in range(0, len(runs), CLAIM_CHUNK):
            # in key order: two beats claiming the same runs lock them in the same order
            chunk = sorted((self._key(name), due)
                           for name, due in runs[start:start + CLAIM_CHUNK])
            self.round_trips += 1
            rows = self._transaction(self._claim_work(chunk, owner, time.time(), lease))
            got.update((self._name(name), int(due)) for name, due in rows)
        return got

    def _claim_work(self, chunk: list[tuple[str, int]], owner: str, now: float,
                    lease: float) -> Any:
        """The transaction claiming ``chunk``: it returns the (name, due) it got."""
        flat: list[Any] = [value for run in chunk for value in run]
        until = now + lease
        pairs = ", ".join(["(?, ?)"] * len(chunk))
        if not self._mysql:
            sql = _CLAIM.format(rows=pairs)
            return lambda execute: execute(sql, [owner, until, now, *flat, now])
        rows = " UNION ALL ".join(["SELECT ? AS name, ? AS due"]
                                  + ["SELECT ?, ?"] * (len(chunk) - 1))
        claim = _MYSQL_CLAIM.format(rows=rows)
        claimed = _CLAIMED_BY.format(pairs=pairs)

        def work(execute: Any) -> list:
            execute(claim, [owner, until, now, *flat, now, owner, now, until])
            return execute(claimed, [owner, until, *flat])
        return work

    def extend(self, runs: Sequence[tuple[str, int]], owner: str,
               lease: float) -> set[tuple[str, int]]:
        kept: set[tuple[str, int]] = set()
        for start in range(0, len(runs), CLAIM_CHUNK):
            chunk = sorted((self._key(name), due)
                           for name, due in runs[start:start + CLAIM_CHUNK])
            flat: list[Any] = [value for run in chunk for value in run]
            pairs = ", ".join(["(?, ?)"] * len(chunk))
            until = time.time() + lease

            def work(execute: Any, flat: list = flat, pairs: str = pairs,
                     until: float = until) -> list:
                execute(_EXTEND.format(pairs=pairs), [until, owner, *flat])
                return execute(_CLAIMED_BY.format(pairs=pairs), [owner, until, *flat])
            self.round_trips += 1
            rows = self._transaction(work)
            kept.update((self._name(name), int(due)) for name, due in rows)
        return kept

    def init(self, first_runs: dict[str, float]) -> None:
        self.round_trips += 1
        rows = [(self._key(name), last, 0) for name, last in first_runs.items()]
        sql = _MYSQL_INIT if self._mysql else _INIT
        self._transaction(lambda ex: ex(sql, rows, many=True))

    def complete(self, runs: Sequence[tuple[str, int, float]]) -> None:
        if not runs:
            return
        now = time.time()
        cleanup = now - self._last_cleanup > 60
        if cleanup:
            self._last_cleanup = now
        keyed = [(self._key(name), due, last) for name, due, last in runs]

        def work(execute: Any) -> None:
            if self._mysql:
                # one statement a chunk: PyMySQL runs an UPDATE's executemany row by row
                for start in range(0, len(keyed), CLAIM_CHUNK):
                    chunk = keyed[start:start + CLAIM_CHUNK]
                    execute(_MYSQL_MARK_SENT.format(pairs=", ".join(["(?, ?)"] * len(chunk))),
                            [value for name, due, _ in chunk for value in (name, due)])
                execute(_MYSQL_SET_STATE, [(name, last, due) for name, due, last in keyed],
                        many=True)
            else:
                execute(_MARK_SENT, [(name, due) for name, due, _ in keyed], many=True)
                execute(_SET_STATE, [(name, last, due) for name, due, last in keyed],
                        many=True)
            if cleanup:
                execute("DELETE FROM fastq_beat_claims WHERE created < ?",
                        (now - CLAIM_RETENTION,))
        self.round_trips += 1
        self._transaction(work)

    def entries(self) -> dict[str, dict[str, Any]]:
        self.round_trips += 1
        rows = self._transaction(lambda ex: ex(
            "SELECT name, document, enabled FROM fastq_beat_entries"))
        return {name: {**json.loads(doc), "enabled": bool(enabled)}
                for name, doc, enabled in rows}

    def put_entry(self, name: str, document: dict[str, Any]) -> None:
        if self._mysql and len(name) > MYSQL_NAME_LENGTH:
            raise ValueError(f"periodic task names in MySQL/MariaDB are at most "
                             f"{MYSQL_NAME_LENGTH} characters; {name[:40]!r}... has "
                             f"{len(name)}")
        body = {k: v for k, v in document.items() if k != "enabled"}
        enabled = int(document.get("enabled", True))
        sql = _MYSQL_PUT_ENTRY if self._mysql else _PUT_ENTRY
        self._transaction(lambda ex: ex(sql, (name, json.dumps(body), enabled, time.time())))

    def remove_entry(self, name: str) -> bool:
        # a read, then the change: MySQL has no RETURNING, and its row count of an
        # UPDATE depends on the connection's flags
        def work(execute: Any) -> bool:
            if not execute("SELECT 1 FROM fastq_beat_entries WHERE name = ?", (name,)):
                return False
            execute("DELETE FROM fastq_beat_entries WHERE name = ?", (name,))
            return True
        return self._transaction(work)

    def set_enabled(self, name: str, enabled: bool) -> bool:
        def work(execute: Any) -> bool:
            if not execute("SELECT 1 FROM fastq_beat_entries WHERE name = ?", (name,)):
                return False
            execute("UPDATE fastq_beat_entries SET enabled = ?, updated_at = ? WHERE name = ?",
                    (int(enabled), time.time(), name))
            return True
        return self._transaction(work)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# KEYS: the state hash. ARGV: lease ms, owner, then name, due, claim key for each run.
# Returns the indexes (1-based) of the runs claimed.
_REDIS_CLAIM = """
local got = {}
local n = 0
for i = 3, #ARGV, 3 do
    local state = redis.call('HGET', KEYS[1], ARGV[i])
    local last_due = state and tonumber(string.match(state, ' (%S+)$')) or nil
    if not last_due or last_due < tonumber(ARGV[i + 1]) then
        if redis.call('SET', ARGV[i + 2], ARGV[2], 'NX', 'PX', ARGV[1]) then
            n = n + 1
            got[n] = (i - 3) / 3 + 1
        end
    end
end
return got
"""

# KEYS: the state hash. ARGV: retention ms, then name, due, last_run_at, claim key.
_REDIS_COMPLETE = """
for i = 2, #ARGV, 4 do
    local state = redis.call('HGET', KEYS[1], ARGV[i])
    local last_due = state and tonumber(string.match(state, ' (%S+)$')) or nil
    if not last_due or last_due < tonumber(ARGV[i + 1]) then
        redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2] .. ' ' .. ARGV[i + 1])
    end
    redis.call('SET', ARGV[i + 3], 'sent', 'PX', ARGV[1])
end
return 1
"""


# ARGV: lease ms, owner, then the claim keys. Returns the indexes (1-based) of the keys
# still holding the owner, whose expiry is pushed back.
_REDIS_EXTEND = """
local got = {}
for i = 3, #ARGV do
    if redis.call('GET', ARGV[i]) == ARGV[2] then
        redis.call('PEXPIRE', ARGV[i], ARGV[1])
        got[#got + 1] = i - 2
    end
end
return got
"""


class RedisStore(BeatStore):
    """``SET NX PX`` claims and a state hash, each step one script call."""

    def __init__(self, url: str, prefix: str = "fastq:beat:") -> None:
        super().__init__()
        from ._extras import require

        redis = require("redis", "a beat on Redis")
        from .brokers import mask_url

        self.description = f"Redis {mask_url(url)}"
        self._client = redis.Redis.from_url(url)
        self._prefix = prefix
        self._state = prefix + "state"
        self._entries = prefix + "entries"
        self._claim = self._client.register_script(_REDIS_CLAIM)
        self._complete = self._client.register_script(_REDIS_COMPLETE)
        self._extend = self._client.register_script(_REDIS_EXTEND)

    def _claim_key(self, name: str, due: int) -> str:
        return f"{self._prefix}claim:{name}:{due}"

    def load(self) -> dict[str, tuple[float, int]]:
        self.round_trips += 1
        found = {}
        for name, value in self._client.hgetall(self._state).items():
            last, due = value.decode().split(" ")
            found[name.decode()] = (float(last), int(due))
        return found

    def claim(self, runs: Sequence[tuple[str, int]], owner: str,
              lease: float) -> set[tuple[str, int]]:
        got: set[tuple[str, int]] = set()
        for start in range(0, len(runs), CLAIM_CHUNK):
            chunk = runs[start:start + CLAIM_CHUNK]
            args: list[Any] = [max(1, int(lease * 1000)), owner]
            for name, due in chunk:
                args += [name, due, self._claim_key(name, due)]
            self.round_trips += 1
            for index in self._claim(keys=[self._state], args=args):
                got.add(chunk[int(index) - 1])
        return got

    def extend(self, runs: Sequence[tuple[str, int]], owner: str,
               lease: float) -> set[tuple[str, int]]:
        kept: set[tuple[str, int]] = set()
        for start in range(0, len(runs), CLAIM_CHUNK):
            chunk = runs[start:start + CLAIM_CHUNK]
            args: list[Any] = [max(1, int(lease * 1000)), owner]
            args += [self._claim_key(name, due) for name, due in chunk]
            self.round_trips += 1
            for index in self._extend(args=args):
                kept.add(chunk[int(index) - 1])
        return kept

    def init(self, first_runs: dict[str, float]) -> None:
        self.round_trips += 1
        with self._client.pipeline(transaction=False) as pipe:
            for name, last in first_runs.items():
                pipe.hsetnx(self._state, name, f"{last!r} 0")
            pipe.execute()

    def complete(self, runs: Sequence[tuple[str, int, float]]) -> None:
        if not runs:
            return
        args: list[Any] = [int(CLAIM_RETENTION * 1000)]
        for name, due, last in runs:
            args += [name, due, repr(last), self._claim_key(name, due)]
        self.round_trips += 1
        self._complete(keys=[self._state], args=args)

    def entries(self) -> dict[str, dict[str, Any]]:
        self.round_trips += 1
        return {name.decode(): {"enabled": True, **json.loads(doc)}
                for name, doc in self._client.hgetall(self._entries).items()}

    def put_entry(self, name: str, document: dict[str, Any]) -> None:
        self._client.hset(self._entries, name, json.dumps(document))

    def remove_entry(self, name: str) -> bool:
        return bool(self._client.hdel(self._entries, name))

    def set_enabled(self, name: str, enabled: bool) -> bool:
        raw = self._client.hget(self._entries, name)
        if raw is None:
            return False
        self.put_entry(name, {**json.loads(raw), "enabled": enabled})
        return True

    def close(self) -> None:
        self._client.close()


class MemoryStore(BeatStore):
    """For ``memory://`` apps and a beat that leads alone (the AMQP leader): the state
    lives in this process, optionally saved to a JSON file so a restart keeps it."""

    def __init__(self, path: str | None = None, description: str = "this process") -> None:
        super().__init__()
        self.description = description
        self._path = path
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, int]] = {}
        self._claims: dict[tuple[str, int], tuple[str, float, bool]] = {}
        self._entries: dict[str, dict[str, Any]] = {}
        if path:
            try:
                with open(path) as fh:
                    saved = json.load(fh)
                self._state = {k: (float(v[0]), int(v[1])) for k, v in saved["state"].items()}
                self._entries = saved.get("entries", {})
            except (OSError, ValueError, KeyError):
                pass

    def _save(self) -> None:
        if not self._path:
            return
        import os

        os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
        tmp = self._path + ".tmp"
        # 0600, as the other state files: it names the entries and their arguments. The
        # chmod covers a temp file left over with another mode (O_CREAT keeps it).
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"state": self._state, "entries": self._entries}, fh)
        os.replace(tmp, self._path)

    def load(self) -> dict[str, tuple[float, int]]:
        with self._lock:
            return dict(self._state)

    def claim(self, runs: Sequence[tuple[str, int]], owner: str,
              lease: float) -> set[tuple[str, int]]:
        now = time.time()
        got = set()
        with self._lock:
            for name, due in runs:
                state = self._state.get(name)
                if state is not None and state[1] >= due:
                    continue
                held = self._claims.get((name, due))
                if held is not None and (held[2] or held[1] >= now):
                    continue
                self._claims[(name, due)] = (owner, now + lease, False)
                got.add((name, due))
        return got

    def extend(self, runs: Sequence[tuple[str, int]], owner: str,
               lease: float) -> set[tuple[str, int]]:
        until = time.time() + lease
        kept = set()
        with self._lock:
            for run in runs:
                held = self._claims.get(run)
                if held is not None and held[0] == owner and not held[2]:
                    self._claims[run] = (owner, until, False)
                    kept.add(run)
        return kept

    def init(self, first_runs: dict[str, float]) -> None:
        with self._lock:
            for name, last in first_runs.items():
                self._state.setdefault(name, (last, 0))

    def complete(self, runs: Sequence[tuple[str, int, float]]) -> None:
        with self._lock:
            for name, due, last in runs:
                self._claims[(name, due)] = ("", 0.0, True)
                state = self._state.get(name)
                if state is None or state[1] < due:
                    self._state[name] = (last, due)
            horizon = (time.time() - CLAIM_RETENTION) * 1e6
            for key in [k for k in self._claims if k[1] < horizon]:
                del self._claims[key]
            self._save()

    def entries(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: {"enabled": True, **v} for k, v in self._entries.items()}

    def put_entry(self, name: str, document: dict[str, Any]) -> None:
        with self._lock:
            self._entries[name] = dict(document)
            self._save()

    def remove_entry(self, name: str) -> bool:
        with self._lock:
            found = self._entries.pop(name, None) is not None
            self._save()
            return found

    def set_enabled(self, name: str, enabled: bool) -> bool:
        with self._lock:
            if name not in self._entries:
                return False
            self._entries[name]["enabled"] = enabled
            self._save()
            return True


def store_url(app: Any) -> str | None:
    """The URL whose server the beats of ``app`` share: the result backend's when it is
    a store (sqlite, redis, db+), else the broker's (sqlite, redis, memory); None for
    AMQP with rpc:// or no backend."""
    candidates = []
    if app.conf.result_backend:
        candidates.append(app.conf.result_backend)
    candidates.append(app.broker_url)
    for url in candidates:
        scheme = url.split("://", 1)[0].lower()
        if scheme in ("sqlite", "redis", "rediss", "memory") or scheme.startswith("db+"):
            return url
    return None


def open_store(app: Any) -> BeatStore | None:
    """The shared store of ``app``'s beats, or None when it has none (AMQP only)."""
    url = store_url(app)
    if url is None:
        return None
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        from .brokers import sqlite_path

        return SQLStore(path=sqlite_path(url))
    if scheme in ("redis", "rediss"):
        prefix = app.conf.result_backend_transport_options.get("global_keyprefix", "")
        return RedisStore(url, prefix=f"{prefix}fastq:beat:")
    if scheme.startswith("db+"):
        backend = app.backend if url == app.backend_url else None
        engine = getattr(backend, "engine", None)
        if engine is None:
            from .backends import create_backend

            engine = create_backend(url).engine  # type: ignore[attr-defined]
        return SQLStore(engine=engine)
    return MemoryStore(description="this process (memory://)")
