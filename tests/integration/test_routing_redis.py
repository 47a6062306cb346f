"""Routing on Redis, which has no exchanges: queue names and direct exchanges map onto
it; a topic or fanout exchange is refused naming the setting it came from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fastq import App, Broadcast, Exchange, Queue
from fastq.exceptions import ConfigurationError
from tests.integration.redis_support import REDIS_URL, redis_prefix  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def app(redis_prefix) -> Iterator[App]:  # noqa: F811
    url = f"{REDIS_URL}?global_keyprefix={redis_prefix}"
    app = App("routing", broker=url, backend="memory://",
              broker_transport_options={"visibility_timeout": 3600})
    yield app
    app.close()


def received(app: App, queue: str) -> list[str]:
    batch = app.broker.fetch([queue], 10, 0.5)
    app.broker.ack_many([d.tag for d in batch])
    return [d.headers["task"] for d in batch]


def test_a_direct_route_works(app) -> None:
    app.conf.task_queues = [Queue("bills", Exchange("money"), routing_key="bill.new"),
                            Queue("mail")]
    app.conf.task_routes = {"t.mail.*": {"queue": "mail"}}
    app.send_task("t.mail.send")
    app.send_task("t.charge", exchange="money", routing_key="bill.new")
    app.send_task("t.other", exchange="money", routing_key="mail")  # the key names it
    assert received(app, "mail") == ["t.mail.send", "t.other"]
    assert received(app, "bills") == ["t.charge"]
    # a worker consumes task_queues by name
    assert app.broker.prepare_consume(app.queues.consumed(None)) == ["bills", "mail"]


def test_a_topic_exchange_is_refused_clearly(app) -> None:
    app.conf.task_queues = [Queue("eu", Exchange("regions", "topic"), routing_key="eu.*")]
    app.conf.task_routes = {"t.eu": {"queue": "eu"}}
    with pytest.raises(ConfigurationError, match=r"RedisBroker.*no exchanges.*topic exchange "
                                                 r"'regions' \(from task_queues\)"):
        app.send_task("t.eu")
    with pytest.raises(ConfigurationError, match="queue 'eu' of task_queues is bound to topic"):
        app.broker.prepare_consume(app.queues.consumed(None))
    app.conf.task_queues = [Broadcast("reload")]
    with pytest.raises(ConfigurationError, match="fanout exchange 'reload'"):
        app.send_task("t.reload", queue="reload", exchange="reload")
