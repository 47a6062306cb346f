"""``app.control``: the client side of remote control (revoke, broadcast) over the broker.

A request is Celery's (``celery-protocol.md`` §6.4) and travels through the broker's
mailbox (``Broker.mailbox``, brokers with the ``"control"`` capability), so Celery's
workers hear fastq's revokes and fastq's workers hear Celery's. How each broker carries
it is told in its own module; the workers' side is ``fastq/worker/control.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App


def revoke_command(task_id: str | Iterable[str], terminate: bool = False,
                   signal: str = "SIGTERM") -> dict:
    """Celery's ``revoke`` request body (§6.4), for one id or several."""
    ids = [task_id] if isinstance(task_id, str) else list(task_id)
    return {"method": "revoke",
            "arguments": {"task_id": ids[0] if len(ids) == 1 else ids,
                          "terminate": bool(terminate), "signal": signal},
            "destination": None, "pattern": None, "matcher": None}


class Control:
    """``app.control``: commands for the workers consuming from the app's broker."""

    def __init__(self, app: App) -> None:
        self.app = app

    def revoke(self, task_id: str | Iterable[str], terminate: bool = False,
               signal: str = "SIGTERM", **_ignored: Any) -> None:
        """Tell every worker not to run these tasks.

        A worker that receives one of them later, or holds it prefetched, stores
        REVOKED (``TaskRevokedError``) and acks it. A task already running finishes:
        ``terminate`` is sent (Celery workers honour it) but fastq workers ignore it.

        Raises:
            ConfigurationError: the broker cannot carry remote control (SQS).
        """
        self.broadcast(revoke_command(task_id, terminate, signal))

    def broadcast(self, command: dict) -> None:
        """Publish a control request (a cast: no replies are collected)."""
        mailbox = self.app.broker.mailbox(self.app.conf.worker_revoke_expires)
        try:
            mailbox.send(command)
        finally:
            mailbox.close()


__all__ = ["Control", "revoke_command"]
