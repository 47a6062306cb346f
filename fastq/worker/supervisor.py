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

from .. import _speedups, signals
from .._registry import scheme_of
from ..backends import backend_class
from ..brokers import BROKER_SCHEMES, broker_class, mask_url
from ..utils.log import TASK_LOG_FORMAT, TASK_LOGGER_NAME, TaskFormatter
from . import consumer as consumer_module
from .control import ControlListener, node_name
from .events import WorkerEvents
from .executor import Executor
from .lifecycle import EXIT_RECYCLE, TaskMeter, TaskObserver
from .metrics import MetricsServer, TaskStats
from .pools import pool_class
from .prefetch import PrefetchWindow
from .stacks import dump_stacks

if TYPE_CHECKING:
    from ..app import App

#: Collect the youngest generation after this many net allocations, not CPython's 700: a
#: prefetch window of messages keeps a few thousand objects alive at once, so at 700 each
#: pass scans live deliveries instead of finding garbage (it was ~6% of a no-op task).
GC_YOUNG_THRESHOLD = 20_000

logger = logging.getLogger("fastq.worker")
#: The start-up banner's own logger: `fastq worker` shows it whatever the level, as
#: Celery prints its banner, while an embedded worker (the demo, tests) keeps it at INFO.
banner_logger = logging.getLogger("fastq.worker.banner")

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
                 observer: TaskObserver | None = None, beat: bool = False,
                 send_events: bool | None = None, metrics_port: int | None = None,
                 metrics_host: str | None = None, collect_metrics: bool = False) -> None:
        self.app = app
        conf = app.conf
        #: what it consumes: the -Q names (or a Broadcast's alias), else every queue of
        #: task_queues, else task_default_queue; each with its exchanges and bindings
        self.queue_entities = app.queues.consumed(queues)
        self.queues = [queue.name for queue in self.queue_entities]
        self.pool_name = pool or conf.worker_pool
        self.concurrency = concurrency or conf.worker_concurrency or 1
        multiplier = conf.worker_prefetch_multiplier if prefetch_multiplier is None \
            else prefetch_multiplier
        if multiplier is not None and multiplier < 0:
            from ..exceptions import ConfigurationError

            raise ConfigurationError(
                f"worker_prefetch_multiplier must be 0 or more, not {multiplier}")
        #: None: the window adapts to the tasks' durations (prefetch.py)
        self.prefetch_multiplier = multiplier
        self.window = PrefetchWindow(self.concurrency, multiplier)
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
        #: ``-B``: this process (never a prefork child) also runs the beat
        self.embed_beat = beat and observer is None
        #: ``-E``: task events on from the start (else ``worker_send_task_events``)
        self.send_events = conf.worker_send_task_events if send_events is None \
            else bool(send_events)
        #: ``--metrics-port``: where this process serves /metrics (never a prefork child,
        #: which only counts, with ``collect_metrics``, for its parent to serve)
        self.metrics_port = None if observer is not None else \
            metrics_port or conf.worker_metrics_port
        self.metrics_host = metrics_host or conf.worker_metrics_host
        self.metrics: TaskStats | None = None
        self._metrics_server: MetricsServer | None = None
        self._beat: Any = None
        if self.embed_beat:  # -B: a bad beat_scheduler stops the worker before it starts
            from ..beat import scheduler_sources

            self._beat_sources = scheduler_sources(app)
        self.started_at = time.time()
        self._signals = 0
        #: ``memsample`` readings, for ``memdump``
        self.memory_samples: list[str] = []
        #: why this process restarts in place once stopped (SIGHUP, a recycling limit)
        self._restart: str | None = None
        pool_cls = pool_class(self.pool_name)
        # a broker or result backend whose extra is missing stops the worker here, naming
        # the extra, not at its first connection or first result
        broker_class(app.broker_url)
        if app.backend_url:
            backend_class(app.backend_url)
        self.supervises_processes = bool(getattr(pool_cls, "supervises_processes", False))
        #: the process that answers for the whole worker (not a prefork child) sends the
        #: worker signals; a prefork child sends only worker_process_*
        self.is_main = observer is None
        if self.is_main:
            signals.celeryd_init.send(sender=self.hostname, instance=self, conf=conf,
                                      options={"queues": self.queues, "pool": self.pool_name,
                                               "concurrency": self.concurrency})
        if self.supervises_processes:
            self._init_process_pool(pool_cls, concurrency)
            return
        if self.pool_name == "solo" and self.concurrency != 1:
            from ..exceptions import ConfigurationError

            raise ConfigurationError(
                f"-P solo runs one task at a time; -c {self.concurrency} needs another pool")
        self._import_modules()
        self.executor = Executor(app, self.hostname)
        self.meter: TaskMeter | None = None
        if self.max_tasks_per_child or self.max_memory_per_child or observer is not None:
            # before the pool exists, so that every pool runs jobs through the meter
            self.meter = TaskMeter(self.executor, max_tasks=self.max_tasks_per_child,
                                   max_memory_kib=self.max_memory_per_child,
                                   on_limit=self._on_recycle_limit, observer=observer)
        self.pool = pool_cls(self.executor, self.concurrency)
        self.broker = app.broker
        # a queue bound to an exchange the broker lacks stops the worker here, naming it
        self.queues = self.broker.prepare_consume(self.queue_entities)
        self.consumer = consumer_module.Consumer(
            app, self.broker, self.executor, self.pool, self.queues, self.window,
            ack_batch_size=conf.worker_ack_batch_size, ack_interval=conf.worker_ack_interval,
            hostname=self.hostname)
        self._health_stop = threading.Event()
        # Celery's events (Flower): a thread and broker connection of their own; events.py
        self.events: WorkerEvents | None = None
        if self.send_events and "events" not in self.broker.capabilities and self.is_main:
            logger.warning("%s: task events are off: %s cannot carry Celery's events (Flower "
                           "needs RabbitMQ or Redis)", self.hostname, type(self.broker).__name__)
        if "events" in self.broker.capabilities and (conf.worker_heartbeat or self.send_events):
            self.events = WorkerEvents(self.broker, self.hostname, self.load,
                                       task_events=self.send_events,
                                       heartbeat=conf.worker_heartbeat,
                                       executor=self.executor)
        if self.metrics_port or collect_metrics:
            self.metrics = TaskStats(self)
        # remote control (revoke, inspect): its own thread and broker connection; control.py
        self.control: ControlListener | None = None
        if conf.worker_enable_remote_control:
            self.control = ControlListener(
                self.broker, self.hostname, self.executor.revoked,
                node=node_name(self.hostname, in_prefork_child=observer is not None),
                worker=self, state_db=conf.worker_state_db)

    def _init_process_pool(self, pool_cls: type, concurrency: int | None) -> None:
        """A pool of child processes, each a whole solo worker with its own broker
        connection and consumer loop; this process only supervises them."""
        conf = self.app.conf
        self._import_modules()  # before fork, so every child inherits the tasks
        self.concurrency = concurrency or conf.worker_concurrency or os.cpu_count() or 1
        if self.autoscale:
            self.concurrency = self.autoscale[0]
        self.window = PrefetchWindow(1, self.prefetch_multiplier)  # each child's own
        self.executor = self.consumer = self.broker = self.meter = None  # type: ignore[assignment]
        self.pool = pool_cls(None, self.concurrency)

    def _import_modules(self) -> None:
        conf = self.app.conf
        if self.is_main:
            signals.import_modules.send(sender=self.app)
        for module in (*conf.imports, *conf.include):
            __import__(module)
        if self.is_main:
            signals.worker_init.send(sender=self)

    @property
    def prefetch(self) -> int:
        """The messages this process holds at most now (per child under prefork)."""
        return self.window.limit

    def banner(self) -> str:
        backend = self.app.backend_url
        prefetch = "adaptive" if self.window.adaptive else str(self.window.limit)
        if self.supervises_processes:
            size = (f"children={self.autoscale[1]}..{self.autoscale[0]} (autoscale)"
                    if self.autoscale else f"children={self.concurrency}")
            per_child = "" if self.window.adaptive else "/child"
            pool = (f"pool=prefork {size} start_method={self.start_method} "
                    f"prefetch={prefetch}{per_child}")
        else:
            pool = (f"pool={self.pool_name} concurrency={self.concurrency} "
                    f"prefetch={prefetch}")
        recycle = "".join(
            f" {name}={value}" for name, value in (
                ("max_tasks_per_child", self.max_tasks_per_child),
                ("max_memory_per_child", self.max_memory_per_child)) if value)
        parts = [f"consumer: {consumer_module.STATUS.describe()}"]
        driver = self._amqp_driver()
        if driver is not None:
            parts.append(f"AMQP driver: {driver}")
        return (f"fastq worker {self.hostname} ready: broker={mask_url(self.app.broker_url)} "
                f"backend={mask_url(backend) if backend else 'none'} {pool}{recycle} "
                f"queues={','.join(self.queues)} tasks={len(self.app.tasks)}; "
                f"{'; '.join(parts)}")

    def log_banner(self) -> None:
        """Log the banner (INFO), and once, loudly, a RabbitMQ worker's missing speedups."""
        banner_logger.info("%s", self.banner())
        missing = self._missing_speedups()
        if missing:
            states = [_speedups.status(name) for name in missing]
            fixes = list(dict.fromkeys(s.fix for s in states if s.fix))
            logger.warning(
                "%s: %s %s not in use (%s), so this worker runs 3-4x slower on RabbitMQ; "
                "fix: %s", self.hostname, " and ".join(_speedups.MODULES[n] for n in missing),
                "is" if len(missing) == 1 else "are",
                "; ".join(dict.fromkeys(s.reason for s in states)), "; ".join(fixes))

    def _on_rabbitmq(self) -> bool:
        target = BROKER_SCHEMES.get(scheme_of(self.app.broker_url), "")
        return target.startswith("fastq.brokers.amqp:")

    def _amqp_driver(self) -> str | None:
        """The AMQP driver this worker's broker uses, with its version; None off RabbitMQ."""
        if not self._on_rabbitmq():
            return None
        # a prefork parent has no broker of its own: creating one here connects nothing
        name = getattr(self.broker or self.app.broker, "driver_name", None)
        if name == "rabbitmq-c":
            return f"rabbitmq-c {_speedups.rabbitmq_c_version()}"
        version = getattr(sys.modules.get("amqp"), "__version__", "")
        compiled = _speedups.status("_amqp")
        # the fix, when there is one, is in the consumer's part or the warning
        why = "" if compiled.available else f" (rabbitmq-c: {compiled.reason})"
        return f"{name} {version}".strip() + why

    def _missing_speedups(self) -> list[str]:
        """The compiled modules a RabbitMQ worker lacks for a reason that needs fixing
        (not FASTQ_NO_SPEEDUPS=1, not a URL that asks for py-amqp)."""
        if not self._on_rabbitmq():
            return []
        missing = []
        for name in _speedups.MODULES:
            state = consumer_module.STATUS if name == "_consumer" else _speedups.status(name)
            if not state.available and not state.forced_off:
                missing.append(name)
        return missing

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
            logger.info("%s: warm shutdown (%s): finishing the running task%s",
                           self.hostname, signal.Signals(signum).name, again)
            if self.is_main:
                signals.worker_shutting_down.send(sender=self.hostname,
                                                  sig=signal.Signals(signum).name,
                                                  how="Warm", exitcode=0)
            self._restart = None
            self.consumer.stop()
        else:
            self._on_cold_signal(signum, frame)

    def _on_cold_signal(self, signum: int, frame: Any) -> None:
        logger.warning("%s: cold shutdown (%s): the running task is interrupted and requeued",
                       self.hostname, signal.Signals(signum).name)
        first_cold = self._signals < 2
        self._signals = max(self._signals, 2)
        self._restart = None
        self.consumer.stop(cold=True)
        if self.is_main and first_cold:
            signals.worker_shutting_down.send(sender=self.hostname,
                                              sig=signal.Signals(signum).name,
                                              how="Cold", exitcode=0)
        raise WorkerShutdown(signum)

    def _on_restart_signal(self, signum: int, frame: Any) -> None:
        self.restart("SIGHUP")

    def restart(self, why: str) -> None:
        """Finish the running tasks, then start afresh in this process (SIGHUP, and the
        ``pool_restart`` command of a pool without child processes)."""
        if self._signals:
            return  # already shutting down: that wins
        logger.info("%s: restart (%s): finishing the running task, then starting "
                    "afresh in this process (same pid)", self.hostname, why)
        self._restart = why
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

    def started_at_of(self, task_id: str) -> float | None:
        """The unix time the running task ``task_id`` started, when task events are on
        (they note it); None otherwise (``inspect active``'s ``time_start``)."""
        events = self.events
        return events.started_at.get(task_id) if events is not None else None

    def load(self) -> tuple[int, int]:
        """(tasks running now, tasks handled so far): what a heartbeat reports."""
        counters = self.consumer.counters
        return (len(self.pool.running_requests()),
                counters["acked"] + counters["dead_lettered"] + counters["requeued"])

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
            # 0600: the file names the broker and the queues; it is for this user's tools
            with os.fdopen(os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600),
                           "wb") as fh:
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
            if self.is_main:
                signals.celeryd_after_setup.send(sender=self.hostname, instance=self,
                                                 conf=self.app.conf)
            try:
                return self.pool.supervise(self)
            finally:
                signals.worker_shutdown.send(sender=self)
        self.install_signal_handlers()
        if self.metrics is not None:
            # first: a port in use stops the worker before it has told anyone it is up
            if self.metrics_port:
                self.start_metrics_server(self.metrics.snapshot)
            self.metrics.connect()
        self.pool.start()
        # a process that runs tasks itself: Celery's solo pool and prefork children
        runs_tasks = self.pool_name == "solo" or not self.is_main
        if runs_tasks:
            signals.worker_process_init.send(sender=self.hostname)
        if self.is_main:
            signals.celeryd_after_setup.send(sender=self.hostname, instance=self,
                                             conf=self.app.conf)
            self.log_banner()
        self.write_health()
        # before the health file first says "consuming": a message routed to this
        # worker's queues from then on is kept (a Broadcast queue exists once declared)
        self.broker.declare_consumed(self.queues)
        health = None
        self.consumer.on_consuming = self._on_consuming
        if self.health_file:
            health = threading.Thread(target=self._health_loop, name="fastq-health",
                                      daemon=True)
            health.start()
        if self.control is not None:
            self.control.start()  # before consuming: revokes the broker kept apply at once
        if self.events is not None:
            self.events.start()
        self.start_beat()
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
            self.stop_beat()
            self.stop_metrics_server()
            if self.control is not None:
                self.control.stop()
            self.pool.stop(cold=bool(self._signals > 1))
            if self.events is not None:
                # after the pool: the last tasks' events go out too; a prefork child that
                # is being replaced does not say the worker went offline
                self.events.stop(offline=self.observer is None or self._restart is None)
            self.remove_health()
            self.app.close()
            c = self.consumer.counters
            logger.info("%s stopped: %d received, %d acked, %d released, %d requeued, "
                        "%d dead-lettered", self.hostname, c["received"], c["acked"],
                        c["released"], c["requeued"], c["dead_lettered"])
            if runs_tasks:
                signals.worker_process_shutdown.send(sender=self.hostname, pid=os.getpid(),
                                                     exitcode=code)
            if self.is_main:
                signals.worker_shutdown.send(sender=self)
        if code == 0 and self._restart is not None:
            if self.observer is not None:
                return EXIT_RECYCLE
            restart_in_place()
        return code

    def start_metrics_server(self, read: Any) -> None:
        """With ``--metrics-port``: /metrics in a thread of this process, from ``read()``
        (this process's numbers, or a prefork parent's sum of its children's)."""
        from ..exceptions import ConfigurationError

        server = MetricsServer(read, self.hostname, int(self.metrics_port or 0),
                               self.metrics_host)
        try:
            server.start()
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {self.metrics_host}:{self.metrics_port}: {exc}; "
                f"choose another --metrics-port") from exc
        self._metrics_server = server

    def stop_metrics_server(self) -> None:
        server, self._metrics_server = self._metrics_server, None
        if server is not None:
            server.stop()
        if self.metrics is not None:
            self.metrics.disconnect()

    def start_beat(self) -> None:
        """With ``-B``: the beat in a thread of this process (a prefork parent's, never a
        child's)."""
        if self.embed_beat and self._beat is None:
            from ..beat import run_embedded

            self._beat = run_embedded(self.app, sources=self._beat_sources)

    def stop_beat(self) -> None:
        if self._beat is not None:
            thread, stop = self._beat
            stop.set()
            thread.join(timeout=10)
            self._beat = None

    def _on_consuming(self) -> None:
        """The consumer loop has started: the health file, and ``worker_ready``."""
        if self.health_file:
            self.write_health()
        if self.is_main:
            signals.worker_ready.send(sender=self.consumer)


def restart_in_place() -> None:
    """Replace this process with a fresh run of its own command line (same pid)."""
    argv = [sys.executable, *sys.orig_argv[1:]]
    logging.shutdown()  # flush what is logged before the image goes
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


#: A worker's log line (Celery's ``worker_log_format``).
LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


def setup_logging(level: str | int = "WARNING") -> None:
    """Log to stderr with one line per record, as a worker process should; records of
    task loggers (``get_task_logger``) name their task: ``task_name[task_id]: ...``.

    A ``setup_logging`` receiver takes the whole set-up over, as in Celery.
    """
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            from ..exceptions import ConfigurationError

            raise ConfigurationError("log level must be one of debug, info, warning, error")
    options = {"loglevel": level, "logfile": None, "colorize": False}
    if signals.setup_logging.send(sender=None, format=LOG_FORMAT, **options):
        return
    logging.basicConfig(level=level, stream=sys.stderr, format=LOG_FORMAT)
    signals.after_setup_logger.send(sender=None, logger=logging.getLogger(),
                                    format=LOG_FORMAT, **options)
    task_logger = logging.getLogger(TASK_LOGGER_NAME)
    if not task_logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(TaskFormatter(TASK_LOG_FORMAT))
        task_logger.addHandler(handler)
        task_logger.propagate = False
    signals.after_setup_task_logger.send(sender=None, logger=task_logger,
                                         format=TASK_LOG_FORMAT, **options)
