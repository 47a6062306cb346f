"""Codecs (json via orjson, msgpack, yaml, pickle) and compression for message bodies.

JSON is kombu-compatible: values JSON cannot hold travel as ``{"__type__": T,
"__value__": V}`` envelopes (``celery-protocol.md`` §3.4), so Celery peers read what
fastq writes and the reverse.
"""

from __future__ import annotations

import base64
import bz2
import lzma
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import orjson

from ._extras import require
from ._time import parse_datetime
from .exceptions import ContentDisallowed, DecodeError, ImproperlyInstalled, MessageTooLarge

# -- kombu's JSON envelopes ---------------------------------------------------------


def _envelope(obj: Any) -> Any:
    """orjson ``default`` hook: wrap what JSON cannot carry as kombu does."""
    if isinstance(obj, datetime):
        return {"__type__": "datetime", "__value__": obj.isoformat()}
    if isinstance(obj, date):
        return {"__type__": "date", "__value__": obj.isoformat()}
    if isinstance(obj, time):
        return {"__type__": "time", "__value__": obj.isoformat()}
    if isinstance(obj, Decimal):
        return {"__type__": "decimal", "__value__": str(obj)}
    if isinstance(obj, uuid.UUID):
        return {"__type__": "uuid", "__value__": {"hex": obj.hex}}
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        try:
            return {"__type__": "bytes", "__value__": raw.decode("utf-8")}
        except UnicodeDecodeError:
            return {"__type__": "base64", "__value__": base64.b64encode(raw).decode("ascii")}
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    to_json = getattr(obj, "__json__", None)
    if callable(to_json):
        return to_json()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _parse_iso(value: str, kind: type) -> Any:
    if kind is datetime:
        # kombu keeps naive datetimes naive; the generic parser would make them UTC.
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return parse_datetime(value)
    return kind.fromisoformat(value)


_UNWRAP: dict[str, Callable[[Any], Any]] = {
    "datetime": lambda v: _parse_iso(v, datetime),
    "date": lambda v: date.fromisoformat(v),
    "time": lambda v: time.fromisoformat(v),
    "decimal": Decimal,
    "uuid": lambda v: uuid.UUID(hex=v["hex"] if isinstance(v, dict) else v),
    "bytes": lambda v: v.encode("utf-8"),
    "base64": lambda v: base64.b64decode(v),
}


def _unwrap(obj: Any) -> Any:
    """Turn kombu envelopes back into Python values, in place where possible."""
    if isinstance(obj, dict):
        if len(obj) == 2 and "__type__" in obj and "__value__" in obj:
            kind = obj["__type__"]
            decode = _UNWRAP.get(kind)
            if decode is None:
                raise DecodeError(f"unknown JSON envelope type {kind!r}")
            try:
                return decode(obj["__value__"])
            except (ValueError, TypeError, KeyError, ArithmeticError) as exc:
                raise DecodeError(f"bad {kind} envelope {obj['__value__']!r}: {exc}") from exc
        for key, value in obj.items():
            if isinstance(value, (dict, list)):
                obj[key] = _unwrap(value)
        return obj
    if isinstance(obj, list):
        for index, value in enumerate(obj):
            if isinstance(value, (dict, list)):
                obj[index] = _unwrap(value)
        return obj
    return obj


# orjson would otherwise turn these natively into strings, losing the type on the way back.
_JSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
_JSON_OPTIONS |= getattr(orjson, "OPT_PASSTHROUGH_DATACLASS", 0)


#: Types that can hold no UUID: the walk below skips them without a closer look.
LEAF_TYPES = frozenset({str, int, float, bool, type(None), bytes, datetime, date, time,
                         Decimal})


def leaves_only(values: Iterable) -> bool:
    """Whether every item of ``values`` is of a type that cannot hold a UUID.

    A test at C speed: ``json_dumps(obj, uuids=False)`` is then safe for a container of
    such ``values``, with no tree walk.
    """
    return LEAF_TYPES.issuperset(map(type, values))


#: Containers whose emptiness is read without calling user code; an empty one holds no
#: UUID, so the walk skips it (a result document's ``children`` is one, every time).
_BUILTIN_CONTAINERS = frozenset({list, tuple, dict})


def _wrap_uuids(obj: Any) -> Any:
    """``obj`` with UUIDs enveloped; orjson writes UUIDs natively and offers no hook.

    Returns ``obj`` itself (no copy) when it holds no UUID, the common case.
    """
    kind = type(obj)
    if kind is dict or (kind not in LEAF_TYPES and isinstance(obj, dict)):
        if LEAF_TYPES.issuperset(map(type, obj.values())):
            return obj
        for value in obj.values():
            kind = type(value)
            if kind not in LEAF_TYPES and not (kind in _BUILTIN_CONTAINERS and not value) \
                    and _wrap_uuids(value) is not value:
                return {k: _wrap_uuids(v) for k, v in obj.items()}
        return obj
    if kind is list or kind is tuple or (kind not in LEAF_TYPES
                                         and isinstance(obj, (list, tuple))):
        if LEAF_TYPES.issuperset(map(type, obj)):
            return obj
        for value in obj:
            if type(value) not in LEAF_TYPES and _wrap_uuids(value) is not value:
                return [_wrap_uuids(v) for v in obj]
        return obj
    if isinstance(obj, uuid.UUID):
        return _envelope(obj)
    return obj


def json_dumps(obj: Any, uuids: bool = True) -> bytes:
    """kombu-compatible JSON bytes; non-str dict keys are stringified.

    ``uuids=False`` skips enveloping UUIDs (they become plain strings), for documents
    fastq alone reads back, such as stored message headers.
    """
    if uuids:
        obj = _wrap_uuids(obj)
    try:
        return orjson.dumps(obj, default=_envelope, option=_JSON_OPTIONS)
    except orjson.JSONEncodeError as exc:
        if "key must be str" in str(exc).lower():
            return orjson.dumps(obj, default=_envelope,
                                option=_JSON_OPTIONS | orjson.OPT_NON_STR_KEYS)
        raise TypeError(str(exc)) from None


def json_loads(data: bytes | str) -> Any:
    """Decode kombu-compatible JSON; raises DecodeError on malformed input."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    if isinstance(obj, (dict, list)):
        if type(data) is not bytes:  # bytes, the usual case, are scanned as they are
            data = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) \
                else data.encode()
        # A cheap byte scan lets the common case (no envelopes) skip the tree walk. find,
        # not `in`: `in` first tries the needle as an int and raises and clears a TypeError.
        if data.find(b'"__type__"') != -1:
            return _unwrap(obj)
    return obj


# -- other codecs ----------------------------------------------------------------


def _msgpack() -> Any:
    return require("msgpack", "the msgpack serializer")


def _yaml() -> Any:
    return require("yaml", "the yaml serializer")


def _msgpack_dumps(obj: Any) -> bytes:
    return _msgpack().packb(obj, use_bin_type=True)


def _msgpack_loads(data: bytes) -> Any:
    return _msgpack().unpackb(data, raw=False, strict_map_key=False)


def _yaml_dumps(obj: Any) -> bytes:
    return _yaml().safe_dump(obj).encode("utf-8")


def _yaml_loads(data: bytes) -> Any:
    return _yaml().safe_load(data)


def _pickle_dumps(obj: Any) -> bytes:
    import pickle

    return pickle.dumps(obj, protocol=4)


def _pickle_loads(data: bytes) -> Any:
    import pickle

    return pickle.loads(data)  # noqa: S301 - reached only when pickle is in accept_content


@dataclass(frozen=True, slots=True)
class Codec:
    name: str
    content_type: str
    content_encoding: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


CODECS: dict[str, Codec] = {
    codec.name: codec for codec in (
        Codec("json", "application/json", "utf-8", json_dumps, json_loads),
        Codec("msgpack", "application/x-msgpack", "binary", _msgpack_dumps, _msgpack_loads),
        Codec("yaml", "application/x-yaml", "utf-8", _yaml_dumps, _yaml_loads),
        Codec("pickle", "application/x-python-serialize", "binary", _pickle_dumps,
              _pickle_loads),
    )
}

#: content type -> codec, including the aliases kombu accepts.
BY_CONTENT_TYPE: dict[str, Codec] = {c.content_type: c for c in CODECS.values()}
BY_CONTENT_TYPE["application/x-json"] = CODECS["json"]
BY_CONTENT_TYPE["application/msgpack"] = CODECS["msgpack"]
BY_CONTENT_TYPE["application/yaml"] = CODECS["yaml"]
BY_CONTENT_TYPE["text/yaml"] = CODECS["yaml"]
BY_CONTENT_TYPE["application/x-pickle"] = CODECS["pickle"]


def register(new: Codec) -> None:
    """Add (or replace) a serializer, by name and by content type, for this process."""
    CODECS[new.name] = new
    BY_CONTENT_TYPE[new.content_type] = new


def codec(name: str) -> Codec:
    """The codec for a serializer name or content type; ConfigurationError when unknown."""
    found = CODECS.get(name) or BY_CONTENT_TYPE.get(name)
    if found is None:
        from .exceptions import ConfigurationError

        hint = ("; 'auth' (signed messages) exists once app.setup_security() has run"
                if name in ("auth", "application/data") else "")
        raise ConfigurationError(
            f"unknown serializer {name!r}; known: {', '.join(sorted(CODECS))}{hint}")
    return found


def resolve_accept(names: Iterable[str] | str | None) -> frozenset[str]:
    """Content types a consumer accepts, from serializer names or content types."""
    if names is None:
        names = ("json",)
    if isinstance(names, str):
        names = (names,)
    return frozenset(codec(name).content_type for name in names)


def dumps(obj: Any, serializer: str = "json") -> tuple[str, str, bytes]:
    """Serialize ``obj``: ``(content_type, content_encoding, payload)``."""
    c = codec(serializer)
    return c.content_type, c.content_encoding, c.dumps(obj)


def loads(data: bytes, content_type: str | None, content_encoding: str | None = None,
          accept: frozenset[str] | None = None) -> Any:
    """Deserialize a payload, refusing content types not in ``accept`` before decoding.

    Raises:
        ContentDisallowed: the content type is not accepted (or unknown).
        DecodeError: the payload is malformed for its content type.
    """
    content_type = (content_type or "application/data").lower()
    if accept is not None and content_type not in accept:
        raise ContentDisallowed(
            f"refusing to deserialize content type {content_type!r}: not in accept_content "
            f"({', '.join(sorted(accept)) or 'nothing'})")
    c = BY_CONTENT_TYPE.get(content_type)
    if c is None:
        raise ContentDisallowed(f"no codec for content type {content_type!r}")
    if c.content_encoding == "utf-8" and content_encoding not in (None, "", "utf-8", "utf8"):
        try:
            data = bytes(data).decode(content_encoding).encode("utf-8")
        except (LookupError, UnicodeError) as exc:
            raise DecodeError(f"cannot decode body as {content_encoding!r}: {exc}") from exc
    if isinstance(data, str):
        data = data.encode("utf-8")
    if c is CODECS["json"]:
        return json_loads(data)
    try:
        return c.loads(data)
    except (DecodeError, ImproperlyInstalled):
        raise
    except Exception as exc:  # codec libraries raise assorted types on garbage
        raise DecodeError(f"invalid {c.name} payload: {exc}") from exc


# -- compression -------------------------------------------------------------------

#: option name or alias -> MIME type written in the ``compression`` header.
COMPRESSION_ALIASES: dict[str, str] = {
    "zlib": "application/x-gzip",
    "gzip": "application/x-gzip",
    "bzip2": "application/x-bz2",
    "bzip": "application/x-bz2",
    "bz2": "application/x-bz2",
    "lzma": "application/x-lzma",
    "xz": "application/x-lzma",
}

_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    # Celery's "gzip" is a zlib stream (RFC 1950), not a gzip file.
    "application/x-gzip": zlib.compress,
    "application/x-bz2": bz2.compress,
    "application/x-lzma": lzma.compress,
}

#: MIME type -> a new incremental decompressor whose ``decompress(data, max_length)``
#: stops at ``max_length`` bytes of output, so a bomb is caught after the bound, not after
#: it has filled memory.
_DECOMPRESSORS: dict[str, Callable[[], Any]] = {
    "application/x-gzip": zlib.decompressobj,
    "application/x-bz2": bz2.BZ2Decompressor,
    "application/x-lzma": lzma.LZMADecompressor,
}


def compression_type(method: str) -> str:
    """The MIME type for a compression option, e.g. ``zlib`` -> ``application/x-gzip``."""
    mime = COMPRESSION_ALIASES.get(method.lower(), method.lower())
    if mime not in _COMPRESSORS:
        from .exceptions import ConfigurationError

        raise ConfigurationError(
            f"unknown compression {method!r}; known: {', '.join(sorted(COMPRESSION_ALIASES))}")
    return mime


def compress(data: bytes, method: str) -> tuple[str, bytes]:
    """Compress with ``method`` (name or MIME type): ``(mime_type, compressed)``."""
    mime = compression_type(method)
    return mime, _COMPRESSORS[mime](data)


def decompress(data: bytes, mime: str, max_size: int | None = None) -> bytes:
    """Undo ``compress``, producing at most ``max_size`` bytes (None: no bound).

    Raises:
        MessageTooLarge: the data inflates to more than ``max_size`` bytes; found after
            inflating ``max_size + 1`` bytes, whatever the data would inflate to.
        DecodeError: unknown method, corrupt or truncated data.
    """
    make = _DECOMPRESSORS.get(COMPRESSION_ALIASES.get(mime.lower(), mime.lower()))
    if make is None:
        raise DecodeError(f"unknown compression {mime!r}")
    decompressor = make()
    try:
        out = (decompressor.decompress(data) if max_size is None
               else decompressor.decompress(data, max_size + 1))
    except (zlib.error, OSError, ValueError, lzma.LZMAError, EOFError) as exc:
        raise DecodeError(f"corrupt {mime} body: {exc}") from exc
    if max_size is not None and len(out) > max_size:
        raise MessageTooLarge(f"{mime} body inflates to more than {max_size} bytes "
                              f"(worker_max_message_size)")
    # bz2 and lzma know where their stream ends; zlib says so through ``eof``
    if not decompressor.eof:
        raise DecodeError(f"corrupt {mime} body: truncated stream")
    return out
