"""A prefork child: a whole solo worker that reports to its parent over a pipe."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

import orjson

from ....loader import load_app
from ...commands import inspect_snapshot
from ...lifecycle import TaskObserver
from ...stacks import dump_stacks
from ...supervisor import Worker, setup_logging

if TYPE_CHECKING:
    from ....app import App

logger = logging.getLogger("fastq.worker")

#: Seconds between a child's status reports once it consumes (faster before).
STATUS_INTERVAL = 0.5
#: The signals the parent handles; blocked around fork so a child never runs the
#: parent's handlers before it installs its own.
PARENT_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1)


@dataclasses.dataclass
class ChildSpec:
    """What a child needs to build its worker; picklable, for spawn and forkserver."""

    app_spec: str | None
    queues: list[str]
    prefetch_multiplier: int
    hostname: str
    loglevel: int
    max_tasks_per_child: int | None
    max_memory_per_child: int | None
    #: ``-E``: task events on from the start
    send_events: bool = False
    #: ``--metrics-port`` on the parent: count tasks and report them with each status
    metrics: bool = False


class ParentLink(TaskObserver):
    """A child's end of the pipe: task starts and ends, and periodic status reports."""

    def __init__(self, writer: Connection) -> None:
        self.writer = writer
        self.worker: Worker | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._parent = os.getppid()
        self._thread: threading.Thread | None = None

    def send(self, message: dict) -> None:
        # a task's arguments (in ``active``) may be what JSON cannot carry: their repr
        data = orjson.dumps(message, default=repr)
        try:
            with self._lock:
                self.writer.send_bytes(data)
        except OSError:
            self._orphaned()

    def task_started(self, task_id: str, name: str, hard_limit: float) -> None:
        self.send({"e": "start", "id": task_id, "name": name, "hard": hard_limit})

    def task_ended(self, task_id: str) -> None:
        self.send({"e": "end", "id": task_id})

    def status(self) -> dict:
        worker = self.worker
        assert worker is not None and worker.meter is not None
        meter = worker.meter
        status = {"e": "status", "state": worker.consumer.state, "done": meter.done,
                  "busy": meter.busy_now(), "running": meter.running_id,
                  "counters": worker.consumer.counters}
        if worker.metrics is not None:
            status["metrics"] = worker.metrics.snapshot()
        if worker.control is not None:
            status["inspect"] = inspect_snapshot(worker)
        return status

    def start_reporting(self, worker: Worker) -> None:
        self.worker = worker
        self._thread = threading.Thread(target=self._report_loop, name="fastq-child-report",
                                        daemon=True)
        self._thread.start()

    def _report_loop(self) -> None:
        worker = self.worker
        assert worker is not None
        interval = 0.02  # quickly at first, so the parent learns soon that we consume
        while not self._stop.wait(interval):
            if os.getppid() != self._parent:
                self._orphaned()
                return
            self.send(self.status())
            if worker.consumer.state == "consuming":
                interval = STATUS_INTERVAL

    def _orphaned(self) -> None:
        worker = self.worker
        if worker is not None and worker.consumer.state in ("starting", "consuming"):
            logger.error("the prefork parent of child %d is gone: warm shutdown", os.getpid())
            worker.consumer.stop()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self.worker is not None and self.worker.meter is not None:
            self.send(self.status())
            if self.worker._restart is not None:
                self.send({"e": "recycle", "reason": self.worker._restart})
        self.writer.close()


def child_main(spec: ChildSpec, writer: Connection, app: App | None) -> None:
    """A child process: a solo worker reporting to the parent through ``writer``.

    ``app`` is inherited with fork; spawn and forkserver children import it again from
    ``spec.app_spec``.
    """
    early: list[int] = []
    signal.set_wakeup_fd(-1)  # the parent's, inherited with fork: not ours to write
    for signum in (signal.SIGTERM, signal.SIGQUIT):
        signal.signal(signum, lambda s, f: early.append(s))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda s, f: dump_stacks())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PARENT_SIGNALS)
    if app is None:
        setup_logging(spec.loglevel)
        app = load_app(spec.app_spec)
    link = ParentLink(writer)
    worker = Worker(app, queues=spec.queues, pool="solo", concurrency=1,
                    prefetch_multiplier=spec.prefetch_multiplier, hostname=spec.hostname,
                    max_tasks_per_child=spec.max_tasks_per_child,
                    max_memory_per_child=spec.max_memory_per_child, observer=link,
                    send_events=spec.send_events, collect_metrics=spec.metrics)
    worker.install_signal_handlers()
    if signal.SIGQUIT in early:
        raise SystemExit(0)  # nothing claimed yet
    if early:
        worker.consumer.stop()
    link.start_reporting(worker)
    try:
        code = worker.run()
    finally:
        link.close()
    raise SystemExit(code)
