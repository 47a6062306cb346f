"""Results in memcached with Celery's key names: ``cache+memcached://host:port/``.

Keys (Celery's cache backend, so either side reads the other's results)::

    [global_keyprefix]celery-task-meta-<task id>      the meta document, JSON (flags 0)
    [global_keyprefix]celery-taskset-meta-<group id>  {"result": GroupResult.as_tuple()}
    [global_keyprefix]celery-taskset-meta-<group id>.fastq-chord
        a chord's join: {"size": n, "parts": {"<task id>:<index>": [index, entry]},
        "claim": token | "done" | null, "claim_until": unix time}; fastq's own (Celery's
        cache backend counts with INCR, which a redelivered member would count twice)

Every key is written with an expiry: ``result_expires`` rounded up to whole seconds,
plus one because memcached's clock ticks once a second and could otherwise drop a key
up to a second early (a key may so live up to two seconds past ``result_expires``).
Expiries beyond memcached's 30-day limit for relative times go as absolute unix times.

A stored SUCCESS is never overwritten: each write reads the key with ``gets`` and then
either ``add``s it (absent: fails if another writer got there first) or ``cas``es it
(fails if it changed since the read), and starts over from a fresh ``gets`` on failure.
Several servers (``host1:port;host2:port``) are spread over by key hash. A chord's
document changes the same way, by ``gets`` then ``add``/``cas`` until one wins; it
holds every member's result, so a chord is bounded by memcached's item size (1 MiB by
default: some thousands of small results).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pymemcache.client.base import PooledClient
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import MemcacheServerError, MemcacheUnexpectedCloseError

from .. import serialization
from .._fork import getpid
from .._registry import mask_url
from ..exceptions import ConfigurationError
from ..states import SUCCESS
from .base import CHORD_CLAIM_SECONDS, CHORD_DONE_SECONDS, Backend, chord_claimable

_T = TypeVar("_T")

#: Celery's key names, after the optional ``global_keyprefix``.
KEY_PREFIX = "celery-task-meta-"
GROUP_KEY_PREFIX = "celery-taskset-meta-"

DEFAULT_PORT = 11211

#: memcached reads an expiry above this many seconds as an absolute unix time.
RELATIVE_EXPIRY_LIMIT = 30 * 86400

#: Rounds of gets + add/cas for one key before giving up (each lost round means another
#: writer changed the key in between).
CAS_ATTEMPTS = 20

#: Rounds for a chord's document, which all its members change as they finish.
CHORD_CAS_ATTEMPTS = 500


class MemcachedBackend(Backend):
    """``cache+memcached://host[:port][;host2[:port]]/``.

    Options: ``global_keyprefix`` (``_`` appended unless it ends in one of ``:_-.``),
    ``connect_timeout``, ``timeout`` (seconds), ``max_pool_size``. Connection failures
    raise ``ConnectionError``.
    """

    capabilities = frozenset({"groups", "chords"})

    def __init__(self, url: str, **options: Any) -> None:
        prefix = str(options.pop("global_keyprefix", "") or "")
        self._client_options = {
            "connect_timeout": float(options.pop("connect_timeout", 2.0)),
            "timeout": float(options.pop("timeout", 5.0)),
            "no_delay": True,
        }
        self._max_pool_size = options.pop("max_pool_size", None)
        super().__init__(url, **options)
        if prefix and prefix[-1] not in ":_-.":
            prefix += "_"
        self.prefix = prefix + KEY_PREFIX
        self.group_prefix = prefix + GROUP_KEY_PREFIX
        self.servers = parse_servers(url)
        self._lock = threading.Lock()
        self._pid = getpid()
        self._client_instance: Any = None

    def key(self, task_id: str) -> str:
        return self.prefix + task_id

    # -- the connection --------------------------------------------------------------
    @property
    def _client(self) -> Any:
        if self._pid != getpid():
            # the parent's sockets are the parent's: start over without closing them
            self._client_instance = None
            self._pid = getpid()
        client = self._client_instance
        if client is None:
            with self._lock:
                if self._client_instance is None:
                    self._client_instance = self._make_client()
                client = self._client_instance
        return client

    def _make_client(self) -> Any:
        if len(self.servers) == 1:
            return PooledClient(self.servers[0], max_pool_size=self._max_pool_size,
                                **self._client_options)
        return HashClient(self.servers, use_pooling=True, max_pool_size=self._max_pool_size,
                          ignore_exc=False, **self._client_options)

    def _call(self, what: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        try:
            return fn(*args, **kwargs)
        except (OSError, MemcacheUnexpectedCloseError) as exc:
            raise ConnectionError(f"result backend {mask_url(self.url)} unreachable during "
                                  f"{what}: {exc!r}") from exc

    def close(self) -> None:
        client, self._client_instance = self._client_instance, None
        if client is not None and self._pid == getpid():
            client.close()

    # -- expiry ----------------------------------------------------------------------
    @staticmethod
    def exptime(expires_at: float | None) -> int:
        """memcached's expiry argument for a key that must live until ``expires_at``."""
        if expires_at is None:
            return 0
        seconds = math.ceil(expires_at - time.time()) + 1
        if seconds > RELATIVE_EXPIRY_LIMIT:
            return math.ceil(expires_at) + 1
        return max(seconds, 1)

    # -- primitives ------------------------------------------------------------------
    def _get_many(self, task_ids: Sequence[str]) -> dict[str, bytes]:
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return {}
        values = self._call("get", self._client.get_many, [self.key(t) for t in ids])
        found = {}
        for task_id in ids:
            value = values.get(self.key(task_id))
            if value is not None:
                found[task_id] = bytes(value)
        return found

    def _set_many(self, items: Sequence[tuple[str, str, bytes]], expires_at: float | None) -> None:
        exptime = self.exptime(expires_at)
        client = self._client
        keys = list(dict.fromkeys(self.key(task_id) for task_id, _s, _d in items))
        current = self._call("store", client.gets_many, keys)
        for task_id, _state, document in items:
            key = self.key(task_id)
            self._store_one(client, key, document, exptime, current.pop(key, None))

    def _store_one(self, client: Any, key: str, document: bytes, exptime: int,
                   current: tuple[bytes | None, bytes | None] | None) -> None:
        """Write ``document`` unless a SUCCESS is there, racing other writers safely."""
        for _attempt in range(CAS_ATTEMPTS):
            value, token = current if current is not None else (None, None)
            if value is None:
                if self._call("store", client.add, key, document, expire=exptime,
                              noreply=False):
                    return
            else:
                if _is_success(value):
                    return
                # False: changed since the read; None: deleted since the read
                if self._call("store", client.cas, key, document, token, expire=exptime,
                              noreply=False):
                    return
            current = self._call("store", client.gets, key)
        raise ConnectionError(f"result backend {mask_url(self.url)}: {key} kept changing "
                              f"under {CAS_ATTEMPTS} attempts to store it")

    def _delete(self, task_id: str) -> None:
        self._call("forget", self._client.delete, self.key(task_id), noreply=False)

    def _get_group(self, group_id: str) -> bytes | None:
        value = self._call("restore group", self._client.get, self.group_prefix + group_id)
        return None if value is None else bytes(value)

    def _set_group(self, group_id: str, document: bytes, expires_at: float | None) -> None:
        try:
            self._call("save group", self._client.set, self.group_prefix + group_id, document,
                       expire=self.exptime(expires_at), noreply=False)
        except MemcacheServerError as exc:  # e.g. "object too large for cache"
            raise ValueError(f"memcached refused group {group_id}: {exc}") from exc

    def _delete_group(self, group_id: str) -> None:
        self._call("forget group", self._client.delete, self.group_prefix + group_id,
                   noreply=False)


    # -- chords: one document per chord, changed by compare-and-set -------------------
    def _chord_change(self, group_id: str, change: Callable[[dict | None], tuple[dict | None, _T]],
                      expires_at: float | None) -> _T:
        """Apply ``change`` (document -> (new document or None for no write, answer))
        to the chord's document, again from a fresh read whenever another writer won."""
        key = self.group_prefix + group_id + ".fastq-chord"
        client = self._client
        for attempt in range(CHORD_CAS_ATTEMPTS):
            value, token = self._call("join chord", client.gets, key)
            document, answer = change(None if value is None else serialization.json_loads(value))
            if document is None:
                return answer
            data = serialization.json_dumps(document)
            exptime = self.exptime(expires_at)
            if value is None:
                stored = self._call("join chord", client.add, key, data, expire=exptime,
                                    noreply=False)
            else:
                stored = self._call("join chord", client.cas, key, data, token,
                                    expire=exptime, noreply=False)
            if stored:
                return answer
            time.sleep(min(0.0005 * attempt, 0.01))  # spread the members that collided
        raise ConnectionError(f"result backend {mask_url(self.url)}: chord {group_id} kept "
                              f"changing under {CHORD_CAS_ATTEMPTS} attempts to join it")

    def _chord_set_size(self, group_id: str, size: int, expires_at: float | None) -> None:
        def change(document: dict | None) -> tuple[dict, None]:
            parts = (document or {}).get("parts") or {}
            return {"size": size, "parts": parts, "claim": None, "claim_until": 0}, None

        self._chord_change(group_id, change, expires_at)

    def _chord_add(self, group_id: str, task_id: str, index: str, entry: bytes, token: str,
                   expires_at: float | None) -> bool:
        member = f"{task_id}:{index}"

        def change(document: dict | None) -> tuple[dict | None, bool]:
            if document is not None and document.get("claim") == "done":
                return None, False
            document = document or {"size": None, "parts": {}, "claim": None, "claim_until": 0}
            parts = document["parts"]
            parts.setdefault(member, [index, entry.decode()])
            now = time.time()
            if not chord_claimable(document["size"], len(parts), document["claim"],
                                   document["claim_until"], token, now):
                return document, False
            document.update(claim=token, claim_until=now + CHORD_CLAIM_SECONDS)
            return document, True

        return self._chord_change(group_id, change, expires_at)

    def _chord_entries(self, group_id: str) -> list[bytes]:
        value = self._call("read chord", self._client.get,
                           self.group_prefix + group_id + ".fastq-chord")
        parts = serialization.json_loads(value).get("parts", {}) if value is not None else {}
        return [entry.encode() for _index, entry in sorted(
            parts.values(), key=lambda part: float(part[0]))]

    def _chord_finish(self, group_id: str, token: str) -> bool:
        def change(document: dict | None) -> tuple[dict | None, bool]:
            if document is None or document.get("claim") != token:
                return None, False
            return {"size": None, "parts": {}, "claim": "done", "claim_until": 0}, True

        return self._chord_change(group_id, change, time.time() + CHORD_DONE_SECONDS)


def _is_success(value: bytes) -> bool:
    try:
        meta = serialization.json_loads(value)
    except ValueError:
        return False  # not a document we can read: not a SUCCESS to protect either
    return isinstance(meta, dict) and meta.get("status") == SUCCESS


def parse_servers(url: str) -> list[tuple[str, int]]:
    """``[(host, port), ...]`` from ``cache+memcached://h1:p1;h2:p2/``."""
    _scheme, sep, rest = url.partition("://")
    hosts = rest.split("/", 1)[0] if sep else ""
    servers = []
    for part in filter(None, (p.strip() for p in hosts.replace(",", ";").split(";"))):
        if part.startswith("["):  # [::1]:11211
            host, _, port = part[1:].partition("]")
            port = port.lstrip(":")
        elif part.count(":") == 1:
            host, _, port = part.partition(":")
        else:  # a name, or a bare IPv6 address
            host, port = part, ""
        try:
            servers.append((host, int(port or DEFAULT_PORT)))
        except ValueError:
            raise ConfigurationError(f"bad memcached server {part!r} in {mask_url(url)!r}") \
                from None
    if not servers:
        raise ConfigurationError(
            f"no memcached server in {mask_url(url)!r}; e.g. cache+memcached://127.0.0.1:11211/")
    return servers
