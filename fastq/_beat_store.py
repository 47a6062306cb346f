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

Redis keys: ``fastq:beat:state`` (hash name -> "last_run_at last_due"),
``fastq:beat:claim:<name>:<due>`` (``SET NX PX lease``, then kept ``CLAIM_RETENTION``
once sent), ``fastq:beat:entries`` (hash name -> JSON document with ``enabled``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

#: Seconds a sent claim is kept (SQL rows are deleted after it; Redis keys expire).
CLAIM_RETENTION = 3600.0

#: Rows per claim statement (bound parameters stay under every database's limit).
CLAIM_CHUNK = 400

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
        if engine is not None:
            self.description = f"the {engine.dialect.name} database of the result backend"
            style = engine.dialect.paramstyle
            self._mark = "%s" if style in ("format", "pyformat") else "?"
        else:
            self.description = f"SQLite file {path}"
            self._mark = "?"
        self._ready = False

    def _sql(self, text: str) -> str:
        return text if self._mark == "?" else text.replace("?", self._mark)

    def _transaction(self, work: Any) -> Any:
        """Run ``work(execute)`` in one transaction; ``execute(sql, params, many)``."""
        with self._lock:
            if self._engine is not None:
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

    def _ensure(self, execute: Any) -> None:
        if not self._ready:
            for statement in _SCHEMA:
                execute(statement)
            self._ready = True

    def load(self) -> dict[str, tuple[float, int]]:
        self.round_trips += 1
        rows = self._transaction(lambda ex: ex(
            "SELECT name, last_run_at, last_due FROM fastq_beat_state"))
        return {name: (float(last), int(due)) for name, last, due in rows}

    def claim(self, runs: Sequence[tuple[str, int]], owner: str,
              lease: float) -> set[tuple[str, int]]:
        got: set[tuple[str, int]] = set()
        for start in range(0, len(runs), CLAIM_CHUNK):
            chunk = runs[start:start + CLAIM_CHUNK]
            now = time.time()
            sql = _CLAIM.format(rows=", ".join(["(?, ?)"] * len(chunk)))
            params: list[Any] = [owner, now + lease, now]
            for name, due in chunk:
                params += [name, due]
            params.append(now)
            self.round_trips += 1
            rows = self._transaction(lambda ex, sql=sql, params=params: ex(sql, params))
            got.update((name, int(due)) for name, due in rows)
        return got

    def init(self, first_runs: dict[str, float]) -> None:
        self.round_trips += 1
        self._transaction(lambda ex: ex(
            "INSERT INTO fastq_beat_state (name, last_run_at, last_due) VALUES (?, ?, 0) "
            "ON CONFLICT (name) DO NOTHING", list(first_runs.items()), many=True))

    def complete(self, runs: Sequence[tuple[str, int, float]]) -> None:
        if not runs:
            return
        now = time.time()
        cleanup = now - self._last_cleanup > 60
        if cleanup:
            self._last_cleanup = now

        def work(execute: Any) -> None:
            execute(_MARK_SENT, [(name, due) for name, due, _ in runs], many=True)
            execute(_SET_STATE, [(name, last, due) for name, due, last in runs], many=True)
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
        body = {k: v for k, v in document.items() if k != "enabled"}
        enabled = int(document.get("enabled", True))
        self._transaction(lambda ex: ex(
            """INSERT INTO fastq_beat_entries (name, document, enabled, updated_at)
               VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET
               document = excluded.document, enabled = excluded.enabled,
               updated_at = excluded.updated_at RETURNING name""",
            (name, json.dumps(body), enabled, time.time())))

    def remove_entry(self, name: str) -> bool:
        rows = self._transaction(lambda ex: ex(
            "DELETE FROM fastq_beat_entries WHERE name = ? RETURNING name", (name,)))
        return bool(rows)

    def set_enabled(self, name: str, enabled: bool) -> bool:
        rows = self._transaction(lambda ex: ex(
            "UPDATE fastq_beat_entries SET enabled = ?, updated_at = ? WHERE name = ? "
            "RETURNING name", (int(enabled), time.time(), name)))
        return bool(rows)

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
        with open(tmp, "w") as fh:
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
