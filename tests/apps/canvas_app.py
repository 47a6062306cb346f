"""fastq's worker for the canvas interop tests: the Celery app's task names, its queue and
result key prefix from the env (broker and backend from FASTQ_BROKER_URL/RESULT_BACKEND)."""

import os

from fastq import App

app = App("tests.apps.canvas_app",
          task_default_queue=os.environ.get("CANVAS_QUEUE", "celery"),
          result_backend_transport_options={
              "global_keyprefix": os.environ.get("CANVAS_KEY_PREFIX", "")})


@app.task(name="cv.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="cv.tsum")
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task(name="cv.fail")
def fail(message: str) -> None:
    raise ValueError(message)
