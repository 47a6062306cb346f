"""``fastq events``: the workers' Celery events as they arrive, raw (``--dump``) or as a live
terminal view of task rates by state and name and of the workers' heartbeats."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any

import orjson

from .._extras import require

#: Seconds the task rates are averaged over.
RATE_WINDOW = 10.0
#: Seconds between two frames of the live view.
REFRESH_INTERVAL = 0.5
#: Heartbeat age, in seconds, past which a worker is shown as lost (Celery's workers beat
#: every 2 s; Flower calls a worker offline after missing a few).
LOST_AFTER = 10.0

#: Tasks whose names are remembered at once; past it the oldest are forgotten first (a task
#: whose last event was missed would otherwise be remembered for ever).
MAX_TASKS_REMEMBERED = 100_000

#: The state a task event announces.
TASK_STATES = {"task-sent": "PENDING", "task-received": "RECEIVED",
               "task-started": "STARTED", "task-succeeded": "SUCCESS",
               "task-failed": "FAILURE", "task-retried": "RETRY",
               "task-revoked": "REVOKED", "task-rejected": "REJECTED"}
#: The states after which a task sends no more events.
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED", "REJECTED"})


class TaskNames(dict):
    """Task id -> name of the tasks in flight: only task-sent and task-received carry the
    name, a task's later events its id alone."""

    def __init__(self, limit: int = MAX_TASKS_REMEMBERED) -> None:
        super().__init__()
        self.limit = limit

    def name_of(self, event: dict, state: str) -> str | None:
        """The name of the task ``event`` is about (None when its first events were
        missed); forgotten at the task's final event."""
        task_id = event.get("uuid") or ""
        name = event.get("name")
        if name:
            if task_id not in self and len(self) >= self.limit:
                del self[next(iter(self))]  # the oldest: dicts keep insertion order
            self[task_id] = name
        else:
            name = self.get(task_id)
        if state in FINAL_STATES:
            self.pop(task_id, None)
        return name


def dump_line(event: dict) -> str:
    """One event as one line of JSON, its fields in a stable order."""
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS, default=repr).decode()


class EventView:
    """What the live view shows, updated from events: recent task events (for rates) and
    the last word of each worker."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        #: (monotonic time received, state, task name) of the task events in the window
        self.recent: deque[tuple[float, str, str]] = deque()
        self.names = TaskNames()
        #: hostname -> (monotonic time last heard, event type, active, processed)
        self.workers: dict[str, tuple[float, str, int, int]] = {}

    def add(self, event: dict, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        kind = event.get("type", "")
        hostname = event.get("hostname") or "?"
        if kind.startswith("worker-"):
            self.workers[hostname] = (now, kind, int(event.get("active") or 0),
                                      int(event.get("processed") or 0))
            return
        state = TASK_STATES.get(kind)
        if state is None:
            return
        name = self.names.name_of(event, state) or "?"
        self.recent.append((now, state, name))
        if hostname in self.workers:
            last = self.workers[hostname]
            self.workers[hostname] = (now, last[1], last[2], last[3])

    def rates(self, now: float | None = None) -> dict[tuple[str, str], float]:
        """Task events per second over the window, by (task name, state)."""
        now = time.monotonic() if now is None else now
        recent = self.recent
        while recent and recent[0][0] < now - self.window:
            recent.popleft()
        counts: dict[tuple[str, str], int] = {}
        for _at, state, name in recent:
            counts[(name, state)] = counts.get((name, state), 0) + 1
        return {key: n / self.window for key, n in counts.items()}

    def render(self, now: float | None = None) -> Any:
        """The frame to show: two rich tables, task rates and workers."""
        rich_table = require("rich.table", "fastq events")
        rich_console = require("rich.console", "fastq events")
        now = time.monotonic() if now is None else now
        states = list(dict.fromkeys(TASK_STATES.values()))
        rates = self.rates(now)
        tasks = rich_table.Table(title=f"Tasks per second (last {self.window:.0f}s)")
        tasks.add_column("task")
        for state in states:
            tasks.add_column(state, justify="right")
        for name in sorted({name for name, _state in rates}):
            tasks.add_row(name, *(f"{rates.get((name, s), 0.0):.1f}" for s in states))
        workers = rich_table.Table(title="Workers")
        for column in ("worker", "status", "heartbeat age", "active", "processed"):
            workers.add_column(column, justify="left" if column == "worker" else "right")
        for hostname, (heard, kind, active, processed) in sorted(self.workers.items()):
            age = now - heard
            status = "offline" if kind == "worker-offline" else \
                "lost" if age > LOST_AFTER else "online"
            workers.add_row(hostname, status, f"{age:.1f}s", str(active), str(processed))
        return rich_console.Group(tasks, workers)


def dump(receiver: Any, out: IO[str], until: Callable[[], bool]) -> int:
    """Print each event as it arrives until ``until()``; how many were printed."""
    printed = 0
    while not until():
        for event in receiver.receive(REFRESH_INTERVAL):
            out.write(dump_line(event) + "\n")
            printed += 1
        out.flush()
    return printed


def live(receiver: Any, until: Callable[[], bool], once: bool = False) -> EventView:
    """Show the live view until ``until()``; with ``once``, listen one refresh interval
    and print a single frame."""
    view = EventView()
    if once:
        for event in receiver.receive(REFRESH_INTERVAL):
            view.add(event)
        require("rich.console", "fastq events").Console().print(view.render())
        return view
    rich_live = require("rich.live", "fastq events")
    with rich_live.Live(view.render(), refresh_per_second=1 / REFRESH_INTERVAL) as screen:
        while not until():
            for event in receiver.receive(REFRESH_INTERVAL):
                view.add(event)
            screen.update(view.render())
    return view


__all__ = ["EventView", "TaskNames", "dump", "dump_line", "live", "TASK_STATES", "FINAL_STATES"]
