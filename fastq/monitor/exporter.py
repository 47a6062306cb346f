"""``fastq exporter``: the Celery events of every worker on a broker (fastq's and Celery's
alike) turned into Prometheus metrics for the whole fleet, served on ``/metrics``.

The metrics (``worker`` is the event's hostname, ``name`` the task's name):

- ``fastq_fleet_tasks_total{worker,name,state}``: task events heard, by the state each
  announces: PENDING (task-sent, labelled with the sending client's hostname), RECEIVED,
  STARTED, SUCCESS, FAILURE, RETRY, REJECTED, REVOKED.
- ``fastq_fleet_task_runtime_seconds{name}``: histogram of task-succeeded's ``runtime``.
- ``fastq_fleet_task_wait_seconds{name}``: histogram of the seconds from a worker's
  task-received to its task-started (the time a task sat prefetched).
- ``fastq_fleet_worker_up{worker}``: 1 while the worker's heartbeats come, 0 once it said
  worker-offline or missed them for twice its heartbeat interval (Celery's and Flower's
  rule).
- ``fastq_fleet_worker_tasks_active{worker}``, ``fastq_fleet_worker_tasks_processed_total
  {worker}``: the ``active`` and ``processed`` of its last heartbeat.
- ``fastq_exporter_events_total``, ``fastq_exporter_malformed_events_total``,
  ``fastq_exporter_broker_connected``: the exporter's own health.

Label values are bounded: task ids are never labels, task names past ``MAX_TASK_NAMES``
are counted as ``other``, and a worker down for ``FORGET_WORKER_AFTER`` seconds loses its
series (hostnames of autoscaled workers would otherwise pile up for ever).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._extras import require
from ..brokers import mask_url
from ..exceptions import ConfigurationError, FastqError
from ..worker.metrics import RUNTIME_BUCKETS
from . import MAX_TASKS_REMEMBERED, TASK_STATES, TaskNames

logger = logging.getLogger("fastq.exporter")

#: The port served on by default: celery-exporter's, so scrape configs carry over.
DEFAULT_PORT = 9808
#: Distinct task names labelled as themselves; later ones are counted as ``other``.
MAX_TASK_NAMES = 1000
#: The name label of the tasks past MAX_TASK_NAMES distinct names.
OTHER_TASK = "other"
#: The name label of a task whose first events (the ones naming it) were missed.
UNKNOWN_TASK = "unknown"
#: A worker is down once its last heartbeat is older than this many heartbeat intervals
#: (Celery's ``HEARTBEAT_EXPIRE_WINDOW`` of 200%, which Flower uses).
HEARTBEAT_EXPIRY_INTERVALS = 2.0
#: Seconds between heartbeats when a worker's events do not say (Celery's default).
DEFAULT_HEARTBEAT_INTERVAL = 2.0
#: Seconds a worker stays down before its series are dropped.
FORGET_WORKER_AFTER = 3600.0
#: Seconds one read of the event stream waits, so that a stop request is seen that soon.
RECEIVE_TIMEOUT = 1.0
#: First and longest waits, in seconds, between attempts to reach the broker.
RETRY_FIRST, RETRY_LONGEST = 1.0, 30.0
#: Upper bounds of the wait histogram's buckets, in seconds.
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                900.0, 3600.0)


@dataclass
class WorkerSeen:
    """What the last events of one worker said, and when they were heard (monotonic)."""

    heard: float
    interval: float = DEFAULT_HEARTBEAT_INTERVAL
    active: int = 0
    processed: int = 0
    offline: bool = False
    down_since: float | None = None

    def is_up(self, now: float) -> bool:
        return not self.offline and \
            now - self.heard <= self.interval * HEARTBEAT_EXPIRY_INTERVALS


class FleetMetrics:
    """The fleet's metrics, updated by ``add(event)`` (one thread) and read at each scrape
    (the HTTP server's thread): counters and histograms are prometheus-client's own, the
    worker gauges are computed when scraped, since "up" depends on the time of asking."""

    def __init__(self, registry: Any = None) -> None:
        client = require("prometheus_client", "fastq exporter")
        self.registry = registry if registry is not None else \
            client.CollectorRegistry(auto_describe=True)
        self.tasks = client.Counter(
            "fastq_fleet_tasks", "Task events heard, by worker (task-sent: the sending "
            "client), task name and the state the event announces.",
            ["worker", "name", "state"], registry=self.registry)
        self.runtime = client.Histogram(
            "fastq_fleet_task_runtime_seconds",
            "Seconds tasks ran, from task-succeeded's runtime, by task name.",
            ["name"], buckets=RUNTIME_BUCKETS, registry=self.registry)
        self.wait = client.Histogram(
            "fastq_fleet_task_wait_seconds", "Seconds from a worker receiving a task to "
            "starting it (time spent prefetched), by task name.",
            ["name"], buckets=WAIT_BUCKETS, registry=self.registry)
        self.events = client.Counter(
            "fastq_exporter_events", "Events the exporter read from the broker.",
            registry=self.registry)
        self.malformed = client.Counter(
            "fastq_exporter_malformed_events",
            "Events ignored because a field was missing or of the wrong type.",
            registry=self.registry)
        self.registry.register(_WorkerCollector(self))
        self.connected = False
        self.workers: dict[str, WorkerSeen] = {}
        self.names = TaskNames()
        #: task id -> the timestamp of its task-received, until its task-started
        self.received_at: dict[str, float] = {}
        self._task_names: set[str] = set()
        #: worker -> the (name, state) label pairs it has series for, to drop them
        self._series: dict[str, set[tuple[str, str]]] = {}
        # add() runs in the listening thread, worker_rows() in the scraping one
        self._lock = threading.Lock()

    def add(self, event: Any, now: float | None = None) -> None:
        """Count one event; a malformed one is counted as such, and changes nothing else."""
        now = time.monotonic() if now is None else now
        self.events.inc()
        try:
            with self._lock:
                self._add(event, now)
        except (TypeError, ValueError, AttributeError, KeyError):
            self.malformed.inc()

    def _add(self, event: dict, now: float) -> None:
        kind = event["type"]
        hostname = _text(event["hostname"])
        if kind.startswith("worker-"):
            self._on_worker_event(kind, hostname, event, now)
            return
        state = TASK_STATES.get(kind)
        if state is None:
            return  # a custom event: not ours to count
        task_id = _text(event["uuid"])
        runtime = _seconds(event["runtime"]) if state == "SUCCESS" else None
        timestamp = _seconds(event["timestamp"]) if "timestamp" in event else None
        name = self._label_of(self.names.name_of(event, state))
        self.tasks.labels(hostname, name, state).inc()
        self._series.setdefault(hostname, set()).add((name, state))
        if runtime is not None:
            self.runtime.labels(name).observe(runtime)
        self._note_wait(task_id, state, timestamp, name)
        seen = self.workers.get(hostname)
        if seen is not None and state != "PENDING":  # a task event says it is alive too
            seen.heard = now

    def _on_worker_event(self, kind: str, hostname: str, event: dict, now: float) -> None:
        interval = _seconds(event.get("freq") or DEFAULT_HEARTBEAT_INTERVAL)
        active = int(event.get("active") or 0)
        processed = int(event.get("processed") or 0)
        seen = self.workers.get(hostname)
        if seen is None:
            seen = self.workers[hostname] = WorkerSeen(heard=now)
        seen.heard, seen.interval, seen.offline = now, interval, kind == "worker-offline"
        if kind == "worker-heartbeat":
            seen.active, seen.processed = active, processed

    def _note_wait(self, task_id: str, state: str, timestamp: float | None,
                   name: str) -> None:
        received = self.received_at
        if state == "RECEIVED" and timestamp is not None:
            if task_id not in received and len(received) >= MAX_TASKS_REMEMBERED:
                del received[next(iter(received))]
            received[task_id] = timestamp
            return
        since = received.pop(task_id, None)
        if state == "STARTED" and since is not None and timestamp is not None \
                and timestamp >= since:
            self.wait.labels(name).observe(timestamp - since)

    def _label_of(self, name: str | None) -> str:
        if not name:
            return UNKNOWN_TASK
        if name in self._task_names:
            return name
        if len(self._task_names) >= MAX_TASK_NAMES:
            return OTHER_TASK
        self._task_names.add(name)
        return name

    def worker_rows(self, now: float | None = None) -> list[tuple[str, bool, int, int]]:
        """(hostname, up, active, processed) of each worker still remembered; workers down
        for FORGET_WORKER_AFTER are forgotten here, with their task series."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return self._worker_rows(now)

    def _worker_rows(self, now: float) -> list[tuple[str, bool, int, int]]:
        rows = []
        for hostname, seen in list(self.workers.items()):
            up = seen.is_up(now)
            if up:
                seen.down_since = None
            elif seen.down_since is None:
                seen.down_since = now
            elif now - seen.down_since > FORGET_WORKER_AFTER:
                self._forget(hostname)
                continue
            rows.append((hostname, up, seen.active if up else 0, seen.processed))
        return rows

    def _forget(self, hostname: str) -> None:
        self.workers.pop(hostname, None)
        for name, state in self._series.pop(hostname, ()):
            try:
                self.tasks.remove(hostname, name, state)
            except KeyError:  # pragma: no cover - removed already
                pass


class _WorkerCollector:
    """The per-worker gauges and the broker connection, computed at each scrape."""

    def __init__(self, fleet: FleetMetrics) -> None:
        self.fleet = fleet

    def describe(self) -> list:
        return []  # computed at scrape time: nothing to check at registration

    def collect(self) -> Any:
        core = require("prometheus_client.core", "fastq exporter")
        up = core.GaugeMetricFamily(
            "fastq_fleet_worker_up", "1 while the worker's heartbeats arrive, 0 once it "
            "went offline or missed them for two heartbeat intervals.", labels=["worker"])
        active = core.GaugeMetricFamily(
            "fastq_fleet_worker_tasks_active",
            "Tasks the worker was running at its last heartbeat.", labels=["worker"])
        processed = core.CounterMetricFamily(
            "fastq_fleet_worker_tasks_processed",
            "Tasks the worker had received since it started, at its last heartbeat.",
            labels=["worker"])
        for hostname, is_up, running, done in self.fleet.worker_rows():
            up.add_metric([hostname], 1 if is_up else 0)
            active.add_metric([hostname], running)
            processed.add_metric([hostname], done)
        connected = core.GaugeMetricFamily(
            "fastq_exporter_broker_connected",
            "1 while the exporter is reading the broker's events, 0 while it retries.")
        connected.add_metric([], 1 if self.fleet.connected else 0)
        yield from (up, active, processed, connected)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"expected a number of seconds, got {value!r}")
    return float(value)


def listen(broker: Any, fleet: FleetMetrics, until: Callable[[], bool],
           receiver: Any = None) -> None:
    """Feed ``fleet`` the broker's events until ``until()``; an unreachable or lost broker
    is retried with a growing pause, one log line per attempt.

    Raises:
        ConfigurationError: the broker carries no Celery events.
    """
    url = mask_url(broker.url)
    pause = RETRY_FIRST
    while not until():
        try:
            if receiver is None:
                receiver = broker.event_receiver()
            receiver.open()
            if not fleet.connected:
                logger.info("Reading the workers' events on %s", url)
            fleet.connected, pause = True, RETRY_FIRST
            events = receiver.receive(RECEIVE_TIMEOUT)
        except (FastqError, OSError) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            logger.warning("Cannot read events from %s (%s): retrying in %.0f s; /metrics "
                           "keeps serving what was counted", url, exc, pause)
            fleet.connected = False
            _close(receiver)
            receiver = None
            _pause(pause, until)
            pause = min(pause * 2, RETRY_LONGEST)
            continue
        for event in events:
            fleet.add(event)
    _close(receiver)


def _close(receiver: Any) -> None:
    if receiver is None:
        return
    try:
        receiver.close()
    except Exception:  # noqa: BLE001 - closing what is already broken is best effort
        pass


def _pause(seconds: float, until: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while not until() and time.monotonic() < deadline:
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def serve(broker: Any, port: int = DEFAULT_PORT, host: str = "127.0.0.1",
          until: Callable[[], bool] = lambda: False) -> None:
    """Serve the fleet's metrics on ``http://host:port/metrics`` while reading the
    broker's events, until ``until()``.

    Raises:
        ConfigurationError: the broker carries no events, or the port is taken.
    """
    receiver = broker.event_receiver()  # raises at once on a broker without events
    client = require("prometheus_client", "fastq exporter")
    # no *_created samples: this process serves nothing else, and they double the output
    client.disable_created_metrics()
    fleet = FleetMetrics()
    try:
        server, _thread = client.start_http_server(port, addr=host, registry=fleet.registry)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on {host}:{port} ({exc.strerror or exc}): another "
            f"process holds it; choose another port with --port") from None
    logger.info("Fleet metrics on http://%s:%d/metrics", host, port)
    try:
        listen(broker, fleet, until, receiver)
    finally:
        server.shutdown()
        server.server_close()


__all__ = ["FleetMetrics", "WorkerSeen", "listen", "serve", "DEFAULT_PORT",
           "MAX_TASK_NAMES"]
