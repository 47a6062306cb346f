"""A real Celery app on RabbitMQ for the interop tests; each run writes its arguments to a file."""

from __future__ import annotations

import json
import os
import time

from celery import Celery

URL = "amqp://guest:guest@127.0.0.1:5672//"

app = Celery("tests.apps.celery_amqp_app", broker=os.environ.get("CELERY_BROKER_URL", URL))
app.conf.broker_connection_retry_on_startup = True

#: Where each run leaves ``<task id>.json``.
OUT_DIR = os.environ.get("CELERY_OUT_DIR", "/tmp")


@app.task(name="t.record", bind=True)
def record(self, *args, **kwargs):
    path = os.path.join(OUT_DIR, f"{self.request.id}.json")
    with open(path + ".tmp", "w") as fh:
        json.dump({"args": list(args), "kwargs": kwargs, "retries": self.request.retries,
                   "at": time.time()}, fh)
    os.replace(path + ".tmp", path)  # the test never reads a half-written file
    return True
