"""A real Celery app on Redis, for the interop tests; broker and backend from the env."""

import os

from celery import Celery

URL = "redis://127.0.0.1:6379/9"

app = Celery("tests.apps.celery_redis_app",
             broker=os.environ.get("FASTQ_BROKER_URL", URL),
             backend=os.environ.get("FASTQ_RESULT_BACKEND", URL))
app.conf.broker_connection_retry_on_startup = True


@app.task(name="t.add")
def add(x, y):
    return x + y


@app.task(name="t.fail")
def fail(message):
    raise ValueError(message)
