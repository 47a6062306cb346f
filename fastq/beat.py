"""The beat: sends periodic tasks when their schedules say, safe to run on every machine.

Each due run is named by its entry and its scheduled instant. Before publishing, a beat
claims the run in the store its App's beats share (``fastq._beat_store``); only the
claimant publishes, with a task id derived from the run's name, and then records the
entry's last run. A claimant that dies before saying "sent" loses its claim when the
lease (``beat_claim_lease``) runs out and another beat sends the run, with the same id.
After downtime each late entry runs once, and its next run counts from then.

With no shared store (AMQP with rpc:// or no result backend), the beats elect one
leader through an exclusive queue on the broker and only the leader sends.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import signals
from ._beat_store import BeatStore, MemoryStore, open_store
from .app import App
from .exceptions import ConfigurationError, ImproperlyInstalled
from .schedules import BaseSchedule, maybe_schedule, schedule_from_json, schedule_to_json

logger = logging.getLogger("fastq.beat")

UTC = timezone.utc

#: Task ids of beat runs: uuid5 of "<entry name>@<due, microseconds>" in this namespace.
RUN_NAMESPACE = uuid.UUID("6b0f4e62-2f1a-5a7e-9d43-2c1f0b5e7a10")

#: Message header naming the run: "<entry name>@<scheduled instant, ISO 8601 UTC>".
RUN_HEADER = "fastq_beat_run"

#: ``options`` of a beat entry handed to the message; Celery's others (exchange, ...)
#: mean nothing here and are dropped with a warning.
SEND_OPTIONS = frozenset({"queue", "priority", "expires", "headers", "countdown",
                          "time_limit", "soft_time_limit", "serializer", "compression",
                          "ignore_result", "shadow", "link", "link_error"})

#: Seconds between the leader's attempts to take the AMQP leader queue.
LEADER_RETRY = 1.0

#: The exclusive queue whose owner is the AMQP-only beat leader.
LEADER_QUEUE = "fastq.beat.leader"

#: Celery's own schedulers (``beat_scheduler``'s default is the first): fastq's beat,
#: which takes their place, with no other source of entries.
CELERY_SCHEDULERS = frozenset({"celery.beat:PersistentScheduler",
                               "celery.beat.PersistentScheduler", "celery.beat:Scheduler",
                               "celery.beat.Scheduler"})

#: The schedulers fastq has besides its own beat (``-S``, ``beat_scheduler``): name ->
#: ``"module:Class"`` of the source of entries each adds, imported when chosen (the
#: framework plug-ins sit above the beat; their names as in
#: ``fastq.contrib.django.beat.SCHEDULER_NAMES``).
SCHEDULERS = dict.fromkeys(("django", "django_celery_beat.schedulers:DatabaseScheduler",
                            "django_celery_beat.schedulers.DatabaseScheduler"),
                           "fastq.contrib.django.beat:DjangoBeatSource")

#: Seconds past ``broker_connection_timeout`` a beat keeps renewing the claims of a
#: publish under way (its last attempt may run on for its connect timeout); past them a
#: hung publish lets its claims lapse, so another beat sends the runs.
PUBLISH_HOLD_MARGIN = 10.0


@dataclass
class Entry:
    """One periodic task: Celery's ``beat_schedule`` item."""

    name: str
    task: str
    schedule: BaseSchedule
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    enabled: bool = True

    @classmethod
    def from_config(cls, name: str, item: dict[str, Any], app: App) -> Entry:
        if "task" not in item or "schedule" not in item:
            raise ConfigurationError(f"beat_schedule entry {name!r} needs 'task' and 'schedule'")
        return cls(name, item["task"], maybe_schedule(item["schedule"], app=app),
                   tuple(item.get("args") or ()), dict(item.get("kwargs") or {}),
                   dict(item.get("options") or {}), bool(item.get("enabled", True)))

    @classmethod
    def from_document(cls, name: str, doc: dict[str, Any], app: App) -> Entry:
        return cls(name, doc["task"], schedule_from_json(doc["schedule"], app=app),
                   tuple(doc.get("args") or ()), dict(doc.get("kwargs") or {}),
                   dict(doc.get("options") or {}), bool(doc.get("enabled", True)))

    def to_document(self) -> dict[str, Any]:
        return {"task": self.task, "schedule": schedule_to_json(self.schedule),
                "args": list(self.args), "kwargs": self.kwargs, "options": self.options,
                "enabled": self.enabled}


def scheduler_sources(app: App, scheduler: Any = None) -> tuple:
    """The sources of entries a beat reads besides its own, for ``scheduler`` (``fastq
    beat -S``) or, when it is None, the ``beat_scheduler`` setting: a dotted name or,
    as Celery allows, the class. ``fastq beat`` and ``fastq worker -B`` both ask here.

    Raises:
        ConfigurationError: a scheduler fastq does not have (the message names it and
            where it came from).
        ImproperlyInstalled: 'django' without django-celery-beat.
    """
    where = "-S" if scheduler is not None else "setting beat_scheduler"
    if scheduler is None:
        scheduler = app.conf.beat_scheduler
    if isinstance(scheduler, type):
        scheduler = f"{scheduler.__module__}:{scheduler.__qualname__}"
    if scheduler is None or scheduler in CELERY_SCHEDULERS:
        return ()
    target = SCHEDULERS.get(scheduler)
    if target is None:
        raise ConfigurationError(
            f"unknown scheduler {scheduler!r} ({where}); fastq has 'django' "
            f"(django-celery-beat's tables) besides its own beat")
    module_name, _, class_name = target.partition(":")
    try:
        return (getattr(importlib.import_module(module_name), class_name)(),)
    except ImportError as exc:
        raise ImproperlyInstalled(
            f"scheduler {scheduler!r} ({where}) needs django-celery-beat "
            f"(pip install django-celery-beat): {exc}") from None


def run_task_id(name: str, due: int) -> str:
    """The task id of the run of entry ``name`` scheduled at ``due`` (microseconds)."""
    return str(uuid.uuid5(RUN_NAMESPACE, f"{name}@{due}"))


def _micros(dt: datetime) -> int:
    return round(dt.timestamp() * 1_000_000)


class Beat:
    """Sends the entries of ``app`` (``beat_schedule``, ``add_periodic_task`` and the
    database source of ``fastq schedule``) when due.

    Parameters:
        app: the App.
        max_interval: longest sleep between looks (default ``beat_max_loop_interval``);
            also how soon changes to the database source are seen.
        store: the shared store (default: found from the App's URLs; None: AMQP leader).
        sources: more entries (default: those of the ``beat_scheduler`` setting, see
            ``scheduler_sources``).
    """

    def __init__(self, app: App, max_interval: float | None = None,
                 store: BeatStore | None | str = "auto", sources: tuple | None = None) -> None:
        self.app = app
        #: more entries: objects with ``entries(app) -> {name: Entry}`` and
        #: ``sent([(name, unix time)])`` (django-celery-beat's tables)
        self.sources = scheduler_sources(app) if sources is None else tuple(sources)
        conf = app.conf
        self.max_interval = float(max_interval or conf.beat_max_loop_interval)
        self.lease = float(conf.beat_claim_lease)
        self.store = open_store(app) if store == "auto" else store
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader: AmqpLeader | None = None
        if self.store is None:
            self.leader = AmqpLeader(app.broker_url, self.owner)
            state_file = os.path.join(os.path.dirname(conf.worker_state_dir.rstrip("/"))
                                      or ".", "beat-state.json")
            self.store = MemoryStore(state_file, f"this beat (leader), saved in {state_file}")
        self.entries: dict[str, Entry] = {}
        self._state: dict[str, tuple[float, int]] = {}
        self._loaded_at = 0.0
        self._dropped_warned: set[str] = set()
        #: counters: runs sent, claims lost to another beat, ticks made
        self.sent = self.lost = self.ticks = 0

    # -- entries ---------------------------------------------------------------------
    def load_entries(self) -> dict[str, Entry]:
        """The entries of the configuration and of the database source (which wins)."""
        finalize = getattr(self.app, "finalize", None)
        if finalize is not None:
            finalize()
        self.app.send_periodic_task_hooks()
        entries = {name: Entry.from_config(name, item, self.app)
                   for name, item in self.app.conf.beat_schedule.items()}
        assert self.store is not None
        for name, doc in self.store.entries().items():
            try:
                entries[name] = Entry.from_document(name, doc, self.app)
            except (KeyError, TypeError, ValueError) as exc:
                logger.error("schedule entry %r in %s is invalid (%s); skipped", name,
                             self.store.description, exc)
        for source in self.sources:
            entries.update(source.entries(self.app))
        return {name: e for name, e in entries.items() if e.enabled}

    def refresh(self, now: float) -> None:
        """Read the entries and the shared state again (at most every max_interval)."""
        assert self.store is not None
        entries = self.load_entries()
        added = entries.keys() - self.entries.keys()
        removed = self.entries.keys() - entries.keys()
        if self._loaded_at and (added or removed):
            logger.info("schedule changed: %d added, %d removed", len(added), len(removed))
        self.entries = entries
        self._state = self.store.load()
        new = {name: now for name in entries if name not in self._state}
        if new:
            # first sight of an entry: its runs count from now, the same "now" for every
            # beat (the first writer's), so all of them name its runs alike
            self.store.init(new)
            self._state = self.store.load()
        self._loaded_at = now

    # -- the loop --------------------------------------------------------------------
    def tick(self, now: float | None = None) -> float:
        """Send what is due; return the seconds until something may be due next."""
        now = time.time() if now is None else now
        self.ticks += 1
        if self.leader is not None and not self.leader.hold():
            return LEADER_RETRY
        if now - self._loaded_at >= self.max_interval or not self._loaded_at:
            self.refresh(now)
        now_dt = datetime.fromtimestamp(now, UTC)
        due: list[tuple[Entry, datetime, int]] = []
        wait = self.max_interval
        for entry in self.entries.values():
            state = self._state.get(entry.name)
            if state is None:
                continue  # appears at the next refresh
            # in the schedule's zone: a relative interval rounds to its local boundaries
            last = datetime.fromtimestamp(state[0], entry.schedule.tz)
            next_at = entry.schedule.next_run_at(last)
            if next_at <= now_dt:
                due.append((entry, next_at, _micros(next_at)))
            else:
                wait = min(wait, (next_at - now_dt).total_seconds())
        if due:
            wait = min(wait, self._send(due, now, now_dt))
        return max(wait, 0.01)

    def _send(self, due: list[tuple[Entry, datetime, int]], now: float,
              now_dt: datetime) -> float:
        assert self.store is not None
        got = self.store.claim([(e.name, d) for e, _, d in due], self.owner, self.lease)
        messages, done = [], []
        with self._claims_kept(sorted(got)):
            for entry, at, micros in due:
                if (entry.name, micros) not in got:
                    continue
                try:
                    messages.append(self._message(entry, micros))
                except Exception:
                    logger.exception("entry %r: cannot build its message; skipped",
                                     entry.name)
                    continue
                # a run sent late (after downtime) is the one catch-up: the next counts
                # from now
                late = entry.schedule.next_run_at(at) <= now_dt
                done.append((entry.name, micros, now if late else at.timestamp()))
            if messages:
                self.app.publish_many(messages)
        lost = len(due) - len(got)
        if messages:
            self.store.complete(done)
            for name, micros, last in done:
                self._state[name] = (last, micros)
                logger.info("sent %s (run %s)", name, run_task_id(name, micros))
            self.sent += len(messages)
            for source in self.sources:
                source.sent([(name, now) for name, _, _ in done])
        wait = self.max_interval
        for name, _, last in done:
            when = self.entries[name].schedule
            following = when.next_run_at(datetime.fromtimestamp(last, when.tz))
            wait = min(wait, (following - now_dt).total_seconds())
        if lost:
            # another beat has these runs (sent, or claimed under a lease): read its state
            # soon; if its lease runs out unsent, the run is claimable again
            self.lost += lost
            self._loaded_at = 0.0
            return min(self.lease / 2, 0.25, wait)
        return wait

    @contextmanager
    def _claims_kept(self, runs: list[tuple[str, int]]) -> Iterator[None]:
        """Renew the claims of ``runs`` every third of the lease until the block (building
        and publishing their messages) ends.

        A publish to an unreachable broker retries for ``broker_connection_timeout`` (4 s)
        while a claim lasts ``beat_claim_lease`` (1 s): unrenewed, the claim would lapse
        mid-publish and another beat would send the run too. Renewing, rather than cutting
        the publish short at the lease's end, because a cut cannot be exact (an attempt
        under way is not interrupted: it ends at its connect timeout), a batch cut after
        its first messages went out would be sent again whole by the next claimant, and a
        broker hiccup longer than the lease would fail every publish. The renewal holds
        while this beat lives and reaches its store, the conditions the lease stands for:
        a beat that dies mid-publish stops renewing, and its runs go to another beat one
        lease later. A publish that fails lets its claims lapse the same way (to another
        beat, or to this one at a later tick). A renewal that finds a claim taken over
        (the store was out of reach for a whole lease) is logged: the run may go twice.
        """
        if not runs:
            yield
            return
        stop = threading.Event()
        started = time.monotonic()
        hold = float(self.app.conf.broker_connection_timeout or 0) + PUBLISH_HOLD_MARGIN

        def keep(runs: list[tuple[str, int]]) -> None:
            assert self.store is not None
            while runs and not stop.wait(self.lease / 3):
                if time.monotonic() - started > hold:
                    logger.error("publish of %d beat run(s) still under way after %gs: "
                                 "their claims are left to lapse, another beat will send "
                                 "them", len(runs), hold)
                    return
                try:
                    kept = self.store.extend(runs, self.owner, self.lease)
                except Exception as exc:
                    logger.warning("cannot renew the claims of a publish under way in %s "
                                   "(%s); trying again", self.store.description, exc)
                    continue
                if len(kept) < len(runs):
                    logger.warning(
                        "claims of %s lapsed during a slow publish and were taken over: "
                        "another beat may send them too (with the same task ids)",
                        ", ".join(f"{name}@{run_task_id(name, due)}"
                                  for name, due in runs if (name, due) not in kept))
                    runs = [run for run in runs if run in kept]

        keeper = threading.Thread(target=keep, args=(runs,), name="fastq-beat-lease",
                                  daemon=True)
        keeper.start()
        try:
            yield
        finally:
            stop.set()
            keeper.join()

    def _message(self, entry: Entry, micros: int) -> Any:
        options = {}
        for key, value in entry.options.items():
            if key in SEND_OPTIONS:
                options[key] = value
            elif key == "routing_key" and "queue" not in entry.options:
                options["queue"] = value
            elif key not in self._dropped_warned:
                self._dropped_warned.add(key)
                logger.warning("beat entry option %r is not supported by fastq; ignored", key)
        # the run's name travels with it, so a task (and a test) can tell the runs apart
        due = datetime.fromtimestamp(micros / 1_000_000, UTC).isoformat()
        options["headers"] = {**(options.get("headers") or {}),
                              RUN_HEADER: f"{entry.name}@{due}"}
        return self.app.build_message(entry.task, entry.args, entry.kwargs,
                                      task_id=run_task_id(entry.name, micros), **options)

    def run(self, stop: threading.Event | None = None) -> None:
        """Tick until ``stop`` is set (forever without one)."""
        stop = stop or threading.Event()
        assert self.store is not None
        logger.info("beat %s: claims runs in %s, looks at least every %gs", self.owner,
                    self.store.description, self.max_interval)
        signals.beat_init.send(sender=self)
        try:
            while not stop.is_set():
                try:
                    wait = self.tick()
                except Exception:
                    logger.exception("beat tick failed; trying again in %gs", self.max_interval)
                    self._loaded_at = 0.0
                    wait = self.max_interval
                stop.wait(min(wait, self.max_interval))
        finally:
            self.close()

    def close(self) -> None:
        if self.leader is not None:
            self.leader.release()
        if self.store is not None:
            self.store.close()

    # -- dry run ---------------------------------------------------------------------
    def upcoming(self, until: datetime, start: datetime | None = None) -> Iterator[
            tuple[datetime, Entry]]:
        """The runs of every entry from ``start`` (now) to ``until``, in time order."""
        start = start or datetime.now(UTC)
        entries = self.load_entries()
        runs = []
        for entry in entries.values():
            last = start.astimezone(entry.schedule.tz)
            for _ in range(100_000):
                last = entry.schedule.next_run_at(last)
                if last > until:
                    break
                runs.append((last, entry))
        runs.sort(key=lambda pair: pair[0])
        return iter(runs)


class AmqpLeader:
    """Leadership among beats with no shared store: the owner of an exclusive queue on
    the broker leads; the queue (and so the lead) goes when its connection does."""

    def __init__(self, url: str, owner: str) -> None:
        self.url = url
        self.owner = owner
        self._conn: Any = None
        self._next_try = 0.0
        self.leading = False

    def hold(self) -> bool:
        """Whether this beat leads now (taking the lead when it is free)."""
        if self.leading:
            try:
                self._conn.drain_events(timeout=0)
            except TimeoutError:
                pass
            except Exception:
                logger.warning("beat lost its broker connection: no longer the leader")
                self.release()
            else:
                return True
            if self.leading:
                return True
        if time.monotonic() < self._next_try:
            return False
        self._next_try = time.monotonic() + LEADER_RETRY
        return self._try_lead()

    def _try_lead(self) -> bool:
        from urllib.parse import unquote, urlparse

        from ._extras import require

        amqp = require("amqp", "a beat on an AMQP-only setup")
        parsed = urlparse(self.url)
        try:
            if self._conn is None:
                conn = amqp.Connection(
                    host=f"{parsed.hostname or 'localhost'}:{parsed.port or 5672}",
                    userid=unquote(parsed.username or "guest"),
                    password=unquote(parsed.password or "guest"),
                    virtual_host=unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/",
                    heartbeat=0)
                conn.connect()
                self._conn = conn
            channel = self._conn.channel()
            channel.queue_declare(LEADER_QUEUE, exclusive=True, auto_delete=True,
                                  arguments={"x-fastq-owner": self.owner})
        except amqp.exceptions.ResourceLocked:
            return False  # another beat leads; the channel is closed, the connection kept
        except Exception as exc:
            logger.warning("beat cannot reach the broker to take the lead (%s)", exc)
            self.release()
            return False
        self.leading = True
        logger.info("beat %s leads (no shared store: AMQP leader queue %r); other beats "
                    "wait", self.owner, LEADER_QUEUE)
        return True

    def release(self) -> None:
        self.leading = False
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None


def run_embedded(app: App, max_interval: float | None = None,
                 sources: tuple | None = None) -> tuple[threading.Thread, threading.Event]:
    """Start a beat in a thread of this process (``fastq worker -B``); ``sources`` as
    ``Beat``'s (default: the ``beat_scheduler`` setting's)."""
    stop = threading.Event()
    beat = Beat(app, max_interval, sources=sources)
    signals.beat_embedded_init.send(sender=beat)
    thread = threading.Thread(target=beat.run, args=(stop,), name="fastq-beat", daemon=True)
    thread.start()
    return thread, stop


__all__ = ["Beat", "Entry", "AmqpLeader", "run_task_id", "run_embedded", "scheduler_sources"]
