"""A Tornado app whose handlers send a fastq task and await its result on Tornado's
asyncio loop, with no thread per wait (what tornado-celery offered).

Run it with a worker beside it (``FASTQ_BROKER_URL`` / ``FASTQ_RESULT_BACKEND`` override
the Redis defaults below)::

    fastq worker -A examples.tornado_app
    python -m examples.tornado_app                      # listens on 127.0.0.1:8888

    curl -X POST -d '' 'localhost:8888/sums?x=2&y=3'    # {"task_id": "..."}
    curl 'localhost:8888/sums/<task_id>?wait=10'        # {"task_id": "...", "value": 5}
"""

from __future__ import annotations

import asyncio

import tornado.web

from fastq import App
from fastq.exceptions import ResultTimeout

fastq_app = App("examples.tornado_app", broker="redis://127.0.0.1:6379/0",
                backend="redis://127.0.0.1:6379/0")


@fastq_app.task(name="examples.tornado_app.add")
def add(x: int, y: int) -> int:
    return x + y


class SumsHandler(tornado.web.RequestHandler):
    async def post(self) -> None:
        result = await add.adelay(int(self.get_argument("x")), int(self.get_argument("y")))
        self.write({"task_id": result.id})


class SumHandler(tornado.web.RequestHandler):
    async def get(self, task_id: str) -> None:
        wait = float(self.get_argument("wait", "10"))
        try:
            value = await fastq_app.AsyncResult(task_id).aget(timeout=wait)
        except ResultTimeout:
            raise tornado.web.HTTPError(504, "task %s not done after %s s", task_id, wait)
        self.write({"task_id": task_id, "value": value})


def make_app() -> tornado.web.Application:
    return tornado.web.Application([(r"/sums", SumsHandler), (r"/sums/([^/]+)", SumHandler)])


async def main(port: int = 8888) -> None:
    make_app().listen(port, address="127.0.0.1")
    try:
        await asyncio.Event().wait()
    finally:
        fastq_app.close()


if __name__ == "__main__":
    asyncio.run(main())
