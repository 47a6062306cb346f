"""Celery protocol v2: building messages as Celery 5.7 does and refusing malformed ones."""

from __future__ import annotations

import tracemalloc
import zlib
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from fastq import _time, protocol, serialization
from fastq.exceptions import MessageRejected

JSON = serialization.resolve_accept(["json"])
CELERY_HEADERS = {"lang", "task", "id", "shadow", "eta", "expires", "group", "group_index",
                  "retries", "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr",
                  "origin", "ignore_result", "replaced_task_nesting", "stamped_headers",
                  "stamps"}
NOW = 1_800_000_000.0


def build(**options):
    return protocol.build_task_message("proj.tasks.add", "5b2f0a1e", (4, 5), {"z": 1},
                                       now=NOW, **options)


def test_headers_properties_and_body_match_celery():
    message = build(origin="gen1@host", reply_to="r-1")
    assert set(message.headers) == CELERY_HEADERS
    h = message.headers
    assert (h["lang"], h["task"], h["id"], h["root_id"]) == ("py", "proj.tasks.add",
                                                              "5b2f0a1e", "5b2f0a1e")
    assert h["timelimit"] == [None, None] and h["retries"] == 0 and h["stamps"] == {}
    assert (h["argsrepr"], h["kwargsrepr"]) == ("(4, 5)", "{'z': 1}")
    assert h["parent_id"] is None and h["eta"] is None and h["ignore_result"] is False
    assert message.properties == {
        "content_type": "application/json", "content_encoding": "utf-8",
        "correlation_id": "5b2f0a1e", "reply_to": "r-1", "delivery_mode": 2, "priority": 0}
    assert orjson.loads(message.body) == [
        [4, 5], {"z": 1}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    assert message.queue == "celery" and message.not_before == 0.0


def test_timelimit_is_hard_then_soft():
    assert build(time_limit=30, soft_time_limit=25.5).headers["timelimit"] == [30, 25.5]


def test_countdown_sets_eta_and_not_before():
    message = build(countdown=90)
    assert message.not_before == NOW + 90
    assert protocol.parse_datetime(message.headers["eta"]).timestamp() == NOW + 90
    assert message.headers["eta"].endswith("+00:00")


def test_naive_eta_stays_naive_on_the_wire_and_means_utc():
    message = build(eta=datetime(2030, 1, 1, 12, 0))
    assert message.headers["eta"] == "2030-01-01T12:00:00"
    assert message.not_before == datetime(2030, 1, 1, 12, tzinfo=timezone.utc).timestamp()


def test_expires_in_seconds_sets_header_and_expiration_ms():
    message = build(expires=300, priority=3)
    assert protocol.parse_datetime(message.headers["expires"]).timestamp() == NOW + 300
    assert message.properties["expiration"] == "300000"
    assert message.properties["priority"] == 3


def test_past_expiry_gives_zero_expiration():
    past = datetime.fromtimestamp(NOW - 10, timezone.utc)
    assert build(expires=past).properties["expiration"] == "0"


def test_custom_headers_pass_through_but_never_replace_protocol_ones():
    headers = build(headers={"x-tenant": "acme", "id": "evil"}).headers
    assert headers["x-tenant"] == "acme" and headers["id"] == "5b2f0a1e"


def test_long_reprs_are_truncated_like_celery():
    message = protocol.build_task_message("t", "i", ("x" * 5000,), {})
    assert len(message.headers["argsrepr"]) == protocol.REPR_LIMIT


@pytest.mark.parametrize("serializer", ["json", "msgpack", "yaml"])
@pytest.mark.parametrize("compression", [None, "zlib", "bzip2"])
def test_round_trip(serializer, compression):
    message = build(serializer=serializer, compression=compression, chain=[{"task": "n"}])
    accept = serialization.resolve_accept([serializer])
    headers, args, kwargs, embed = protocol.decode_task(
        message.headers, message.properties, message.body, accept)
    assert (args, kwargs) == ([4, 5], {"z": 1})
    assert embed["chain"] == [{"task": "n"}]
    assert headers["id"] == "5b2f0a1e"
    if compression:
        assert headers["compression"].startswith("application/x-")


def test_minimal_message_from_another_language_is_accepted():
    headers, args, kwargs, embed = protocol.decode_task(
        {"task": "t", "id": "i"}, {"content_type": "application/json"}, b"[[1], {}, null]",
        JSON)
    assert (args, kwargs, embed) == ([1], {}, {})


def test_hybrid_body_fields_merge_under_headers():
    body = b'{"args": [1], "kwargs": {"a": 2}, "retries": 3, "task": "ignored", "chain": null}'
    headers, args, kwargs, embed = protocol.decode_task(
        {"task": "t", "id": "i"}, {"content_type": "application/json"}, body, JSON)
    assert (headers["task"], headers["retries"], args, kwargs) == ("t", 3, [1], {"a": 2})


def test_protocol_v1_is_converted_like_celery_does():
    body = orjson.dumps({"task": "proj.add", "id": "v1id", "args": [5, 5], "kwargs": {},
                         "retries": 2, "eta": None, "expires": None, "utc": True,
                         "taskset": "g1", "chord": None, "callbacks": [{"task": "cb"}],
                         "errbacks": None, "timelimit": [None, None]})
    headers, args, kwargs, embed = protocol.decode_task(
        {}, {"content_type": "application/json"}, body, JSON)
    assert (headers["task"], headers["id"], headers["retries"], headers["group"]) == (
        "proj.add", "v1id", 2, "g1")
    assert args == [5, 5] and embed["callbacks"] == [{"task": "cb"}] and embed["chain"] is None


@pytest.mark.parametrize("headers, properties, body, reason, fragment", [
    ({"task": "t", "id": "i"}, {"content_type": "application/json"}, b"[[1], {",
     "decode-error", "invalid JSON"),
    ({"id": "i"}, {"content_type": "application/json"}, b"[[], {}, {}]",
     "unknown-format", "no 'task' header"),
    ({"task": "t"}, {"content_type": "application/json"}, b"[[], {}, {}]",
     "invalid-headers", "'id' header"),
    ({"task": "", "id": "i"}, {"content_type": "application/json"}, b"[[], {}, {}]",
     "invalid-headers", "'task' header"),
    ({"task": "t", "id": "i"}, {"content_type": "application/json"}, b"[[], {}]",
     "invalid-body", "2-element list"),
    ({"task": "t", "id": "i"}, {"content_type": "application/json"}, b'"text"',
     "invalid-body", "[args, kwargs, embed]"),
    ({"task": "t", "id": "i"}, {"content_type": "application/json"}, b'["a", {}, {}]',
     "invalid-body", "args must be a list"),
    ({"task": "t", "id": "i"}, {"content_type": "application/json"}, b'[[], [], {}]',
     "invalid-body", "kwargs must be a mapping"),
    ({"task": "t", "id": "i"}, {"content_type": "application/json"}, b'[[], {}, 3]',
     "invalid-body", "embed must be a mapping"),
    ({"task": "t", "id": "i"}, {"content_type": "application/x-python-serialize"}, b"\x80",
     "content-disallowed", "not in accept_content"),
    ({"task": "t", "id": "i"}, {"content_type": "text/csv"}, b"a,b",
     "content-disallowed", "text/csv"),
    ({"task": "t", "id": "i"}, {}, b"[[], {}, {}]", "content-disallowed", "application/data"),
    ({"task": "t", "id": "i", "eta": "not-a-date"}, {"content_type": "application/json"},
     b"[[], {}, {}]", "invalid-eta", "'not-a-date'"),
    ({"task": "t", "id": "i", "expires": 12}, {"content_type": "application/json"},
     b"[[], {}, {}]", "invalid-eta", "expires 12"),
    ({"task": "t", "id": "i", "compression": "application/x-snappy"},
     {"content_type": "application/json"}, b"[[], {}, {}]", "unknown-compression", "snappy"),
    ({"task": "t", "id": "i", "compression": "application/x-gzip"},
     {"content_type": "application/json"}, b"[[], {}, {}]", "decode-error", "corrupt"),
    ([("task", "t")], {"content_type": "application/json"}, b"[[], {}, {}]",
     "invalid-headers", "headers must be a table"),
    ({"task": "t", "id": "i"}, {"content_type": "application/json"},
     b'[[], {}, {"callbacks": ["x"]}]', "invalid-body", "embed callbacks holds 'x'"),
    ({"task": "t", "id": "i"}, {"content_type": "application/json"},
     b'[[], {}, {"chain": {"task": "n"}}]', "invalid-body", "embed chain must be a list"),
    ({"task": "t", "id": "i"}, {"content_type": "application/json"},
     b'[[], {}, {"errbacks": [{"task": ""}]}]', "invalid-body", "not a signature"),
    ({"task": "t", "id": "i"}, {"content_type": "application/json"},
     b'[[], {}, {"chord": [1]}]', "invalid-body", "embed chord must be a signature"),
])
def test_malformed_messages_are_refused_with_a_reason(headers, properties, body, reason,
                                                      fragment):
    with pytest.raises(MessageRejected) as info:
        protocol.decode_task(headers, properties, body, JSON)
    assert info.value.reason == reason
    assert fragment in info.value.detail


@pytest.mark.parametrize("text, expected", [
    ("2026-11-24T01:02:03", datetime(2026, 11, 24, 1, 2, 3, tzinfo=timezone.utc)),
    ("2026-11-24T01:02:03Z", datetime(2026, 11, 24, 1, 2, 3, tzinfo=timezone.utc)),
    ("2026-11-24T01:02:03.5+01:00", datetime(2026, 11, 24, 0, 2, 3, 500000,
                                               tzinfo=timezone.utc)),
    ("2026-11-24T01:02:03.123456789-05:30", datetime(2026, 11, 24, 6, 32, 3, 123456,
                                                       tzinfo=timezone.utc)),
    ("2026-11-24 01:02:03.12", datetime(2026, 11, 24, 1, 2, 3, 120000, tzinfo=timezone.utc)),
    ("2026-11-24T01:02:03+0100", datetime(2026, 11, 24, 0, 2, 3, tzinfo=timezone.utc)),
])
def test_parse_datetime_accepts_what_celery_peers_write(text, expected):
    assert protocol.parse_datetime(text) == expected
    assert _time._parse_iso_slow(text).astimezone(timezone.utc) == expected


def test_format_datetime_is_aware_utc_with_microseconds():
    local = datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    assert protocol.format_datetime(local) == "2026-01-01T00:00:00.000000+00:00"


def test_strip_delayed_routing_key():
    prefix = "0.1." * 14
    assert protocol.strip_delayed_routing_key(prefix + "celery") == "celery"
    assert protocol.strip_delayed_routing_key("0.1.celery") == "0.1.celery"


def test_new_task_ids_are_unique_time_ordered_uuids():
    import time
    import uuid

    first = protocol.new_task_id()
    ids = [protocol.new_task_id() for _ in range(1000)]
    time.sleep(0.002)
    later = protocol.new_task_id()
    assert len(set(ids)) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (7, uuid.RFC_4122, text)
    assert first[:13] <= min(ids)[:13] and later > max(ids)  # ordered by millisecond


def test_a_task_id_starts_with_the_unix_millisecond_it_was_made_in():
    import time
    import uuid

    for _ in range(50):
        before = time.time_ns() // 1_000_000
        made = uuid.UUID(protocol.new_task_id())
        after = time.time_ns() // 1_000_000
        assert before <= made.int >> 80 <= after  # the first 48 bits
        time.sleep(0.0012)  # the next one formats a new millisecond


def test_forked_child_draws_task_ids_from_fresh_randomness():
    import os

    protocol.new_task_id()  # the pool of random bits is now filled in this process
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write_end, protocol.new_task_id().encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    parent_id = protocol.new_task_id()
    # the random part (after the version digit): equal if both popped the same pooled bits
    assert len(child_id) == 36 and child_id[15:] != parent_id[15:]


def _zlib_bomb(inflated: int) -> bytes:
    """A zlib stream of ``inflated`` zero bytes, built a MiB at a time."""
    compressor, chunk = zlib.compressobj(9), bytes(1 << 20)
    parts = [compressor.compress(chunk) for _ in range(inflated >> 20)]
    return b"".join(parts) + compressor.flush()


class TestBounds:
    """worker_max_message_size: checked before decoding, and while decompressing."""

    HEADERS = {"task": "t", "id": "i"}
    JSON_PROPERTIES = {"content_type": "application/json"}

    def test_a_body_over_the_bound_is_refused_before_decoding(self):
        body = b"[[" + b"1," * 600 + b"1], {}, {}]"
        assert protocol.decode_task(self.HEADERS, self.JSON_PROPERTIES, body, JSON,
                                    len(body))[1] == [1] * 601
        with pytest.raises(MessageRejected) as info:
            # not even JSON: it is refused for its size, so it was never decoded
            protocol.decode_task(self.HEADERS, self.JSON_PROPERTIES, b"x" * 2000, JSON, 1999)
        assert info.value.reason == "too-large" and "2000 bytes" in info.value.detail

    @pytest.mark.parametrize("method", ["zlib", "bzip2", "lzma"])
    def test_inflating_past_the_bound_is_refused(self, method):
        body = b"[[" + b"7," * 5000 + b"7], {}, {}]"
        mime, packed = serialization.compress(body, method)
        headers = dict(self.HEADERS, compression=mime)
        assert len(protocol.decode_task(headers, self.JSON_PROPERTIES, packed, JSON,
                                        len(body))[1]) == 5001
        with pytest.raises(MessageRejected) as info:
            protocol.decode_task(headers, self.JSON_PROPERTIES, packed, JSON, len(body) - 1)
        assert info.value.reason == "too-large" and "inflates to more than" in info.value.detail

    def test_a_zlib_bomb_stops_at_the_bound_not_at_its_size(self):
        bomb = _zlib_bomb(1 << 30)  # 1 KiB per MiB: a GiB of zeros in about a MiB
        headers = dict(self.HEADERS, compression="application/x-gzip")
        tracemalloc.start()
        try:
            with pytest.raises(MessageRejected, match="inflates to more than 1048576 bytes"):
                protocol.decode_task(headers, self.JSON_PROPERTIES, bomb, JSON, 1 << 20)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 << 20, peak  # the bound's worth of output, not the GiB

    def test_a_truncated_stream_is_corrupt(self):
        mime, packed = serialization.compress(b"[[], {}, {}]" * 50, "zlib")
        with pytest.raises(MessageRejected) as info:
            protocol.decode_task(dict(self.HEADERS, compression=mime),
                                 self.JSON_PROPERTIES, packed[:-4], JSON, None)
        assert info.value.reason == "decode-error" and "truncated" in info.value.detail

    def test_nesting_deeper_than_the_decoder_allows_is_a_decode_error(self):
        body = b"[[" + b"[" * 2000 + b"]" * 2000 + b"], {}, {}]"
        with pytest.raises(MessageRejected) as info:
            protocol.decode_task(self.HEADERS, self.JSON_PROPERTIES, body, JSON)
        assert info.value.reason == "decode-error" and "depth" in info.value.detail


def _near_misses():
    """The common message and variants one step off it, each for the general path."""
    good = build()
    body = orjson.loads(good.body)
    yield "common", good.headers, good.properties, good.body
    for key, value in [("id", ""), ("id", 7), ("task", ""), ("task", None),
                       ("eta", "soon"), ("expires", "2030-01-01T00:00:00+00:00"),
                       ("compression", "zlib")]:
        yield f"{key}={value!r}", {**good.headers, key: value}, good.properties, good.body
    for variant, payload in [("args as an object", [{}, body[1], body[2]]),
                             ("kwargs as a list", [body[0], [], body[2]]),
                             ("embed null", [body[0], body[1], None]),
                             ("embed with a callback", [body[0], body[1],
                                                        {**body[2], "callbacks": [{}]}]),
                             ("embed with one key", [body[0], body[1], {"chain": None}]),
                             ("two parts", body[:2]), ("an object", {"args": [], "kwargs": {}})]:
        yield variant, good.headers, good.properties, orjson.dumps(payload)
    yield "not json", good.headers, good.properties, b"[1,"
    yield "text/plain", good.headers, {**good.properties, "content_type": "text/plain"}, \
        good.body


@pytest.mark.parametrize("headers,properties,body",
                         [case[1:] for case in _near_misses()],
                         ids=[case[0] for case in _near_misses()])
def test_decoding_the_common_message_quickly_changes_no_outcome(headers, properties, body):
    def outcome(decode):
        try:
            return decode(headers, properties, body, JSON, 1 << 20)
        except MessageRejected as exc:
            return exc.reason, exc.detail

    def general(headers, properties, body, accept, max_size):
        return protocol._unpack(headers, protocol._decode_body(headers, properties, body,
                                                               accept, max_size))

    assert outcome(protocol.decode_task) == outcome(general)


def test_now_isoformat_writes_what_datetime_isoformat_writes(monkeypatch):
    for ns in (1_765_000_000_000_000_000, 1_765_000_000_123_456_789, 1_765_000_001_000_001_000,
               1_765_000_000_999_999_999):
        monkeypatch.setattr(_time.time, "time_ns", lambda ns=ns: ns)
        expected = datetime.fromtimestamp(ns // 1000 / 1e6, timezone.utc).replace(
            microsecond=ns // 1000 % 1_000_000).isoformat()
        assert _time.now_isoformat() == expected
    monkeypatch.undo()
    before = datetime.now(timezone.utc)
    assert before <= datetime.fromisoformat(_time.now_isoformat()) <= datetime.now(timezone.utc)
