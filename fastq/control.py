"""``app.control``: the client side of remote control (revoke, broadcast, inspect) over
the broker.

A request is Celery's (``celery-protocol.md`` §6.4) and travels through the broker's
mailbox (``Broker.mailbox``, brokers with the ``"control"`` capability), so Celery's
workers hear fastq's requests and fastq's workers hear Celery's. How each broker carries
it is told in its own module; the workers' side is ``fastq/worker/control.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App

#: Seconds a caller waits for replies by default (Celery's).
DEFAULT_TIMEOUT = 1.0


def revoke_command(task_id: str | Iterable[str], terminate: bool = False,
                   signal: str = "SIGTERM") -> dict:
    """Celery's ``revoke`` request body (§6.4), for one id or several."""
    ids = [task_id] if isinstance(task_id, str) else list(task_id)
    return {"method": "revoke",
            "arguments": {"task_id": ids[0] if len(ids) == 1 else ids,
                          "terminate": bool(terminate), "signal": signal},
            "destination": None, "pattern": None, "matcher": None}


def control_command(method: str, arguments: dict | None = None,
                    destination: Iterable[str] | None = None, pattern: str | None = None,
                    matcher: str | None = None) -> dict:
    """Celery's request body for ``method`` (§6.2); ``destination`` None: every worker."""
    return {"method": method, "arguments": dict(arguments or {}),
            "destination": list(destination) if destination else None,
            "pattern": pattern, "matcher": matcher}


class Control:
    """``app.control``: commands for the workers consuming from the app's broker."""

    def __init__(self, app: App) -> None:
        self.app = app

    def revoke(self, task_id: str | Iterable[str], terminate: bool = False,
               signal: str = "SIGTERM", **_ignored: Any) -> None:
        """Tell every worker not to run these tasks.

        A worker that receives one of them later, or holds it prefetched, stores
        REVOKED (``TaskRevokedError``) and acks it. With ``terminate`` a task already
        running is interrupted (prefork, solo, asyncio pools; ``signal`` is reported,
        not delivered: the task is stopped inside its process) and ends REVOKED with
        the reason "terminated"; the threads and green pools let it finish.

        Raises:
            ConfigurationError: the broker cannot carry remote control (SQS).
        """
        self.broadcast(revoke_command(task_id, terminate, signal))

    def broadcast(self, command: str | dict, arguments: dict | None = None,
                  destination: Iterable[str] | None = None, reply: bool = False,
                  timeout: float = DEFAULT_TIMEOUT, limit: int | None = None,
                  pattern: str | None = None, matcher: str | None = None,
                  **_ignored: Any) -> list[dict] | None:
        """Publish a control request (Celery's ``broadcast``): a cast, or with ``reply``
        the ``{node: answer}`` replies that arrive within ``timeout`` seconds (or once
        ``limit`` have; by default one per ``destination`` node when one is given).

        ``command`` is a method name (``"rate_limit"``), or a whole request dict.

        Raises:
            ConfigurationError: the broker cannot carry remote control (SQS), or
                ``reply`` on a broker that carries no replies.
        """
        if isinstance(command, str):
            destination = list(destination) if destination else None
            command = control_command(command, arguments, destination, pattern, matcher)
        mailbox = self.app.broker.mailbox(self.app.conf.worker_revoke_expires)
        try:
            if not reply:
                mailbox.send(command)
                return None
            if limit is None and command.get("destination"):
                limit = len(command["destination"])
            return mailbox.call(command, timeout, limit)
        finally:
            mailbox.close()

    def inspect(self, destination: Iterable[str] | None = None,
                timeout: float = DEFAULT_TIMEOUT, **_ignored: Any) -> Inspect:
        """Questions to the workers (all, or ``destination``): ``inspect().active()``."""
        return Inspect(self, list(destination) if destination else None, timeout)

    def ping(self, destination: Iterable[str] | None = None,
             timeout: float = DEFAULT_TIMEOUT, **_ignored: Any) -> list[dict]:
        return self.broadcast("ping", destination=destination, reply=True,
                              timeout=timeout) or []

    def rate_limit(self, task_name: str, rate_limit: str | float | None,
                   destination: Iterable[str] | None = None, reply: bool = False,
                   timeout: float = DEFAULT_TIMEOUT, **_ignored: Any) -> list[dict] | None:
        """Change ``task_name``'s rate limit on the workers (``"10/s"``; None: none)."""
        return self.broadcast("rate_limit", {"task_name": task_name, "rate_limit": rate_limit},
                              destination, reply, timeout)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None,
                   destination: Iterable[str] | None = None, reply: bool = False,
                   timeout: float = DEFAULT_TIMEOUT, **_ignored: Any) -> list[dict] | None:
        """Change ``task_name``'s time limits on the workers, in seconds."""
        return self.broadcast("time_limit", {"task_name": task_name, "soft": soft, "hard": hard},
                              destination, reply, timeout)

    def enable_events(self, destination: Iterable[str] | None = None,
                      **options: Any) -> list[dict] | None:
        return self.broadcast("enable_events", destination=destination, **options)

    def disable_events(self, destination: Iterable[str] | None = None,
                       **options: Any) -> list[dict] | None:
        return self.broadcast("disable_events", destination=destination, **options)

    def heartbeat(self, destination: Iterable[str] | None = None,
                  **options: Any) -> list[dict] | None:
        return self.broadcast("heartbeat", destination=destination, **options)

    def shutdown(self, destination: Iterable[str] | None = None,
                 **options: Any) -> None:
        """Warm shutdown of the workers (all, or ``destination``); no reply."""
        self.broadcast("shutdown", destination=destination)


class Inspect:
    """Celery's ``app.control.inspect()``: each method asks the workers and returns
    ``{node: reply}``, or None when no worker answered within the timeout."""

    def __init__(self, control: Control, destination: list[str] | None,
                 timeout: float) -> None:
        self.control = control
        self.destination = destination
        self.timeout = timeout

    def _request(self, method: str, **arguments: Any) -> dict | None:
        replies = self.control.broadcast(method, arguments, self.destination, reply=True,
                                         timeout=self.timeout) or []
        merged: dict = {}
        for answer in replies:
            merged.update(answer)
        return merged or None

    def ping(self) -> dict | None:
        return self._request("ping")

    def active(self, safe: bool | None = None) -> dict | None:
        return self._request("active", safe=safe)

    def reserved(self, safe: bool | None = None) -> dict | None:
        return self._request("reserved", safe=safe)

    def scheduled(self, safe: bool | None = None) -> dict | None:
        return self._request("scheduled", safe=safe)

    def registered(self, *taskinfoitems: str) -> dict | None:
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    registered_tasks = registered

    def stats(self) -> dict | None:
        return self._request("stats")

    def revoked(self) -> dict | None:
        return self._request("revoked")

    def query_task(self, *ids: str) -> dict | None:
        # Celery accepts the ids spread out or as one list
        if len(ids) == 1 and not isinstance(ids[0], str):
            ids = tuple(ids[0])
        return self._request("query_task", ids=list(ids))

    def active_queues(self) -> dict | None:
        return self._request("active_queues")

    def conf(self, with_defaults: bool = False) -> dict | None:
        return self._request("conf", with_defaults=with_defaults)

    def report(self) -> dict | None:
        return self._request("report")

    def clock(self) -> dict | None:
        return self._request("clock")


__all__ = ["Control", "Inspect", "revoke_command", "control_command"]
