"""examples/fastapi_app.py through httpx's ASGI transport, with a real worker process on
Redis: one endpoint sends a task with ``await adelay``, another awaits its result while
the loop goes on serving requests."""

from __future__ import annotations

import asyncio
import importlib
import sys

import pytest

from tests.integration.conftest import WorkerProcess
from tests.integration.redis_support import REDIS_URL, delete_keys, redis_prefix  # noqa: F401

pytestmark = pytest.mark.integration

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")


class ExampleWorker(WorkerProcess):
    app_module = "examples.fastapi_app"


@pytest.fixture
def example(redis_prefix, sqlite_env, monkeypatch):  # noqa: F811 - the fixture imported above
    """The example module on this test's broker keys, and a worker for it, not started."""
    tmp_path, _url, run_log, env = sqlite_env
    settings = {"FASTQ_BROKER_URL": f"{REDIS_URL}?global_keyprefix={redis_prefix}",
                "FASTQ_RESULT_BACKEND": REDIS_URL}
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    env.update(settings)
    sys.modules.pop("examples.fastapi_app", None)
    module = importlib.import_module("examples.fastapi_app")
    worker = ExampleWorker(tmp_path, settings["FASTQ_BROKER_URL"], run_log, env)
    sent: list[str] = []
    yield module, worker, sent
    worker.stop()
    module.fastq_app.close()
    for task_id in sent:
        delete_keys(f"celery-task-meta-{task_id}")


def test_a_request_awaits_a_result_while_the_loop_serves_others(example):
    module, worker, sent = example

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=module.api)
        async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
            first = (await client.post("/sums", params={"x": 2, "y": 3})).json()["task_id"]
            sent.append(first)
            waiting = asyncio.create_task(client.get(f"/sums/{first}", params={"wait": 30}))
            # no worker runs yet; the awaiting request leaves the loop free for this one
            second = (await client.post("/sums", params={"x": 10, "y": 20})).json()["task_id"]
            sent.append(second)
            assert not waiting.done()
            await asyncio.to_thread(worker.start)
            answer = await waiting
            assert answer.status_code == 200
            assert answer.json() == {"task_id": first, "value": 5}
            answer = await client.get(f"/sums/{second}")
            assert answer.json() == {"task_id": second, "value": 30}
            never_sent = await client.get("/sums/never-sent", params={"wait": 0.2})
            assert never_sent.status_code == 504

    asyncio.run(scenario())
