"""Periodic tasks from django-celery-beat's tables, so the Django admin a team already
uses to edit them keeps working: ``fastq beat -A proj -S django`` (Celery's
``-S django_celery_beat.schedulers:DatabaseScheduler`` is accepted too).

Read every ``--max-interval``: each enabled ``PeriodicTask`` with its interval, crontab
(in its own zone), solar or clocked schedule, ``args``/``kwargs``/``headers`` (JSON),
``queue``, ``routing_key``, ``priority``, ``expires``/``expire_seconds``; one not
started yet (``start_time``) waits. After a run the beat writes ``last_run_at`` and
``total_run_count`` back, and disables a ``one_off`` task, as Celery's scheduler does.
Which beat sends a run is still decided by the shared store, so every machine may run one.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from ...beat import Entry
from ...schedules import BaseSchedule, crontab, schedule, solar

logger = logging.getLogger("fastq.beat")

UTC = timezone.utc

#: The ``-S`` values that name this source.
SCHEDULER_NAMES = frozenset({"django", "django_celery_beat.schedulers:DatabaseScheduler",
                             "django_celery_beat.schedulers.DatabaseScheduler"})


class clocked(BaseSchedule):  # noqa: N801 - django-celery-beat's kind of schedule
    """Once, at ``clocked_time``."""

    def __init__(self, clocked_time: datetime, app: Any = None) -> None:
        super().__init__(app=app)
        self.clocked_time = clocked_time

    def next_run_at(self, last_run_at: datetime) -> datetime:
        last = self.maybe_make_aware(last_run_at)
        if last < self.clocked_time:
            return self.clocked_time
        return datetime.max.replace(tzinfo=UTC) - timedelta(days=1)  # never again


class DjangoBeatSource:
    """The entries of django-celery-beat's ``PeriodicTask`` table."""

    def __init__(self) -> None:
        import django
        from django.apps import apps

        if not apps.ready:
            django.setup()
        from django_celery_beat.models import PeriodicTask

        self._model = PeriodicTask
        #: entry name -> the PeriodicTask's id, of the entries read last
        self._ids: dict[str, int] = {}

    def entries(self, app: Any) -> dict[str, Entry]:
        now = datetime.now(UTC)
        found: dict[str, Entry] = {}
        self._ids = {}
        rows = self._model.objects.filter(enabled=True).select_related(
            "interval", "crontab", "solar", "clocked")
        for row in rows:
            if row.start_time is not None and row.start_time > now:
                continue
            try:
                when = self._schedule(row, app)
                options = self._options(row)
                found[row.name] = Entry(row.name, row.task, when,
                                        tuple(json.loads(row.args or "[]")),
                                        dict(json.loads(row.kwargs or "{}")), options)
            except (TypeError, ValueError) as exc:
                logger.error("django-celery-beat task %r is invalid (%s); skipped", row.name, exc)
                continue
            self._ids[row.name] = row.pk
        return found

    @staticmethod
    def _schedule(row: Any, app: Any) -> BaseSchedule:
        if row.interval is not None:
            return schedule(timedelta(**{row.interval.period: row.interval.every}), app=app)
        if row.crontab is not None:
            c = row.crontab
            return crontab(c.minute, c.hour, c.day_of_week, c.day_of_month, c.month_of_year,
                           app=app, tz=str(c.timezone) if c.timezone else None)
        if row.solar is not None:
            s = row.solar
            return solar(s.event, float(s.latitude), float(s.longitude), app=app)
        if row.clocked is not None:
            return clocked(row.clocked.clocked_time, app=app)
        raise ValueError("no schedule")

    @staticmethod
    def _options(row: Any) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if row.queue:
            options["queue"] = row.queue
        elif row.routing_key:
            options["routing_key"] = row.routing_key
        if row.priority is not None:
            options["priority"] = row.priority
        if row.expire_seconds:
            options["expires"] = float(row.expire_seconds)
        elif row.expires is not None:
            options["expires"] = row.expires
        headers = json.loads(row.headers or "{}")
        if headers:
            options["headers"] = headers
        return options

    def sent(self, runs: list[tuple[str, float]]) -> None:
        """Write back what the admin shows: last run, run count, one-offs disabled."""
        from django.db.models import F

        for name, at in runs:
            pk = self._ids.get(name)
            if pk is None:
                continue
            row = self._model.objects.filter(pk=pk)
            row.update(last_run_at=datetime.fromtimestamp(at, UTC),
                       total_run_count=F("total_run_count") + 1)
            row.filter(one_off=True).update(enabled=False)
