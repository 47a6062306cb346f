"""The worker process: startup banner, signals, warm and cold shutdown, the health file."""

from __future__ import annotations

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
from .executor import Executor
from .pools import pool_class

if TYPE_CHECKING:
    from ..app import App

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
    interrupted and requeued).
    """

    def __init__(self, app: App, *, queues: list[str] | None = None, pool: str | None = None,
                 concurrency: int | None = None, prefetch_multiplier: int | None = None,
                 hostname: str | None = None, health_file: str | None = None) -> None:
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
        # 0 disables prefetch: a message is taken only when a slot is free to run it
        self.prefetch = max(1, multiplier) * self.concurrency
        self.hostname = hostname or f"fastq@{socket.gethostname()}"
        self.health_file = health_file or os.path.join(
            conf.worker_state_dir, f"{self.hostname.replace('/', '_')}.{os.getpid()}.json")
        pool_cls = pool_class(self.pool_name)
        if self.pool_name == "solo" and self.concurrency != 1:
            from ..exceptions import ConfigurationError

            raise ConfigurationError(
                f"-P solo runs one task at a time; -c {self.concurrency} needs another pool")
        for module in (*conf.imports, *conf.include):
            __import__(module)
        self.executor = Executor(app, self.hostname)
        self.pool = pool_cls(self.executor, self.concurrency)
        self.broker = app.broker
        self.consumer = consumer_module.Consumer(
            app, self.broker, self.executor, self.pool, self.queues, self.prefetch,
            ack_batch_size=conf.worker_ack_batch_size, ack_interval=conf.worker_ack_interval,
            hostname=self.hostname)
        self.started_at = time.time()
        self._signals = 0
        self._health_stop = threading.Event()

    def banner(self) -> str:
        backend = self.app.backend_url
        speed = ("accelerated (compiled consumer)" if consumer_module.IMPLEMENTATION == "c"
                 else f"pure Python ({consumer_module.REASON})")
        return (f"fastq worker {self.hostname} ready: broker={mask_url(self.app.broker_url)} "
                f"backend={mask_url(backend) if backend else 'none'} pool={self.pool_name} "
                f"concurrency={self.concurrency} prefetch={self.prefetch} "
                f"queues={','.join(self.queues)} tasks={len(self.app.tasks)} speedups={speed}")

    # -- signals ---------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGQUIT, self._on_cold_signal)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.warning("%s: warm shutdown (%s): finishing the running task; "
                           "send it again for a cold shutdown", self.hostname,
                           signal.Signals(signum).name)
            self.consumer.stop()
        else:
            self._on_cold_signal(signum, frame)

    def _on_cold_signal(self, signum: int, frame: Any) -> None:
        logger.warning("%s: cold shutdown (%s): the running task is interrupted and requeued",
                       self.hostname, signal.Signals(signum).name)
        self.consumer.stop(cold=True)
        raise WorkerShutdown(signum)

    # -- health ----------------------------------------------------------------------
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

    def write_health(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.health_file) or ".", exist_ok=True)
            tmp = f"{self.health_file}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(orjson.dumps(self.health()))
            os.replace(tmp, self.health_file)
        except OSError as exc:
            logger.warning("could not write the health file %s: %s", self.health_file, exc)

    def _health_loop(self) -> None:
        while not self._health_stop.wait(HEALTH_INTERVAL):
            self.write_health()

    # -- run -------------------------------------------------------------------------
    def run(self) -> int:
        """Consume until stopped; return the process exit code."""
        self.install_signal_handlers()
        self.pool.start()
        logger.warning("%s", self.banner())
        self.write_health()
        self.consumer.on_consuming = self.write_health
        health = threading.Thread(target=self._health_loop, name="fastq-health", daemon=True)
        health.start()
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
            self.pool.stop(cold=bool(self._signals > 1))
            try:
                os.unlink(self.health_file)
            except OSError:
                pass
            self.app.close()
            c = self.consumer.counters
            logger.warning("%s stopped: %d received, %d acked, %d released, %d requeued, "
                           "%d dead-lettered", self.hostname, c["received"], c["acked"],
                           c["released"], c["requeued"], c["dead_lettered"])
        return code


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
