"""Tasks for the async-result tests; the worker's broker and backend come from FASTQ_* settings."""

import asyncio
from types import SimpleNamespace

from fastq import App


class Boom(Exception):
    pass


def define_tasks(app: App) -> SimpleNamespace:
    """The tasks, registered on ``app``: the worker's App and a test's producer alike."""

    @app.task(name="a.add")
    def add(x, y):
        return x + y

    @app.task(name="a.fail")
    def fail(message):
        raise Boom(message)

    @app.task(name="a.nap")
    async def nap(seconds, value):
        await asyncio.sleep(seconds)
        return value

    return SimpleNamespace(add=add, fail=fail, nap=nap)


app = App("tests.apps.async_app")
tasks = define_tasks(app)
