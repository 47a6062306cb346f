"""Results stored through the Django ORM: ``django-db://`` (or ``django-db://<alias>``).

The table is ``fastq_taskresult`` (``models.TaskResult``), created by this app's
migration. ``django-db://`` reads and writes where the project's database routers send
the model (``default`` without routers); ``django-db://<alias>`` names a ``DATABASES``
entry instead.

A write is one transaction: lock the rows of the batch's ids (``SELECT ... FOR UPDATE``
where the database has it; on SQLite, take the file's write lock first), skip those
holding an unexpired SUCCESS, insert the new ones and update the others. Two writers
inserting the same new id collide on the primary key, and SQLite may still answer
"database is locked" after its busy timeout; the loser's transaction is rolled back
whole and run again, so SUCCESS is never overwritten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from django.apps import apps
from django.db import (
    DEFAULT_DB_ALIAS,
    IntegrityError,
    OperationalError,
    connections,
    router,
    transaction,
)

from ... import serialization
from ..._fork import getpid
from ...backends.base import Backend
from ...exceptions import ConfigurationError
from ...states import SUCCESS

logger = logging.getLogger("fastq.contrib.django")

_T = TypeVar("_T")

#: Seconds between the cleanups a writing instance runs on its own.
CLEANUP_INTERVAL = 60.0

#: Attempts at a write transaction, and the first sleep in seconds between them, when it
#: loses a race (a concurrent insert of the same id, SQLite's lock, a deadlock).
WRITE_ATTEMPTS = 5
WRITE_RETRY_SLEEP = 0.02

#: Ids per ``IN (...)`` list, under every database's bound-parameter limit.
IN_CHUNK = 500

#: The columns a write sets besides the primary key.
_FIELDS = ("state", "document", "date_done", "expires", "name", "args", "kwargs", "worker")


def _ensure_django_ready() -> None:
    """Set Django up if it is configured but not yet set up (a script, a bare worker)."""
    if apps.ready:
        return
    import django
    from django.core.exceptions import ImproperlyConfigured

    try:
        django.setup()
    except ImproperlyConfigured as exc:
        raise ConfigurationError(
            f"django-db:// needs Django configured (set DJANGO_SETTINGS_MODULE or call "
            f"settings.configure()) with 'fastq.contrib.django' in INSTALLED_APPS: {exc}"
        ) from exc


class DjangoBackend(Backend):
    """Results in the ``fastq_taskresult`` table of a Django project's database.

    Django keeps one connection per thread and database; this backend uses them as the
    project's own code does. ``close()`` closes the calling thread's connection unless a
    transaction is open on it.
    """

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        _ensure_django_ready()
        if not apps.is_installed("fastq.contrib.django"):
            raise ConfigurationError(
                "django-db:// stores results in the fastq app's table: add "
                "'fastq.contrib.django' to INSTALLED_APPS and run manage.py migrate")
        from django.conf import settings

        from .models import TaskResult

        self.model = TaskResult
        alias = url.split("://", 1)[1].strip("/") if "://" in url else ""
        if alias and alias not in settings.DATABASES:
            raise ConfigurationError(
                f"{url!r} names database {alias!r}, which is not in DATABASES "
                f"({', '.join(settings.DATABASES)})")
        #: the DATABASES alias the URL names; None lets the routers choose
        self.alias: str | None = alias or None
        self._use_tz = settings.USE_TZ
        self._pid = getpid()
        self._last_cleanup = 0.0
        # connections inherited across fork, kept referenced: freeing one in the child can
        # end the parent's session (psycopg 3 guards against it, other drivers may not)
        self._inherited: list[Any] = []

    # -- databases -------------------------------------------------------------------
    def _db_for_read(self) -> str:
        return self.alias or router.db_for_read(self.model) or DEFAULT_DB_ALIAS

    def _db_for_write(self) -> str:
        return self.alias or router.db_for_write(self.model) or DEFAULT_DB_ALIAS

    def _check_fork(self) -> None:
        if self._pid == getpid():
            return
        # the child must open its own; closing the parent's would end the parent's session
        for alias in {self._db_for_read(), self._db_for_write()}:
            wrapper = connections[alias]
            if wrapper.connection is not None:
                self._inherited.append(wrapper.connection)
                wrapper.connection = None
        self._pid = getpid()

    def _datetime(self, unix: float) -> datetime:
        """A value for a DateTimeField: aware UTC with USE_TZ, else naive local time."""
        moment = datetime.fromtimestamp(unix, timezone.utc)
        if self._use_tz:
            return moment
        from django.utils.timezone import make_naive

        return make_naive(moment)

    def _date_done(self, meta: dict) -> datetime | None:
        raw = meta.get("date_done")
        if not isinstance(raw, str):
            return None
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return self._datetime(moment.timestamp())

    def _write(self, work: Callable[[str], _T]) -> _T:
        """Run ``work(alias)`` in one transaction, again when it loses a race.

        Inside a caller's transaction it runs once (as a savepoint): retrying there could
        not see what the outer transaction hides.
        """
        self._check_fork()
        alias = self._db_for_write()
        connection = connections[alias]
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with transaction.atomic(using=alias):
                    if connection.vendor == "sqlite":
                        self._lock_sqlite(connection)
                    return work(alias)
            except (IntegrityError, OperationalError) as exc:
                if attempt == WRITE_ATTEMPTS or connection.in_atomic_block:
                    raise
                logger.debug("result write on %r lost a race (%s); attempt %d of %d",
                             alias, exc, attempt + 1, WRITE_ATTEMPTS)
                # a dropped connection is reopened by the next attempt
                connection.close_if_unusable_or_obsolete()
            time.sleep(WRITE_RETRY_SLEEP * attempt)
        raise AssertionError("unreachable")

    def _lock_sqlite(self, connection: Any) -> None:
        """Take SQLite's write lock at the start of the transaction.

        Two transactions that each read and then write deadlock, and SQLite fails one of
        them at once ("database is locked") instead of letting it wait; a write as the
        first statement (one that changes nothing) makes the second wait its turn, up to
        the connection's ``timeout``.
        """
        table = connection.ops.quote_name(self.model._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(f"UPDATE {table} SET state = state WHERE 0 = 1")

    # -- primitives ------------------------------------------------------------------
    def _get_many(self, task_ids: Sequence[str]) -> dict[str, bytes]:
        from django.db.models import Q

        self._check_fork()
        ids = list(dict.fromkeys(task_ids))
        live = Q(expires__isnull=True) | Q(expires__gte=self._datetime(time.time()))
        rows = self.model.objects.using(self._db_for_read())
        found: dict[str, bytes] = {}
        for start in range(0, len(ids), IN_CHUNK):
            chunk = ids[start:start + IN_CHUNK]
            for task_id, document in rows.filter(live, task_id__in=chunk).values_list(
                    "task_id", "document"):
                found[task_id] = document.encode()
        return found

    def _set_many(self, items: Sequence[tuple[str, str, bytes]], expires_at: float | None) -> None:
        expires = None if expires_at is None else self._datetime(expires_at)
        rows = [self._row(task_id, state, document, expires)
                for task_id, state, document in items]
        now = time.time()
        cleanup = now - self._last_cleanup >= CLEANUP_INTERVAL
        if cleanup:
            self._last_cleanup = now

        def work(alias: str) -> None:
            self._upsert(alias, rows)
            if cleanup:  # in the same transaction: one commit
                self._delete_expired(alias, now)

        self._write(work)

    def _row(self, task_id: str, state: str, document: bytes, expires: datetime | None) -> Any:
        meta = serialization.json_loads(document)
        args, kwargs = meta.get("args"), meta.get("kwargs")
        return self.model(
            task_id=task_id, state=state, document=document.decode(),
            date_done=self._date_done(meta), expires=expires,
            name=meta.get("name"),
            args=None if args is None else serialization.json_dumps(args).decode(),
            kwargs=None if kwargs is None else serialization.json_dumps(kwargs).decode(),
            worker=meta.get("worker"))

    def _upsert(self, alias: str, rows: list[Any]) -> None:
        """Store ``rows`` in order, skipping ids that hold an unexpired SUCCESS."""
        objects = self.model.objects.using(alias)
        now = self._datetime(time.time())
        ids = list(dict.fromkeys(row.task_id for row in rows))
        existing: set[str] = set()
        live_state: dict[str, str] = {}
        for start in range(0, len(ids), IN_CHUNK):
            chunk = ids[start:start + IN_CHUNK]
            for task_id, state, expires in objects.select_for_update().filter(
                    task_id__in=chunk).values_list("task_id", "state", "expires"):
                existing.add(task_id)
                if expires is None or expires >= now:
                    live_state[task_id] = state
        # later records of the same id win, except over a SUCCESS (as one by one would)
        chosen: dict[str, Any] = {}
        for row in rows:
            if live_state.get(row.task_id) == SUCCESS:
                continue
            live_state[row.task_id] = row.state
            chosen[row.task_id] = row
        inserts = [row for task_id, row in chosen.items() if task_id not in existing]
        updates = [row for task_id, row in chosen.items() if task_id in existing]
        if inserts:
            objects.bulk_create(inserts)
        if updates:
            objects.bulk_update(updates, _FIELDS)

    def _delete_expired(self, alias: str, now: float) -> int:
        deleted, _by_model = self.model.objects.using(alias).filter(
            expires__isnull=False, expires__lt=self._datetime(now)).delete()
        return deleted

    def _delete(self, task_id: str) -> None:
        self._write(lambda alias: self.model.objects.using(alias).filter(
            task_id=task_id).delete())

    def _cleanup(self, now: float) -> int:
        return self._write(lambda alias: self._delete_expired(alias, now))

    def sign_results(self, codec: serialization.Codec) -> None:
        # the row keeps the document as text and its args, kwargs and date in columns
        # for the admin: a signed blob has neither
        raise ConfigurationError(
            "result_serializer='auth' (signed results) is not supported by the django-db "
            "result backend: use redis://, a db+ URL or sqlite:// for signed results")

    def close(self) -> None:
        """Close this thread's connections to the backend's databases, unless in a
        transaction (the project's code may be using them)."""
        if self._pid != getpid():
            self._check_fork()
            return
        for alias in {self._db_for_read(), self._db_for_write()}:
            connection = connections[alias]
            if not connection.in_atomic_block:
                connection.close()
