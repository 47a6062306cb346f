"""Tasks run by fastq worker processes in the SQS tests; broker and backend from FASTQ_* env."""

import os
import time

from fastq import App, Reject

# FASTQ_BROKER_URL, FASTQ_BROKER_TRANSPORT_OPTIONS (the moto endpoint, a queue prefix)
# and FASTQ_RESULT_BACKEND override these
app = App("tests.apps.sqs_app", broker="sqs://")

#: Each run appends "<task id> <name> <retries> <time>" here, so tests can count runs.
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


@app.task(name="t.flaky", bind=True, max_retries=5)
def flaky(self, succeed_after):
    _record(self)
    if self.request.retries < succeed_after:
        raise self.retry(exc=ValueError("not yet"), countdown=0.2)
    return self.request.retries


@app.task(name="t.reject", bind=True)
def reject(self):
    _record(self)
    raise Reject("no thanks", requeue=False)
