"""Build and parse Celery task messages, protocol v2 (see shared/celery-protocol.md)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Message:
    """One outgoing message, ready for ``Broker.publish_many``.

    ``queue`` is where it should land; ``exchange``/``routing_key`` matter only on AMQP
    (``""`` + the queue name is Celery's default routing). ``not_before`` is the unix time
    before which a broker with the ``delay`` capability must not deliver it (0 = now); it
    mirrors the ``eta`` header, which stays authoritative for Celery peers.
    """

    headers: dict
    properties: dict
    body: bytes
    queue: str = "celery"
    exchange: str = ""
    routing_key: str | None = None
    not_before: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def priority(self) -> int:
        return self.properties.get("priority") or 0
