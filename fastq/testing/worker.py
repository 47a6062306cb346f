"""A real worker in a thread of the test process, for any test runner: ``start_worker(app)`` and ``isolated_app()``.

The thread runs the same consumer loop, executor and pool as ``fastq worker``; only
what a process owns is left out (signal handlers, the health file, remote control,
events, the beat), so it can start and stop inside one test.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..app import App
from ..worker import consumer as consumer_module
from ..worker.executor import Executor
from ..worker.pools import pool_class

#: Seconds ``start_worker`` waits for the loop to consume, and for it to stop.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class ThreadWorker:
    """The worker ``start_worker`` runs: ``app``, ``hostname``, ``queues`` and the
    ``consumer``'s counters (received, acked, ...) for assertions."""

    def __init__(self, app: App, *, pool: str = "solo", concurrency: int = 1,
                 queues: Iterable[str] | None = None, hostname: str | None = None,
                 prefetch_multiplier: int = 1) -> None:
        self.app = app
        self.hostname = hostname or f"fastq-test-{uuid.uuid4().hex[:8]}@localhost"
        for module in (*app.conf.imports, *app.conf.include):
            importlib.import_module(module)
        self.executor = Executor(app, self.hostname)
        self.pool = pool_class(pool)(self.executor, concurrency)
        broker = app.broker
        self.queues = broker.prepare_consume(app.queues.consumed(
            list(queues) if queues is not None else None))
        self.consumer = consumer_module.Consumer(
            app, broker, self.executor, self.pool, self.queues,
            max(1, prefetch_multiplier) * concurrency,
            ack_batch_size=app.conf.worker_ack_batch_size,
            ack_interval=app.conf.worker_ack_interval, hostname=self.hostname)
        self._consuming = threading.Event()
        self.consumer.on_consuming = self._consuming.set
        self._thread = threading.Thread(target=self._run, name=f"fastq-worker-{self.hostname}",
                                        daemon=True)
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.consumer.run()
        except BaseException as exc:  # reported by stop(), in the test's own thread
            self._error = exc
            self._consuming.set()

    def start(self) -> ThreadWorker:
        self.pool.start()
        self.app.broker.declare_consumed(self.queues)
        self._thread.start()
        if not self._consuming.wait(START_TIMEOUT) or self._error is not None:
            self.stop()
            raise RuntimeError(f"the test worker {self.hostname} did not start consuming "
                               f"within {START_TIMEOUT}s")
        return self

    def stop(self) -> None:
        """Stop consuming (a running task finishes first) and stop the pool.

        Raises:
            RuntimeError: the loop did not stop in time, or failed while running.
        """
        self.consumer.stop()
        self._thread.join(STOP_TIMEOUT)
        self.pool.stop()
        if self._thread.is_alive():
            raise RuntimeError(f"the test worker {self.hostname} did not stop within "
                               f"{STOP_TIMEOUT}s")
        if self._error is not None:
            raise RuntimeError(f"the test worker {self.hostname} failed: "
                               f"{self._error!r}") from self._error


@contextlib.contextmanager
def start_worker(app: App, pool: str = "solo", concurrency: int = 1,
                 queues: Iterable[str] | None = None, **options: Any) -> Iterator[ThreadWorker]:
    """Run a worker for ``app`` in a thread while the block runs (Celery's
    ``celery.contrib.testing.worker.start_worker`` shape).

    ``pool`` is an in-process pool (``solo``, ``threads``, ``asyncio``); ``queues``
    defaults to the App's own; ``options`` go to ``ThreadWorker`` (``hostname``,
    ``prefetch_multiplier``). The worker is consuming when the block starts.
    """
    worker = ThreadWorker(app, pool=pool, concurrency=concurrency, queues=queues, **options)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@contextlib.contextmanager
def isolated_app(config: Mapping[str, Any] | None = None, includes: Iterable[str] = (),
                **parameters: Any) -> Iterator[App]:
    """An App on a private in-memory broker and result store (unless ``config`` names
    others), ``includes`` imported; closed afterwards. ``parameters`` go to ``App()``."""
    store = f"memory://fastq-test-{uuid.uuid4().hex}"
    settings = {"broker_url": store, "result_backend": store, **(config or {})}
    app = App(parameters.pop("main", "fastq-test"), **parameters)
    app.conf.update(settings)
    app.conf.include = (*app.conf.include, *includes)
    for module in includes:
        importlib.import_module(module)
    try:
        yield app
    finally:
        app.close()


__all__ = ["ThreadWorker", "start_worker", "isolated_app"]
