"""Prometheus metrics of a worker (``--metrics-port``): task outcomes and runtimes, messages
held, pool use, reconnects and memory, served on ``/metrics``.

Every process that runs tasks keeps its own ``TaskStats`` (signal receivers, connected
only when metrics are on, so a worker without them pays nothing per task) and turns it
into a ``snapshot``: plain cumulative numbers. A prefork child sends its snapshot to the
parent with the status report it already sends twice a second; the parent serves the sum
of its children's latest snapshots and of those that exited. We chose this over
prometheus-client's multiprocess mode: that mode needs a directory set before the library
is imported, leaves files to clean up per dead child, and cannot say "gauge of a child
that exited" without extra rules; the pipe is there already, and the numbers it carries
are a few hundred bytes.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .. import signals
from .._extras import require

logger = logging.getLogger("fastq.worker")

#: Upper bounds of the runtime histogram's buckets, in seconds (the last one is +Inf).
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 300.0)
#: Counters summed across processes, those of exited prefork children included.
CUMULATIVE = ("tasks", "runtime", "reconnects")


class TaskStats:
    """Counts the outcomes and runtimes of the tasks one process runs, from the task
    signals; ``snapshot`` reads them with the state of the worker around them."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self._lock = threading.Lock()
        #: (task name, outcome state) -> tasks
        self.outcomes: dict[tuple[str, str], int] = {}
        #: task name -> [count per bucket (the last: above every bound)..., sum of seconds]
        self.runtimes: dict[str, list[float]] = {}
        self._started: dict[str, float] = {}

    def connect(self) -> None:
        signals.task_prerun.connect(self._on_prerun, weak=False)
        signals.task_postrun.connect(self._on_postrun, weak=False)
        signals.task_revoked.connect(self._on_revoked, weak=False)

    def disconnect(self) -> None:
        signals.task_prerun.disconnect(self._on_prerun)
        signals.task_postrun.disconnect(self._on_postrun)
        signals.task_revoked.disconnect(self._on_revoked)

    def _on_prerun(self, sender: Any = None, task_id: str | None = None, **_: Any) -> None:
        self._started[task_id] = time.perf_counter()  # type: ignore[index]

    def _on_postrun(self, sender: Any = None, task_id: str | None = None,
                    state: str | None = None, **_: Any) -> None:
        started = self._started.pop(task_id, None)  # type: ignore[arg-type]
        name = getattr(sender, "name", None) or "unknown"
        with self._lock:
            self._count(name, state or "UNKNOWN")
            if started is not None:
                seconds = time.perf_counter() - started
                row = self.runtimes.get(name)
                if row is None:
                    row = self.runtimes[name] = [0.0] * (len(RUNTIME_BUCKETS) + 2)
                row[bisect.bisect_left(RUNTIME_BUCKETS, seconds)] += 1
                row[-1] += seconds

    def _on_revoked(self, sender: Any = None, request: Any = None, **_: Any) -> None:
        # revoked before it ran, or terminated while running (no task_postrun either way)
        self._started.pop(getattr(request, "id", None), None)  # type: ignore[arg-type]
        name = getattr(request, "name", None) or getattr(sender, "name", None) or "unknown"
        with self._lock:
            self._count(name, "REVOKED")

    def _count(self, name: str, outcome: str) -> None:
        key = (name, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def snapshot(self) -> dict:
        """This process's numbers, JSON-friendly, cumulative where CUMULATIVE says."""
        worker = self.worker
        with self._lock:
            tasks = [[name, outcome, n] for (name, outcome), n in self.outcomes.items()]
            runtime = {name: list(row) for name, row in self.runtimes.items()}
        counters = worker.consumer.counters
        settled = sum(counters.get(key, 0) for key in
                      ("acked", "dead_lettered", "requeued", "released", "deferred"))
        running = len(worker.pool.running_requests())
        backoff = getattr(worker.broker, "reconnect_backoff", None)
        return {"tasks": tasks, "runtime": runtime,
                "reconnects": getattr(backoff, "recoveries", 0),
                "running": running,
                "unacked": max(0, counters.get("received", 0) - settled),
                "pool_size": worker.pool.concurrency, "rss": resident_bytes()}


def resident_bytes(pid: int | str = "self") -> int:
    """The resident set size of a process now, in bytes (0 where /proc is missing)."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def merge(snapshots: Iterable[dict]) -> dict:
    """Several processes' snapshots as one: counts and gauges added up."""
    tasks: dict[tuple[str, str], int] = {}
    runtime: dict[str, list[float]] = {}
    total = {"reconnects": 0, "running": 0, "unacked": 0, "pool_size": 0, "rss": 0}
    for snapshot in snapshots:
        for name, outcome, n in snapshot.get("tasks", ()):
            tasks[(name, outcome)] = tasks.get((name, outcome), 0) + n
        for name, row in snapshot.get("runtime", {}).items():
            mine = runtime.setdefault(name, [0.0] * len(row))
            for i, value in enumerate(row):
                mine[i] += value
        for key in total:
            total[key] += snapshot.get(key, 0)
    return {"tasks": [[name, outcome, n] for (name, outcome), n in tasks.items()],
            "runtime": runtime, **total}


def cumulative_part(snapshot: dict) -> dict:
    """What of an exited process's snapshot still counts: its counters, not its gauges."""
    return {key: snapshot[key] for key in CUMULATIVE if key in snapshot}


class MetricsCollector:
    """A prometheus-client collector over ``read()``, a snapshot made at each scrape."""

    def __init__(self, read: Callable[[], dict], hostname: str) -> None:
        self.read = read
        self.hostname = hostname

    def collect(self) -> Iterable[Any]:
        core = require("prometheus_client.core", "--metrics-port")
        go_float = require("prometheus_client.utils", "--metrics-port").floatToGoString
        data = self.read()
        node = [self.hostname]
        tasks = core.CounterMetricFamily(
            "fastq_tasks", "Tasks that ended, by task name and outcome state.",
            labels=["worker", "name", "outcome"])
        for name, outcome, n in data["tasks"]:
            tasks.add_metric([*node, name, outcome], n)
        yield tasks
        runtime = core.HistogramMetricFamily(
            "fastq_task_runtime_seconds", "Seconds a task's body ran, by task name.",
            labels=["worker", "name"])
        for name, row in data["runtime"].items():
            counts, seconds = row[:-1], row[-1]
            buckets, running_total = [], 0.0
            for bound, n in zip((*RUNTIME_BUCKETS, float("inf")), counts):
                running_total += n
                buckets.append((go_float(bound), running_total))
            runtime.add_metric([*node, name], buckets, seconds)
        yield runtime
        for metric, help_text, key, kind in (
                ("fastq_worker_tasks_running", "Tasks running now.", "running", "gauge"),
                ("fastq_worker_messages_unacked",
                 "Messages the worker holds unacknowledged: prefetched, running, or done "
                 "and waiting for the next batch of acks.", "unacked", "gauge"),
                ("fastq_worker_pool_size", "Tasks the pool may run at once.", "pool_size",
                 "gauge"),
                ("fastq_worker_resident_memory_bytes",
                 "Resident memory of the worker's processes, added up.", "rss", "gauge"),
                ("fastq_broker_reconnects",
                 "Times a consumer got its broker connection back after losing it.",
                 "reconnects", "counter")):
            family_class = core.GaugeMetricFamily if kind == "gauge" \
                else core.CounterMetricFamily
            family = family_class(metric, help_text, labels=["worker"])
            family.add_metric(node, data.get(key, 0))
            yield family


class MetricsServer:
    """``/metrics`` over HTTP in a daemon thread, reading ``read()`` at each scrape."""

    def __init__(self, read: Callable[[], dict], hostname: str, port: int,
                 host: str = "127.0.0.1") -> None:
        self.collector = MetricsCollector(read, hostname)
        self.port = port
        self.host = host
        self._server: Any = None

    def start(self) -> None:
        client = require("prometheus_client", "--metrics-port")
        registry = client.CollectorRegistry(auto_describe=False)
        registry.register(self.collector)
        self._server, _thread = client.start_http_server(self.port, addr=self.host,
                                                          registry=registry)
        logger.info("Prometheus metrics on http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


__all__ = ["TaskStats", "MetricsServer", "MetricsCollector", "merge", "cumulative_part",
           "resident_bytes", "RUNTIME_BUCKETS"]
