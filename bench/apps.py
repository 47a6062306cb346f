"""The tasks the benchmarks run, as a fastq app and as a Celery app with the same names."""

from __future__ import annotations

import os
import time

BROKER_URL = os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("BENCH_QUEUE", "bench")
#: Where the latency benchmark keeps results; throughput runs ignore results.
RESULTS_URL = os.environ.get("BENCH_RESULTS")


def _stamp(path: str) -> None:
    with open(path, "w") as fh:
        fh.write(repr(time.time()))


def _register(app):
    """The same three tasks on either kind of app (both take ``@app.task(name=...)``)."""

    @app.task(name="bench.noop")
    def noop(*args):
        return None

    @app.task(name="bench.stamp")
    def stamp(path):
        _stamp(path)

    @app.task(name="bench.echo")
    def echo(value):
        return value

    @app.task(name="bench.inc")
    def inc(value):
        return value + 1

    @app.task(name="bench.tsum")
    def tsum(values):
        return sum(values)

    @app.task(name="bench.io")
    def io(seconds, stamp=None):
        time.sleep(seconds)  # patched under gevent: an I/O wait that yields
        if stamp:
            _stamp(stamp)

    return app


def _make_fastq():
    from fastq import App

    app = App("bench", broker=BROKER_URL, backend=RESULTS_URL, task_default_queue=QUEUE,
              task_ignore_result=RESULTS_URL is None, task_acks_late=True)

    @app.task(name="bench.aio")
    async def aio(seconds, stamp=None):
        import asyncio

        await asyncio.sleep(seconds)
        if stamp:
            _stamp(stamp)

    return _register(app)


def _make_celery():
    from celery import Celery

    app = Celery("bench", broker=BROKER_URL, backend=RESULTS_URL)
    # Celery at its fastest: early acks, no results, big prefetch, nothing extra.
    app.conf.update(task_default_queue=QUEUE, task_ignore_result=RESULTS_URL is None,
                    task_acks_late=False,
                    worker_prefetch_multiplier=1000, task_serializer="json",
                    accept_content=["json"], broker_connection_retry_on_startup=True,
                    worker_hijack_root_logger=False)

    return _register(app)


if os.environ.get("BENCH_FLAVOUR") == "celery":
    app = _make_celery()
else:
    app = _make_fastq()
