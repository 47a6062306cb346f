"""Tasks for the monitoring tests (events, inspect, Flower); broker from FASTQ_BROKER_URL.

The same names and bodies as ``celery_monitor_app``, so a fastq worker's events can be
compared with a Celery worker's."""

from __future__ import annotations

import time

from fastq import App
from fastq.exceptions import Reject

app = App("tests.apps.monitor_app")


@app.task(name="m.add")
def add(x, y):
    return x + y


@app.task(name="m.fail")
def fail(message):
    raise KeyError(message)


@app.task(name="m.retry", bind=True, max_retries=1, default_retry_delay=0)
def retry(self):
    raise self.retry(exc=ValueError("again"), countdown=0)


@app.task(name="m.reject")
def reject():
    raise Reject("no thanks", requeue=False)


@app.task(name="m.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="m.limited", rate_limit="100/s")
def limited():
    # never sent: its rate limit is what ``inspect registered rate_limit`` shows
    return None


@app.task(name="m.retry_later", bind=True, max_retries=1)
def retry_later(self):
    # stays in RETRY for a minute: long enough for a monitor to see that state
    raise self.retry(exc=ValueError("later"), countdown=60)
