"""Codecs and compression: kombu-compatible JSON envelopes, msgpack, yaml, pickle gating."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest

from fastq import serialization
from fastq.exceptions import ConfigurationError, ContentDisallowed, DecodeError


def test_json_round_trips_what_kombu_json_carries():
    value = {
        "naive": datetime(2026, 1, 2, 3, 4, 5),
        "aware": datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone(timedelta(hours=1))),
        "day": date(2026, 1, 2),
        "clock": time(13, 14, 15),
        "money": Decimal("12.3400"),
        "ids": [uuid.UUID("12345678-1234-5678-1234-567812345678")],
        "text_bytes": b"hello",
        "raw_bytes": b"\xff\x00\xfe",
        "nested": {"deeper": [{"when": date(2020, 2, 29)}]},
    }
    assert serialization.json_loads(serialization.json_dumps(value)) == value


def test_json_envelopes_are_kombus_shapes():
    encoded = serialization.json_loads(serialization.json_dumps({
        "d": datetime(2026, 1, 2, 3, 4, 5), "u": uuid.UUID(int=1), "b": b"\xff",
        "x": Decimal("1.5")}).replace(b"__type__", b"type_"))
    assert encoded["d"] == {"type_": "datetime", "__value__": "2026-01-02T03:04:05"}
    assert encoded["u"] == {"type_": "uuid", "__value__": {"hex": "0" * 31 + "1"}}
    assert encoded["b"] == {"type_": "base64", "__value__": "/w=="}
    assert encoded["x"] == {"type_": "decimal", "__value__": "1.5"}


def test_json_reads_envelopes_written_by_kombu():
    raw = (b'[{"__type__": "datetime", "__value__": "2026-11-24T01:02:03.250000+00:00"},'
           b' {"__type__": "uuid", "__value__": {"hex": "00000000000000000000000000000002"}},'
           b' {"__type__": "bytes", "__value__": "hi"}, {"__type__": "x", "__value__": 1,'
           b' "other": 2}]')
    when, ident, data, plain = serialization.json_loads(raw)
    assert when == datetime(2026, 11, 24, 1, 2, 3, 250000, tzinfo=timezone.utc)
    assert ident == uuid.UUID(int=2)
    assert data == b"hi"
    # a dict with more keys than the envelope's two is left alone
    assert plain == {"__type__": "x", "__value__": 1, "other": 2}


def test_unknown_envelope_type_is_a_decode_error():
    with pytest.raises(DecodeError, match="unknown JSON envelope type 'frob'"):
        serialization.json_loads(b'{"__type__": "frob", "__value__": 1}')


def test_bad_json_is_a_decode_error():
    with pytest.raises(DecodeError, match="invalid JSON"):
        serialization.json_loads(b"[1, 2")


def test_unserializable_object_names_its_type():
    with pytest.raises(TypeError, match="object"):
        serialization.json_dumps({"x": object()})


def test_non_string_keys_become_strings():
    assert serialization.json_loads(serialization.json_dumps({1: "a"})) == {"1": "a"}


@pytest.mark.parametrize("name, content_type, encoding", [
    ("json", "application/json", "utf-8"),
    ("msgpack", "application/x-msgpack", "binary"),
    ("yaml", "application/x-yaml", "utf-8"),
    ("pickle", "application/x-python-serialize", "binary"),
])
def test_each_codec_round_trips_a_task_body(name, content_type, encoding):
    body = [[1, "two", 3.5, None, True], {"k": [1, {"n": "v"}]}, {"chain": None}]
    got_type, got_encoding, payload = serialization.dumps(body, name)
    assert (got_type, got_encoding) == (content_type, encoding)
    accept = serialization.resolve_accept([name])
    assert serialization.loads(payload, content_type, encoding, accept) == body


def test_msgpack_keeps_bytes():
    _, _, payload = serialization.dumps({"b": b"\x00\x01"}, "msgpack")
    assert serialization.loads(payload, "application/x-msgpack") == {"b": b"\x00\x01"}


LOADED = []


def _record_load():
    LOADED.append(True)


class _Trap:
    def __reduce__(self):
        return (_record_load, ())


def test_content_type_outside_accept_is_refused_before_decoding():
    import pickle

    payload = pickle.dumps(_Trap())
    with pytest.raises(ContentDisallowed, match="application/x-python-serialize"):
        serialization.loads(payload, "application/x-python-serialize", "binary",
                            serialization.resolve_accept(["json"]))
    assert LOADED == []
    # and the same payload does run code once pickle is accepted: the gate matters
    serialization.loads(payload, "application/x-python-serialize", "binary",
                        serialization.resolve_accept(["pickle"]))
    assert LOADED == [True]


def test_unknown_content_type_is_refused():
    with pytest.raises(ContentDisallowed, match="text/csv"):
        serialization.loads(b"a,b", "text/csv", "utf-8", None)


def test_resolve_accept_takes_names_and_content_types():
    assert serialization.resolve_accept(["json", "application/x-msgpack"]) == frozenset(
        {"application/json", "application/x-msgpack"})
    with pytest.raises(ConfigurationError, match="unknown serializer 'jsn'"):
        serialization.resolve_accept(["jsn"])


def test_garbage_msgpack_is_a_decode_error():
    with pytest.raises(DecodeError, match="msgpack"):
        serialization.loads(b"\xc1\xc1", "application/x-msgpack", "binary")


@pytest.mark.parametrize("method, mime, magic", [
    ("zlib", "application/x-gzip", b"\x78\x9c"),
    ("gzip", "application/x-gzip", b"\x78\x9c"),
    ("bzip2", "application/x-bz2", b"BZh"),
    ("lzma", "application/x-lzma", b"\xfd7zXZ"),
])
def test_compression_uses_celerys_mime_types_and_formats(method, mime, magic):
    data = b'[[1, 2], {}, {}]' * 20
    got_mime, packed = serialization.compress(data, method)
    assert got_mime == mime
    assert packed.startswith(magic)
    assert serialization.decompress(packed, mime) == data


def test_unknown_or_corrupt_compression_is_a_decode_error():
    with pytest.raises(DecodeError, match="unknown compression"):
        serialization.decompress(b"x", "application/x-snappy")
    with pytest.raises(DecodeError, match="corrupt"):
        serialization.decompress(b"not zlib", "application/x-gzip")
    with pytest.raises(ConfigurationError, match="unknown compression 'snappy'"):
        serialization.compress(b"x", "snappy")


def test_envelopes_are_unwrapped_whatever_holds_the_json():
    for raw, value in [(serialization.json_dumps([uuid.UUID(int=7)]), [uuid.UUID(int=7)]),
                       (b'{"plain": 1}', {"plain": 1})]:
        for data in (raw, bytearray(raw), memoryview(raw), raw.decode()):
            assert serialization.json_loads(data) == value, type(data)
