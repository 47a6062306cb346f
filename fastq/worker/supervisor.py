"""The worker process: startup banner, signals, warm and cold shutdown, the health file."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import orjson

from ..brokers import mask_url
from . import consumer as consumer_module
from .control import ControlListener, node_name
from .executor import Executor
from .lifecycle import EXIT_RECYCLE, TaskMeter, TaskObserver
from .pools import pool_class
from .stacks import dump_stacks

if TYPE_CHECKING:
    from ..app import App

#: Collect the youngest generation after this many net allocations, not CPython's 700: a
#: prefetch window of messages keeps a few thousand objects alive at once, so at 700 each
#: pass scans live deliveries instead of finding garbage (it was ~6% of a no-op task).
GC_YOUNG_THRESHOLD = 20_000

logger = logging.getLogger("fastq.worker")

#: Seconds between health-file writes.
HEALTH_INTERVAL = 2.0


class WorkerShutdown(BaseException):
    """Raised in the main thread for a cold shutdown; not an Exception, so tasks can't
    swallow it."""


class Worker:
    """One worker process: a consumer loop feeding a pool, supervised.

    ``SIGTERM``/``SIGINT`` once = warm shutdown (the running task finishes, prefetched
    messages go back unprocessed); twice, or ``SIGQUIT`` = cold (the running task is
    interrupted and requeued). ``SIGHUP`` = warm stop, then the same command line again
    in this process (also at ``max_tasks_per_child``/``max_memory_per_child``);
    ``SIGUSR1`` = log the stacks of all threads. A pool that supervises processes
    (prefork) gets the whole run instead: see ``fastq.worker.pools.prefork``.
    """

    def __init__(self, app: App, *, queues: list[str] | None = None, pool: str | None = None,
                 concurrency: int | None = None, prefetch_multiplier: int | None = None,
                 hostname: str | None = None, health_file: str | None = None,
                 app_spec: str | None = None, start_method: str | None = None,
                 max_tasks_per_child: int | None = None,
                 max_memory_per_child: int | None = None,
                 autoscale: tuple[int, int] | None = None,
                 observer: TaskObserver | None = None) -> None:
        self.app = app
        conf = app.conf
        self.queues = queues or [conf.task_default_queue]
        self.pool_name = pool or conf.worker_pool
        self.concurrency = concurrency or conf.worker_concurrency or 1
        multiplier = conf.worker_prefetch_multiplier if prefetch_multiplier is None \
            else prefetch_multiplier
        if multiplier < 0:
            from ..exceptions import ConfigurationError

            raise ConfigurationError(
                f"worker_prefetch_multiplier must be 0 or more, not {multiplier}")
        self.prefetch_multiplier = multiplier
        # 0 disables prefetch: a message is taken only when a slot is free to run it
        self.prefetch = max(1, multiplier) * self.concurrency
        self.hostname = hostname or f"fastq@{socket.gethostname()}"
        #: a prefork child (observer set) reports to its parent instead of a health file
        self.health_file = None if observer is not None else health_file or os.path.join(
            conf.worker_state_dir, f"{self.hostname.replace('/', '_')}.{os.getpid()}.json")
        #: how this process's app is found again by processes that do not inherit it
        self.app_spec = app_spec
        self.start_method = start_method or "fork"
        self.max_tasks_per_child = max_tasks_per_child or conf.worker_max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child or conf.worker_max_memory_per_child
        self.autoscale = autoscale
        self.observer = observer
        self.started_at = time.time()
        self._signals = 0
        #: why this process restarts in place once stopped (SIGHUP, a recycling limit)
        self._restart: str | None = None
        pool_cls = pool_class(self.pool_name)
        self.supervises_processes = bool(getattr(pool_cls, "supervises_processes", False))
        if self.supervises_processes:
            self._init_process_pool(pool_cls, concurrency)
            return
        if self.pool_name == "solo" and self.concurrency != 1:
            from ..exceptions import ConfigurationError

            raise ConfigurationError(
                f"-P solo runs one task at a time; -c {self.concurrency} needs another pool")
        for module in (*conf.imports, *conf.include):
            __import__(module)
        self.executor = Executor(app, self.hostname)
        self.meter: TaskMeter | None = None
        if self.max_tasks_per_child or self.max_memory_per_child or observer is not None:
            # before the pool exists, so that every pool runs jobs through the meter
            self.meter = TaskMeter(self.executor, max_tasks=self.max_tasks_per_child,
                                   max_memory_kib=self.max_memory_per_child,
                                   on_limit=self._on_recycle_limit, observer=observer)
        self.pool = pool_cls(self.executor, self.concurrency)
        self.broker = app.broker
        self.consumer = consumer_module.Consumer(
            app, self.broker, self.executor, self.pool, self.queues, self.prefetch,
            ack_batch_size=conf.worker_ack_batch_size, ack_interval=conf.worker_ack_interval,
            hostname=self.hostname)
        self._health_stop = threading.Event()
        # remote control (revoke): its own thread and broker connection; see control.py
        self.control: ControlListener | None = None
        if conf.worker_enable_remote_control:
            self.control = ControlListener(
                self.broker, self.hostname, self.executor.revoked,
                node=node_name(self.hostname, in_prefork_child=observer is not None))

    def _init_process_pool(self, pool_cls: type, concurrency: int | None) -> None:
        """A pool of child processes, each a whole solo worker with its own broker
        connection and consumer loop; this process only supervises them."""
        conf = self.app.conf
        for module in (*conf.imports, *conf.include):
            __import__(module)  # before fork, so every child inherits the tasks
        self.concurrency = concurrency or conf.worker_concurrency or os.cpu_count() or 1
        if self.autoscale:
            self.concurrency = self.autoscale[0]
        self.prefetch = max(1, self.prefetch_multiplier)  # per child
        self.executor = self.consumer = self.broker = self.meter = None  # type: ignore[assignment]
        self.pool = pool_cls(None, self.concurrency)

    def banner(self) -> str:
        backend = self.app.backend_url
        speed = ("accelerated (compiled consumer)" if consumer_module.IMPLEMENTATION == "c"
                 else f"pure Python ({consumer_module.REASON})")
        if self.supervises_processes:
            size = (f"children={self.autoscale[1]}..{self.autoscale[0]} (autoscale)"
                    if self.autoscale else f"children={self.concurrency}")
            pool = (f"pool=prefork {size} start_method={self.start_method} "
                    f"prefetch={self.prefetch}/child")
        else:
            pool = (f"pool={self.pool_name} concurrency={self.concurrency} "
                    f"prefetch={self.prefetch}")
        recycle = "".join(
            f" {name}={value}" for name, value in (
                ("max_tasks_per_child", self.max_tasks_per_child),
                ("max_memory_per_child", self.max_memory_per_child)) if value)
        return (f"fastq worker {self.hostname} ready: broker={mask_url(self.app.broker_url)} "
                f"backend={mask_url(backend) if backend else 'none'} {pool}{recycle} "
                f"queues={','.join(self.queues)} tasks={len(self.app.tasks)} speedups={speed}")

    # -- signals ---------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGQUIT, self._on_cold_signal)
        signal.signal(signal.SIGUSR1, self._on_stacks_signal)
        if self.observer is None:
            signal.signal(signal.SIGINT, self._on_stop_signal)
            signal.signal(signal.SIGHUP, self._on_restart_signal)
        else:
            # a prefork child: Ctrl-C reaches the whole process group, but shutting down
            # and restarting are the parent's decisions, which it forwards as SIGTERM/SIGQUIT
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        if self.observer is not None and self._signals:
            # a prefork child: SIGTERM sent to the whole process group (timeout, systemd)
            # arrives along with the parent's own; only the parent's SIGQUIT means cold
            return
        self._signals += 1
        if self._signals == 1:
            again = "" if self.observer is not None else "; send it again for a cold shutdown"
            logger.warning("%s: warm shutdown (%s): finishing the running task%s",
                           self.hostname, signal.Signals(signum).name, again)
            self._restart = None
            self.consumer.stop()
        else:
            self._on_cold_signal(signum, frame)

    def _on_cold_signal(self, signum: int, frame: Any) -> None:
        logger.warning("%s: cold shutdown (%s): the running task is interrupted and requeued",
                       self.hostname, signal.Signals(signum).name)
        self._signals = max(self._signals, 2)
        self._restart = None
        self.consumer.stop(cold=True)
        raise WorkerShutdown(signum)

    def _on_restart_signal(self, signum: int, frame: Any) -> None:
        if self._signals:
            return  # already shutting down: that wins
        logger.warning("%s: restart (SIGHUP): finishing the running task, then starting "
                       "afresh in this process (same pid)", self.hostname)
        self._restart = "SIGHUP"
        self.consumer.stop()

    def _on_stacks_signal(self, signum: int, frame: Any) -> None:
        dump_stacks()

    def _on_recycle_limit(self, reason: str) -> None:
        if self._signals:
            return
        if self.observer is None:
            logger.info("%s: recycling: %s; restarting in this process (same pid)",
                        self.hostname, reason)
        self._restart = reason
        self.consumer.stop()

    # -- health ---------------------------------------------------------------------
    def health(self) -> dict:
        state = self.consumer.state
        # a broker that reconnects by itself (AMQP) keeps the loop running meanwhile
        if state == "consuming" and getattr(self.broker, "state", None) == "reconnecting":
            state = "reconnecting"
        return {"hostname": self.hostname, "pid": os.getpid(), "state": state,
                "broker": mask_url(self.app.broker_url), "queues": self.queues,
                "pool": self.pool_name, "concurrency": self.concurrency,
                "started_at": self.started_at, "updated_at": time.time(),
                "counters": dict(self.consumer.counters)}

    def write_health(self, report: dict | None = None) -> None:
        if not self.health_file:
            return
        try:
            os.makedirs(os.path.dirname(self.health_file) or ".", exist_ok=True)
            tmp = f"{self.health_file}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(orjson.dumps(report if report is not None else self.health()))
            os.replace(tmp, self.health_file)
        except OSError as exc:
            logger.warning("could not write the health file %s: %s", self.health_file, exc)

    def remove_health(self) -> None:
        if self.health_file:
            try:
                os.unlink(self.health_file)
            except OSError:
                pass

    def _health_loop(self) -> None:
        while not self._health_stop.wait(HEALTH_INTERVAL):
            self.write_health()

    # -- run -------------------------------------------------------------------------
    def run(self) -> int:
        """Consume until stopped; return the process exit code.

        A single-process worker asked to restart (SIGHUP, a recycling limit) replaces
        itself with a fresh run of the same command line and never returns; a prefork
        child returns ``EXIT_RECYCLE`` for its parent to replace it.
        """
        if self.supervises_processes:
            return self.pool.supervise(self)
        self.install_signal_handlers()
        self.pool.start()
        if self.observer is None:
            logger.warning("%s", self.banner())
        self.write_health()
        health = None
        if self.health_file:
            self.consumer.on_consuming = self.write_health
            health = threading.Thread(target=self._health_loop, name="fastq-health",
                                      daemon=True)
            health.start()
        if self.control is not None:
            self.control.start()  # before consuming: revokes the broker kept apply at once
        # what start-up made (modules, the app, the pool) lives as long as the process:
        # keep it out of the collector's full passes, which otherwise walk it every few
        # thousand tasks
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        code = 0
        try:
            self.consumer.run()
        except WorkerShutdown:
            code = 0
        except KeyboardInterrupt:
            code = 130
        except Exception:
            logger.exception("%s: the consumer loop failed; exiting", self.hostname)
            code = 1
        finally:
            self._health_stop.set()
            if self.control is not None:
                self.control.stop()
            self.pool.stop(cold=bool(self._signals > 1))
            self.remove_health()
            self.app.close()
            c = self.consumer.counters
            log = logger.info if self._restart else logger.warning
            log("%s stopped: %d received, %d acked, %d released, %d requeued, "
                "%d dead-lettered", self.hostname, c["received"], c["acked"],
                c["released"], c["requeued"], c["dead_lettered"])
        if code == 0 and self._restart is not None:
            if self.observer is not None:
                return EXIT_RECYCLE
            restart_in_place()
        return code


def restart_in_place() -> None:
    """Replace this process with a fresh run of its own command line (same pid)."""
    argv = [sys.executable, *sys.orig_argv[1:]]
    logging.shutdown()  # flush what is logged before the image goes
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def setup_logging(level: str | int = "WARNING") -> None:
    """Log to stderr with one line per record, as a worker process should."""
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            from ..exceptions import ConfigurationError

            raise ConfigurationError("log level must be one of debug, info, warning, error")
    logging.basicConfig(
        level=level, stream=sys.stderr,
        format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s")
