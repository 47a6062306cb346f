import os
import time

from celery import shared_task

from .base import CountingTask, TrackedTask
from .celery import app
from .events import record


@app.task(base=TrackedTask)
def add(x, y):
    return x + y


@app.task
def mul(x, y):
    return x * y


@app.task(base=TrackedTask)
def fail(message):
    raise ValueError(message)


@app.task(bind=True, base=TrackedTask, max_retries=3, default_retry_delay=0)
def flaky(self):
    if self.request.retries < 1:
        raise self.retry(exc=ConnectionError("first try"), countdown=0)
    return self.request.retries


@app.task(bind=True, autoretry_for=(ConnectionError,),
          retry_kwargs={"max_retries": 2, "countdown": 0})
def autoretried(self):
    if self.request.retries < 1:
        raise ConnectionError("first try")
    return self.request.retries


@app.task(bind=True)
def progress(self, steps):
    for step in range(steps):
        self.update_state(state="PROGRESS", meta={"done": step + 1, "total": steps})
    if not self.request.is_eager:
        # hold the PROGRESS state until the client has seen it
        release = f"{os.environ['COMPAT_EVENTS']}.release-{self.request.id}"
        deadline = time.monotonic() + 15
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.02)
    return {"done": steps}


@app.task(bind=True)
def whoami(self):
    request = self.request
    return {
        "id": request.id,
        "retries": request.retries,
        "is_eager": bool(request.is_eager),
        "called_directly": bool(request.called_directly),
        "hostname": bool(request.hostname),
        "routing_key": (request.delivery_info or {}).get("routing_key"),
    }


@app.task(base=CountingTask)
def counted(x):
    return x * 2


@app.task(bind=True, ignore_result=True)
def quiet(self):
    record("quiet", self.request.id)


@app.task
def record_value(value):
    record("linked", value)


@shared_task
def shared_echo(value):
    return value
