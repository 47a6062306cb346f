"""The Backend interface: result storage policy here, storage primitives in each backend.

The stored value is Celery's meta document (``celery-protocol.md`` §3.2) serialized as
JSON, so Celery peers can read what fastq writes and the reverse.
"""

from __future__ import annotations

import abc
import builtins
import functools
import logging
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, NamedTuple

from .. import serialization
from .._time import now_isoformat
from ..exceptions import ChordError, DecodeError, ResultTimeout, SecurityError
from ..states import EXCEPTION_STATES, PENDING, PROPAGATE_STATES, READY_STATES, SUCCESS

logger = logging.getLogger("fastq.backends")

#: Default lifetime of a stored result, in seconds (Celery's ``result_expires``).
DEFAULT_RESULT_EXPIRES = 86400.0

#: First and longest sleep, in seconds, of the polling ``wait`` used by stores that
#: cannot notify.
POLL_INTERVAL_MIN = 0.0005
POLL_INTERVAL_MAX = 0.1

#: Seconds a worker holds the claim on sending a chord's body; past it, a redelivered
#: member may claim again (the claimer died between claiming and sending).
CHORD_CLAIM_SECONDS = 60

#: Seconds the "body sent" marker outlives a chord, so a member redelivered late finds
#: the chord done instead of starting it again (Celery 5.7 keeps it 300 s too).
CHORD_DONE_SECONDS = 300


class ChordPart(NamedTuple):
    """What the join needs of a finished chord member: a ``Request`` has these too."""

    id: str
    group: str | None
    group_index: int | None
    #: the wire embed; ``embed["chord"]`` is the body's signature dict
    embed: dict


class ChordReady(NamedTuple):
    """A chord whose members are all in, handed to the worker to send its body."""

    group_id: str
    #: the body's signature dict (Celery's form), as the members carried it
    body: dict
    #: the members' results ordered by ``group_index``; None when ``error`` is set
    results: list | None
    #: "Dependency <id> raised <exc>" when a member failed or was revoked
    error: ChordError | None


def _decode_document(raw: bytes, key: str, name: str, kind: str) -> dict:
    """A stored JSON object that has ``key``; DecodeError naming ``name`` and ``kind``."""
    try:
        document = serialization.json_loads(raw)
    except DecodeError:
        raise
    except ValueError as exc:
        raise DecodeError(f"{name} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or key not in document:
        raise DecodeError(f"{name} is not a {kind} document: {raw[:80]!r}")
    return document


def decode_meta(raw: bytes) -> dict:
    return _decode_document(raw, "status", "stored result", "meta")


def decode_signed_meta(loads: Callable[[bytes], Any], raw: bytes) -> dict:
    """A stored result read through the ``auth`` serializer's ``loads``: verified before
    anything is decoded; SecurityError (naming what is wrong) for an unsigned, tampered
    or untrusted one."""
    try:
        meta = loads(raw)
    except SecurityError as exc:
        raise SecurityError(f"stored result refused (result_serializer='auth'): {exc}") \
            from None
    if not isinstance(meta, dict) or "status" not in meta:
        raise DecodeError(f"stored result is not a meta document: {raw[:80]!r}")
    return meta


class Backend(abc.ABC):
    """A result store.

    Subclasses implement ``_get_many``, ``_set_many``, ``_delete`` and ``_cleanup``;
    stores that can hold group results (capability ``groups``) also ``_get_group``,
    ``_set_group`` and ``_delete_group``; stores that can join chords (capability
    ``chords``) also ``_chord_set_size``, ``_chord_add``, ``_chord_entries`` and
    ``_chord_finish``. Every write carries an expiry; a stored SUCCESS is never
    overwritten.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: How a meta document is written and read: JSON, or the signed envelope of that JSON
    #: once ``sign_results`` ran (decided once per backend, not per result).
    _dump_meta: Callable[[Any], bytes] = staticmethod(serialization.json_dumps)
    _read_meta: Callable[[bytes], dict] = staticmethod(decode_meta)
    #: Whether results are signed (``result_serializer='auth'``).
    signed: bool = False

    def __init__(self, url: str, *, expires: float | None = DEFAULT_RESULT_EXPIRES,
                 **options: Any) -> None:
        self.url = url
        self.expires = expires
        self.options = options

    # -- primitives ------------------------------------------------------------------
    @abc.abstractmethod
    def _get_many(self, task_ids: Sequence[str]) -> dict[str, bytes]:
        """The stored, unexpired documents for those of ``task_ids`` that have one."""

    @abc.abstractmethod
    def _set_many(self, items: Sequence[tuple[str, str, bytes]], expires_at: float | None) -> None:
        """Store ``(task_id, state, document)`` items in one write.

        An existing SUCCESS document for a task id must be left as it is. ``expires_at``
        is a unix time, or None for "keep until forgotten".
        """

    @abc.abstractmethod
    def _delete(self, task_id: str) -> None:
        """Remove a stored document, if any."""

    def _cleanup(self, now: float) -> int:
        """Delete expired documents; return how many. Stores with native TTLs do nothing."""
        return 0

    def _get_group(self, group_id: str) -> bytes | None:
        """The stored, unexpired group document of ``group_id``, if any."""
        raise NotImplementedError(self._no_groups())

    def _set_group(self, group_id: str, document: bytes, expires_at: float | None) -> None:
        """Store (or replace) the group document of ``group_id``."""
        raise NotImplementedError(self._no_groups())

    def _delete_group(self, group_id: str) -> None:
        """Remove a stored group document, if any."""
        raise NotImplementedError(self._no_groups())

    def _chord_set_size(self, group_id: str, size: int, expires_at: float | None) -> None:
        """Record a new run of chord ``group_id`` with ``size`` members (clearing a done
        marker left by an earlier run of the same id)."""
        raise NotImplementedError(self._no_chords())

    def _chord_add(self, group_id: str, task_id: str, index: str, entry: bytes, token: str,
                   expires_at: float | None) -> bool:
        """Record ``entry`` for member ``task_id`` at ``index`` unless that pair is recorded
        already, in one atomic step with the rest.

        Returns True when every member is in and the claim on sending the body was taken
        for ``token`` (or is held by ``token`` already: the claimer's own redelivery). A
        chord marked done, or one whose size is unknown, returns False.
        """
        raise NotImplementedError(self._no_chords())

    def _chord_entries(self, group_id: str) -> list[bytes]:
        """The recorded entries of ``group_id``, ordered by index."""
        raise NotImplementedError(self._no_chords())

    def _chord_finish(self, group_id: str, token: str) -> bool:
        """If ``token`` holds the claim: drop the chord's data and mark it done (for
        ``CHORD_DONE_SECONDS``); return whether it did."""
        raise NotImplementedError(self._no_chords())

    def _no_chords(self) -> str:
        return (f"the {type(self).__name__} result backend cannot join chords itself; "
                "Celery's celery.chord_unlock task polls for it instead")

    def _no_groups(self) -> str:
        return (f"the {type(self).__name__} result backend cannot store group results; "
                "use redis://, sqlite://, db+..., cache+memcached:// or memory://")

    def close(self) -> None:
        """Release connections; idempotent."""

    def sign_results(self, codec: serialization.Codec) -> None:
        """Store each result as ``codec`` (the ``auth`` serializer) signs its JSON meta
        document and read only results it verifies, as Celery's backends do under
        ``result_serializer='auth'``: byte for byte the same stored values.

        Waits poll through the verifying reader (``Backend.wait``) on every store, so
        nothing a store is notified of is trusted before it is read back and checked.
        """
        self._dump_meta = codec.dumps
        self._read_meta = functools.partial(decode_signed_meta, codec.loads)
        self.signed = True
        self.wait = functools.partial(Backend.wait, self)  # type: ignore[method-assign]
        self.new_async_waiter = functools.partial(  # type: ignore[method-assign]
            Backend.new_async_waiter, self)

    # -- policy ----------------------------------------------------------------------
    def encode_meta(self, task_id: str, state: str, result: Any, traceback: str | None = None,
                    extra: dict | None = None, date_done: str | None = None) -> bytes:
        if state in EXCEPTION_STATES and isinstance(result, BaseException):
            result = exception_to_dict(result)
        if state in READY_STATES:
            date_done = date_done or now_isoformat()
        else:
            date_done = None
        meta = {
            "status": state,
            "result": result,
            "traceback": traceback,
            "children": [],
            "date_done": date_done,
            "task_id": task_id,
        }
        if extra:
            meta.update(extra)
        return self._dump_meta(meta)

    def store(self, task_id: str, state: str, result: Any = None, traceback: str | None = None,
              extra: dict | None = None) -> None:
        """Store one state; ``result`` is the return value or, for failures, the exception."""
        self.store_many(((task_id, state, result, traceback, extra),))

    def store_many(self, records: Iterable[tuple[str, str, Any, str | None, dict | None]]) -> None:
        """Store several ``(task_id, state, result, traceback, extra)`` records in one write."""
        # One timestamp for the batch: the records are stored now, together.
        done = now_isoformat()
        encode = self.encode_meta
        items = [(r[0], r[1], encode(*r, date_done=done)) for r in records]
        if items and self.signed:
            items = self._unless_succeeded(items)
        if items:
            expires_at = None if not self.expires else time.time() + self.expires
            self._set_many(items, expires_at)

    def get(self, task_id: str) -> dict:
        """The meta document of ``task_id``; ``{"status": "PENDING", ...}`` when unknown."""
        raw = self._get_many((task_id,)).get(task_id)
        if raw is None:
            return pending_meta(task_id)
        return self._read_meta(raw)

    def get_many(self, task_ids: Sequence[str]) -> list[dict]:
        """The meta documents of ``task_ids`` in order, read in one go (PENDING when unknown)."""
        found = self._get_many(task_ids)
        read = self._read_meta
        return [read(found[t]) if t in found else pending_meta(t) for t in task_ids]

    def _unless_succeeded(self, items: list[tuple[str, str, bytes]]) -> list[tuple[str, str, bytes]]:
        """``items`` less those whose task has a SUCCESS stored. Stores that check for
        one inside their write (Redis, memcached) decode the stored value as JSON, which
        a signed one is not: read first, as Celery's backends do (not atomically)."""
        found = self._get_many([item[0] for item in items])
        kept = []
        for item in items:
            raw = found.get(item[0])
            try:
                stored = None if raw is None else self._read_meta(raw)
            except DecodeError:
                stored = None  # not a verified result: nothing to keep
            if stored is None or stored["status"] != SUCCESS:
                kept.append(item)
        return kept

    def wait(self, task_id: str, timeout: float | None = None,
             interval: float | None = None) -> dict:
        """Block until ``task_id`` reaches a ready state and return its meta document.

        Raises:
            ResultTimeout: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        sleep = POLL_INTERVAL_MIN if interval is None else interval
        while True:
            meta = self.get(task_id)
            if meta["status"] in READY_STATES:
                return meta
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ResultTimeout(
                        f"task {task_id} is still {meta['status']} after {timeout}s")
                time.sleep(min(sleep, left))
            else:
                time.sleep(sleep)
            if interval is None:
                sleep = min(sleep * 2, POLL_INTERVAL_MAX)

    # -- waiting on an event loop -----------------------------------------------------
    async def await_ready(self, task_id: str, timeout: float | None = None) -> dict:
        """Await ``task_id``'s ready meta document without blocking the running loop.

        Every wait on one loop shares the backend's ``AsyncWaiter`` there (one poller
        thread, or one subscription for stores that notify): a thousand awaits cost one
        read per round, not a thousand threads.

        Raises:
            ResultTimeout: ``timeout`` seconds passed first.
            ConnectionError: the store could not be read while waiting.
        """
        return await self._async_waiter().wait(task_id, timeout)

    def new_async_waiter(self, loop: Any) -> Any:
        """The ``AsyncWaiter`` for ``loop``: a poller that backs off; stores that can
        notify override it."""
        from ._async_wait import PollingWaiter

        return PollingWaiter(self, loop)

    def _async_waiter(self) -> Any:
        import asyncio
        import weakref

        loop = asyncio.get_running_loop()
        waiters = self.__dict__.get("_async_waiters")
        if waiters is None:
            waiters = self.__dict__["_async_waiters"] = weakref.WeakKeyDictionary()
        waiter = waiters.get(loop)
        if waiter is None or waiter.closed:
            waiter = waiters[loop] = self.new_async_waiter(loop)
        return waiter

    def _forget_async_waiter(self, waiter: Any) -> None:
        waiters = self.__dict__.get("_async_waiters")
        if waiters is not None and waiters.get(waiter.loop) is waiter:
            del waiters[waiter.loop]

    def forget(self, task_id: str) -> None:
        """Delete the stored result of ``task_id``."""
        self._delete(task_id)

    def cleanup(self) -> int:
        """Delete expired results now; return how many (0 where the store expires keys)."""
        return self._cleanup(time.time())

    # -- groups (GroupResult.save / restore) -----------------------------------------
    def save_group(self, group_id: str, result_tuple: Any) -> None:
        """Store a group's members as Celery does: ``{"result": <GroupResult.as_tuple()>}``.

        It expires like a result. Raises NotImplementedError for stores without the
        ``groups`` capability.
        """
        self._require_groups()
        document = serialization.json_dumps({"result": result_tuple})
        expires_at = None if not self.expires else time.time() + self.expires
        self._set_group(group_id, document, expires_at)

    def restore_group(self, group_id: str) -> Any:
        """The ``as_tuple()`` form saved for ``group_id``, or None when unknown or expired."""
        self._require_groups()
        raw = self._get_group(group_id)
        if raw is None:
            return None
        return _decode_document(raw, "result", f"stored group {group_id}", "group")["result"]

    def forget_group(self, group_id: str) -> None:
        """Delete the saved group ``group_id`` (its members' results stay)."""
        self._require_groups()
        self._delete_group(group_id)

    # -- chords: the join (celery-protocol.md §3.5.5) --------------------------------
    def set_chord_size(self, group_id: str, size: int) -> None:
        """Record that chord ``group_id`` has ``size`` members; called by the client before
        it sends the header. Raises NotImplementedError without the ``chords`` capability
        (the client then sends ``celery.chord_unlock`` instead)."""
        if "chords" not in self.capabilities:
            raise NotImplementedError(self._no_chords())
        self._chord_set_size(group_id, int(size), self._expires_at())

    def on_chord_part_return(self, part: ChordPart, state: str, result: Any,
                             dispatch: Callable[[ChordReady], None]) -> bool:
        """Count a finished chord member (after its own result is stored) and, when it is
        the last one in, call ``dispatch`` with the body and the ordered results.

        ``part`` is the member's ``Request`` (or a ``ChordPart``): its id, ``group``,
        ``group_index`` and ``embed["chord"]``. Members are counted by the set of
        (task id, index) pairs, so a redelivered member counts once; ``dispatch`` runs
        at most once per chord run, under a claim that is released (the chord marked
        done) when it returns or raises. Returns whether this call dispatched.

        Raises:
            ValueError: the member carries no group id or a malformed body.
        """
        body = part.embed.get("chord") if part.embed else None
        if not part.group:
            raise ValueError(f"chord member {part.id} has no group id: its chord cannot "
                             f"be joined")
        if not isinstance(body, dict) or not isinstance(body.get("task"), str):
            raise ValueError(f"chord member {part.id} carries a malformed chord body: "
                             f"{body!r:.200}")
        if "chords" not in self.capabilities:
            return False  # celery.chord_unlock, sent by the client, polls instead
        if state in EXCEPTION_STATES and isinstance(result, BaseException):
            result = exception_to_dict(result)
        entry = serialization.json_dumps([1, part.id, state, result])
        index = "+inf" if part.group_index is None else str(int(part.group_index))
        # the member's own id: its redelivery (the claimer died) may take the claim back
        token = part.id
        if not self._chord_add(part.group, part.id, index, entry, token, self._expires_at()):
            return False
        try:
            dispatch(self._chord_ready(part.group, body))
        finally:
            if not self._chord_finish(part.group, token):
                logger.warning("chord %s: the claim on its body lapsed before it was marked "
                               "done; its data is left to expire", part.group)
        return True

    def _chord_ready(self, group_id: str, body: dict) -> ChordReady:
        saved = self._saved_header(group_id)
        if saved is not None:
            return self._nested_chord_ready(group_id, body, saved)
        results = []
        for raw in self._chord_entries(group_id):
            try:
                _, task_id, state, value = serialization.json_loads(raw)
            except (ValueError, TypeError) as exc:
                return ChordReady(group_id, body, None, ChordError(
                    f"chord {group_id}: unreadable member entry {raw[:80]!r}: {exc}"))
            if state in PROPAGATE_STATES:
                exc = exception_from_dict(value) if state in EXCEPTION_STATES else value
                return ChordReady(group_id, body, None,
                                  ChordError(f"Dependency {task_id} raised {exc!r}"))
            results.append(value)
        return ChordReady(group_id, body, results, None)

    def _saved_header(self, group_id: str) -> list | None:
        """The header saved under the chord's group id when it holds groups (Celery's
        ``apply_chord`` saves it so the body gets nested lists), else None."""
        if "groups" not in self.capabilities:
            return None
        try:
            saved = self.restore_group(group_id)
        except DecodeError:
            return None
        try:
            members = saved[1]
            if any(member[1] is not None for member in members):
                return members
        except (TypeError, IndexError):
            pass
        return None

    def _nested_chord_ready(self, group_id: str, body: dict, members: list) -> ChordReady:
        """The body's argument shaped like the saved header: a list for each group in it,
        read from the members' stored results."""
        def leaves(node: Any) -> Iterable[str]:
            (node_id, _parent), nodes = node
            if nodes is None:
                yield node_id
            else:
                for child in nodes:
                    yield from leaves(child)

        ids = [leaf for member in members for leaf in leaves(member)]
        metas = dict(zip(ids, self.get_many(ids)))
        for task_id in ids:
            meta = metas[task_id]
            if meta["status"] in PROPAGATE_STATES:
                exc = exception_from_dict(meta["result"])
                return ChordReady(group_id, body, None,
                                  ChordError(f"Dependency {task_id} raised {exc!r}"))
            if meta["status"] not in READY_STATES:
                return ChordReady(group_id, body, None, ChordError(
                    f"chord {group_id}: every member reported, but {task_id} is "
                    f"{meta['status']}"))

        def shape(node: Any) -> Any:
            (node_id, _parent), nodes = node
            return metas[node_id]["result"] if nodes is None else [shape(n) for n in nodes]

        return ChordReady(group_id, body, [shape(member) for member in members], None)

    def _expires_at(self) -> float | None:
        return None if not self.expires else time.time() + self.expires

    def _require_groups(self) -> None:
        if "groups" not in self.capabilities:
            raise NotImplementedError(self._no_groups())


def chord_claimable(size: int | None, count: int, claim: str | None, claim_until: float,
                    token: str, now: float) -> bool:
    """Whether a chord with ``count`` of ``size`` members recorded may now be claimed by
    ``token``: complete, and unclaimed, claimed by ``token`` itself (the claimer's own
    redelivery), or claimed by a lease that lapsed (its holder died before sending).
    For the stores that keep the claim in a row (memory, SQLite, SQL)."""
    if size is None or count < size or claim == "done":
        return False
    return claim is None or claim == token or claim_until <= now


def pending_meta(task_id: str) -> dict:
    return {"status": PENDING, "result": None, "traceback": None, "children": [],
            "date_done": None, "task_id": task_id}


# -- exceptions as data (celery-protocol.md §3.3) -------------------------------------

def exception_to_dict(exc: BaseException) -> dict:
    """Celery's portable form of an exception: type name, module and args."""
    cls = type(exc)
    args = []
    for arg in exc.args:
        try:
            serialization.json_dumps(arg)
        except (TypeError, ValueError):
            arg = repr(arg)
        args.append(arg)
    return {"exc_type": cls.__qualname__, "exc_message": args, "exc_module": cls.__module__}


_CELERY_NAME_MAP = {
    # Celery's own exceptions map onto fastq's so `except TaskRevokedError` works for both.
    ("celery.exceptions", "NotRegistered"): "TaskNotRegistered",
    ("celery.exceptions", "TaskRevokedError"): "TaskRevokedError",
    ("celery.exceptions", "MaxRetriesExceededError"): "MaxRetriesExceededError",
    ("celery.exceptions", "ChordError"): "ChordError",
    ("billiard.exceptions", "TimeLimitExceeded"): "TimeLimitExceeded",
    ("billiard.exceptions", "SoftTimeLimitExceeded"): "SoftTimeLimitExceeded",
}

_synthesized: dict[tuple[str, str], type] = {}


def exception_from_dict(data: Any) -> BaseException:
    """Rebuild an exception from ``exception_to_dict`` output (or Celery's).

    Looks the class up only in modules already imported, never importing anything, and
    refuses non-exception classes (a stored ``{"exc_module": "os", "exc_type": "system"}``
    must not become a callable). Unknown classes are synthesized with the same name.
    """
    from .. import exceptions as fastq_exceptions

    if not isinstance(data, dict) or "exc_type" not in data:
        return Exception(data)
    exc_type = str(data.get("exc_type"))
    module_name = str(data.get("exc_module") or "builtins")
    message = data.get("exc_message", [])
    cls: Any = None
    mapped = _CELERY_NAME_MAP.get((module_name, exc_type))
    if mapped is not None:
        # fastq's own class even when celery is imported too: code catching
        # fastq.exceptions.TaskRevokedError must see the same class whoever stored it
        cls = getattr(fastq_exceptions, mapped)
    else:
        module = builtins if module_name == "builtins" else sys.modules.get(module_name)
        if module is not None:
            cls = module
            for part in exc_type.split("."):
                cls = getattr(cls, part, None)
                if cls is None:
                    break
    if cls is not None and not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return fastq_exceptions.FastqError(
            f"refused to rebuild {module_name}.{exc_type}: not an exception class")
    if cls is None:
        key = (module_name, exc_type)
        cls = _synthesized.get(key)
        if cls is None:
            cls = type(exc_type.rsplit(".", 1)[-1], (Exception,), {"__module__": module_name})
            _synthesized[key] = cls
    try:
        return cls(*message) if isinstance(message, list) else cls(message)
    except Exception:
        return Exception(f"{exc_type}({message!r})")
