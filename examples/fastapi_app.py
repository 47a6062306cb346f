"""A FastAPI app that sends a fastq task and awaits its result without blocking its loop.

Run it with a worker beside it (``FASTQ_BROKER_URL`` / ``FASTQ_RESULT_BACKEND`` override
the Redis defaults below)::

    fastq worker -A examples.fastapi_app
    uvicorn examples.fastapi_app:api

    curl -X POST 'localhost:8000/sums?x=2&y=3'        # {"task_id": "..."}
    curl 'localhost:8000/sums/<task_id>?wait=10'      # {"task_id": "...", "value": 5}
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException

from fastq import App
from fastq.contrib.fastapi import fastq_lifespan, get_app
from fastq.exceptions import ResultTimeout

fastq_app = App("examples.fastapi_app", broker="redis://127.0.0.1:6379/0",
                backend="redis://127.0.0.1:6379/0")


@fastq_app.task(name="examples.fastapi_app.add")
def add(x: int, y: int) -> int:
    return x + y


# connects to the broker at start, closes the App's connections at shutdown
api = FastAPI(lifespan=fastq_lifespan(fastq_app))


@api.post("/sums")
async def send_sum(x: int, y: int) -> dict:
    result = await add.adelay(x, y)
    return {"task_id": result.id}


@api.get("/sums/{task_id}")
async def read_sum(app: Annotated[App, Depends(get_app)], task_id: str,
                   wait: float = 10.0) -> dict:
    try:
        value = await app.AsyncResult(task_id).aget(timeout=wait)
    except ResultTimeout:
        raise HTTPException(status_code=504, detail=f"task {task_id} not done after {wait} s")
    return {"task_id": task_id, "value": value}
