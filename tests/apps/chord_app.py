"""Tasks for the chord tests, run by fastq (and Celery) worker processes; each body run
and errback call is counted in Redis, outside fastq, under FASTQ_TEST_COUNTER_PREFIX."""

import os
import time

import redis

from fastq import App

URL = "redis://127.0.0.1:6379/9"

# FASTQ_BROKER_URL, FASTQ_RESULT_BACKEND and FASTQ_TASK_DEFAULT_QUEUE override these
app = App("tests.apps.chord_app", broker=URL, backend=URL)

#: Where the counters go: a prefix unique to the test.
COUNTER_PREFIX = os.environ.get("FASTQ_TEST_COUNTER_PREFIX", "fastqtest:chords:")

_counter = redis.Redis.from_url(URL)


def count(name: str) -> None:
    _counter.incr(COUNTER_PREFIX + name)


@app.task(name="ch.add")
def add(x, y):
    return x + y


@app.task(name="ch.slow_add")
def slow_add(x, y):
    time.sleep(0.01)  # the kill test needs a chord still half done after a moment
    return x + y


@app.task(name="ch.fail")
def fail(message):
    raise ValueError(message)


@app.task(name="ch.tsum", bind=True)
def tsum(self, values, tag=""):
    # counted per chord: the body's group id is not known here, so the tag names it
    count(f"body:{tag}")
    _counter.rpush(COUNTER_PREFIX + f"args:{tag}", len(values))
    return sum(values)


@app.task(name="ch.on_error")
def on_error(request, exc, traceback):
    count(f"errback:{request.id}")


@app.task(name="ch.on_error_old")
def on_error_old(task_id):
    count(f"errback-old:{task_id}")
