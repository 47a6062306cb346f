"""The broker's ceilings: a consumer that only acks, and an echo that only replies.

``python -m bench.bare`` reads BENCH_COUNT messages from the bench queue with the fastest
AMQP driver fastq has, acking with multiple=True every 256, and writes the start/end
stamps bench/throughput.py reads; ``BENCH_BUSY_US`` makes it spin that many µs of CPU per
message, a stand-in for a worker's own work (what a consumer's time per message costs the
broker's rate). ``python -m bench.bare echo [BUSY_US]`` answers every message on the
bench queue by publishing its body to its ``reply_to`` queue with its ``correlation_id``,
then acking it: the round-trip floor bench/latency.py compares with (``BUSY_US``: CPU
work before each answer, for bench/confirm.py).

With ``BENCH_BROKER_URL=redis://...`` the consumer is fastq's own Redis broker client
claiming 256 messages a call and acking each batch (the same Lua scripts on the same
keys as a worker), with nothing decoded past the envelope and nothing run.
"""

from __future__ import annotations

import os
import time
from urllib.parse import unquote, urlsplit


def _driver():
    try:
        from fastq._speedups._amqp import Connection
    except ImportError:
        from fastq.brokers._amqp_py import Connection
    return Connection


def connect():
    """A connected driver for the bench broker."""
    from bench.apps import BROKER_URL

    url = urlsplit(BROKER_URL)
    conn = _driver()(url.hostname or "127.0.0.1", url.port or 5672,
                     unquote(url.path[1:]) or "/", url.username or "guest",
                     url.password or "guest")
    conn.connect()
    return conn


def echo(busy_us: float = 0.0) -> None:
    """Answer every message on the bench queue; ``busy_us`` µs of CPU work before each
    answer stand for a worker's own (bench/confirm.py)."""
    from bench.apps import QUEUE

    conn = connect()
    conn.declare_queue(QUEUE, durable=True)
    conn.qos(1)
    conn.consume(QUEUE)
    busy = busy_us / 1e6
    while True:
        for tag, _redelivered, _exchange, _key, _ctag, props, _headers, body in conn.drain(1, 1.0):
            if busy:
                until = time.perf_counter() + busy
                while time.perf_counter() < until:
                    pass
            conn.publish("", props["reply_to"], body,
                         {"correlation_id": props.get("correlation_id"), "delivery_mode": 2},
                         None)
            conn.ack(tag)


def _stamp(variable: str, value: float) -> None:
    """Write a stamp where the worker's first or last task would have: the start one as
    the first message arrives, so the benchmarks sample CPU time when a worker's would."""
    with open(os.environ[variable], "w") as fh:
        fh.write(repr(value))


def main_redis() -> None:
    from bench.apps import BROKER_URL, QUEUE
    from fastq.brokers import create_broker

    broker = create_broker(BROKER_URL)
    broker.connect()
    total = int(os.environ["BENCH_COUNT"])
    seen = 0
    started = None
    while seen < total:
        batch = broker.fetch([QUEUE], 256, 1.0)
        if batch and started is None:
            started = time.time()
            _stamp("BENCH_START", started)
        seen += len(batch)
        broker.ack_many([delivery.tag for delivery in batch])
    _stamp("BENCH_END", time.time())
    broker.close()


def main() -> None:
    from bench.apps import BROKER_URL, QUEUE

    if BROKER_URL.startswith(("redis://", "rediss://")):
        return main_redis()
    conn = connect()
    total = int(os.environ["BENCH_COUNT"])
    conn.qos(1000)
    conn.consume(QUEUE)
    seen = 0
    last_tag = 0
    started = None
    busy = float(os.environ.get("BENCH_BUSY_US", 0)) / 1e6
    while seen < total:
        for item in conn.drain(1000, 1.0):
            if started is None:
                started = time.time()
                _stamp("BENCH_START", started)
            if busy:
                until = time.perf_counter() + busy
                while time.perf_counter() < until:
                    pass
            seen += 1
            last_tag = item[0]
            if seen % 256 == 0:
                conn.ack(last_tag, multiple=True)
    conn.ack(last_tag, multiple=True)
    _stamp("BENCH_END", time.time())
    conn.close()


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["echo"]:
        echo(float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
    else:
        main()
