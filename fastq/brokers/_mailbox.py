"""The Mailbox interface: how remote control requests (revoke, ping) travel over a broker.

Each broker with the ``"control"`` capability returns its own Mailbox from
``Broker.mailbox(expires)``; the client side (``fastq/control.py``) sends through it and
the worker's listener (``fastq/worker/control.py``) receives and replies through it.
Requests are Celery's (``celery-protocol.md`` §6.4): JSON dicts with ``method``,
``arguments``, ``destination``, ``pattern``, ``matcher`` and, when an answer is wanted,
``reply_to`` and ``ticket``.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from .. import serialization

if TYPE_CHECKING:
    from .base import Broker

logger = logging.getLogger("fastq.control")

#: Celery's fanout exchange of control requests, and direct exchange of replies (§6.1);
#: Redis names its pub/sub channel after the first.
PIDBOX_EXCHANGE = "celery.pidbox"
REPLY_EXCHANGE = "reply.celery.pidbox"


class Mailbox:
    """Where control requests travel for one broker; one instance per thread.

    ``send`` publishes a request to every worker. A worker's listener calls ``open``
    (returning the requests still current that the broker kept for late starters, with
    the unix time each was sent), then ``receive`` in a loop, and ``reply`` when a
    request asks for an answer. Any method may raise ``BrokerError``; the listener
    closes the mailbox and opens a new one.
    """

    def __init__(self, broker: Broker, expires: float) -> None:
        self.broker = broker
        #: seconds a request stays current (``worker_revoke_expires``)
        self.expires = expires

    def send(self, command: dict) -> None:
        raise NotImplementedError

    def open(self, node: str) -> list[tuple[dict, float]]:
        """Start listening as ``node``; the requests kept for a worker that starts late."""
        return []

    def receive(self, timeout: float) -> list[dict]:
        """The requests that arrived, waiting up to ``timeout`` seconds for the first."""
        raise NotImplementedError

    def reply(self, command: dict, body: dict) -> None:  # noqa: B027 - casts only by default
        """Answer ``command`` (which carries ``reply_to`` and ``ticket``)."""

    def call(self, command: dict, timeout: float, limit: int | None = None) -> list[dict]:
        """Send ``command`` asking for replies (``inspect``); the replies (``{node:
        answer}`` dicts) that arrive within ``timeout`` seconds, or once ``limit`` have.

        Raises:
            ConfigurationError: this broker carries casts (revoke) only.
        """
        from ..exceptions import ConfigurationError

        raise ConfigurationError(
            f"{type(self.broker).__name__} carries control casts (revoke) but no replies: "
            "inspect needs RabbitMQ or Redis")

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        pass


def request_with_reply(command: dict, oid: str) -> dict:
    """``command`` with the ``ticket`` and ``reply_to`` a caller adds to get replies."""
    return {**command, "ticket": str(uuid.uuid4()),
            "reply_to": {"exchange": REPLY_EXCHANGE, "routing_key": oid}}


def reply_body(body: bytes, headers: dict | None, ticket: str) -> dict | None:
    """A reply's ``{node: answer}`` if it answers ``ticket``; None for anything else."""
    if (headers or {}).get("ticket") != ticket:
        return None
    try:
        answer = serialization.json_loads(body)
    except Exception:
        logger.warning("ignored a control reply that is not valid JSON")
        return None
    return answer if isinstance(answer, dict) else None


def pidbox_headers() -> dict:
    """kombu's broadcast headers; ``expires`` 0 means none (Celery does not enforce it)."""
    return {"clock": 1, "expires": 0}


def decode_command(body: bytes, content_type: str | None) -> dict | None:
    """A request from a message body; None (logged) when it is not a JSON object."""
    if content_type not in (None, "application/json"):
        logger.warning("ignored a control request in %s: only JSON is accepted", content_type)
        return None
    try:
        command = serialization.json_loads(body)
    except Exception:
        logger.warning("ignored a control request that is not valid JSON")
        return None
    return command if isinstance(command, dict) else None
