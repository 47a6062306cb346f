"""fastq.contrib.fastapi with real FastAPI/Starlette and Redis: the lifespan connects the
App's producer at start (an unreachable broker stops the start), hands the App to
``Depends(get_app)`` and closes its connections at shutdown."""

from __future__ import annotations

from typing import Annotated

import pytest

from fastq import App
from fastq.exceptions import BrokerConnectionLost
from tests.integration.redis_support import REDIS_URL, redis_prefix  # noqa: F401

pytestmark = [
    pytest.mark.integration,
    # Starlette 1.x's TestClient (the one that runs lifespans) asks for httpx2 and warns
    # that httpx, which it still uses, is deprecated there
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

# module level: FastAPI reads a route's string annotations from the module's globals
from fastapi import Depends, FastAPI  # noqa: E402

from fastq.contrib.fastapi import fastq_lifespan, get_app  # noqa: E402

#: Nothing listens on port 1 of the loopback.
UNREACHABLE = "redis://127.0.0.1:1/0"


def _client(api):
    """Starlette's TestClient, which runs the lifespan; imported in the test, where the
    filter of its warning above applies."""
    from starlette.testclient import TestClient

    return TestClient(api)


def _api(lifespan):
    api = FastAPI(lifespan=lifespan)

    @api.post("/send")
    def send(app: Annotated[App, Depends(get_app)]) -> dict:
        return {"app": app.main, "task_id": app.send_task("lifespan.noop").id}

    return api


@pytest.fixture
def redis_app(redis_prefix):  # noqa: F811 - the fixture imported above
    app = App("lifespan-app", broker=f"{REDIS_URL}?global_keyprefix={redis_prefix}")
    yield app
    app.close()


def test_requests_get_the_lifespans_app_and_shutdown_closes_its_connections(redis_app):
    api = _api(fastq_lifespan(redis_app))
    # the App created last is the current one: get_app must not fall back to it
    other = App("lifespan-other", broker="memory://lifespan-other")
    with _client(api) as client:
        in_use = redis_app.broker
        answer = client.post("/send")
        assert answer.status_code == 200, answer.text
        assert answer.json()["app"] == "lifespan-app"
        # the task went out through the lifespan's App, onto its Redis broker
        assert redis_app.broker is in_use
        assert in_use.queue_sizes().get("celery") == 1
    assert redis_app.broker is not in_use  # closed at shutdown: a new one on next use
    other.close()


def test_a_dependency_override_swaps_the_app(redis_app):
    api = _api(fastq_lifespan(redis_app))
    stand_in = App("lifespan-stand-in", broker="memory://lifespan-stand-in")
    api.dependency_overrides[get_app] = lambda: stand_in
    with _client(api) as client:
        assert client.post("/send").json()["app"] == "lifespan-stand-in"
    assert stand_in.broker.queue_sizes().get("celery") == 1
    stand_in.close()


def test_an_unreachable_broker_stops_the_start():
    app = App("lifespan-down", broker=UNREACHABLE)
    app.conf.broker_connection_timeout = 1
    with pytest.raises(BrokerConnectionLost):
        with _client(_api(fastq_lifespan(app))):
            pass
    app.close()


def test_without_connect_the_start_leaves_the_broker_alone():
    app = App("lifespan-lazy", broker=UNREACHABLE)
    with _client(_api(fastq_lifespan(app, connect=False))) as client:
        # the first task sent is where the unreachable broker shows
        assert client.get("/docs").status_code == 200
    app.close()


def test_starlette_runs_the_lifespan_too(redis_app):
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def which(request):
        return JSONResponse({"app": get_app(request).main})

    api = Starlette(routes=[Route("/which", which)], lifespan=fastq_lifespan(redis_app))
    App("lifespan-current", broker="memory://lifespan-current").close()
    with _client(api) as client:
        assert client.get("/which").json() == {"app": "lifespan-app"}
