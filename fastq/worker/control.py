"""The worker's side of remote control: a thread that hears requests and applies them.

Requests reach every worker consuming from the broker, through the broker's own mailbox
(``Broker.mailbox``; how each broker carries them is told in its module). A ``revoke``
adds ids to the worker's ``RevokedSet`` (``worker/revoked.py``), which the consumer's
hot path tests with one dict lookup; ``ping`` is answered; the other commands (inspect
``active``, ``stats``, ..., control ``rate_limit``, ``shutdown``, ...) are
``worker/commands.py``'s; an unknown one that asks for a reply gets Celery's "no such
command". The listener has its own broker connection and reconnects by itself. The
client side (``app.control``) is ``fastq/control.py``.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from ..brokers.base import Backoff
from .commands import APPLIED_BY_EACH_CHILD, COMMANDS, NO_REPLY, signal_number
from .revoked import load_state, save_state

if TYPE_CHECKING:
    from ..brokers._mailbox import Mailbox
    from ..brokers.base import Broker
    from .revoked import RevokedSet
    from .supervisor import Worker

logger = logging.getLogger("fastq.worker.control")

#: Seconds between looks at the control table (SQLite, memory), and the longest wait for
#: one request on RabbitMQ/Redis before the revoked set is pruned.
POLL_INTERVAL = 1.0
#: First and longest pause between attempts to reach an unreachable broker, in seconds.
RECONNECT_DELAYS = (0.5, 5.0)
#: Seconds between writes of the ``--statedb`` file while revokes arrive (and one at stop).
STATE_SAVE_INTERVAL = 5.0


class ControlListener:
    """Receives control requests for one worker in a thread and applies them.

    Handles ``revoke`` (adds to ``revoked``) and ``ping``, and with ``worker`` the
    commands of ``worker/commands.py``; other requests that ask for a reply get Celery's
    "no such command" error, the rest are ignored.
    """

    def __init__(self, broker: Broker, hostname: str, revoked: RevokedSet, *,
                 node: str | None = None, worker: Worker | None = None,
                 commands: dict[str, Any] | None = None,
                 state_db: str | None = None) -> None:
        self.broker = broker
        self.hostname = hostname
        #: the name this listener's queue is declared under (differs for prefork children,
        #: which share their parent's hostname)
        self.node = node or hostname
        self.revoked = revoked
        #: whose state the commands read and change; None: revoke and ping only
        self.worker = worker
        #: the commands answered, by name (a prefork parent answers from its children's
        #: reports: ``pools/prefork/answers.py``)
        self.commands = COMMANDS if commands is None else commands
        #: a prefork child applies what changes it (revokes, limits, events) and never
        #: replies: its parent answers for the whole worker, one node as in Celery
        self.quiet = worker is not None and worker.observer is not None
        #: ``--statedb``: the revoked ids are read from it at start and, unless quiet (a
        #: prefork child reads its parent's file), written to it
        self.state_db = state_db
        self._saved_updates = 0
        self._next_save = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mailbox: Mailbox | None = None

    def start(self) -> None:
        """Connect once now, so the worker consumes only after it can hear revokes (and
        knows those the broker kept), then listen in a daemon thread.

        On a broker without the ``"control"`` capability, says so once and does nothing.
        """
        if self.state_db:
            kept = load_state(self.state_db, self.revoked)
            self._saved_updates = self.revoked.updates
            if kept:
                logger.info("%s: %d revoked id(s) read from %s", self.hostname, kept,
                            self.state_db)
        if "control" not in self.broker.capabilities:
            logger.info("%s: remote control is off: %s cannot carry it (revoke needs "
                        "RabbitMQ, Redis, SQLite or memory)", self.hostname,
                        type(self.broker).__name__)
            return
        try:
            self._open()
        except Exception as exc:
            logger.warning("%s: cannot listen for remote control yet (%s); retrying in the "
                           "background", self.hostname, exc)
        self._thread = threading.Thread(target=self._run, name="fastq-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(POLL_INTERVAL + 1.0)
        self._close()
        self.save_state(force=True)

    def save_state(self, force: bool = False) -> None:
        """Write the revoked ids to the ``--statedb`` file when they changed since the
        last write (at most every STATE_SAVE_INTERVAL seconds, unless ``force``)."""
        if not self.state_db or self.quiet:
            return
        now = time.monotonic()
        if self.revoked.updates == self._saved_updates or (not force and now < self._next_save):
            return
        self._saved_updates = self.revoked.updates
        self._next_save = now + STATE_SAVE_INTERVAL
        save_state(self.state_db, self.revoked)

    def _open(self) -> None:
        self._close()
        mailbox = self.broker.mailbox(self.revoked.expires)
        try:
            kept = mailbox.open(self.node)
        except BaseException:
            mailbox.close()
            raise
        self._mailbox = mailbox
        for command, sent_at in kept:
            if command.get("method") == "revoke":
                self.handle(command, sent_at)

    def _close(self) -> None:
        mailbox, self._mailbox = self._mailbox, None
        if mailbox is not None:
            try:
                mailbox.close()
            except Exception:  # pragma: no cover - closing is best effort
                pass

    def _run(self) -> None:
        backoff = Backoff(*RECONNECT_DELAYS)
        while not self._stop.is_set():
            try:
                if self._mailbox is None:
                    self._open()
                    logger.info("%s: listening for remote control again", self.hostname)
                assert self._mailbox is not None
                for command in self._mailbox.receive(POLL_INTERVAL):
                    self.handle(command)
                self.revoked.prune()
                self.save_state()
                backoff.succeeded()
            except Exception as exc:
                if self._stop.is_set():
                    break
                delay = backoff.failed(time.monotonic())
                logger.warning("%s: remote control connection lost (%s); reconnecting in "
                               "%.1fs", self.hostname, exc, delay)
                self._close()
                self._stop.wait(delay)

    def handle(self, command: dict, sent_at: float | None = None) -> None:
        """Apply one request, if it is meant for this worker; reply when asked."""
        if not self._is_for_me(command):
            return
        method = command.get("method")
        if self.quiet and method not in APPLIED_BY_EACH_CHILD:
            return
        arguments = command.get("arguments") or {}
        try:
            if method == "revoke":
                answer = self._revoke(sent_at=sent_at, **arguments)
            elif method == "ping":
                answer = {"ok": "pong"}
            elif self.worker is not None and method in self.commands:
                answer = self.commands[method](self.worker, **arguments)
            else:
                answer = {"error": f"No such control command: {method}"}
        except Exception as exc:
            logger.warning("%s: control command %r failed: %r", self.hostname, method, exc)
            answer = {"error": repr(exc)}
        if answer is NO_REPLY or self.quiet:
            return
        if command.get("reply_to") and command.get("ticket") and self._mailbox is not None:
            try:
                self._mailbox.reply(command, {self.hostname: answer})
            except Exception as exc:
                logger.warning("%s: could not reply to %r: %s", self.hostname, method, exc)

    def _revoke(self, task_id: Any = None, terminate: bool = False, signal: Any = None,
                sent_at: float | None = None, **_ignored: Any) -> dict:
        ids = [task_id] if isinstance(task_id, str) else [i for i in task_id or () if i]
        self.revoked.update(ids, sent_at)
        logger.info("%s: tasks flagged as revoked: %s", self.hostname, ", ".join(ids))
        if terminate:
            self._terminate(ids, signal)
        return {"ok": f"tasks {', '.join(ids)} flagged as revoked"}

    def _terminate(self, ids: list[str], signal_name: Any) -> None:
        """Interrupt those of ``ids`` that run here: the pool knows how (prefork children
        and solo by a signal to their main thread, asyncio by cancelling), or says why not."""
        pool = getattr(self.worker, "pool", None)
        if pool is None:
            return
        signum = signal_number(signal_name)
        for task_id in ids:
            if pool.terminate(task_id, signum):
                logger.info("%s: task %s terminated", self.hostname, task_id)

    def _is_for_me(self, command: dict) -> bool:
        destination = command.get("destination")
        if destination:
            return self.hostname in destination
        pattern = command.get("pattern")
        if pattern:
            if command.get("matcher") == "pcre":
                return re.match(pattern, self.hostname) is not None
            return fnmatch.fnmatch(self.hostname, pattern)
        return True


def node_name(hostname: str, in_prefork_child: bool) -> str:
    """The pidbox node name a worker listens as: prefork children share their parent's
    hostname, and an exclusive queue admits one connection, so each adds its pid."""
    return f"{hostname}.{os.getpid()}" if in_prefork_child else hostname


__all__ = ["ControlListener", "node_name", "signal_number"]
