"""A worker's Celery events (task-received ... task-succeeded, worker-heartbeat), so that
Flower and ``celery events`` watch fastq workers as they watch Celery's.

The task events come from the task signals (``fastq/signals.py``), whose receivers are
connected only while task events are on (``-E``, ``worker_send_task_events``, the
``enable_events`` control command): off, a task pays what an unheard signal costs, one
test of an empty list. On, each event is a dict appended to ``EventSender``'s bounded
queue (``fastq/brokers/_events.py``), which a thread of its own publishes in batches on
its own connection: the consumer loop never waits on the broker for an event. The worker
events (online, a heartbeat every ``worker_heartbeat`` seconds, offline) are sent
whether task events are on or not, as Celery's are.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any

from .. import signals
from ..brokers._events import EventSender
from ..states import REJECTED

if TYPE_CHECKING:
    from ..brokers.base import Broker
    from ..task import Request

logger = logging.getLogger("fastq.worker.events")

#: Seconds between two heartbeats (Celery's 2.0; a receiver deems a worker gone after
#: twice this without one).
DEFAULT_HEARTBEAT = 2.0
#: Longest ``result`` repr a task-succeeded event carries (Celery's ``resultrepr_maxsize``).
RESULT_REPR_MAX = 1024

def software_version() -> str:
    try:
        return metadata.version("fastq")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "0.0.0"


def loadavg() -> list[float]:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:  # pragma: no cover - no load average on this system
        return [0.0, 0.0, 0.0]


def _repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not cost the event
        text = f"<unrepresentable {type(value).__name__}: {exc!r}>"
    return text if len(text) <= RESULT_REPR_MAX else text[:RESULT_REPR_MAX - 3] + "..."


class WorkerEvents:
    """The events of one worker process, sent through an ``EventSender``.

    ``load()`` gives ``(active, processed)`` for the heartbeats: tasks running now and
    tasks handled so far. ``task_events`` says whether task events are on now.
    """

    def __init__(self, broker: Broker, hostname: str, load: Callable[[], tuple[int, int]], *,
                 task_events: bool = False, heartbeat: float = DEFAULT_HEARTBEAT) -> None:
        self.hostname = hostname
        self.freq = float(heartbeat)
        self._load = load
        self.sender = EventSender(broker, hostname, tick=self.heartbeat if self.freq else None,
                                  tick_interval=self.freq or DEFAULT_HEARTBEAT)
        self.task_events = False
        self._online = False
        #: tasks seen by name while task events were on (``stats``' ``total`` then)
        self.totals: dict[str, int] = {}
        #: task id -> unix time it started, for tasks running while events are on
        #: (``inspect active``'s ``time_start``)
        self.started_at: dict[str, float] = {}
        self._software = {"sw_ident": "fastq", "sw_ver": software_version(),
                          "sw_sys": platform.system()}
        self._receivers: list[tuple[signals.Signal, Callable[..., None]]] = [
            (signals.task_received, self._on_received),
            (signals.task_prerun, self._on_started),
            (signals.task_success, self._on_succeeded),
            (signals.task_failure, self._on_failed),
            (signals.task_retry, self._on_retried),
            (signals.task_revoked, self._on_revoked),
            (signals.task_postrun, self._on_postrun),
            (signals.task_unknown, self._on_unknown),
        ]
        if task_events:
            self.enable()

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start the sender's thread; its first tick sends worker-online."""
        self.sender.start()

    def stop(self, offline: bool = True) -> None:
        """worker-offline (unless ``offline`` is false: a prefork child replaced while
        the worker goes on), then what is queued, published before the thread ends."""
        self.disable()
        if self.freq and offline:
            self._send_worker_event("worker-offline")
        self.sender.stop()

    def enable(self) -> bool:
        """Turn task events on; False when they were on already."""
        if self.task_events:
            return False
        for signal, receiver in self._receivers:
            signal.connect(receiver, weak=False, dispatch_uid=(id(self), receiver.__name__))
        self.task_events = True
        return True

    def disable(self) -> bool:
        """Turn task events off; False when they were off already."""
        if not self.task_events:
            return False
        self.task_events = False
        for signal, receiver in self._receivers:
            signal.disconnect(receiver, dispatch_uid=(id(self), receiver.__name__))
        return True

    # -- worker events -------------------------------------------------------------------
    def heartbeat(self) -> None:
        """worker-online the first time, worker-heartbeat afterwards."""
        kind = "worker-heartbeat" if self._online else "worker-online"
        self._online = True
        self._send_worker_event(kind)

    def _send_worker_event(self, kind: str) -> None:
        active, processed = self._load()
        self.sender.send(kind, {"freq": self.freq, "active": active, "processed": processed,
                                "loadavg": loadavg(), **self._software})
        self.sender.wake()

    # -- task events (signal receivers, connected while task events are on) -------------
    def _on_received(self, sender: Any = None, request: Request | None = None,
                     **_: Any) -> None:
        if request is None:
            return
        headers = request.headers
        name = headers.get("shadow") or request.name
        self.totals[request.name] = self.totals.get(request.name, 0) + 1
        args = headers.get("argsrepr")
        kwargs = headers.get("kwargsrepr")
        self.sender.send("task-received", {
            "uuid": request.id, "name": name,
            "args": args if isinstance(args, str) else _repr(tuple(request.args)),
            "kwargs": kwargs if isinstance(kwargs, str) else _repr(request.kwargs),
            "root_id": headers.get("root_id"), "parent_id": headers.get("parent_id"),
            "retries": headers.get("retries") or 0,
            "eta": headers.get("eta"), "expires": headers.get("expires")})

    def _on_started(self, sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        event = {"uuid": task_id}
        self.sender.send("task-started", event)
        if task_id is not None:
            self.started_at[task_id] = event["timestamp"]

    def _on_succeeded(self, sender: Any = None, result: Any = None, runtime: float = 0.0,
                      **_: Any) -> None:
        task_id = getattr(getattr(sender, "request", None), "id", None)
        self.sender.send("task-succeeded", {"uuid": task_id, "result": _repr(result),
                                            "runtime": float(runtime)})

    def _on_failed(self, sender: Any = None, task_id: str | None = None,
                   exception: BaseException | None = None, einfo: Any = None,
                   **_: Any) -> None:
        self.sender.send("task-failed", {
            "uuid": task_id, "exception": _repr(exception),
            "traceback": str(getattr(einfo, "traceback", "") or "")})

    def _on_retried(self, sender: Any = None, request: Request | None = None,
                    reason: Any = None, einfo: Any = None, **_: Any) -> None:
        self.sender.send("task-retried", {
            "uuid": getattr(request, "id", None), "exception": _repr(reason),
            "traceback": str(getattr(einfo, "traceback", "") or "")})

    def _on_revoked(self, sender: Any = None, request: Request | None = None,
                    terminated: bool = False, signum: Any = None, expired: bool = False,
                    **_: Any) -> None:
        self.sender.send("task-revoked", {
            "uuid": getattr(request, "id", None), "terminated": bool(terminated),
            "signum": signum, "expired": bool(expired)})

    def _on_postrun(self, sender: Any = None, task_id: str | None = None,
                    retval: Any = None, state: str | None = None, **_: Any) -> None:
        self.started_at.pop(task_id, None)  # type: ignore[arg-type]
        if state == REJECTED:
            self.sender.send("task-rejected", {
                "uuid": task_id, "requeue": bool(getattr(retval, "requeue", False))})

    def _on_unknown(self, sender: Any = None, id: str | None = None,  # noqa: A002
                    exc: BaseException | None = None, **_: Any) -> None:
        # Celery sends no traceback for an unregistered task
        self.sender.send("task-failed", {"uuid": id, "exception": _repr(exc)})


__all__ = ["WorkerEvents", "DEFAULT_HEARTBEAT"]
