"""Tasks for worker processes in the RabbitMQ tests; broker from FASTQ_BROKER_URL."""

from __future__ import annotations

import os
import time

from fastq import App

app = App("tests.apps.amqp_app")

#: Each run appends "<task id> <name> <retries> <time> <args>" here, so tests can check it.
RUN_LOG = os.environ.get("FASTQ_TEST_RUN_LOG", "/dev/null")


def _record(task, *args) -> None:
    with open(RUN_LOG, "a") as fh:
        fh.write(f"{task.request.id} {task.name} {task.request.retries} {time.time()} "
                 f"{args!r}\n")


@app.task(name="t.add", bind=True)
def add(self, x, y):
    _record(self, x, y)
    return x + y


@app.task(name="t.echo", bind=True)
def echo(self, *args, **kwargs):
    _record(self, *args)
    return {"args": list(args), "kwargs": kwargs, "retries": self.request.retries,
            "eta": self.request.eta if hasattr(self.request, "eta") else None}


@app.task(name="t.fail", bind=True)
def fail(self, message, code):
    _record(self, message, code)
    raise KeyError(message, code)


@app.task(name="t.sleep_echo", bind=True)
def sleep_echo(self, seconds, value):
    _record(self, seconds, value)
    time.sleep(seconds)
    return value


@app.task(name="t.async_sleep_echo", bind=True)
async def async_sleep_echo(self, seconds, value):
    import asyncio

    _record(self, seconds, value)
    await asyncio.sleep(seconds)
    return value
