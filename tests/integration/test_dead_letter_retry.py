"""Broker.retry_dead_letter on Redis, SQLite and memory: the letter goes back to its queue
as a new message and leaves the dead letters; a second retry of it finds nothing."""

from __future__ import annotations

import uuid

import pytest

from fastq.brokers import create_broker
from fastq.protocol import Message
from tests.integration.redis_support import REDIS_URL, redis_prefix  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


@pytest.fixture(params=["redis", "sqlite", "memory"])
def broker(request, tmp_path):
    if request.param == "redis":
        prefix = request.getfixturevalue("redis_prefix")
        made = create_broker(f"{REDIS_URL}?global_keyprefix={prefix}")
    elif request.param == "sqlite":
        made = create_broker(f"sqlite:///{tmp_path / 'broker.sqlite3'}")
    else:
        made = create_broker(f"memory://retry-{uuid.uuid4().hex}")
    yield made
    made.close()


def _dead_letter_one(broker, queue: str) -> str:
    task_id = str(uuid.uuid4())
    headers = {"id": task_id, "task": "shop.total", "lang": "py"}
    broker.publish_many([Message(headers, {"priority": 0}, b'[[1], {}, {}]', queue=queue)])
    (delivery,) = broker.fetch([queue], 1, 5)
    broker.dead_letter(delivery.tag, "no such task")
    assert [letter["headers"]["id"] for letter in broker.dead_letters(queue)] == [task_id]
    return task_id


def test_a_retried_dead_letter_is_delivered_again_and_leaves_the_dead_letters(broker):
    queue = f"q-{uuid.uuid4().hex[:8]}"
    task_id = _dead_letter_one(broker, queue)
    assert broker.retry_dead_letter(queue, task_id) is True
    assert broker.dead_letters(queue) == []
    (delivery,) = broker.fetch([queue], 1, 5)
    assert (delivery.headers["id"], delivery.body) == (task_id, b'[[1], {}, {}]')
    assert delivery.redeliveries == 0
    broker.ack_many([delivery.tag])
    assert broker.retry_dead_letter(queue, task_id) is False


def test_retrying_an_unknown_letter_changes_nothing(broker):
    queue = f"q-{uuid.uuid4().hex[:8]}"
    task_id = _dead_letter_one(broker, queue)
    assert broker.retry_dead_letter(queue, str(uuid.uuid4())) is False
    assert broker.retry_dead_letter("other-" + queue, task_id) is False
    assert [letter["headers"]["id"] for letter in broker.dead_letters(queue)] == [task_id]

