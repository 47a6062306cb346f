"""The prefork parent's answers to inspect and control: one node for the whole worker, as
Celery's, from what its children report with each status (``commands.inspect_snapshot``).

The children hear every request too and apply what changes them (revokes, rate and time
limits, events: ``commands.APPLIED_BY_EACH_CHILD``) without replying; the parent replies
once, for all of them. Its lists are as fresh as the children's last reports, at most
``child.STATUS_INTERVAL`` old.
"""

from __future__ import annotations

import collections
import importlib
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ... import commands

logger = logging.getLogger("fastq.worker")

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
                   "heartbeat": self.heartbeat, "pool_grow": self.pool_grow,
                   "pool_shrink": self.pool_shrink, "autoscale": self.autoscale,
                   "add_consumer": self.add_consumer,
                   "cancel_consumer": self.cancel_consumer,
                   "pool_restart": self.pool_restart,
                   "revoke_by_stamped_headers": self.revoke_by_stamped_headers}
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

    # -- the pool: children are started and stopped by the parent's loop (call_soon)
    def _resized(self, worker: Worker, delta: int, command: str, done: str) -> dict:
        if self.parent.autoscaler is not None:
            return {"error": commands.AUTOSCALED.format(command)}
        self.parent.call_soon(lambda: self.parent.resize(delta))
        return {"ok": done}

    def pool_grow(self, worker: Worker, n: Any = 1, **_: Any) -> dict:
        return self._resized(worker, int(n), "pool_grow", "pool will grow")

    def pool_shrink(self, worker: Worker, n: Any = 1, **_: Any) -> dict:
        return self._resized(worker, -int(n), "pool_shrink", "pool will shrink")

    def autoscale(self, worker: Worker, max: Any = None, min: Any = None, **_: Any) -> dict:
        autoscaler = self.parent.autoscaler
        if autoscaler is None:
            raise ValueError("Autoscale not enabled")  # Celery's words
        maximum, minimum = autoscaler.update(max, min)
        worker.autoscale = (maximum, minimum)
        return {"ok": f"autoscale now max={maximum} min={minimum}"}

    def pool_restart(self, worker: Worker, modules: Any = None, reload: bool = False,
                     **_: Any) -> dict:
        """Import ``modules`` (again, with ``reload``) here, then replace the children
        one by one: forked from this process, they run the new code."""
        if not worker.app.conf.worker_pool_restarts:
            raise ValueError("Pool restarts not enabled")
        self.parent.call_soon(lambda: self._restart(list(modules or ()), bool(reload)))
        return {"ok": "reload started"}

    def _restart(self, modules: list[str], reload: bool) -> None:
        for name in modules:
            try:
                if reload and name in sys.modules:
                    importlib.reload(sys.modules[name])
                else:
                    importlib.import_module(name)
            except Exception:
                logger.exception("pool_restart: cannot import %s; the children restart "
                                 "without it", name)
        self.parent.restart_one_by_one()

    # -- queues and stamped revokes: the children apply them, the parent keeps the list
    def add_consumer(self, worker: Worker, queue: str | None = None,
                     exchange: str | None = None, exchange_type: str | None = None,
                     routing_key: str | None = None, **_: Any) -> dict:
        if not queue:
            return {"error": "add_consumer needs a queue name"}
        if queue not in worker.queues:
            worker.queue_entities = [*worker.queue_entities, commands.queue_entity(
                worker, queue, exchange, exchange_type, routing_key)]
            worker.queues = [*worker.queues, queue]
            self.parent.spec.queues = list(worker.queues)  # children started later
        return {"ok": f"add consumer {queue}"}

    def cancel_consumer(self, worker: Worker, queue: str | None = None, **_: Any) -> dict:
        answer = commands.cancel_consumer(worker, queue)
        self.parent.spec.queues = list(worker.queues)
        return answer

    def revoke_by_stamped_headers(self, worker: Worker, headers: Any = None,
                                  terminate: bool = False, **_: Any) -> dict:
        self.revoked.add_stamps(headers)
        if not terminate:
            return {"ok": f"headers {headers} flagged as revoked, but not terminated"}
        # which running tasks carry the stamps only the children know: they terminate them
        return {"ok": f"headers {headers} flagged as revoked; the children terminate the "
                      "running tasks stamped with them"}

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
                "rusage": commands.rusage(),
                "bad_signatures": parent.summed_counters()["bad_signatures"]}


__all__ = ["ParentAnswers"]
