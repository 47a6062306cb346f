"""FastAPI and Starlette: a lifespan that opens the App's producer connection at start and closes it at shutdown, and ``get_app`` to reach the App as a dependency.

::

    from fastapi import Depends, FastAPI
    from fastq.contrib.fastapi import fastq_lifespan, get_app

    api = FastAPI(lifespan=fastq_lifespan(fastq_app))    # Starlette(lifespan=...) alike

    @api.get("/sums/{task_id}")
    async def read_sum(task_id: str, app: App = Depends(get_app)):
        return {"value": await app.AsyncResult(task_id).aget(timeout=10)}

A test swaps the App with ``api.dependency_overrides[get_app]``. With a lifespan of its
own, an application enters this one inside it::

    @asynccontextmanager
    async def lifespan(api):
        async with fastq_lifespan(fastq_app)(api) as state:
            yield {**state, "db": ...}
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.requests import HTTPConnection

from .._state import current_app
from ..app import App

#: The lifespan state key (``request.state.fastq_app``) that ``get_app`` reads.
STATE_KEY = "fastq_app"


def fastq_lifespan(fastq_app: App | None = None, *, connect: bool = True,
                   ) -> Callable[[Any], AbstractAsyncContextManager[dict[str, App]]]:
    """A lifespan for ``FastAPI(lifespan=...)`` / ``Starlette(lifespan=...)``.

    At start it connects the App's producer (the broker), off the event loop, so a
    broker that cannot be reached stops the start instead of failing the first request;
    at shutdown it closes the App's broker and result store connections. Its state,
    ``{"fastq_app": app}``, is what ``get_app`` returns for each request.

    Parameters:
        fastq_app: the App; the current one (the one ``shared_task`` uses) when None.
        connect: False leaves the connection to the first task sent.

    Raises (at start):
        BrokerConnectionLost: the broker could not be reached within
            ``broker_connection_timeout``.
    """

    @asynccontextmanager
    async def lifespan(_asgi_app: Any) -> AsyncIterator[dict[str, App]]:
        app = fastq_app if fastq_app is not None else current_app()
        loop = asyncio.get_running_loop()
        if connect:
            await loop.run_in_executor(None, app.broker.connect)
        try:
            yield {STATE_KEY: app}
        finally:
            await loop.run_in_executor(None, app.close)

    return lifespan


def get_app(connection: HTTPConnection) -> App:
    """The App, as a dependency (``Depends(get_app)``): the one ``fastq_lifespan`` runs,
    else the current App."""
    app = getattr(connection.state, STATE_KEY, None)
    return app if isinstance(app, App) else current_app()


__all__ = ["fastq_lifespan", "get_app"]
