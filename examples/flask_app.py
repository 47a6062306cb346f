"""A Flask app made by a factory (``fastq.contrib.flask``): one view sends a task, another
reads its result; the task runs in the worker's own Flask app context and reads its config.

Settings come from ``FLASK_*`` variables (``FLASK_CELERY_BROKER_URL``, ...) over the Redis
defaults below. Run it with a worker beside it::

    fastq worker -A examples.flask_app:fastq_app
    flask --app examples.flask_app run

    curl -X POST 'localhost:5000/sums?x=2&y=3'        # {"task_id": "..."}
    curl 'localhost:5000/sums/<task_id>?wait=10'      # {"task_id": "...", "value": 5}
"""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, current_app, request

from fastq.contrib.flask import FastQ
from fastq.exceptions import ResultTimeout

fastq = FastQ()


@fastq.task(name="examples.flask_app.add")
def add(x: int, y: int) -> int:
    # a FlaskTask: the worker's app context is active, so its config is at hand
    return x + y + current_app.config["SUMS_OFFSET"]


def create_app(**config: Any) -> Flask:
    """The app factory: defaults, then ``FLASK_*`` variables, then ``config``."""
    app = Flask(__name__)
    app.config.from_mapping(SUMS_OFFSET=0, CELERY_BROKER_URL="redis://127.0.0.1:6379/0",
                            CELERY_RESULT_BACKEND="redis://127.0.0.1:6379/0")
    app.config.from_prefixed_env()
    app.config.update(config)
    fastq.init_app(app)

    @app.post("/sums")
    def send_sum() -> dict:
        result = add.delay(int(request.args["x"]), int(request.args["y"]))
        return {"task_id": result.id}

    @app.get("/sums/<task_id>")
    def read_sum(task_id: str) -> dict:
        wait = float(request.args.get("wait", 10))
        try:
            value = fastq.fastq_app.AsyncResult(task_id).get(timeout=wait)
        except ResultTimeout:
            abort(504, f"task {task_id} not done after {wait} s")
        return {"task_id": task_id, "value": value}

    return app


app = create_app()
#: What ``fastq worker -A examples.flask_app:fastq_app`` runs: the App bound to ``app``.
fastq_app = fastq.fastq_app
