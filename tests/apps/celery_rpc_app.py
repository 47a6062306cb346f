"""A real Celery app on RabbitMQ with the rpc:// result backend, for the interop tests."""

from __future__ import annotations

import os

from celery import Celery

URL = "amqp://guest:guest@127.0.0.1:5672//"

app = Celery("tests.apps.celery_rpc_app", broker=os.environ.get("CELERY_BROKER_URL", URL),
             backend="rpc://")
app.conf.broker_connection_retry_on_startup = True


@app.task(name="t.add")
def add(x, y):
    return x + y


@app.task(name="t.fail")
def fail(message, code):
    raise KeyError(message, code)
