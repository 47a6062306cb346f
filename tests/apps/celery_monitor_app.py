"""A real Celery app for the monitoring tests (events, inspect): the same tasks as
``monitor_app``, so the events of both workers can be compared field by field."""

from __future__ import annotations

import os
import time

from celery import Celery
from celery.exceptions import Reject

URL = "amqp://guest:guest@127.0.0.1:5672//"

app = Celery("tests.apps.celery_monitor_app",
             broker=os.environ.get("CELERY_BROKER_URL", URL))
app.conf.broker_connection_retry_on_startup = True


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
