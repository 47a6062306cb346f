"""The prefork parent: starts, watches, replaces and stops the children of one worker."""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import orjson

from .... import signals
from ....brokers import mask_url
from ....exceptions import ConfigurationError, TimeLimitExceeded
from ....states import FAILURE
from ...control import ControlListener
from ...lifecycle import EXIT_RECYCLE
from ...metrics import cumulative_part, merge, resident_bytes
from ...revoked import RevokedSet
from ...stacks import dump_stacks
from ...supervisor import HEALTH_INTERVAL, Worker
from .answers import ParentAnswers
from .autoscale import Autoscaler
from .child import PARENT_SIGNALS, STATUS_INTERVAL, ChildSpec, child_main

logger = logging.getLogger("fastq.worker")

START_METHODS = ("fork", "spawn", "forkserver")

#: Seconds past a task's hard time limit before the parent kills its child: the child's
#: own SIGALRM ends it at the limit unless it is stuck in C code.
HARD_LIMIT_GRACE = 1.0
#: Seconds a cold shutdown waits for children before killing them.
COLD_KILL_AFTER = 10.0
#: Children that die before they consume, in a row, before the parent gives up.
MAX_FAILED_STARTS = 3
#: How long the parent's loop sleeps at most between checks of deadlines, in seconds.
TICK = 0.1


class ChildProcess:
    """The parent's record of one child process."""

    def __init__(self, process: Any, reader: Connection, index: int) -> None:
        self.process = process
        self.reader = reader
        self.index = index
        self.pid: int = process.pid
        self.started = time.monotonic()
        self.state = "starting"
        self.ready = False  # reported "consuming" at least once
        self.done = 0
        self.counters: dict[str, int] = {}
        self.running: str | None = None
        #: the child's last metrics snapshot (``--metrics-port``), cumulative numbers
        self.metrics: dict | None = None
        #: the child's last ``commands.inspect_snapshot``: the parent answers inspect
        self.inspect: dict | None = None
        #: (task id, name, hard limit, kill deadline) of a hard-limited task in progress
        self.limited: tuple[str, str, float, float] | None = None
        self.retiring = False  # told to stop; not replaced
        self.killed_for: tuple[str, str, float] | None = None
        self.recycle_reason: str | None = None
        self.busy = 0.0
        self.busy_fraction = 0.0
        self.idle_since: float | None = None
        self.last_report = self.started

    def report(self) -> dict:
        return {"pid": self.pid, "index": self.index, "state": self.state,
                "tasks": self.done, "running": self.running}


class PreforkParent:
    """The parent's loop: start, watch, replace and stop the children of one worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.app = worker.app
        method = worker.start_method
        if method not in START_METHODS:
            raise ConfigurationError(f"unknown start method {method!r}; use one of "
                                     f"{', '.join(START_METHODS)}")
        if method != "fork" and worker.app_spec is None:
            raise ConfigurationError(
                f"--start-method {method} starts children that import the app again: "
                "name it with -A module[:attribute]")
        self.context = multiprocessing.get_context(method)
        self.spec = ChildSpec(
            app_spec=worker.app_spec, queues=list(worker.queues),
            prefetch_multiplier=worker.prefetch_multiplier, hostname=worker.hostname,
            loglevel=logging.getLogger().getEffectiveLevel(),
            max_tasks_per_child=worker.max_tasks_per_child,
            max_memory_per_child=worker.max_memory_per_child,
            send_events=worker.send_events, metrics=bool(worker.metrics_port))
        self.autoscaler = None
        if worker.autoscale:
            maximum, minimum = worker.autoscale
            self.autoscaler = Autoscaler(maximum, minimum,
                                         self.app.conf.worker_autoscale_keepalive)
        self.children: dict[int, ChildProcess] = {}  # by pid
        self.stopping: str | None = None  # None, "warm" or "cold"
        self.cold_deadline = 0.0
        self.exit_code = 0
        self.failed_starts = 0
        self.started_count = 0
        self.exited_counters: collections.Counter = collections.Counter()
        #: tasks by name that exited children saw (``inspect stats``' ``total``)
        self.exited_totals: collections.Counter = collections.Counter()
        self.control: ControlListener | None = None
        self.exited_tasks = 0
        #: the counters of exited children's last metrics snapshots, added up
        self.exited_metrics: dict = {}
        self._signals: collections.deque[int] = collections.deque()
        #: changes asked by remote control, made by the loop's thread (``call_soon``)
        self._calls: collections.deque[Any] = collections.deque()
        #: children still to replace, one at a time, by a ``pool_restart``
        self._to_restart: list[int] = []
        self._next_health = 0.0
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)

    # -- starting children -------------------------------------------------------------
    def start_child(self, index: int | None = None) -> ChildProcess:
        if index is None:
            used = {c.index for c in self.children.values() if not c.retiring}
            index = next(i for i in range(len(used) + 1) if i not in used)
        reader, writer = self.context.Pipe(duplex=False)
        self.started_count += 1
        app = self.app if self.context.get_start_method() == "fork" else None
        process = self.context.Process(target=child_main, args=(self.spec, writer, app),
                                       name=f"PoolWorker-{self.started_count}", daemon=False)
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, PARENT_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        writer.close()
        child = ChildProcess(process, reader, index)
        self.children[child.pid] = child
        logger.debug("started child %d (%s)", child.pid, process.name)
        return child

    def active(self) -> list[ChildProcess]:
        return [c for c in self.children.values() if not c.retiring]

    # -- signals -----------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for signum in PARENT_SIGNALS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals.append(signum)  # acted on by the loop, never mid-bookkeeping

    def call_soon(self, change: Any) -> None:
        """Run ``change()`` in the loop's thread, which alone starts and stops children
        (remote control asks from its own thread)."""
        self._calls.append(change)
        try:
            os.write(self._wake_w, b"c")
        except BlockingIOError:
            pass  # the loop is being woken already

    def resize(self, delta: int) -> None:
        """``delta`` more children, or fewer (idle ones first, never the last one)."""
        if delta > 0:
            for _ in range(delta):
                self.start_child()
        else:
            active = self.active()
            idle_first = sorted(active, key=lambda c: (c.running is not None, -c.started))
            retired = idle_first[:min(-delta, len(active) - 1)]
            for child in retired:
                child.retiring = True
            self._signal_children(signal.SIGTERM, retired)
        self.worker.concurrency = len(self.active())
        logger.info("%s: pool resized to %d child(ren)", self.worker.hostname,
                    self.worker.concurrency)
        self._next_health = 0.0

    def restart_one_by_one(self) -> None:
        """Replace every child, the next once its predecessor's replacement consumes
        (``pool_restart``): the worker keeps taking tasks throughout."""
        self._to_restart = [c.pid for c in self.active()]
        logger.info("%s: restarting the pool: replacing %d child(ren) one by one",
                    self.worker.hostname, len(self._to_restart))

    def _restart_next(self) -> None:
        if any(not c.ready for c in self.active()):
            return  # the last replacement is still starting
        while self._to_restart:
            child = self.children.get(self._to_restart.pop(0))
            if child is None or child.retiring:
                continue
            child.retiring = True
            self.start_child(child.index)
            self._signal_children(signal.SIGTERM, [child])
            return

    def _handle_signals(self) -> None:
        while self._signals:
            signum = self._signals.popleft()
            name = signal.Signals(signum).name
            if signum == signal.SIGUSR1:
                dump_stacks()
                self._signal_children(signal.SIGUSR1)
            elif signum == signal.SIGHUP:
                if not self.stopping:
                    self.restart_pool()
            elif signum == signal.SIGQUIT or (signum in (signal.SIGTERM, signal.SIGINT)
                                             and self.stopping):
                self.stop(cold=True, why=name)
            else:
                self.stop(cold=False, why=name)

    def _signal_children(self, signum: int,
                         children: Sequence[ChildProcess] | None = None) -> None:
        for child in list(self.children.values()) if children is None else children:
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, cold: bool, why: str) -> None:
        if self.stopping != ("cold" if cold else "warm"):
            signals.worker_shutting_down.send(sender=self.worker.hostname, sig=why,
                                              how="Cold" if cold else "Warm", exitcode=0)
        if cold:
            if self.stopping == "cold":
                return
            logger.warning("%s: cold shutdown (%s): running tasks are interrupted and "
                           "requeued", self.worker.hostname, why)
            self.stopping = "cold"
            self.cold_deadline = time.monotonic() + COLD_KILL_AFTER
            self._signal_children(signal.SIGQUIT)
        else:
            logger.info("%s: warm shutdown (%s): children finish their running tasks; "
                        "send it again for a cold shutdown", self.worker.hostname, why)
            self.stopping = "warm"
            self._signal_children(signal.SIGTERM)
        self.write_health()

    def restart_pool(self) -> None:
        """Replace every child: the old ones finish their running task and go."""
        old = self.active()
        logger.info("%s: restarting the pool (SIGHUP): replacing %d child(ren)",
                    self.worker.hostname, len(old))
        for child in old:
            child.retiring = True
            self.start_child(child.index)
        self._signal_children(signal.SIGTERM, old)

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> int:
        worker = self.worker
        self.install_signal_handlers()
        if worker.metrics_port:  # before any child can run a task: none goes unseen
            worker.start_metrics_server(self.metrics_snapshot)
        initial = self.autoscaler.minimum if self.autoscaler else worker.concurrency
        for _ in range(initial):
            self.start_child()
        worker.log_banner()
        self.write_health()
        signals.worker_ready.send(sender=worker)
        worker.start_beat()  # -B: in the parent only, after the children are forked
        self.start_control()
        try:
            while self.children or not self.stopping:
                self.step()
        finally:
            if self.control is not None:
                self.control.stop()
            worker.stop_beat()
            worker.stop_metrics_server()
            signal.set_wakeup_fd(-1)
            os.close(self._wake_r)
            os.close(self._wake_w)
            worker.remove_health()
            self.app.close()
        logger.info("%s stopped: %d task(s) run by %d child process(es)", worker.hostname,
                    self.exited_tasks, self.started_count)
        return self.exit_code

    def start_control(self) -> None:
        """Answer remote control for the whole worker under its hostname (the children
        listen under ``hostname.pid`` and reply to nothing), as Celery's one node."""
        conf = self.app.conf
        if not conf.worker_enable_remote_control:
            return
        revoked = RevokedSet(conf.worker_revokes_max, conf.worker_revoke_expires)
        self.control = ControlListener(self.app.broker, self.worker.hostname, revoked,
                                       worker=self.worker,
                                       commands=ParentAnswers(self, revoked).table(),
                                       state_db=conf.worker_state_db)
        self.control.start()

    def step(self) -> None:
        """One turn: read reports, act on signals, reap and replace, check deadlines."""
        children = list(self.children.values())
        waitables: list[Any] = [self._wake_r]
        for child in children:
            waitables.append(child.reader)
            waitables.append(child.process.sentinel)
        ready = wait(waitables, TICK)
        now = time.monotonic()
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        for child in children:
            if child.reader in ready:
                self._read_reports(child, now)
        self._handle_signals()
        while self._calls and not self.stopping:
            self._calls.popleft()()
        if self._to_restart and not self.stopping:
            self._restart_next()
        for child in children:
            if child.process.exitcode is not None:
                self._read_reports(child, now)  # the final status, sent just before exit
                self._on_exit(child)
        self._check_hard_limits(now)
        if self.stopping == "cold" and self.children and now > self.cold_deadline:
            logger.error("children still running %.0fs after a cold shutdown: killing them",
                         COLD_KILL_AFTER)
            self._signal_children(signal.SIGKILL)
            self.cold_deadline = now + COLD_KILL_AFTER
        if self.autoscaler is not None and not self.stopping:
            self._autoscale(now)
        if now >= self._next_health:
            self.write_health()

    def _read_reports(self, child: ChildProcess, now: float) -> None:
        reader = child.reader
        try:
            while reader.poll():
                message = orjson.loads(reader.recv_bytes())
                kind = message["e"]
                if kind == "status":
                    self._on_status(child, message, now)
                elif kind == "start":
                    hard = float(message["hard"])
                    child.limited = (message["id"], message["name"], hard,
                                     now + hard + HARD_LIMIT_GRACE)
                elif kind == "end":
                    child.limited = None
                elif kind == "recycle":
                    child.recycle_reason = message["reason"]
        except (EOFError, OSError):
            pass  # the child is gone; its sentinel says so too

    def _on_status(self, child: ChildProcess, message: dict, now: float) -> None:
        elapsed = now - child.last_report
        busy = float(message["busy"])
        if elapsed > 0:
            child.busy_fraction = min(1.0, (busy - child.busy) / elapsed)
        if busy > child.busy or message["running"]:
            child.idle_since = None
        elif child.idle_since is None:
            child.idle_since = now
        child.busy, child.last_report = busy, now
        child.done = message["done"]
        child.running = message["running"]
        child.counters = message["counters"]
        if "metrics" in message:
            child.metrics = message["metrics"]
        if "inspect" in message:
            child.inspect = message["inspect"]
        state = "stopping" if child.retiring and message["state"] == "consuming" \
            else message["state"]
        child.state = state
        if state == "consuming" and not child.ready:
            child.ready = True
            self.failed_starts = 0
            self._next_health = 0.0  # say so now

    def summed_counters(self) -> collections.Counter:
        """The consumer counters of every child, those that exited included."""
        counters = collections.Counter(self.exited_counters)
        for child in self.children.values():
            counters.update(child.counters)
        return counters

    def _on_exit(self, child: ChildProcess) -> None:
        del self.children[child.pid]
        child.reader.close()
        code = child.process.exitcode
        child.process.close()
        self.exited_tasks += child.done
        self.exited_counters.update(child.counters)
        if child.inspect is not None:
            self.exited_totals.update(child.inspect["total"])
        if child.metrics is not None:
            self.exited_metrics = merge([self.exited_metrics, cumulative_part(child.metrics)])
        self._next_health = 0.0
        status = _describe_exit(code)
        if child.retiring or self.stopping:
            log = logger.info if code in (0, EXIT_RECYCLE) else logger.warning
            log("child %d exited (%s) after %d task(s)", child.pid, status, child.done)
            return
        if child.killed_for is not None:
            task_id, name, hard = child.killed_for
            logger.error("child %d killed at the hard time limit of %s[%s] (%ss); replacing it",
                         child.pid, name, task_id, hard)
        elif code == EXIT_RECYCLE:
            logger.info("child %d recycled: %s", child.pid, child.recycle_reason or "a limit")
        else:
            running = f" while running task {child.running}" if child.running else ""
            logger.error("child %d died (%s)%s; its unacknowledged messages return to the "
                         "queue; replacing it", child.pid, status, running)
            if not child.ready:
                self.failed_starts += 1
                if self.failed_starts >= MAX_FAILED_STARTS:
                    logger.critical("%d children in a row died before consuming: giving up",
                                    self.failed_starts)
                    self.exit_code = 1
                    self.stop(cold=False, why="children fail to start")
                    return
        self.start_child(child.index)

    def _check_hard_limits(self, now: float) -> None:
        for child in list(self.children.values()):
            limited = child.limited
            if limited is None or child.killed_for is not None or now < limited[3]:
                continue
            task_id, name, hard, _deadline = limited
            logger.error("Task %s[%s] outlived its hard time limit (%ss) by %.1fs in child %d, "
                         "which did not end it (stuck outside Python?): killing the child",
                         name, task_id, hard, HARD_LIMIT_GRACE, child.pid)
            child.killed_for = (task_id, name, hard)
            try:
                os.kill(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            # stored now, so that the redelivered message is acked, not run again
            try:
                self.app.backend.store(task_id, FAILURE, TimeLimitExceeded(hard))
            except Exception:
                logger.exception("could not store TimeLimitExceeded for %s; the task will "
                                 "run again when its message is redelivered", task_id)

    def _autoscale(self, now: float) -> None:
        assert self.autoscaler is not None
        decision = self.autoscaler.decide(self.active(), now)
        if decision is None:
            return
        action, child = decision
        if action == "grow":
            new = self.start_child()
            logger.info("autoscale: all %d child(ren) busy: started child %d",
                        len(self.active()) - 1, new.pid)
        elif child is not None:
            logger.info("autoscale: child %d idle for %.0fs: stopping it", child.pid,
                        now - (child.idle_since or now))
            child.retiring = True
            self._signal_children(signal.SIGTERM, [child])
        self._next_health = 0.0

    def metrics_snapshot(self) -> dict:
        """The children's latest numbers and the exited ones' counters, with this
        process's memory; read by the metrics server's thread at each scrape."""
        snapshots = [c.metrics for c in list(self.children.values()) if c.metrics]
        own = {"rss": resident_bytes()}
        return merge([self.exited_metrics, own, *snapshots])

    # -- health ------------------------------------------------------------------------
    def health(self) -> dict:
        worker = self.worker
        active = self.active()
        if self.stopping:
            state = "stopping"
        elif active and all(c.ready for c in active):
            state = "consuming"
        else:
            state = "starting"
        counters = self.summed_counters()
        return {"hostname": worker.hostname, "pid": os.getpid(), "state": state,
                "broker": mask_url(self.app.broker_url), "queues": worker.queues,
                "pool": "prefork", "concurrency": len(active),
                "start_method": self.context.get_start_method(),
                "started_at": worker.started_at, "updated_at": time.time(),
                "counters": dict(counters),
                "children": [c.report() for c in sorted(self.children.values(),
                                                        key=lambda c: (c.index, c.started))]}

    def write_health(self) -> None:
        # as often as the children report: it is the only place their state shows
        self._next_health = time.monotonic() + min(HEALTH_INTERVAL, STATUS_INTERVAL)
        self.worker.write_health(self.health())


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == EXIT_RECYCLE:
        return "recycled"
    return f"exit status {code}"
