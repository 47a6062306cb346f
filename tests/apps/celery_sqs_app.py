"""A real Celery app on SQS, for the interop tests; broker, options and backend from the env."""

import json
import os

from celery import Celery

app = Celery("tests.apps.celery_sqs_app",
             broker=os.environ.get("CELERY_TEST_BROKER_URL", "sqs://"),
             backend=os.environ.get("CELERY_TEST_RESULT_BACKEND", "redis://127.0.0.1:6379/9"))
app.conf.broker_transport_options = json.loads(
    os.environ.get("CELERY_TEST_TRANSPORT_OPTIONS", "{}"))
app.conf.broker_connection_retry_on_startup = True


@app.task(name="t.add")
def add(x, y):
    return x + y


@app.task(name="t.fail")
def fail(message):
    raise ValueError(message)
