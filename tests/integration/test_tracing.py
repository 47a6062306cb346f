"""Tracing on RabbitMQ with a real worker: the W3C trace headers go from publisher to
worker and on to the tasks a running task publishes; with OpenTelemetry the spans of a
publish and a run form one trace; a Celery client instrumented by
opentelemetry-instrumentation-celery starts a trace a fastq worker joins; off, no header."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from fastq import App
from fastq.testing.worker import start_worker
from fastq.tracing import OpenTelemetryTracing, Tracing, parse_traceparent
from tests.integration.test_amqp_broker import URL, delete_queues

pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]  # no compiled part here


@pytest.fixture
def queue() -> Iterator[str]:
    name = f"fastq-tracing-{uuid.uuid4().hex[:10]}"
    yield name
    delete_queues([name])


def traced_app(queue: str, tracing: object) -> tuple[App, list[dict], threading.Event]:
    """An App with ``t.parent`` (which publishes ``t.child``) and ``t.child``; each
    run's message headers are kept, in order; the event is set when the child ran."""
    app = App(f"tracing-{uuid.uuid4().hex[:6]}", broker=URL,
              backend=f"memory://{uuid.uuid4()}", task_default_queue=queue)
    if isinstance(tracing, Tracing):
        app.setup_tracing(tracing)
    else:  # the setting, read on the first publish
        app.conf.tracing = tracing
    seen: list[dict] = []
    child_ran = threading.Event()

    @app.task(name="t.parent", bind=True)
    def parent(self):
        seen.append(dict(self.request.headers))
        app.send_task("t.child")

    @app.task(name="t.child", bind=True)
    def child(self):
        seen.append(dict(self.request.headers))
        child_ran.set()

    return app, seen, child_ran


def run_parent_and_child(app: App, seen: list[dict], child_ran: threading.Event,
                         send: object = None) -> None:
    with start_worker(app):
        (send or (lambda: app.send_task("t.parent")))()  # type: ignore[operator]
        assert child_ran.wait(20), seen
    assert len(seen) == 2


def test_w3c_headers_reach_the_worker_and_its_child_tasks(queue) -> None:
    app, seen, child_ran = traced_app(queue, "w3c")
    try:
        run_parent_and_child(app, seen, child_ran)
    finally:
        app.close()
    parent_headers, child_headers = seen
    sent = parse_traceparent(parent_headers["traceparent"])
    handed_on = parse_traceparent(child_headers["traceparent"])
    assert sent is not None and handed_on is not None
    assert handed_on.trace_id == sent.trace_id  # one trace
    assert handed_on.span_id != sent.span_id  # the child names the parent's run
    assert sent.flags == handed_on.flags == "01"


def test_a_trace_sent_by_an_untraced_client_is_continued_with_its_tracestate(queue) -> None:
    app, seen, child_ran = traced_app(queue, "w3c")
    client = App("untraced-client", broker=URL, task_default_queue=queue)
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    try:
        run_parent_and_child(app, seen, child_ran, lambda: client.send_task(
            "t.parent", headers={"traceparent": caller, "tracestate": "vendor=x"}))
    finally:
        client.close()
        app.close()
    parent_headers, child_headers = seen
    assert parent_headers["traceparent"] == caller  # as sent: the worker only reads it
    handed_on = parse_traceparent(child_headers["traceparent"], child_headers["tracestate"])
    assert handed_on is not None and handed_on.state == "vendor=x"
    assert handed_on.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert handed_on.span_id != "b7ad6b7169203331"


def test_tracing_off_adds_no_header(queue) -> None:
    app, seen, child_ran = traced_app(queue, None)
    try:
        run_parent_and_child(app, seen, child_ran)
        assert app.tracing is None
    finally:
        app.close()
    assert all("traceparent" not in headers and "tracestate" not in headers
               for headers in seen)


@pytest.fixture
def spans():
    """A tracer provider whose finished spans are kept in memory, and the list of them."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def wait_for_spans(exporter, count: int) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while len(exporter.get_finished_spans()) < count:
        assert time.monotonic() < deadline, exporter.get_finished_spans()
        time.sleep(0.02)
    return {span.name: span for span in exporter.get_finished_spans()}


def test_opentelemetry_spans_of_publish_and_run_form_one_trace(queue, spans) -> None:
    from opentelemetry.trace import SpanKind

    provider, exporter = spans
    app, seen, child_ran = traced_app(queue, OpenTelemetryTracing(tracer_provider=provider))
    tracer = provider.get_tracer("test")

    def send() -> None:
        with tracer.start_as_current_span("client"):
            app.send_task("t.parent")
    try:
        run_parent_and_child(app, seen, child_ran, send)
        by_name = wait_for_spans(exporter, 5)
    finally:
        app.close()
    client = by_name["client"]
    chain = [client, by_name["apply_async/t.parent"], by_name["run/t.parent"],
             by_name["apply_async/t.child"], by_name["run/t.child"]]
    assert {span.context.trace_id for span in chain} == {client.context.trace_id}
    for parent, child in zip(chain, chain[1:]):
        assert child.parent.span_id == parent.context.span_id, (child.name, parent.name)
    assert [span.kind for span in chain[1:]] == [SpanKind.PRODUCER, SpanKind.CONSUMER] * 2
    assert by_name["run/t.parent"].attributes["celery.task_name"] == "t.parent"
    # the header the child's message carried names its PRODUCER span
    header = parse_traceparent(seen[1]["traceparent"])
    assert header is not None
    assert int(header.span_id, 16) == by_name["apply_async/t.child"].context.span_id


def test_the_run_span_of_a_failed_task_has_error_status(queue, spans) -> None:
    from opentelemetry.trace import StatusCode

    provider, exporter = spans
    app, _seen, _child_ran = traced_app(queue, OpenTelemetryTracing(tracer_provider=provider))
    failed = threading.Event()

    @app.task(name="t.fail")
    def fail():
        failed.set()
        raise KeyError("missing")
    try:
        with start_worker(app):
            app.send_task("t.fail")
            assert failed.wait(20)
            by_name = wait_for_spans(exporter, 2)
    finally:
        app.close()
    run = by_name["run/t.fail"]
    assert run.status.status_code is StatusCode.ERROR and "KeyError" in run.status.description
    assert [event.name for event in run.events] == ["exception"]
    assert by_name["apply_async/t.fail"].status.status_code is StatusCode.UNSET


def test_a_trace_from_an_instrumented_celery_client_continues_in_a_fastq_worker(
        queue, spans) -> None:
    pytest.importorskip("opentelemetry.instrumentation.celery")
    from celery import Celery
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    provider, exporter = spans
    app, seen, child_ran = traced_app(queue, OpenTelemetryTracing(tracer_provider=provider))
    celery = Celery("otel-client", broker=URL)
    instrumentor = CeleryInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        run_parent_and_child(app, seen, child_ran,
                             lambda: celery.send_task("t.parent", queue=queue))
        by_name = wait_for_spans(exporter, 4)
    finally:
        instrumentor.uninstrument()
        app.close()
    published, run = by_name["apply_async/t.parent"], by_name["run/t.parent"]
    assert run.context.trace_id == published.context.trace_id
    assert run.parent.span_id == published.context.span_id
    assert by_name["run/t.child"].context.trace_id == published.context.trace_id
