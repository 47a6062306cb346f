"""Distributed tracing of tasks: W3C trace context (``traceparent``, ``tracestate``) in the
headers of task messages, and optionally OpenTelemetry spans for publishing and running.

Off by default (the ``tracing`` setting, ``FASTQ_TRACING``, or ``app.setup_tracing``):
then the App's publish tests one attribute and the worker runs its executor's own code.

On, every message the App publishes gets a ``traceparent`` header. Published from inside
a running task it continues that task's trace: same trace id, a new parent span id, the
``tracestate`` handed on. Published from anywhere else it continues the caller's current
OpenTelemetry span (``"opentelemetry"``) or starts a new trace (``"w3c"``). The worker
runs each task inside the trace its message carries, so the tasks it publishes join it.

The headers are top-level message headers, where ``opentelemetry-instrumentation-celery``
writes them on publish and reads them on run (Celery copies message headers onto
``task.request``): a trace started by an instrumented Celery client continues in a fastq
worker, and one started by fastq continues in an instrumented Celery worker.

Modes:

- ``"w3c"``: the headers only, no dependency, nothing recorded. A run gets a span id of
  its own, which the tasks it publishes name as their parent.
- ``"opentelemetry"`` (``pip install 'fastq[otel]'``): a PRODUCER span per published
  message (``apply_async/<task name>``) and a CONSUMER span around each run
  (``run/<task name>``, status ERROR when the task fails), named as
  ``opentelemetry-instrumentation-celery`` names its spans; the headers are written and read by OpenTelemetry's configured propagator (W3C
  trace context by default). The spans go to the global tracer provider unless one is
  given; set it up in each worker process (``worker_process_init``) when the provider
  runs a thread, as an exporting one does.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _extras, signals

if TYPE_CHECKING:
    from .protocol import Message
    from .task import Request

#: The W3C trace context headers (https://www.w3.org/TR/trace-context/).
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: What the ``tracing`` setting may name, besides None (off).
MODES = ("w3c", "opentelemetry")

# version, trace id, parent (span) id, flags; a later version may append fields
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")


class SpanContext(NamedTuple):
    """One span's place in a trace, as a ``traceparent`` header names it."""

    trace_id: str
    span_id: str
    flags: str = "01"
    #: the ``tracestate`` header, handed on unchanged
    state: str | None = None

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> SpanContext:
        """A span of the same trace whose parent is this one."""
        return self._replace(span_id=_new_span_id())


def parse_traceparent(traceparent: Any, tracestate: Any = None) -> SpanContext | None:
    """The span a ``traceparent`` header names, or None when it is absent or invalid (a
    receiver then starts a new trace, as the W3C recommendation says)."""
    if not isinstance(traceparent, str):
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == "0" * 32 \
            or span_id == "0" * 16:
        return None
    return SpanContext(trace_id, span_id, flags,
                       tracestate if isinstance(tracestate, str) and tracestate else None)


def new_trace() -> SpanContext:
    """The first span of a new trace, sampled."""
    return SpanContext(f"{random.getrandbits(128) or 1:032x}", _new_span_id())


def _new_span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


class Tracing:
    """What the App calls around a publish and the worker around a run, while tracing
    is on.

    ``start_publish(messages)`` writes the trace headers into each message's headers
    before it goes to the broker and returns what ``end_publish(started, error)`` needs
    once the publish is over (``error``: what it raised, else None). ``running(request)``
    is the context the task of ``request`` runs in.
    """

    mode = ""

    def start_publish(self, messages: Sequence[Message]) -> Any:
        raise NotImplementedError

    def end_publish(self, started: Any, error: BaseException | None) -> None:
        """Nothing to end by default."""

    def running(self, request: Request) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError


class W3CTracing(Tracing):
    """The trace headers only: no spans recorded, no dependency."""

    mode = "w3c"

    def __init__(self) -> None:
        #: the span of the task running in this thread or coroutine
        self.current: contextvars.ContextVar[SpanContext | None] = \
            contextvars.ContextVar("fastq_trace", default=None)

    def start_publish(self, messages: Sequence[Message]) -> None:
        parent = self.current.get()
        for message in messages:
            span = parent.child() if parent is not None else new_trace()
            headers = message.headers
            headers[TRACEPARENT] = span.traceparent
            if span.state:
                headers[TRACESTATE] = span.state
            else:
                headers.pop(TRACESTATE, None)

    @contextlib.contextmanager
    def running(self, request: Request) -> Iterator[SpanContext]:
        headers = request.headers
        sent = parse_traceparent(headers.get(TRACEPARENT), headers.get(TRACESTATE))
        span = sent.child() if sent is not None else new_trace()
        token = self.current.set(span)
        try:
            yield span
        finally:
            self.current.reset(token)


class OpenTelemetryTracing(Tracing):
    """PRODUCER and CONSUMER spans through the OpenTelemetry API; the headers through
    its configured propagator.

    ``tracer_provider``: where the spans go (default: the global provider, looked up at
    each span, so one set after this was made is used).
    """

    mode = "opentelemetry"

    def __init__(self, tracer_provider: Any = None) -> None:
        trace = _extras.require("opentelemetry.trace", "tracing='opentelemetry'")
        self._trace = trace
        self._context = _extras.require("opentelemetry.context")
        self._propagate = _extras.require("opentelemetry.propagate")
        self._tracer_provider = tracer_provider
        self._producer = trace.SpanKind.PRODUCER
        self._consumer = trace.SpanKind.CONSUMER
        #: the CONSUMER span of the task running in this thread or coroutine
        self._running: contextvars.ContextVar[Any] = \
            contextvars.ContextVar("fastq_run_span", default=None)
        # a task's failure is an outcome, not an exception out of the run: its span
        # hears of it from the signal (sent only on failures, inside the run)
        signals.task_failure.connect(self._on_task_failure, weak=False,
                                     dispatch_uid=("fastq.tracing", id(self)))

    def _on_task_failure(self, sender: Any = None, exception: BaseException | None = None,
                         **_: Any) -> None:
        span = self._running.get()
        if span is not None and exception is not None:
            _record_error(self._trace, span, exception)

    def _tracer(self) -> Any:
        return self._trace.get_tracer("fastq", tracer_provider=self._tracer_provider)

    def start_publish(self, messages: Sequence[Message]) -> list[Any]:
        tracer = self._tracer()
        set_span_in_context = self._trace.set_span_in_context
        inject = self._propagate.inject
        spans = []
        for message in messages:
            headers = message.headers
            name = headers.get("task")
            span = tracer.start_span(f"apply_async/{name}", kind=self._producer,
                                     attributes=_span_attributes("apply_async", headers))
            inject(headers, context=set_span_in_context(span))
            spans.append(span)
        return spans

    def end_publish(self, started: list[Any], error: BaseException | None) -> None:
        for span in started:
            if error is not None:
                _record_error(self._trace, span, error)
            span.end()

    @contextlib.contextmanager
    def running(self, request: Request) -> Iterator[Any]:
        headers = request.headers
        parent = self._propagate.extract(headers)
        span = self._tracer().start_span(f"run/{request.name}", context=parent,
                                         kind=self._consumer,
                                         attributes=_span_attributes("run", headers))
        token = self._context.attach(self._trace.set_span_in_context(span, parent))
        running = self._running.set(span)
        try:
            yield span
        except BaseException as exc:  # a worker stopping mid-task
            _record_error(self._trace, span, exc)
            raise
        finally:
            self._running.reset(running)
            self._context.detach(token)
            span.end()


def _span_attributes(action: str, headers: dict) -> dict[str, str]:
    # the attributes opentelemetry-instrumentation-celery sets, so one query finds both
    attributes = {"celery.action": action, "messaging.system": "celery"}
    for key, header in (("celery.task_name", "task"), ("messaging.message.id", "id")):
        value = headers.get(header)
        if isinstance(value, str):
            attributes[key] = value
    return attributes


def _record_error(trace: Any, span: Any, error: BaseException) -> None:
    span.record_exception(error)
    span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def tracing_for(setting: Any) -> Tracing | None:
    """The ``Tracing`` a ``tracing`` setting names: None, "", False or "off": none.

    Raises:
        ValueError: an unknown mode.
        ExtraNotInstalled: "opentelemetry" without the ``fastq[otel]`` extra.
    """
    if isinstance(setting, Tracing):
        return setting
    if setting is None or setting is False:
        return None
    mode = str(setting).strip().lower()
    if mode in ("", "off", "false", "0", "none"):
        return None
    if mode in ("w3c", "true", "1", "on"):
        return W3CTracing()
    if mode in ("opentelemetry", "otel"):
        return OpenTelemetryTracing()
    raise ValueError(f"tracing={setting!r}: expected one of {', '.join(MODES)} or None (off)")


__all__ = ["Tracing", "W3CTracing", "OpenTelemetryTracing", "SpanContext", "tracing_for",
           "parse_traceparent", "new_trace", "TRACEPARENT", "TRACESTATE", "MODES"]
