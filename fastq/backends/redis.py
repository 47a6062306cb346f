"""Results in Redis with Celery's layout, so Celery and fastq read each other's results.

Keys (``celery-protocol.md`` §3.5)::

    [global_keyprefix]celery-task-meta-<task id>   STRING  the meta document, JSON;
                                                            expires after result_expires
    channel celery-task-meta-<task id>                      the same document, PUBLISHed
                                                            by every write
    [global_keyprefix]celery-taskset-meta-<group id> STRING {"result": GroupResult tuple},
                                                            by GroupResult.save(); expires

Chords use Celery 5.7's keys (§3.5.5), so a chord joins whichever of Celery's and
fastq's workers run its members::

    celery-taskset-meta-<gid>.s   STRING  chord size (the client, at apply time)
    celery-taskset-meta-<gid>.t   STRING  size adjustment (Celery's add_to_chord INCR)
    celery-taskset-meta-<gid>.j   ZSET    JSON [1, "<tid>", "<state>", <result>], scored
                                          by group_index (+inf when unknown); a LIST in
                                          finishing order with Celery's transport option
                                          result_chord_ordered=False
    celery-taskset-meta-<gid>.d   SET     "<tid>:<index>" of the members recorded
    celery-taskset-meta-<gid>.c   STRING  the token of the worker sending the body
                                          (SET NX EX), then "done" for 300 s

A write is one Lua script per batch: for each task, skip it if a SUCCESS is stored,
else ``SET ... PX`` and ``PUBLISH`` on the channel named like the key. A script runs
atomically like Celery's ``MULTI``/``EXEC``, and also makes the SUCCESS check and the
write one step (Celery's separate ``GET`` leaves a gap). ``wait()`` subscribes to the
channel and then reads the key, so a result stored in between is never missed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis

from .. import serialization
from .._registry import mask_url
from ..exceptions import ResultTimeout
from ..states import READY_STATES
from .base import CHORD_CLAIM_SECONDS, CHORD_DONE_SECONDS, Backend

#: Celery's key (and channel) name for a task's result, after the optional prefix.
KEY_PREFIX = "celery-task-meta-"

#: Celery's key name for a saved group, after the optional prefix.
GROUP_KEY_PREFIX = "celery-taskset-meta-"

#: How often ``wait`` re-reads the key while listening, in seconds, for writers that
#: store without publishing (Celery's own ``interval`` fallback is 0.5 s too).
RECHECK_INTERVAL = 0.5

#: Celery 5.7's marker for a compressed result value (``result_compression``).
COMPRESSED_MAGIC = b"\x00celery-compressed\x00"

#: KEYS: result keys. ARGV: expiry in ms (0 = none), then one document per key.
#: Returns how many were written (the others held a SUCCESS already).
_STORE = r"""
local ttl = tonumber(ARGV[1])
local written = 0
for i, key in ipairs(KEYS) do
    local current = redis.call('GET', key)
    local sticky = false
    if current then
        local ok, meta = pcall(cjson.decode, current)
        sticky = ok and type(meta) == 'table' and meta.status == 'SUCCESS'
    end
    if not sticky then
        local value = ARGV[i + 1]
        if ttl > 0 then
            redis.call('SET', key, value, 'PX', ttl)
        else
            redis.call('SET', key, value)
        end
        redis.call('PUBLISH', key, value)
        written = written + 1
    end
end
return written
"""


#: KEYS: .j .t .s .d .c and the group key. ARGV: task id, entry, index (score), expiry
#: in s (0 = none), claim token, claim lease in s, "1" for a ZSET .j ("0": a LIST).
#: Returns 1 when every member is in and the claim is this token's.
_CHORD_ADD = r"""
local jkey, tkey, skey, dkey, ckey, gkey = unpack(KEYS)
local ttl = tonumber(ARGV[4])
local token, lease, ordered = ARGV[5], tonumber(ARGV[6]), ARGV[7] == '1'
if redis.call('GET', ckey) == 'done' then
    return 0
end
-- counted by (task id, index): a redelivered member adds nothing
if redis.call('SADD', dkey, ARGV[1] .. ':' .. ARGV[3]) == 1 then
    if ordered then
        redis.call('ZADD', jkey, ARGV[3], ARGV[2])
    else
        redis.call('RPUSH', jkey, ARGV[2])
    end
end
if ttl > 0 then
    for _, key in ipairs({jkey, tkey, skey, dkey, gkey}) do
        redis.call('EXPIRE', key, ttl)
    end
end
local size = redis.call('GET', skey)
if not size then
    return 0
end
local total = tonumber(size) + tonumber(redis.call('GET', tkey) or '0')
local count
if ordered then
    count = redis.call('ZCARD', jkey)
else
    count = redis.call('LLEN', jkey)
end
if count < total then
    return 0
end
local holder = redis.call('GET', ckey)
if holder and holder ~= token then
    return 0
end
redis.call('SET', ckey, token, 'EX', lease)
return 1
"""

#: KEYS: .c .j .t .s .d. ARGV: claim token, seconds to keep "done". Drops the chord's
#: data and marks it done if the token still holds the claim; returns 1 if so.
_CHORD_FINISH = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SET', KEYS[1], 'done', 'EX', tonumber(ARGV[2]))
return 1
"""


class RedisBackend(Backend):
    """``redis://[user:password@]host[:port]/db`` or ``rediss://`` (TLS).

    Options: ``global_keyprefix`` (Celery's ``result_backend_transport_options`` name;
    ``_`` is appended unless it ends in one of ``:_-.``), ``result_chord_ordered``
    (Celery's: False keeps a chord's results in finishing order), ``socket_timeout``,
    ``socket_connect_timeout``. Connection failures raise ``ConnectionError``.
    """

    capabilities = frozenset({"notify", "groups", "chords"})

    def __init__(self, url: str, **options: Any) -> None:
        prefix = str(options.pop("global_keyprefix", "") or "")
        #: a chord's results in a ZSET by index (Celery's default), else a LIST
        self.chord_ordered = bool(options.pop("result_chord_ordered", True))
        socket_timeout = options.pop("socket_timeout", 5.0)
        connect_timeout = options.pop("socket_connect_timeout", 2.0)
        super().__init__(url, **options)
        if prefix and prefix[-1] not in ":_-.":
            prefix += "_"
        self.prefix = prefix + KEY_PREFIX
        self.group_prefix = prefix + GROUP_KEY_PREFIX
        self._pool = redis.ConnectionPool.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout)
        self._client = redis.Redis(connection_pool=self._pool)
        self._store = self._client.register_script(_STORE)
        self._chord_add_script = self._client.register_script(_CHORD_ADD)
        self._chord_finish_script = self._client.register_script(_CHORD_FINISH)

    def key(self, task_id: str) -> str:
        return self.prefix + task_id

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise ConnectionError(f"result backend {mask_url(self.url)} unreachable during "
                                  f"{what}: {exc}") from exc

    # -- primitives ------------------------------------------------------------------
    def _get_many(self, task_ids: Sequence[str]) -> dict[str, bytes]:
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return {}
        values = self._call("get", self._client.mget, [self.key(t) for t in ids])
        return {t: _uncompress(v) for t, v in zip(ids, values) if v is not None}

    def _set_many(self, items: Sequence[tuple[str, str, bytes]], expires_at: float | None) -> None:
        ttl_ms = 0
        if expires_at is not None:
            ttl_ms = max(1, int((expires_at - time.time()) * 1000))
        self._call("store", self._store, keys=[self.key(task_id) for task_id, _s, _d in items],
                   args=[ttl_ms, *(document for _t, _s, document in items)])

    def _delete(self, task_id: str) -> None:
        self._call("forget", self._client.delete, self.key(task_id))

    def _get_group(self, group_id: str) -> bytes | None:
        value = self._call("restore group", self._client.get, self.group_prefix + group_id)
        return None if value is None else _uncompress(value)

    def _set_group(self, group_id: str, document: bytes, expires_at: float | None) -> None:
        ttl_ms = None
        if expires_at is not None:
            ttl_ms = max(1, int((expires_at - time.time()) * 1000))
        self._call("save group", self._client.set, self.group_prefix + group_id, document,
                   px=ttl_ms)

    def _delete_group(self, group_id: str) -> None:
        self._call("forget group", self._client.delete, self.group_prefix + group_id)

    def _chord_keys(self, group_id: str, *suffixes: str) -> list[str]:
        base = self.group_prefix + group_id
        return [base + suffix for suffix in suffixes]

    def _chord_set_size(self, group_id: str, size: int, expires_at: float | None) -> None:
        skey, ckey = self._chord_keys(group_id, ".s", ".c")
        with self._client.pipeline() as pipe:
            pipe.delete(ckey)  # the same group id applied again is a new run
            pipe.set(skey, size, ex=_seconds_left(expires_at))
            self._call("set chord size", pipe.execute)

    def _chord_add(self, group_id: str, task_id: str, index: str, entry: bytes, token: str,
                   expires_at: float | None) -> bool:
        keys = [*self._chord_keys(group_id, ".j", ".t", ".s", ".d", ".c"),
                self.group_prefix + group_id]
        return bool(self._call("join chord", self._chord_add_script, keys=keys, args=[
            task_id, entry, index, _seconds_left(expires_at) or 0, token,
            CHORD_CLAIM_SECONDS, 1 if self.chord_ordered else 0]))

    def _chord_entries(self, group_id: str) -> list[bytes]:
        read = self._client.zrange if self.chord_ordered else self._client.lrange
        return self._call("read chord", read, self.group_prefix + group_id + ".j", 0, -1)

    def _chord_finish(self, group_id: str, token: str) -> bool:
        keys = self._chord_keys(group_id, ".c", ".j", ".t", ".s", ".d")
        return bool(self._call("finish chord", self._chord_finish_script, keys=keys,
                               args=[token, CHORD_DONE_SECONDS]))

    def close(self) -> None:
        self._client.close()
        self._pool.disconnect()

    # -- waiting ---------------------------------------------------------------------
    def new_async_waiter(self, loop: Any) -> Any:
        """Awaits on ``loop`` share one subscription (``_redis_async``), not a poller."""
        from ._redis_async import RedisNotifiedWaiter

        return RedisNotifiedWaiter(self, loop, RECHECK_INTERVAL)

    def decode_stored(self, value: bytes) -> dict:
        """The meta document of a stored or published value (Celery may compress it)."""
        return self._read_meta(_uncompress(value))

    def wait(self, task_id: str, timeout: float | None = None,
             interval: float | None = None) -> dict:
        """Block until ``task_id`` is ready: listen on its channel, re-read on each message.

        Raises:
            ResultTimeout: ``timeout`` seconds passed first.
        """
        meta = self.get(task_id)
        if meta["status"] in READY_STATES:
            return meta
        deadline = None if timeout is None else time.monotonic() + timeout
        recheck = RECHECK_INTERVAL if interval is None else max(interval, 0.001)
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            self._call("subscribe", pubsub.subscribe, self.key(task_id))
            # read again once subscribed: a result stored before the subscription took
            # effect was published to nobody, but it is in the key
            meta = self.get(task_id)
            while meta["status"] not in READY_STATES:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ResultTimeout(
                        f"task {task_id} is still {meta['status']} after {timeout}s")
                wait = recheck if left is None else min(recheck, left)
                message = self._call("wait", pubsub.get_message, timeout=wait)
                if message is not None and message.get("type") == "message":
                    meta = self._read_meta(_uncompress(message["data"]))
                else:
                    meta = self.get(task_id)
            return meta
        finally:
            pubsub.close()


def _seconds_left(expires_at: float | None) -> int | None:
    """Whole seconds until ``expires_at`` (at least 1), or None for no expiry."""
    if expires_at is None:
        return None
    return max(1, int(expires_at - time.time()))


def _uncompress(value: bytes) -> bytes:
    """The document itself, from a value Celery 5.7 may have stored compressed."""
    if not value.startswith(COMPRESSED_MAGIC):
        return value
    mime, _, data = value[len(COMPRESSED_MAGIC):].partition(b"\x00")
    return serialization.decompress(data, mime.decode())
