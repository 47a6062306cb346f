"""The RabbitMQ test tasks (tests.apps.amqp_app) with task_queues from the environment:
ROUTING_QUEUES is JSON ``[[queue, exchange, type, routing_key], ...]``; ROUTING_BROADCAST
names a fanout exchange this worker gets its own Broadcast queue on."""

from __future__ import annotations

import json
import os

from fastq import Broadcast, Exchange, Queue
from tests.apps.amqp_app import app

__all__ = ["app"]

_queues: list[Queue] = [Queue(name, Exchange(exchange, kind), routing_key=key)
                        for name, exchange, kind, key in
                        json.loads(os.environ.get("ROUTING_QUEUES", "[]"))]
if os.environ.get("ROUTING_BROADCAST"):
    _queues.append(Broadcast(os.environ["ROUTING_BROADCAST"]))
if _queues:
    app.conf.task_queues = _queues
