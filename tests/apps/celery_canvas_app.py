"""A real Celery app on Redis for the canvas interop tests: its queue and result key
prefix come from the env, so the bodies and chain steps it sends stay in the test's queue."""

import os

from celery import Celery

URL = "redis://127.0.0.1:6379/9"

app = Celery("tests.apps.celery_canvas_app",
             broker=os.environ.get("FASTQ_BROKER_URL", URL),
             backend=os.environ.get("FASTQ_RESULT_BACKEND", URL))
app.conf.broker_connection_retry_on_startup = True
app.conf.task_default_queue = os.environ.get("CANVAS_QUEUE", "celery")
app.conf.result_backend_transport_options = {
    "global_keyprefix": os.environ.get("CANVAS_KEY_PREFIX", "")}


@app.task(name="cv.add")
def add(x, y):
    return x + y


@app.task(name="cv.tsum")
def tsum(numbers):
    return sum(numbers)


@app.task(name="cv.fail")
def fail(message):
    raise ValueError(message)
