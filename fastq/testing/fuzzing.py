"""Hostile-input fuzzing: hypothesis strategies for task messages, and a worker that
reports what it did with each one (ran it, dead-lettered it and why, deferred it).

The property every worker must keep: whatever arrives is either run as a task or
dead-lettered with a reason, within a bounded time, and the worker goes on; the compiled
consumer and its pure-Python twin do the same thing with the same input. The AMQP frame
readers (rabbitmq-c's and py-amqp's) are fuzzed through a proxy that damages one frame
of a session: every damage ends in a result or a broker error, in bounded time. Used by the
suite (``tests/unit/test_fuzz.py``, a short deterministic profile) and by
``python -m bench.fuzz`` (the long run). Needs ``hypothesis`` (the ``dev`` extra).
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from typing import Any

import orjson
from hypothesis import strategies as st

from .. import serialization
from ..app import App
from ..protocol import Message
from ..worker.executor import Executor
from ..worker.pools.solo import SoloPool

#: Tasks the fuzzing app registers; headers name them, or something else.
TASK_NAMES = ("fz.echo", "fz.boom", "fz.unknown")
#: What the worker accepts: every decoder but pickle's gets the fuzzed bodies.
ACCEPT = ("json", "msgpack", "yaml")

_CONTENT_TYPES = ("application/json", "application/x-msgpack", "application/x-yaml",
                  "application/x-python-serialize", "application/data", "text/plain",
                  "application/x-json", None)
_ENCODINGS = ("utf-8", "binary", "latin-1", "utf-16", "no-such-codec", None)
_COMPRESSIONS = ("application/x-gzip", "application/x-bz2", "application/x-lzma",
                 "zlib", "application/x-snappy")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)

_header_values = {
    "task": st.sampled_from(TASK_NAMES) | json_values,
    "id": st.uuids().map(str) | json_values,
    "eta": st.sampled_from(["2026-01-01T00:00:00+00:00", "2099-01-01T00:00:00",
                            "not-a-date", ""]) | json_values,
    "expires": st.sampled_from(["2000-01-01T00:00:00+00:00", "2099-01-01T00:00:00Z",
                                "soon"]) | json_values,
    "retries": st.integers(-5, 10) | json_values,
    "timelimit": st.tuples(st.none() | st.floats(0, 5), st.none() | st.floats(0, 5))
    .map(list) | json_values,
    "root_id": json_values, "parent_id": json_values, "group": json_values,
    "group_index": json_values, "shadow": json_values, "lang": json_values,
    "ignore_result": json_values, "stamps": json_values, "stamped_headers": json_values,
}


@st.composite
def task_headers(draw: Any, tables_only: bool = False) -> Any:
    """Celery's header table, each key present or not, each value plausible or not;
    now and then not a table at all (Redis and SQS envelopes can say anything), unless
    ``tables_only`` (what AMQP and the brokers' publish can carry)."""
    headers = {"task": draw(st.sampled_from(TASK_NAMES)), "id": str(uuid.uuid4())}
    for key, values in _header_values.items():
        choice = draw(st.integers(0, 11))
        if choice == 0:
            headers.pop(key, None)
        elif choice == 1:
            headers[key] = draw(values)
    headers.update(draw(st.dictionaries(st.text(max_size=10), json_values, max_size=2)))
    if not tables_only and draw(st.integers(0, 40)) == 0:
        return draw(st.lists(json_values, max_size=3))  # not a table at all
    return headers


@st.composite
def task_bodies(draw: Any) -> tuple[dict, bytes]:
    """``(properties, body)``: a v2 body (or not) in some codec, maybe compressed, maybe
    damaged; the properties say what the body claims to be."""
    args = draw(st.lists(json_values, max_size=3) | json_values)
    kwargs = draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3) | json_values)
    embed = draw(st.fixed_dictionaries({}, optional={
        "callbacks": st.none() | json_values, "errbacks": st.none() | json_values,
        "chain": st.none() | json_values, "chord": st.none() | json_values}) | json_values)
    shape = draw(st.sampled_from(["v2", "v2", "v2", "v1", "other"]))
    payload = ([args, kwargs, embed] if shape == "v2"
               else {"task": "fz.echo", "id": str(uuid.uuid4()), "args": args,
                     "kwargs": kwargs} if shape == "v1" else draw(json_values))
    codec = draw(st.sampled_from(["json", "json", "msgpack", "yaml", "raw"]))
    if codec == "raw":
        body = draw(st.binary(max_size=64))
        content_type = draw(st.sampled_from(_CONTENT_TYPES))
    else:
        try:
            content_type, _encoding, body = serialization.dumps(payload, codec)
        except Exception:  # e.g. msgpack and integers past 64 bits: send JSON instead
            content_type, _encoding, body = serialization.dumps(payload, "json")
        if draw(st.integers(0, 9)) == 0:
            content_type = draw(st.sampled_from(_CONTENT_TYPES))  # a lie about the body
    properties = {"content_type": content_type,
                  "content_encoding": draw(st.sampled_from(_ENCODINGS))}
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "flip", "append"]))
    if damage == "truncate" and body:
        body = body[:draw(st.integers(0, len(body) - 1))]
    elif damage == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        body = body[:at] + bytes([body[at] ^ (1 << draw(st.integers(0, 7)))]) + body[at + 1:]
    elif damage == "append":
        body += draw(st.binary(min_size=1, max_size=8))
    return properties, body


@st.composite
def task_messages(draw: Any, tables_only: bool = False) -> tuple[Any, dict, bytes]:
    """``(headers, properties, body)`` of one fuzzed delivery."""
    headers = draw(task_headers(tables_only))
    properties, body = draw(task_bodies())
    if isinstance(headers, dict) and draw(st.integers(0, 4)) == 0:
        method = draw(st.sampled_from(_COMPRESSIONS))
        if method in serialization.COMPRESSION_ALIASES.values() or method == "zlib":
            try:
                headers["compression"], body = serialization.compress(body, method)
            except Exception:
                headers["compression"] = method
            if draw(st.booleans()):
                body = body[:-1]
        else:
            headers["compression"] = method
    return headers, properties, body


def fuzz_app(name: str = "fuzz") -> App:
    """An App on its own in-memory broker with the fuzzing tasks registered."""
    app = App(name, broker=f"memory://{uuid.uuid4()}", accept_content=list(ACCEPT),
              worker_ack_interval=0.001, broker_max_redeliveries=0)

    @app.task(name="fz.echo")
    def echo(*args: Any, **kwargs: Any) -> Any:
        return [list(args), kwargs]

    @app.task(name="fz.boom")
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("boom")

    return app


class FuzzWorker:
    """One consumer (``consumer_type``: compiled or Python) on a solo pool in a thread,
    fed one delivery at a time; ``outcome`` says what it did with it."""

    #: The counters a delivery can end in, as the consumer keeps them.
    ENDINGS = ("acked", "dead_lettered", "released", "requeued", "deferred")

    def __init__(self, consumer_type: type, name: str = "fuzz") -> None:
        self.app = fuzz_app(name)
        self.broker = self.app.broker
        executor = Executor(self.app, f"{name}@fuzz")
        self.pool = SoloPool(executor, 1)
        self.pool.start()
        self.consumer = consumer_type(self.app, self.broker, executor, self.pool, ["celery"],
                                      1, ack_batch_size=1, ack_interval=0.001,
                                      hostname=f"{name}@fuzz")
        self.thread = threading.Thread(target=self.consumer.run, daemon=True,
                                       name=f"fuzz-{name}")
        self.thread.start()

    def outcome(self, headers: Any, properties: dict, body: bytes,
                timeout: float = 10.0) -> str:
        """What the worker did with this delivery: ``acked`` (ran, or settled without
        running: revoked, expired), ``dead_lettered:<reason>``, ``deferred``, ...

        Raises:
            AssertionError: it did nothing within ``timeout`` seconds (a hang), or the
                consumer thread died (a crash).
        """
        before = {k: self.consumer.counters[k] for k in self.ENDINGS}
        self.broker.publish(Message(headers, dict(properties), body, queue="celery"))
        deadline = time.monotonic() + timeout
        while True:
            counters = self.consumer.counters
            ended = [k for k in self.ENDINGS if counters[k] != before[k]]
            if ended:
                break
            assert self.thread.is_alive(), "the consumer thread died"
            assert time.monotonic() < deadline, (
                f"no outcome within {timeout}s for headers={headers!r:.200} "
                f"properties={properties!r} body={base64.b64encode(body)[:200]!r}")
            time.sleep(0.0005)
        (ending,) = ended
        if ending == "dead_lettered":
            reason = self.broker.dead_letters("celery", 1)[0]["reason"].split(":")[0]
            self._forget_dead_letters()
            return f"dead_lettered:{reason}"
        return ending

    def _forget_dead_letters(self) -> None:
        """Drop the dead letters once counted: the in-memory broker keeps each one, body
        and all, for the life of the process (a 100,000-input run grew past 900 MB).
        MemoryBroker has no public way to drop them; its state is reached directly."""
        state = self.broker._state
        with state.lock:
            state.dead.clear()

    def close(self) -> None:
        self.consumer.stop()
        self.thread.join(10)
        self.pool.stop()
        self.app.close()


#: How a frame from RabbitMQ can be damaged on its way to the client.
FRAME_DAMAGE = ("cut", "flip", "drop", "repeat", "garbage", "split")
#: The messages a damaged session publishes and reads back: small, with a table of
#: headers, and one spanning several body frames (frame_max 4096).
SESSION_MESSAGES = (
    (b"small", {"content_type": "application/json"}, None),
    (b'{"x": 1}', {"delivery_mode": 2, "priority": 1},
     {"task": "fz.echo", "nested": {"list": [1, "two", None], "when": 1.5}}),
    (bytes(range(256)) * 40, {"correlation_id": "big"}, {"size": 10240}),
)


@st.composite
def frame_damages(draw: Any) -> tuple[int, str, int, int]:
    """``(which, how, where, byte)``: the ``which``-th frame RabbitMQ sends after the
    handshake is damaged ``how`` (one of FRAME_DAMAGE), at offset ``where``."""
    return (draw(st.integers(0, 14)), draw(st.sampled_from(FRAME_DAMAGE)),
            draw(st.integers(0, 10_300)), draw(st.integers(0, 255)))


class FrameDamage:
    """A ``FaultProxy`` rewrite that damages one server frame once ``armed``."""

    def __init__(self, damage: tuple[int, str, int, int]) -> None:
        self.which, self.how, self.where, self.byte = damage
        self.armed = False
        self._seen = 0

    def __call__(self, frame: bytes) -> bytes:
        if not self.armed:
            return frame
        self._seen += 1
        if self._seen - 1 != self.which:
            return frame
        at = self.where % len(frame)
        if self.how == "cut":
            return frame[:at]
        if self.how == "flip":
            return frame[:at] + bytes([frame[at] ^ (self.byte or 1)]) + frame[at + 1:]
        if self.how == "drop":
            return b""
        if self.how == "repeat":
            return frame + frame
        if self.how == "garbage":
            return frame[:at] + bytes([self.byte]) * (1 + self.where % 64) + frame[at:]
        return frame  # "split": the proxy already sends frames as they come


def damaged_session(driver: type, upstream: tuple[str, int],
                    damage: tuple[int, str, int, int]) -> str:
    """One AMQP session through a proxy that damages one frame RabbitMQ sends: declare
    an exclusive queue, publish SESSION_MESSAGES with confirms, consume them back.

    Returns what the driver made of it: ``whole`` (everything back intact), ``altered``
    (a damaged byte inside a message came through: AMQP has no checksum, the decoder
    is the next guard), ``lost`` (BrokerConnectionLost), ``refused`` (AMQPError, a
    channel or connection error), ``unconfirmed`` (PublishTimeout/PublishNacked) or
    ``short`` (fewer messages within the time allowed). Any other exception is a bug
    and propagates.
    """
    from ..exceptions import AMQPError, BrokerConnectionLost, PublishNacked, PublishTimeout
    from .proxy import FaultProxy

    rewrite = FrameDamage(damage)
    proxy = FaultProxy(upstream, rewrite=rewrite)
    conn = driver("127.0.0.1", proxy.port, frame_max=4096, connect_timeout=2.0,
                  rpc_timeout=0.3)
    try:
        conn.connect()
        conn.confirm_select()
        rewrite.armed = True
        queue = f"fastq-fuzz-{uuid.uuid4().hex}"
        try:
            conn.declare_queue(queue, durable=False, exclusive=True, auto_delete=True)
            for body, properties, headers in SESSION_MESSAGES:
                conn.publish("", queue, body, properties, headers)
            conn.wait_for_confirms(0.5)
            conn.consume(queue)
            got: list[tuple] = []
            deadline = time.monotonic() + 0.8
            while len(got) < len(SESSION_MESSAGES) and time.monotonic() < deadline:
                got.extend(conn.drain(len(SESSION_MESSAGES) - len(got), 0.1))
            if got:
                conn.ack(got[-1][0], multiple=True)
        except BrokerConnectionLost:
            return "lost"
        except AMQPError:
            return "refused"
        except (PublishTimeout, PublishNacked):
            return "unconfirmed"
        if len(got) < len(SESSION_MESSAGES):
            return "short"
        bodies = [item[7] for item in got]
        return "whole" if bodies == [m[0] for m in SESSION_MESSAGES] else "altered"
    finally:
        conn.close()
        proxy.close()


def describe(headers: Any, properties: dict, body: bytes) -> str:
    """One line that reproduces an input (for failure reports)."""
    return orjson.dumps({"headers": headers, "properties": properties,
                         "body": base64.b64encode(body).decode()},
                        default=repr).decode()


__all__ = ["ACCEPT", "FRAME_DAMAGE", "FrameDamage", "FuzzWorker", "SESSION_MESSAGES",
           "TASK_NAMES", "damaged_session", "describe", "frame_damages", "fuzz_app",
           "json_values", "task_bodies", "task_headers", "task_messages"]
