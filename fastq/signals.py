"""Celery's signals under the same names (``from fastq.signals import task_success``), and
the ``Signal`` they are made of: receivers connected with ``connect``, called by ``send``.

Where each fires, and with which arguments, follows Celery 5: the task signals in
``fastq/execution.py`` (the one path a task runs through, in a worker and in eager mode),
the publish signals in the producer (``App.publish_many``), the receipt signals in the
consumer loop, the worker signals in ``fastq/worker/supervisor.py`` and the prefork child.

Nothing is paid for a signal nobody listens to: ``receivers`` is one list, only ever
changed in place, so a hot path binds it once and tests it (``if receivers:``) before
building any argument.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable
from typing import Any

logger = logging.getLogger("fastq.signals")

_Receiver = Callable[..., Any]


def _identity(obj: Any) -> Hashable:
    """What tells receivers and senders apart: a string by its value (worker signals send
    the hostname, publish signals the task name), a bound method by its object and
    function, anything else by identity."""
    if isinstance(obj, (str, bytes)):
        return obj
    func = getattr(obj, "__func__", None)
    if func is not None:
        return (id(getattr(obj, "__self__", None)), id(func))
    return id(obj)


_ANY_SENDER = _identity(None)


def _accepts_keywords(receiver: _Receiver) -> bool:
    try:
        parameters = inspect.signature(receiver).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: take it on trust
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class Signal:
    """A named event that receivers subscribe to (Celery's ``Signal``).

    Parameters:
        name: the signal's name, shown in logs and ``repr``.
        providing_args: the keyword arguments ``send`` passes (documentation only).
    """

    def __init__(self, name: str | None = None, providing_args: Iterable[str] | None = None,
                 use_caching: bool = False) -> None:
        self.name = name
        self.providing_args = frozenset(providing_args or ())
        #: ``[(key, receiver or weak reference)]``; changed only in place, so that hot
        #: paths may bind it once and test it for emptiness at no cost
        self.receivers: list[tuple[Hashable, Any]] = []
        self._lock = threading.Lock()
        self._has_dead = False

    # -- connecting ------------------------------------------------------------------
    def connect(self, *args: Any, sender: Any = None, weak: bool = True,
                dispatch_uid: Hashable | None = None) -> Any:
        """Subscribe a receiver: ``signal.connect(fn)``, ``@signal.connect`` or
        ``@signal.connect(sender=..., weak=..., dispatch_uid=...)``.

        The receiver is called as ``receiver(signal=..., sender=..., **arguments)`` and
        must accept ``**kwargs``. ``sender`` limits it to one sender (a string sender is
        matched by value). ``weak`` (default) holds it by weak reference, so a receiver
        nobody else holds goes away by itself; pass ``weak=False`` for a lambda or a
        closure. With ``dispatch_uid`` a second connection under the same id is ignored.

        Returns:
            The receiver (so that the decorator leaves the function as it was), or the
            decorator when called without one.
        Raises:
            ValueError: the receiver does not accept keyword arguments.
        """
        if args and callable(args[0]):
            if len(args) > 1:
                raise TypeError("connect(receiver, *, sender=None, weak=True, dispatch_uid=None)")
            return self._connect(args[0], sender, weak, dispatch_uid)
        if args:  # Celery's positional form: connect(sender, weak, dispatch_uid)
            names = ("sender", "weak", "dispatch_uid")
            given = dict(zip(names, args))
            sender = given.get("sender", sender)
            weak = given.get("weak", weak)
            dispatch_uid = given.get("dispatch_uid", dispatch_uid)

        def decorator(receiver: _Receiver) -> _Receiver:
            return self._connect(receiver, sender, weak, dispatch_uid)

        return decorator

    def _connect(self, receiver: _Receiver, sender: Any, weak: bool,
                 dispatch_uid: Hashable | None) -> _Receiver:
        if not callable(receiver):
            raise TypeError(f"a signal receiver must be callable, not {receiver!r}")
        if not _accepts_keywords(receiver):
            raise ValueError(f"signal receiver {receiver!r} must accept keyword arguments "
                             "(def receiver(sender=None, **kwargs))")
        key = self._key(receiver, sender, dispatch_uid)
        held: Any = receiver
        if weak:
            owner = getattr(receiver, "__self__", None)
            if owner is not None and hasattr(receiver, "__func__"):
                held = weakref.WeakMethod(receiver)
            else:
                owner = receiver
                held = weakref.ref(receiver)
            weakref.finalize(owner, self._mark_dead)
        with self._lock:
            self._clear_dead()
            if all(existing != key for existing, _ in self.receivers):
                self.receivers.append((key, held))
        return receiver

    def disconnect(self, receiver: _Receiver | None = None, sender: Any = None,
                   dispatch_uid: Hashable | None = None) -> bool:
        """Unsubscribe ``receiver`` (or the one connected under ``dispatch_uid``) for
        ``sender``; True when it was connected."""
        key = self._key(receiver, sender, dispatch_uid)
        with self._lock:
            self._clear_dead()
            for index, (existing, _) in enumerate(self.receivers):
                if existing == key:
                    del self.receivers[index]
                    return True
        return False

    @staticmethod
    def _key(receiver: Any, sender: Any, dispatch_uid: Hashable | None) -> tuple:
        return (dispatch_uid if dispatch_uid else _identity(receiver), _identity(sender))

    def _mark_dead(self) -> None:
        # Called by the garbage collector, perhaps while the lock is held: only note it.
        self._has_dead = True

    def _clear_dead(self) -> None:
        if self._has_dead:
            self._has_dead = False
            self.receivers[:] = [(key, held) for key, held in self.receivers
                                 if not (isinstance(held, weakref.ref) and held() is None)]

    # -- sending ---------------------------------------------------------------------
    def has_listeners(self, sender: Any = None) -> bool:
        return bool(self._live(sender))

    def _live(self, sender: Any) -> list[_Receiver]:
        wanted = _identity(sender)
        live = []
        with self._lock:
            self._clear_dead()
            entries = list(self.receivers)
        for (_, sender_key), held in entries:
            if sender_key != _ANY_SENDER and sender_key != wanted:
                continue
            if isinstance(held, weakref.ref):
                held = held()
                if held is None:
                    continue
            live.append(held)
        return live

    def send(self, sender: Any, **named: Any) -> list[tuple[_Receiver, Any]]:
        """Call every receiver connected for ``sender`` (or for any sender).

        A receiver that raises is logged with its traceback and its exception becomes
        its response: it never reaches the sender, so a faulty receiver cannot fail a
        task or a publish.

        Returns:
            ``[(receiver, response), ...]`` in the order they were connected.
        """
        if not self.receivers:
            return []
        responses = []
        for receiver in self._live(sender):
            try:
                response = receiver(signal=self, sender=sender, **named)
            except Exception as exc:
                logger.exception("signal %s: receiver %r raised %r", self.name, receiver, exc)
                responses.append((receiver, exc))
            else:
                responses.append((receiver, response))
        return responses

    send_robust = send  # Django's name; Celery's send already catches

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"


# -- tasks: the caller ------------------------------------------------------------------
#: Before a task message is published; ``sender`` is the task name. Receivers may change
#: ``headers`` in place.
before_task_publish = Signal("before_task_publish", {
    "body", "exchange", "routing_key", "headers", "properties", "declare", "retry_policy"})
#: After a task message is published; ``sender`` is the task name.
after_task_publish = Signal("after_task_publish", {"body", "exchange", "routing_key"})

# -- tasks: the worker (and eager mode, for those that run there) -----------------------
#: A worker took a task message and will run it; ``sender`` is the consumer.
task_received = Signal("task_received", {"request"})
#: Just before the body runs; ``sender`` is the task.
task_prerun = Signal("task_prerun", {"task_id", "task", "args", "kwargs"})
#: After the task ended, whatever its outcome; ``sender`` is the task.
task_postrun = Signal("task_postrun", {"task_id", "task", "args", "kwargs", "retval", "state"})
#: The task succeeded; ``sender`` is the task.
task_success = Signal("task_success", {"result", "runtime"})
#: The task will be retried; ``sender`` is the task.
task_retry = Signal("task_retry", {"request", "reason", "einfo"})
#: The task failed; ``sender`` is the task.
task_failure = Signal("task_failure", {
    "task_id", "exception", "args", "kwargs", "traceback", "einfo"})
#: fastq's own code failed around the task (not the task's body); ``sender`` is the task.
task_internal_error = Signal("task_internal_error", {
    "task_id", "args", "kwargs", "request", "exception", "traceback", "einfo"})
#: A revoked or expired task was not run; ``sender`` is the task.
task_revoked = Signal("task_revoked", {"request", "terminated", "signum", "expired"})
#: A message that is not a valid task was dead-lettered; ``sender`` is the consumer.
task_rejected = Signal("task_rejected", {"message", "exc"})
#: A message named a task this worker does not know; ``sender`` is the consumer.
task_unknown = Signal("task_unknown", {"message", "exc", "name", "id"})

# -- the worker program -----------------------------------------------------------------
#: The worker is being set up; ``sender`` is its hostname.
celeryd_init = Signal("celeryd_init", {"instance", "conf", "options"})
#: The worker is set up, about to consume; ``sender`` is its hostname.
celeryd_after_setup = Signal("celeryd_after_setup", {"instance", "conf"})
#: The modules of ``imports``/``include`` were imported; ``sender`` is the App.
import_modules = Signal("import_modules")
#: The worker starts; ``sender`` is the Worker.
worker_init = Signal("worker_init")
#: A process that runs tasks starts (a prefork child, or the solo worker itself);
#: ``sender`` is the hostname.
worker_process_init = Signal("worker_process_init")
#: That process ends; ``sender`` is the hostname, with ``pid`` and ``exitcode``.
worker_process_shutdown = Signal("worker_process_shutdown", {"pid", "exitcode"})
#: The worker consumes; ``sender`` is its consumer (the Worker for prefork).
worker_ready = Signal("worker_ready")
#: A shutdown was asked for; ``sender`` is the hostname, with ``sig``, ``how``
#: (``"Warm"``/``"Cold"``) and ``exitcode``.
worker_shutting_down = Signal("worker_shutting_down", {"sig", "how", "exitcode"})
#: The worker stopped; ``sender`` is the Worker.
worker_shutdown = Signal("worker_shutdown")
#: A worker event is about to go out: worker-online, each worker-heartbeat and
#: worker-offline; ``sender`` is the worker's ``WorkerEvents`` (Celery's: its ``Heart``).
heartbeat_sent = Signal("heartbeat_sent")

# -- logging ----------------------------------------------------------------------------
#: Before the worker configures logging; a receiver that answers takes it over.
setup_logging = Signal("setup_logging", {"loglevel", "logfile", "format", "colorize"})
#: After the root logger is configured.
after_setup_logger = Signal("after_setup_logger", {
    "logger", "loglevel", "logfile", "format", "colorize"})
#: After the task logger (``fastq.task``) is configured.
after_setup_task_logger = Signal("after_setup_task_logger", {
    "logger", "loglevel", "logfile", "format", "colorize"})

# -- beat -------------------------------------------------------------------------------
#: Beat starts (``sender`` is the beat service).
beat_init = Signal("beat_init")
#: Beat starts inside a worker (``-B``).
beat_embedded_init = Signal("beat_embedded_init")

__all__ = [
    "Signal", "before_task_publish", "after_task_publish", "task_received", "task_prerun",
    "task_postrun", "task_success", "task_retry", "task_failure", "task_internal_error",
    "task_revoked", "task_rejected", "task_unknown", "celeryd_init", "celeryd_after_setup",
    "import_modules", "worker_init", "worker_process_init", "worker_process_shutdown",
    "worker_ready", "worker_shutting_down", "worker_shutdown", "heartbeat_sent",
    "setup_logging", "after_setup_logger", "after_setup_task_logger", "beat_init",
    "beat_embedded_init",
]
