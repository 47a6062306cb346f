"""The prefork parent's answers to inspect and control: one node for the whole worker, as
Celery's, from what its children report with each status (``commands.inspect_snapshot``).

The children hear every request too and apply what changes them (revokes, rate and time
limits, events: ``commands.APPLIED_BY_EACH_CHILD``) without replying; the parent replies
once, for all of them. Its lists are as fresh as the children's last reports, at most
``child.STATUS_INTERVAL`` old.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ... import commands

if TYPE_CHECKING:
    from ...revoked import RevokedSet
    from ...supervisor import Worker
    from .parent import PreforkParent


class ParentAnswers:
    """The commands whose answer needs the children's state, read from their reports;
    the rest (``registered``, ``conf``, ``rate_limit``, ``shutdown``, ...) are
    ``commands.COMMANDS`` run on the parent's own Worker."""

    def __init__(self, parent: PreforkParent, revoked: RevokedSet) -> None:
        self.parent = parent
        #: the revokes this worker heard (its children keep their own copies)
        self.revoked = revoked

    def table(self) -> dict[str, Callable[..., Any]]:
        table = dict(commands.COMMANDS)
        answers = {"active": self.active, "reserved": self.reserved, "stats": self.stats,
                   "revoked": self.revoked_ids, "query_task": self.query_task,
                   "clock": self.clock, "hello": self.hello,
                   "enable_events": self.enable_events,
                   "disable_events": self.disable_events,
                   "heartbeat": self.heartbeat}
        table.update(answers)
        table.update({"dump_active": self.active, "dump_reserved": self.reserved,
                      "dump_revoked": self.revoked_ids})
        return table

    def _snapshots(self) -> list[dict]:
        children = sorted(self.parent.children.values(), key=lambda c: (c.index, c.started))
        return [c.inspect for c in children if c.inspect]

    def _listed(self, kind: str) -> list[dict]:
        return [info for snapshot in self._snapshots() for info in snapshot[kind]]

    def active(self, worker: Worker, **_: Any) -> list:
        return self._listed("active")

    def reserved(self, worker: Worker, **_: Any) -> list:
        return self._listed("reserved")

    def revoked_ids(self, worker: Worker, **_: Any) -> list:
        return list(self.revoked)

    def query_task(self, worker: Worker, ids: Any = None, **_: Any) -> dict:
        wanted = {ids} if isinstance(ids, str) else set(ids or ())
        found: dict[str, list] = {}
        for state in ("active", "reserved"):
            for info in self._listed(state):
                if info["id"] in wanted and info["id"] not in found:
                    found[info["id"]] = [state, info]
        return found

    def clock_value(self) -> int:
        return max((s["clock"] for s in self._snapshots()), default=0)

    def clock(self, worker: Worker, **_: Any) -> dict:
        return {"clock": self.clock_value()}

    def hello(self, worker: Worker, from_node: str | None = None, revoked: Any = None,
              **_: Any) -> Any:
        if from_node == worker.hostname:
            return None
        if revoked:
            self.revoked.update(list(revoked))
        return {"revoked": list(self.revoked), "clock": self.clock_value()}

    @staticmethod
    def _events_switched(worker: Worker, how: str) -> dict:
        # each child switches its own events (whether they were on already is theirs to
        # know); Celery's words for the switch
        if "events" not in worker.app.broker.capabilities:
            return {"error": "event dispatcher unavailable"}
        return {"ok": f"task events {how}"}

    def enable_events(self, worker: Worker, **_: Any) -> dict:
        return self._events_switched(worker, "enabled")

    def disable_events(self, worker: Worker, **_: Any) -> dict:
        return self._events_switched(worker, "disabled")

    def heartbeat(self, worker: Worker, **_: Any) -> None:
        return None  # each child sends its own

    def stats(self, worker: Worker, **_: Any) -> dict:
        parent = self.parent
        total: collections.Counter = collections.Counter(parent.exited_totals)
        for snapshot in self._snapshots():
            total.update(snapshot["total"])
        children = parent.active()
        conf = worker.app.conf
        pool = {"implementation": "fastq.worker.pools:prefork",
                "max-concurrency": len(children),
                "processes": [c.pid for c in children],
                "max-tasks-per-child": worker.max_tasks_per_child or "N/A",
                "put-guarded-by-semaphore": False,
                "timeouts": [conf.task_soft_time_limit or 0, conf.task_time_limit or 0]}
        return {"total": dict(total), "pid": os.getpid(), "clock": str(self.clock_value()),
                "uptime": int(time.time() - worker.started_at), "pool": pool,
                "broker": commands.broker_stats(worker.app.broker_url),
                "prefetch_count": worker.prefetch * len(children),
                "rusage": commands.rusage()}


__all__ = ["ParentAnswers"]
