"""Fuzzing the worker's intake: every generated delivery is run or dead-lettered with a
reason, in bounded time, the worker goes on, and the compiled consumer and its
pure-Python twin do the same with each input (short deterministic profile; the long run
is ``python -m bench.fuzz``)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("hypothesis")

import orjson  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fastq import protocol, serialization  # noqa: E402
from fastq.brokers import _sqs_wire  # noqa: E402
from fastq.brokers.redis import RedisBroker  # noqa: E402
from fastq.brokers.sqlite import SQLiteBroker  # noqa: E402
from fastq.exceptions import MessageRejected  # noqa: E402
from fastq.testing import fuzzing  # noqa: E402
from fastq.worker import _consumer_py  # noqa: E402

#: derandomized: the same inputs every run, so a failure here reproduces
CI_PROFILE = settings(max_examples=150, derandomize=True, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow,
                                             HealthCheck.function_scoped_fixture])
ACCEPT = serialization.resolve_accept(fuzzing.ACCEPT)
#: every reason decode_task may give (exceptions.MessageRejected's list)
REASONS = {"content-disallowed", "decode-error", "unknown-format", "protocol-v1",
           "invalid-body", "invalid-headers", "invalid-eta", "unknown-compression",
           "too-large", "signature"}


@CI_PROFILE
@given(fuzzing.task_messages())
def test_the_decoder_returns_a_task_or_a_reason(message):
    headers, properties, body = message
    try:
        decoded_headers, args, kwargs, embed = protocol.decode_task(
            headers, properties, body, ACCEPT, 1 << 20)
    except MessageRejected as exc:
        assert exc.reason in REASONS, fuzzing.describe(*message)
        return
    assert isinstance(decoded_headers, dict) and isinstance(args, (list, tuple))
    assert isinstance(kwargs, dict) and isinstance(embed, dict)


@CI_PROFILE
@given(fuzzing.task_messages())
def test_stored_envelopes_always_become_deliveries(message):
    headers, properties, body = message
    from fastq.brokers._kombu import envelope

    raw = envelope(protocol.Message(headers if isinstance(headers, dict) else {},
                                    properties, body, queue="q"))
    for data in (raw, raw[: len(raw) // 2], raw.replace(b'"', b"'", 1)):
        delivery = RedisBroker._delivery("tag", data, "q")  # never raises
        assert isinstance(delivery.headers, dict)
        try:
            got_headers, _properties, _body = _sqs_wire.decode_body(data.decode("utf-8",
                                                                                "replace"))
        except ValueError:
            continue  # the SQS broker delivers it raw, for the worker to dead-letter
        assert isinstance(got_headers, dict)


@CI_PROFILE
@given(message=fuzzing.task_messages(),
       damage=st.sampled_from(["none", "half", "quote", "list", "scalar"]),
       body=st.binary(max_size=64) | st.text(max_size=16) | st.integers() | st.none())
def test_sqlite_rows_always_become_deliveries(message, damage, body):
    """Whatever a row holds (SQLite keeps any type in any column), claiming it gives a
    Delivery with table headers and a bytes body, for the worker to run or dead-letter."""
    headers, properties, _body = message
    envelope = orjson.dumps([headers, properties], default=repr)
    envelope = {"none": envelope, "half": envelope[: len(envelope) // 2],
                "quote": envelope.replace(b'"', b"'", 1),
                "list": orjson.dumps([headers, properties, 3], default=repr),
                "scalar": orjson.dumps(properties, default=repr)}[damage]
    delivery = SQLiteBroker._row_delivery(1, "q", 1, envelope, body)
    assert isinstance(delivery.headers, dict) and isinstance(delivery.properties, dict)
    assert isinstance(delivery.body, bytes)


def _consumers():
    types = [("py", _consumer_py.Consumer)]
    if os.environ.get("FASTQ_NO_SPEEDUPS") != "1":
        from fastq._speedups._consumer import Consumer as CompiledConsumer

        types.append(("c", CompiledConsumer))
    return types


@pytest.fixture(scope="module")
def workers():
    started = [(name, fuzzing.FuzzWorker(consumer, name)) for name, consumer in _consumers()]
    yield started
    for _name, worker in started:
        worker.close()


@settings(CI_PROFILE, max_examples=80)
@given(message=fuzzing.task_messages(tables_only=True))
def test_a_worker_runs_or_dead_letters_everything_and_both_twins_agree(workers, message):
    outcomes = {name: worker.outcome(*message) for name, worker in workers}
    assert len(set(outcomes.values())) == 1, (outcomes, fuzzing.describe(*message))
    (outcome,) = set(outcomes.values())
    assert outcome in {"acked", "deferred"} or (
        outcome.startswith("dead_lettered:")
        and outcome.split(":", 1)[1] in REASONS | {"unknown-task", "redelivery-limit",
                                                   "rejected"}), outcome


def _general_decode(headers, properties, body, accept, max_size):
    """decode_task without its shortcut for the common message."""
    return protocol._unpack(headers, protocol._decode_body(headers, properties, body, accept,
                                                           max_size))


def _outcome(decode, headers, properties, body):
    try:
        return decode(headers, properties, body, ACCEPT, 1 << 20)
    except MessageRejected as exc:
        return (exc.reason, exc.detail)


@CI_PROFILE
@given(fuzzing.task_messages())
def test_the_decoders_shortcut_agrees_with_the_general_path(message):
    headers, properties, body = message
    assert _outcome(protocol.decode_task, headers, properties, body) == _outcome(
        _general_decode, headers, properties, body), fuzzing.describe(*message)
