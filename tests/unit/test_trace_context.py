"""The W3C trace context of fastq/tracing.py: what a valid ``traceparent`` is, the span a
publish writes with and without a current one, and the modes the setting names."""

from __future__ import annotations

import pytest

from fastq import App
from fastq.protocol import Message
from fastq.tracing import (
    OpenTelemetryTracing,
    SpanContext,
    W3CTracing,
    new_trace,
    parse_traceparent,
    tracing_for,
)

pytestmark = pytest.mark.twin_neutral

VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_a_valid_traceparent_is_read_and_written_back_unchanged() -> None:
    span = parse_traceparent(VALID, "vendor=x")
    assert span == SpanContext("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "01",
                               "vendor=x")
    assert span.traceparent == VALID


@pytest.mark.parametrize("header", [
    None, 17, "", "garbage",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
    "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # 00 has 4 fields
])
def test_an_invalid_traceparent_is_none(header) -> None:
    assert parse_traceparent(header) is None


def test_a_later_version_may_carry_more_fields() -> None:
    span = parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x")
    assert span is not None and span.traceparent == VALID  # written as version 00


def test_a_new_trace_and_a_child_span() -> None:
    first = new_trace()
    assert parse_traceparent(first.traceparent) == first
    child = first.child()
    assert (child.trace_id, child.flags) == (first.trace_id, first.flags)
    assert child.span_id != first.span_id
    assert new_trace().trace_id != first.trace_id


def message() -> Message:
    return Message({"id": "i", "task": "t"}, {}, b"[]", "q")


def test_a_publish_continues_the_current_span_or_starts_a_trace() -> None:
    tracing = W3CTracing()
    outside, inside = message(), message()
    tracing.start_publish([outside])
    assert parse_traceparent(outside.headers["traceparent"]) is not None
    assert "tracestate" not in outside.headers
    current = parse_traceparent(VALID, "vendor=x")
    token = tracing.current.set(current)
    try:
        tracing.start_publish([inside])
    finally:
        tracing.current.reset(token)
    sent = parse_traceparent(inside.headers["traceparent"], inside.headers["tracestate"])
    assert sent is not None and sent.trace_id == current.trace_id
    assert sent.span_id != current.span_id and sent.state == "vendor=x"


def test_the_setting_names_a_mode() -> None:
    assert all(tracing_for(off) is None for off in (None, False, "", "off", "none"))
    assert isinstance(tracing_for("w3c"), W3CTracing)
    assert isinstance(tracing_for("OpenTelemetry"), OpenTelemetryTracing)
    with pytest.raises(ValueError, match="w3c, opentelemetry"):
        tracing_for("zipkin")


def test_the_app_reads_the_setting_once_and_setup_tracing_changes_it() -> None:
    app = App("t", broker="memory://tracing-unit", tracing="w3c")
    try:
        assert isinstance(app.tracing, W3CTracing) and app.tracing is app.tracing
        assert app.setup_tracing(False) is None and app.tracing is None
        assert isinstance(app.setup_tracing(), W3CTracing)  # back to the setting
    finally:
        app.close()


def test_fastq_tracing_in_the_environment_turns_it_on(monkeypatch) -> None:
    monkeypatch.setenv("FASTQ_TRACING", "opentelemetry")
    app = App("t", broker="memory://tracing-env")
    try:
        assert isinstance(app.tracing, OpenTelemetryTracing)
    finally:
        app.close()
