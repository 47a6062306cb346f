"""Build and parse Celery task messages, protocol v2 (see shared/celery-protocol.md)."""

from __future__ import annotations

import binascii
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import serialization
from ._time import format_datetime, parse_datetime
from .exceptions import (
    ContentDisallowed,
    DecodeError,
    MessageRejected,
    MessageTooLarge,
    SecurityError,
)


@dataclass(slots=True)
class Message:
    """One outgoing message, ready for ``Broker.publish_many``.

    ``queue`` is where it should land; ``exchange``/``routing_key`` matter only on AMQP
    (``""`` + the queue name is Celery's default routing). ``not_before`` is the unix time
    before which a broker with the ``delay`` capability must not deliver it (0 = now); it
    mirrors the ``eta`` header, which stays authoritative for Celery peers.
    """

    headers: dict
    properties: dict
    body: bytes
    queue: str = "celery"
    exchange: str = ""
    routing_key: str | None = None
    not_before: float = 0.0

    @property
    def priority(self) -> int:
        return self.properties.get("priority") or 0


# -- building -------------------------------------------------------------------------


def new_task_id() -> str:
    """A new task id: a time-ordered UUID (version 7) string, unique like ``uuid4()``.

    Time order puts ids made close together next to each other in an index, so a store
    keyed by task id (the SQLite result table) appends instead of writing pages all over
    its index. Celery peers only need a unique string; any UUID will do for them.
    """
    global _stamp
    try:
        tail = _random_tails.pop()
    except IndexError:
        tail = _refill_random_tails()
    millisecond = time.time_ns() // 1_000_000
    stamp = _stamp
    if stamp[0] != millisecond:
        # one tuple, so another thread reads a millisecond and its text together
        # one format for both groups: ids a millisecond or more apart (a caller waiting
        # for each result) make this text every time
        stamp = _stamp = (millisecond, f"{millisecond >> 16:08x}-{millisecond & 0xFFFF:04x}-")
    return stamp[1] + tail


#: The millisecond of the last id and the text it starts with ("xxxxxxxx-xxxx-"): ids
#: made in the same millisecond share it, as they share the first 48 bits.
_stamp: tuple[int, str] = (-1, "")

#: The rest of a version 7 UUID after its millisecond ("7rrr-Vrrr-rrrrrrrrrrrr"): 74
#: random bits, the version digit and the RFC 4122 variant (V is 8, 9, a or b), made 256
#: at a time from one ``os.urandom``: a system call per id cost more than the rest of the
#: id. The 256 are written as one text, the fixed characters put in with slice
#: assignments, and cut apart: formatting each one cost more than the rest of the id
#: again. ``list.pop`` hands each to one caller only, also between threads; a forked
#: child drops its parent's, so the two never share an id.
_random_tails: list[str] = []
_RANDOM_BATCH = 256
_TAIL = 22
#: a random hex digit -> the variant digit with the same two low bits
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")


def _refill_random_tails() -> str:
    text = bytearray(binascii.hexlify(os.urandom(_TAIL * _RANDOM_BATCH // 2)))
    text[0::_TAIL] = b"7" * _RANDOM_BATCH
    text[4::_TAIL] = text[9::_TAIL] = b"-" * _RANDOM_BATCH
    text[5::_TAIL] = text[5::_TAIL].translate(_VARIANT)
    tails = text.decode("ascii")
    _random_tails.extend([tails[i:i + _TAIL] for i in range(_TAIL, len(tails), _TAIL)])
    return tails[:_TAIL]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_random_tails.clear)


#: Longest argsrepr/kwargsrepr Celery writes.
REPR_LIMIT = 1024


# serialization.leaves_only without its Python frame: build() asks it per message
_only_leaf_types = serialization.LEAF_TYPES.issuperset


def _short_repr(text: str) -> str:
    return text if len(text) <= REPR_LIMIT else text[:REPR_LIMIT - 3] + "..."


class TaskMessageTemplate:
    """What a batch of calls to one task shares, worked out once; ``build`` adds the rest.

    ``send_many`` of 1,000 calls builds one template and 1,000 messages from it: the
    options, times and the constant headers are not redone per message.
    """

    __slots__ = ("headers", "properties", "embed", "queue", "exchange", "routing_key",
                 "not_before", "serializer", "compression", "root_id", "_plain_embed")

    def __init__(
        self, name: str, *, queue: str = "celery", exchange: str = "",
        routing_key: str | None = None, eta: datetime | str | None = None,
        countdown: float | None = None, expires: float | datetime | str | None = None,
        priority: int | None = None, retries: int = 0, time_limit: float | None = None,
        soft_time_limit: float | None = None, root_id: str | None = None,
        parent_id: str | None = None, group_id: str | None = None,
        group_index: int | None = None, shadow: str | None = None,
        ignore_result: bool | None = False, headers: dict | None = None,
        reply_to: str | None = None, origin: str | None = None,
        callbacks: list | None = None, errbacks: list | None = None,
        chain: list | None = None, chord: dict | None = None, serializer: str = "json",
        compression: str | None = None, now: float | None = None,
        replaced_task_nesting: int = 0,
    ) -> None:
        wall = time.time() if now is None else now
        if countdown is not None and eta is None:
            eta = datetime.fromtimestamp(wall + countdown, timezone.utc)
        self.not_before = 0.0
        eta_text = None
        if eta is not None:
            eta_dt = parse_datetime(eta)
            eta_text = eta if isinstance(eta, str) else eta.isoformat()
            self.not_before = eta_dt.timestamp()
        expires_text = expiration = None
        if expires is not None:
            if isinstance(expires, (int, float)):
                expires_at = wall + float(expires)
                expires_text = format_datetime(datetime.fromtimestamp(expires_at, timezone.utc))
            else:
                expires_text = expires if isinstance(expires, str) else expires.isoformat()
                expires_at = parse_datetime(expires).timestamp()
            expiration = str(max(0, int((expires_at - wall) * 1000)))
        self.root_id = root_id
        self.headers = {
            "lang": "py", "task": name, "id": None, "shadow": shadow, "eta": eta_text,
            "expires": expires_text, "group": group_id, "group_index": group_index,
            "retries": retries, "timelimit": [time_limit, soft_time_limit],
            "root_id": root_id, "parent_id": parent_id, "argsrepr": None, "kwargsrepr": None,
            "origin": origin, "ignore_result": ignore_result,
            "replaced_task_nesting": replaced_task_nesting,
            "stamped_headers": None, "stamps": {},
        }
        if headers:
            for key, value in headers.items():
                self.headers.setdefault(key, value)
        self.embed = {"callbacks": callbacks, "errbacks": errbacks, "chain": chain,
                      "chord": chord}
        self._plain_embed = callbacks is errbacks is chain is chord is None
        self.serializer = serializer
        self.compression = serialization.compression_type(compression) if compression else None
        if serializer == "json":
            content_type, content_encoding = "application/json", "utf-8"
        else:
            codec = serialization.codec(serializer)
            content_type, content_encoding = codec.content_type, codec.content_encoding
        self.properties = {
            "content_type": content_type, "content_encoding": content_encoding,
            "correlation_id": None, "reply_to": reply_to, "delivery_mode": 2,
            "priority": priority or 0,
        }
        if expiration is not None:
            self.properties["expiration"] = expiration
        self.queue, self.exchange, self.routing_key = queue, exchange, routing_key

    def build(self, task_id: str, args: tuple | list, kwargs: dict) -> Message:
        """The message for one call."""
        if not isinstance(kwargs, dict):
            raise TypeError(f"kwargs of {self.headers['task']} must be a mapping, not "
                            f"{type(kwargs).__name__}")
        headers = self.headers.copy()
        headers["id"] = task_id
        if self.root_id is None:
            headers["root_id"] = task_id
        # _short_repr written out: two calls per message were measurable
        text = repr(args if type(args) is tuple else tuple(args))
        headers["argsrepr"] = text if len(text) <= REPR_LIMIT else _short_repr(text)
        text = "{}" if not kwargs and type(kwargs) is dict else repr(kwargs)
        headers["kwargsrepr"] = text if len(text) <= REPR_LIMIT else _short_repr(text)
        headers["timelimit"] = list(headers["timelimit"])
        headers["stamps"] = {}
        properties = self.properties.copy()
        properties["correlation_id"] = task_id
        if self.serializer == "json":
            # orjson writes tuples as arrays: no list copy needed; plain arguments (and no
            # links) cannot hold a UUID, so the walk that envelopes them is skipped
            body = serialization.json_dumps(
                (args, kwargs, self.embed),
                uuids=not (self._plain_embed and _only_leaf_types(map(type, args))
                           and (not kwargs or _only_leaf_types(map(type, kwargs.values())))))
        else:
            body = serialization.dumps([list(args), kwargs, self.embed], self.serializer)[2]
        if self.compression:
            headers["compression"], body = serialization.compress(body, self.compression)
        # positional: keywords cost a fifth of building the whole message
        return Message(headers, properties, body, self.queue, self.exchange, self.routing_key,
                       self.not_before)


def build_task_message(name: str, task_id: str, args: tuple | list, kwargs: dict,
                       **options: Any) -> Message:
    """A Celery protocol v2 task message with every header Celery 5.7 sends (§1.3).

    Options are ``TaskMessageTemplate``'s.
    """
    return TaskMessageTemplate(name, **options).build(task_id, args, kwargs)


# -- parsing ------------------------------------------------------------------------

#: ``accept`` when only signed bodies are accepted (the ``auth`` serializer's type).
_SIGNED_ONLY = frozenset({"application/data"})
_EMPTY_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def _check_embed(embed: dict) -> None:
    """Refuse follow-ups a worker could not send after running the task: each must be a
    signature (a mapping with a ``task`` name), in a list where Celery puts a list."""
    for key in ("callbacks", "errbacks", "chain"):
        value = embed.get(key)
        if value is None:
            continue
        if not isinstance(value, list):
            raise MessageRejected("invalid-body", f"embed {key} must be a list of signatures "
                                                  f"or null, not {_describe(value)}")
        for sig in value:
            if not _is_signature(sig):
                raise MessageRejected("invalid-body", f"embed {key} holds {sig!r:.80}, not a "
                                                      f"signature (a mapping with a 'task')")
    chord = embed.get("chord")
    if chord is not None and not _is_signature(chord):
        raise MessageRejected("invalid-body", f"embed chord must be a signature or null, "
                                              f"not {chord!r:.80}")


def _is_signature(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("task"), str) and bool(value["task"])


def decode_task(headers: dict, properties: dict, body: bytes,
                accept: frozenset[str] | None,
                max_size: int | None = None) -> tuple[dict, list, dict, dict]:
    """Unpack a delivery into ``(headers, args, kwargs, embed)`` (§1.12 steps 2–6).

    v1 messages are converted as a Celery 5.7 worker does (§1.11); v2 "hybrid" bodies
    are merged under the headers. ``max_size`` bounds the body in bytes, before
    decoding and again as it is decompressed (``worker_max_message_size``).

    Raises:
        MessageRejected: with a reason code saying what is wrong with the message.
    """
    # The common message (protocol v2, plain JSON, no links, no eta or expiry) is taken
    # with type tests only; anything else, a malformed message too, takes the general
    # path, which says what is wrong. This one accepts nothing the general one refuses.
    if (type(headers) is dict and (max_size is None or len(body) <= max_size)
            and not headers.get("compression")
            and properties.get("content_type") == "application/json"
            and accept is not None and "application/json" in accept):
        try:
            payload = serialization.json_loads(body)
        except DecodeError as exc:
            raise MessageRejected("decode-error", f"application/json body: {exc}") from None
        if type(payload) is list and len(payload) == 3 and "task" in headers:
            args, kwargs, embed = payload
            if type(args) is list and type(kwargs) is dict and type(embed) is dict \
                    and embed == _EMPTY_EMBED:
                task_id, name = headers.get("id"), headers.get("task")
                if type(task_id) is str and task_id and type(name) is str and name \
                        and headers.get("eta") is None and headers.get("expires") is None:
                    return headers, args, kwargs, embed
        return _unpack(headers, payload)
    return _unpack(headers, _decode_body(headers, properties, body, accept, max_size))


def _decode_body(headers: Any, properties: dict, body: bytes, accept: frozenset[str] | None,
                 max_size: int | None) -> Any:
    """The payload of a delivery: headers vetted, body decompressed and deserialized."""
    if not isinstance(headers, dict):
        raise MessageRejected("invalid-headers", f"headers must be a table, not {headers!r:.80}")
    if max_size is not None and len(body) > max_size:
        raise MessageRejected("too-large", f"body of {len(body)} bytes is over "
                                           f"worker_max_message_size ({max_size})")
    compression = headers.get("compression")
    if compression:
        try:
            body = serialization.decompress(body, str(compression), max_size)
        except MessageTooLarge as exc:
            raise MessageRejected("too-large", str(exc)) from None
        except DecodeError as exc:
            reason = "unknown-compression" if "unknown" in str(exc) else "decode-error"
            raise MessageRejected(reason, str(exc)) from None
    content_type = properties.get("content_type") or "application/data"
    try:
        if content_type == "application/json" and accept is not None \
                and content_type in accept:
            payload = serialization.json_loads(body)
        else:
            payload = serialization.loads(body, content_type,
                                          properties.get("content_encoding"), accept)
    except ContentDisallowed as exc:
        if accept and _SIGNED_ONLY.issuperset(accept):
            raise MessageRejected("signature", f"unsigned message ({content_type}); "
                                               f"only signed (auth) tasks are accepted") from None
        raise MessageRejected("content-disallowed", str(exc)) from None
    except SecurityError as exc:
        raise MessageRejected("signature", str(exc)) from None
    except DecodeError as exc:
        raise MessageRejected("decode-error", f"{content_type} body: {exc}") from None
    return payload


def _unpack(headers: dict, payload: Any) -> tuple[dict, list, dict, dict]:
    """``(headers, args, kwargs, embed)`` from a decoded payload, vetted."""
    if "task" in headers:
        if isinstance(payload, dict) and "args" in payload:
            headers = {**payload, **headers}
            args, kwargs = payload.get("args"), payload.get("kwargs") or {}
            embed = {key: payload.get(key) for key in _EMPTY_EMBED}
        elif isinstance(payload, (list, tuple)) and len(payload) == 3:
            args, kwargs, embed = payload
        else:
            raise MessageRejected(
                "invalid-body", f"a v2 body must be [args, kwargs, embed], got "
                f"{_describe(payload)}")
    elif isinstance(payload, dict) and "task" in payload and "id" in payload:
        headers, args, kwargs, embed = _from_v1(headers, payload)
    else:
        raise MessageRejected(
            "unknown-format", f"no 'task' header and the body is {_describe(payload)}: not "
            f"a Celery task message")

    if not isinstance(args, (list, tuple)):
        raise MessageRejected("invalid-body", f"args must be a list, not {_describe(args)}")
    if not isinstance(kwargs, dict):
        raise MessageRejected("invalid-body", f"kwargs must be a mapping, not "
                                              f"{_describe(kwargs)}")
    if embed is None:
        embed = {}
    elif not isinstance(embed, dict):
        raise MessageRejected("invalid-body", f"embed must be a mapping or null, not "
                                              f"{_describe(embed)}")
    elif embed.get("callbacks") or embed.get("errbacks") or embed.get("chain") \
            or embed.get("chord"):
        _check_embed(embed)
    task_id, name = headers.get("id"), headers.get("task")
    if not isinstance(task_id, str) or not task_id:
        raise MessageRejected("invalid-headers", f"the 'id' header must be a non-empty "
                                                 f"string, got {task_id!r:.80}")
    if not isinstance(name, str) or not name:
        raise MessageRejected("invalid-headers", f"the 'task' header must be a non-empty "
                                                 f"string, got {name!r:.80}")
    for key in ("eta", "expires"):
        value = headers.get(key)
        if value is not None:
            try:
                parse_datetime(value)
            except (ValueError, TypeError, OverflowError):
                raise MessageRejected(
                    "invalid-eta", f"task {name}[{task_id}]: {key} {value!r:.80} is not an "
                    f"ISO-8601 timestamp") from None
    return headers, list(args) if isinstance(args, tuple) else args, kwargs, embed


def _from_v1(headers: dict, body: dict) -> tuple[dict, list, dict, dict]:
    """Celery protocol v1 (everything in the body) as v2 parts, converted as Celery does."""
    converted = dict(headers)
    for key in ("task", "id", "retries", "eta", "expires", "timelimit", "group_index",
                "parent_id", "root_id", "shadow", "origin"):
        if key in body:
            converted[key] = body[key]
    converted["group"] = body.get("taskset", body.get("group"))
    converted.setdefault("root_id", body["id"])
    converted.setdefault("lang", "py")
    if body.get("utc") is False:
        # naive v1 times are the sender's local time; the best we can do is this host's
        for key in ("eta", "expires"):
            value = converted.get(key)
            if isinstance(value, str):
                try:
                    local = datetime.fromisoformat(value)
                except ValueError:
                    continue
                if local.tzinfo is None:
                    converted[key] = local.astimezone(timezone.utc).isoformat()
    embed = {"callbacks": body.get("callbacks"), "errbacks": body.get("errbacks"),
             "chain": None, "chord": body.get("chord")}
    return converted, body.get("args", []), body.get("kwargs", {}), embed


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"a {len(value)}-element list"
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def strip_delayed_routing_key(routing_key: str) -> str:
    """A routing key without the 28-bit prefix of Celery's native delayed delivery (§1.6.4)."""
    return _DELAYED_PREFIX.sub("", routing_key)


_DELAYED_PREFIX = re.compile(r"^(?:[01]\.){28}")
