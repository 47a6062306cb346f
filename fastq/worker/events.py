"""A worker's Celery events (task-received ... task-succeeded, worker-heartbeat), so that
Flower and ``celery events`` watch fastq workers as they watch Celery's.

While task events are on (``-E``, ``worker_send_task_events``, the ``enable_events``
control command) the executor notes each task's start, success and rejection as a tuple
of raw facts appended to ``EventSender``'s bounded queue (``Executor.note_transitions``);
a receipt comes the same way from a consumer that notes it
(``Executor.consumer_notes_receipts``), else from the ``task_received`` signal. The
sender's thread (``fastq/brokers/_events.py``) turns them into Celery's event dicts,
serializes them and publishes them in batches on its own connection. Off, a task pays nothing:
the executor runs its class's code and no receiver is connected. The rare outcomes
(failure, retry, revoke, an unknown task) come from their task signals. The worker
events (online, a heartbeat every ``worker_heartbeat`` seconds, offline) are sent
whether task events are on or not, as Celery's are, each after the ``heartbeat_sent``
signal when something listens to it.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any

from .. import signals
from ..brokers._events import EventSender

if TYPE_CHECKING:
    from ..brokers.base import Broker
    from ..task import Request
    from .executor import Executor

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


def value_repr(value: Any) -> str:
    """``repr(value)`` cut to ``RESULT_REPR_MAX`` characters, as events carry it."""
    try:
        text = repr(value)
    except Exception as exc:  # a broken __repr__ must not cost the event
        text = f"<unrepresentable {type(value).__name__}: {exc!r}>"
    return text if len(text) <= RESULT_REPR_MAX else text[:RESULT_REPR_MAX - 3] + "..."


class WorkerEvents:
    """The events of one worker process, sent through an ``EventSender``.

    ``load()`` gives ``(active, processed)`` for the heartbeats: tasks running now and
    tasks handled so far. ``executor`` is the one whose task transitions become events;
    ``task_events`` says whether task events are on now.
    """

    def __init__(self, broker: Broker, hostname: str, load: Callable[[], tuple[int, int]], *,
                 task_events: bool = False, heartbeat: float = DEFAULT_HEARTBEAT,
                 executor: Executor | None = None) -> None:
        self.hostname = hostname
        self.freq = float(heartbeat)
        self._load = load
        self.executor = executor
        self.sender = EventSender(broker, hostname, tick=self.heartbeat if self.freq else None,
                                  tick_interval=self.freq or DEFAULT_HEARTBEAT)
        #: tasks seen by name while task events were on (``stats``' ``total`` then),
        #: counted by the events thread
        self.totals: dict[str, int] = {}
        self.sender.builders = task_event_builders(self.sender, self.totals)
        self.task_events = False
        self._online = False
        self._software = {"sw_ident": "fastq", "sw_ver": software_version(),
                          "sw_sys": platform.system()}
        self._receivers: list[tuple[signals.Signal, Callable[..., None]]] = [
            (signals.task_received, self._on_received),
            (signals.task_failure, self._on_failed),
            (signals.task_retry, self._on_retried),
            (signals.task_revoked, self._on_revoked),
            (signals.task_unknown, self._on_unknown),
        ]
        if task_events:
            self.enable()

    @property
    def started_at(self) -> dict[str, float]:
        """Task id -> unix time it started, for tasks running while events are on
        (``inspect active``'s ``time_start``)."""
        return self.executor.started_at if self.executor is not None else {}

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
        for signal, receiver in self._listened():
            signal.connect(receiver, weak=False, dispatch_uid=(id(self), receiver.__name__))
        self.sender.polling = True
        if self.executor is not None:
            self.executor.note_transitions(self.sender.record)
        self.task_events = True
        return True

    def disable(self) -> bool:
        """Turn task events off; False when they were off already."""
        if not self.task_events:
            return False
        self.task_events = False
        if self.executor is not None:
            self.executor.stop_noting()
        self.sender.polling = False
        for signal, receiver in self._receivers:
            signal.disconnect(receiver, dispatch_uid=(id(self), receiver.__name__))
        return True

    def _listened(self) -> list[tuple[signals.Signal, Callable[..., None]]]:
        if self.executor is not None and self.executor.consumer_notes_receipts:
            return [(signal, receiver) for signal, receiver in self._receivers
                    if signal is not signals.task_received]
        return self._receivers

    # -- worker events -------------------------------------------------------------------
    def heartbeat(self) -> None:
        """worker-online the first time, worker-heartbeat afterwards."""
        kind = "worker-heartbeat" if self._online else "worker-online"
        self._online = True
        self._send_worker_event(kind)

    def _send_worker_event(self, kind: str) -> None:
        if signals.heartbeat_sent.receivers:
            # Celery's Heart sends it before each of its worker events, as the sender
            signals.heartbeat_sent.send(sender=self)
        active, processed = self._load()
        self.sender.send(kind, {"freq": self.freq, "active": active, "processed": processed,
                                "loadavg": loadavg(), **self._software})
        self.sender.wake()

    # -- task events: raw facts queued on the task's path, built on the events thread ---
    def _on_received(self, sender: Any = None, request: Request | None = None,
                     **_: Any) -> None:
        if request is not None:
            self.sender.record(("received", time.time(), request))

    # -- rare outcomes: from the task signals, connected while task events are on -------
    def _on_failed(self, sender: Any = None, task_id: str | None = None,
                   exception: BaseException | None = None, einfo: Any = None,
                   **_: Any) -> None:
        self.sender.send("task-failed", {
            "uuid": task_id, "exception": value_repr(exception),
            "traceback": str(getattr(einfo, "traceback", "") or "")})

    def _on_retried(self, sender: Any = None, request: Request | None = None,
                    reason: Any = None, einfo: Any = None, **_: Any) -> None:
        self.sender.send("task-retried", {
            "uuid": getattr(request, "id", None), "exception": value_repr(reason),
            "traceback": str(getattr(einfo, "traceback", "") or "")})

    def _on_revoked(self, sender: Any = None, request: Request | None = None,
                    terminated: bool = False, signum: Any = None, expired: bool = False,
                    **_: Any) -> None:
        self.sender.send("task-revoked", {
            "uuid": getattr(request, "id", None), "terminated": bool(terminated),
            "signum": signum, "expired": bool(expired)})

    def _on_unknown(self, sender: Any = None, id: str | None = None,  # noqa: A002
                    exc: BaseException | None = None, **_: Any) -> None:
        # Celery sends no traceback for an unregistered task
        self.sender.send("task-failed", {"uuid": id, "exception": value_repr(exc)})


def task_event_builders(sender: EventSender,
                        totals: dict[str, int]) -> dict[str, Callable[[tuple, int], dict]]:
    """The builders ``sender``'s thread turns task facts into events with: a receipt
    (``("received", unix time, request)``, counted by name in ``totals``) and the
    executor's facts (``Executor.note_transitions``). Each writes its whole event as
    one dict display, a third cheaper than stamping a dict key by key (measured): this
    thread holds the GIL the tasks need."""
    hostname, utcoffset, pid = sender.hostname, sender.utcoffset, sender.pid

    def received(entry: tuple, clock: int) -> dict:
        request: Request = entry[2]
        name = request.name
        totals[name] = totals.get(name, 0) + 1
        get = request.headers.get
        # Celery clients send the reprs; the arguments of one that did not are read
        # here, perhaps after the task started (one that changes its own arguments in
        # place is shown changed)
        args = get("argsrepr")
        kwargs = get("kwargsrepr")
        return {"hostname": hostname, "utcoffset": utcoffset, "pid": pid, "clock": clock,
                "timestamp": entry[1], "type": "task-received",
                "uuid": request.id, "name": get("shadow") or name,
                "args": args if isinstance(args, str) else value_repr(tuple(request.args)),
                "kwargs": kwargs if isinstance(kwargs, str) else value_repr(request.kwargs),
                "root_id": get("root_id"), "parent_id": get("parent_id"),
                "retries": get("retries") or 0, "eta": get("eta"), "expires": get("expires")}

    def started(entry: tuple, clock: int) -> dict:
        return {"hostname": hostname, "utcoffset": utcoffset, "pid": pid, "clock": clock,
                "timestamp": entry[1], "type": "task-started", "uuid": entry[2]}

    def succeeded(entry: tuple, clock: int) -> dict:
        return {"hostname": hostname, "utcoffset": utcoffset, "pid": pid, "clock": clock,
                "timestamp": entry[1], "type": "task-succeeded", "uuid": entry[2],
                "result": entry[3], "runtime": entry[4]}

    def rejected(entry: tuple, clock: int) -> dict:
        return {"hostname": hostname, "utcoffset": utcoffset, "pid": pid, "clock": clock,
                "timestamp": entry[1], "type": "task-rejected", "uuid": entry[2],
                "requeue": entry[3]}

    return {"received": received, "started": started, "succeeded": succeeded,
            "rejected": rejected}


__all__ = ["WorkerEvents", "DEFAULT_HEARTBEAT", "task_event_builders", "value_repr"]
