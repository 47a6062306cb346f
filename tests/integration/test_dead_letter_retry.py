"""Broker.retry_dead_letter on Redis, SQLite, memory, SQS (moto) and RabbitMQ (both
drivers): the letter goes back to its queue as a new message and leaves the dead letters;
a second retry of it finds nothing; the other letters stay, in order."""

from __future__ import annotations

import uuid

import pytest

from fastq.brokers import create_broker
from fastq.protocol import Message
from tests.integration.redis_support import REDIS_URL, redis_prefix  # noqa: F401
from tests.integration.sqs_support import moto_endpoint, sqs_prefix  # noqa: F401
from tests.integration.test_amqp_broker import delete_queues, driver_url

pytestmark = pytest.mark.integration


@pytest.fixture(params=["redis", "sqlite", "memory", "sqs"])
def broker(request, tmp_path):
    """A broker whose dead-letter code has no compiled twin."""
    if request.param == "redis":
        prefix = request.getfixturevalue("redis_prefix")
        made = create_broker(f"{REDIS_URL}?global_keyprefix={prefix}")
    elif request.param == "sqlite":
        made = create_broker(f"sqlite:///{tmp_path / 'broker.sqlite3'}")
    elif request.param == "sqs":
        host = request.getfixturevalue("moto_endpoint").split("://", 1)[1]
        prefix = request.getfixturevalue("sqs_prefix")
        made = create_broker(f"sqs://{host}?queue_name_prefix={prefix}")
    else:
        made = create_broker(f"memory://retry-{uuid.uuid4().hex}")
    yield made
    made.close()


@pytest.fixture
def amqp_broker(impl):
    """RabbitMQ on the driver of this twin: rabbitmq-c ("c") or py-amqp ("py")."""
    made = create_broker(driver_url(impl))
    yield made
    made.close()
    delete_queues({q[:-5] if q.endswith(".dead") else q for q in made.declared_queues})


def _dead_letter_one(broker, queue: str, alone: bool = True) -> str:
    """Send a task to ``queue`` and dead-letter it; ``alone``: check that it is the
    queue's one dead letter."""
    task_id = str(uuid.uuid4())
    headers = {"id": task_id, "task": "shop.total", "lang": "py"}
    broker.publish_many([Message(headers, {"priority": 0}, b'[[1], {}, {}]', queue=queue)])
    (delivery,) = broker.fetch([queue], 1, 5)
    broker.dead_letter(delivery.tag, "no such task")
    if alone:
        assert [letter["headers"]["id"] for letter in broker.dead_letters(queue)] == [task_id]
    return task_id


def _check_a_retried_letter_is_delivered_again_and_leaves_the_dead_letters(broker) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    task_id = _dead_letter_one(broker, queue)
    assert broker.retry_dead_letter(queue, task_id) is True
    assert broker.dead_letters(queue) == []
    (delivery,) = broker.fetch([queue], 1, 5)
    assert (delivery.headers["id"], delivery.body) == (task_id, b'[[1], {}, {}]')
    assert delivery.redeliveries == 0
    broker.ack_many([delivery.tag])
    assert broker.retry_dead_letter(queue, task_id) is False


def _check_retrying_an_unknown_letter_changes_nothing(broker) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    task_id = _dead_letter_one(broker, queue)
    assert broker.retry_dead_letter(queue, str(uuid.uuid4())) is False
    assert broker.retry_dead_letter("other-" + queue, task_id) is False
    assert [letter["headers"]["id"] for letter in broker.dead_letters(queue)] == [task_id]



def _check_the_other_letters_stay_in_order(broker) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    first, retried, last = (_dead_letter_one(broker, queue, alone=False) for _ in range(3))
    assert broker.retry_dead_letter(queue, retried) is True
    # newest first
    assert [letter["headers"]["id"] for letter in broker.dead_letters(queue)] == [last, first]
    (delivery,) = broker.fetch([queue], 1, 5)
    assert delivery.headers["id"] == retried
    broker.ack_many([delivery.tag])


CHECKS = [_check_a_retried_letter_is_delivered_again_and_leaves_the_dead_letters,
          _check_retrying_an_unknown_letter_changes_nothing,
          _check_the_other_letters_stay_in_order]


@pytest.mark.twin_neutral
@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__[7:])
def test_retry_dead_letter(broker, check):
    check(broker)


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__[7:])
def test_retry_dead_letter_on_rabbitmq(amqp_broker, check):
    check(amqp_broker)
