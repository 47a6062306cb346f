"""A Pyramid app whose ini file configures fastq (``fastq.contrib.pyramid``): one view
sends a task, another waits for its result; the task reads a value from the registry.

Run it with ``examples/pyramid.ini``::

    fastq worker --ini examples/pyramid.ini -Q sums
    pserve examples/pyramid.ini

    curl -X POST 'localhost:6543/sums?x=2&y=3'        # {"task_id": "..."}
    curl 'localhost:6543/sums/<task_id>'              # {"task_id": "...", "value": 5}

``examples/pyramid_worker.py`` does what ``--ini`` does in a module of its own, for
``fastq worker -A examples.pyramid_worker`` (``PYRAMID_INI`` names the file).
"""

from __future__ import annotations

from typing import Any

from pyramid.config import Configurator

from fastq import App
from fastq.contrib.pyramid import pyramid_registry_of

fastq_app = App("examples.pyramid_app")


@fastq_app.task(name="examples.pyramid_app.add", bind=True)
def add(self: Any, x: int, y: int) -> int:
    # the worker loaded the same ini, so the task sees the web app's settings
    offset = pyramid_registry_of(self.app).settings.get("sums.offset", "0")
    return x + y + int(offset)


def send_sum(request: Any) -> dict:
    result = add.delay(int(request.params["x"]), int(request.params["y"]))
    return {"task_id": result.id}


def read_sum(request: Any) -> dict:
    task_id = request.matchdict["task_id"]
    wait = float(request.params.get("wait", 10))
    return {"task_id": task_id,
            "value": request.fastq_app.AsyncResult(task_id).get(timeout=wait)}


def main(global_config: dict, **settings: Any) -> Any:
    """The WSGI app that ``pserve`` and ``bootstrap`` build from the ini file."""
    with Configurator(settings=settings) as config:
        config.include("fastq.contrib.pyramid")
        config.add_route("sums", "/sums")
        config.add_view(send_sum, route_name="sums", request_method="POST", renderer="json")
        config.add_route("sum", "/sums/{task_id}")
        config.add_view(read_sum, route_name="sum", request_method="GET", renderer="json")
    return config.make_wsgi_app()
