"""Tasks run by worker processes in the integration tests; broker from FASTQ_BROKER_URL."""

import os
import time

from fastq import App, Reject

app = App("tests.apps.sqlite_app")

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


@app.task(name="t.flaky", bind=True, max_retries=5)
def flaky(self, succeed_after):
    _record(self)
    if self.request.retries < succeed_after:
        raise self.retry(exc=ValueError("not yet"), countdown=0.2)
    return self.request.retries


@app.task(name="t.auto", bind=True, autoretry_for=(KeyError,), retry_backoff=0.1,
          retry_jitter=False, max_retries=2)
def auto(self):
    _record(self)
    raise KeyError("always")


@app.task(name="t.reject", bind=True)
def reject(self):
    _record(self)
    raise Reject("no thanks", requeue=False)


@app.task(name="t.soft", bind=True, soft_time_limit=0.3)
def soft(self):
    _record(self)
    try:
        time.sleep(5)
    except Exception as exc:
        return type(exc).__name__
    return "not interrupted"


@app.task(name="t.hard", bind=True, time_limit=0.3)
def hard(self):
    _record(self)
    while True:
        try:
            time.sleep(5)
        except Exception:  # a task that ignores soft signals still ends at the hard limit
            pass


@app.task(name="t.soft_steps", bind=True, soft_time_limit=0.3)
def soft_steps(self):
    """Sleeps in short steps, so a limit can reach it on every pool (threads included)."""
    _record(self)
    try:
        for _ in range(500):
            time.sleep(0.01)
    except Exception as exc:
        return type(exc).__name__
    return "not interrupted"


@app.task(name="t.hard_steps", bind=True, time_limit=0.3)
def hard_steps(self):
    _record(self)
    for _ in range(500):
        try:
            time.sleep(0.01)
        except Exception:  # ignores soft limits; still ends at the hard one
            pass


@app.task(name="t.async_sleep", bind=True)
async def async_sleep(self, seconds):
    import asyncio

    _record(self)
    await asyncio.sleep(seconds)
    return seconds


@app.task(name="t.async_soft", bind=True, soft_time_limit=0.3)
async def async_soft(self):
    import asyncio

    _record(self)
    await asyncio.sleep(5)
    return "not interrupted"


@app.task(name="t.spin", bind=True)
def spin(self, seconds):
    """Holds the CPU without yielding: blocks a gevent/eventlet hub."""
    _record(self)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


_hoard = []


@app.task(name="t.hog", bind=True)
def hog(self, mib):
    """Keeps ``mib`` MiB alive in the process, for the memory recycling tests."""
    _record(self)
    _hoard.append(b"\x01" * (mib * 1024 * 1024))  # written, so resident
    return os.getpid()


@app.task(name="t.pid", bind=True)
def pid(self):
    _record(self)
    return os.getpid()


@app.task(name="t.stuck", bind=True, time_limit=0.3)
def stuck(self, seconds):
    """Out of reach of its own SIGALRM, as code stuck in C would be."""
    import signal

    _record(self)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)
    return "finished"
