"""Tasks run by fastq worker processes in the Redis tests; broker from FASTQ_BROKER_URL."""

import os
import time

from fastq import App

# FASTQ_BROKER_URL and FASTQ_RESULT_BACKEND (both redis://) override these defaults
app = App("tests.apps.redis_app", broker="redis://127.0.0.1:6379/9",
          backend="redis://127.0.0.1:6379/9")

#: Each run appends "<task id> <name> <retries>" here, so tests can count executions.
RUN_LOG = os.environ.get("FASTQ_TEST_RUN_LOG", "/dev/null")


def _record(task) -> None:
    with open(RUN_LOG, "a") as fh:
        fh.write(f"{task.request.id} {task.name} {task.request.retries} {time.time()}\n")


class Boom(Exception):
    pass


@app.task(name="t.add", bind=True)
def add(self, x, y):
    _record(self)
    return x + y


@app.task(name="t.fail", bind=True)
def fail(self, message):
    _record(self)
    raise Boom(message, 42)


@app.task(name="t.sleep", bind=True)
def sleep(self, seconds):
    _record(self)
    time.sleep(seconds)
    return seconds
