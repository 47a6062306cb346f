"""The chord tests' tasks on a real Celery worker, counting body runs in Redis as
tests/apps/chord_app.py does on fastq's, so a chord split between the two joins once."""

import os

import redis
from celery import Celery

URL = "redis://127.0.0.1:6379/9"

app = Celery("tests.apps.celery_chord_app",
             broker=os.environ.get("FASTQ_BROKER_URL", URL),
             backend=os.environ.get("FASTQ_RESULT_BACKEND", URL))
app.conf.broker_connection_retry_on_startup = True
app.conf.task_default_queue = os.environ.get("FASTQ_TASK_DEFAULT_QUEUE", "celery")

COUNTER_PREFIX = os.environ.get("FASTQ_TEST_COUNTER_PREFIX", "fastqtest:chords:")
_counter = redis.Redis.from_url(URL)


@app.task(name="ch.add")
def add(x, y):
    return x + y


@app.task(name="ch.tsum")
def tsum(values, tag=""):
    _counter.incr(COUNTER_PREFIX + f"body:{tag}")
    _counter.rpush(COUNTER_PREFIX + f"args:{tag}", len(values))
    return sum(values)
