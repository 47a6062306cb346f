"""bench.throughput refuses to measure a queue that something consumes already (RabbitMQ)."""

from __future__ import annotations

import uuid

import pytest

# the bench tools pick their AMQP driver themselves: nothing here differs on the twins
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


def test_throughput_refuses_a_queue_with_a_consumer_left_on_it():
    from bench.bare import connect
    from bench.throughput import refuse_if_consumed

    queue = f"bench.guard.{uuid.uuid4().hex}"
    refuse_if_consumed(queue)  # no such queue yet: nothing to refuse
    stray = connect()
    try:
        stray.declare_queue(queue, durable=False, auto_delete=True)
        refuse_if_consumed(queue)  # declared, nobody on it
        stray.consume(queue)
        with pytest.raises(SystemExit, match="1 consumer"):
            refuse_if_consumed(queue)
    finally:
        stray.close()
