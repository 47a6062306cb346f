"""The broker's ceilings: a consumer that only acks, and an echo that only replies.

``python -m bench.bare`` reads BENCH_COUNT messages from the bench queue with the fastest
AMQP driver fastq has, acking with multiple=True every 256, and writes the start/end
stamps bench/throughput.py reads. ``python -m bench.bare echo`` answers every message on
the bench queue by publishing its body to its ``reply_to`` queue with its
``correlation_id``, then acking it: the round-trip floor bench/latency.py compares with.
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


def echo() -> None:
    from bench.apps import QUEUE

    conn = connect()
    conn.declare_queue(QUEUE, durable=True)
    conn.qos(1)
    conn.consume(QUEUE)
    while True:
        for tag, _redelivered, _exchange, _key, _ctag, props, _headers, body in conn.drain(1, 1.0):
            conn.publish("", props["reply_to"], body,
                         {"correlation_id": props.get("correlation_id"), "delivery_mode": 2},
                         None)
            conn.ack(tag)


def main() -> None:
    from bench.apps import QUEUE

    conn = connect()
    total = int(os.environ["BENCH_COUNT"])
    conn.qos(1000)
    conn.consume(QUEUE)
    seen = 0
    last_tag = 0
    started = None
    while seen < total:
        for item in conn.drain(1000, 1.0):
            if started is None:
                started = time.time()
            seen += 1
            last_tag = item[0]
            if seen % 256 == 0:
                conn.ack(last_tag, multiple=True)
    conn.ack(last_tag, multiple=True)
    ended = time.time()
    # the stamps stand where the worker's first and last tasks would have written them
    for path, value in ((os.environ["BENCH_START"], started),
                        (os.environ["BENCH_END"], ended)):
        with open(path, "w") as fh:
            fh.write(repr(value))
    conn.close()


if __name__ == "__main__":
    import sys

    echo() if sys.argv[1:] == ["echo"] else main()
