"""Django admin pages for fastq: task results, and dead letters with a "retry" action.

Task results are the ``django-db://`` backend's own table, shown read-only: filter by
state and task name, search by task id or name.

Dead letters live in the broker, not in Django's database, and only the broker can
take one out and publish it again. The admin still needs a queryset for its list,
filters, search, paging and actions, so ``DeadLetter`` is a small mirror table
(migration ``0002``): opening the list replaces its rows with the broker's newest
``DEAD_LETTERS_SHOWN`` dead letters (``Broker.dead_letters()``), and the "retry" action
asks the broker to republish each selected letter to its queue and remove it
(``Broker.retry_dead_letter()``), then drops the selected rows. The broker stays the
truth: a letter retried elsewhere meanwhile is reported as gone, not published twice.
A model-less view would have had to rebuild the filters, search and action form by hand.

The broker is that of ``fastq``'s current App: the one the project created last, as
Celery's ``current_app`` (the Django recipe's ``proj/__init__.py`` imports it, so the
web process has it). Override ``DeadLetterAdmin.fastq_app`` to name another. Retrying
needs a broker that can remove one dead letter: Redis, RabbitMQ, SQS, SQLite (and
``memory://``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.db import router, transaction

from ..._state import current_app
from ...exceptions import BrokerError, ConfigurationError
from .models import DeadLetter, TaskResult

#: Dead letters, newest first, that one opening of the list mirrors.
DEAD_LETTERS_SHOWN = 1000


@admin.register(TaskResult)
class TaskResultAdmin(admin.ModelAdmin):
    """Results as the backend stored them; written only by workers, so read-only."""

    list_display = ("task_id", "name", "state", "date_done", "worker")
    list_filter = ("state", "name")
    search_fields = ("task_id", "name")
    date_hierarchy = "date_done"
    ordering = ("-date_done",)
    readonly_fields = ("task_id", "state", "name", "args", "kwargs", "worker", "date_done",
                       "expires", "document")

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False


def mirror_dead_letters(broker: Any, limit: int = DEAD_LETTERS_SHOWN) -> int:
    """Replace the ``DeadLetter`` rows with ``broker``'s newest ``limit`` dead letters;
    return how many there are."""
    rows = [_row(letter) for letter in broker.dead_letters(limit=limit)]
    alias = router.db_for_write(DeadLetter)
    with transaction.atomic(using=alias):
        DeadLetter.objects.using(alias).all().delete()
        DeadLetter.objects.using(alias).bulk_create(rows)
    return len(rows)


def _row(letter: dict) -> DeadLetter:
    headers = letter.get("headers")
    if not isinstance(headers, dict):
        headers = {}
    return DeadLetter(
        queue=str(letter.get("queue") or ""), task_id=str(headers.get("id") or ""),
        task_name=str(headers.get("task") or ""), reason=str(letter.get("reason") or ""),
        dead_lettered_at=_moment(letter.get("dead_lettered_at")),
        deliveries=_count(letter.get("deliveries")),
        args=str(headers.get("argsrepr") or ""), kwargs=str(headers.get("kwargsrepr") or ""))


def _count(deliveries: Any) -> int:
    # a damaged letter is listed all the same, so that it can be seen and retried
    return deliveries if isinstance(deliveries, int) and deliveries > 0 else 1


def _moment(unix: Any) -> datetime | None:
    """A DateTimeField value for a unix time: aware UTC with USE_TZ, else naive local."""
    if not isinstance(unix, (int, float)) or not unix:
        return None
    moment = datetime.fromtimestamp(unix, timezone.utc)
    if settings.USE_TZ:
        return moment
    from django.utils.timezone import make_naive

    return make_naive(moment)


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """The broker's dead letters, refreshed each time the list opens; "retry" republishes."""

    list_display = ("task_id", "task_name", "queue", "reason", "dead_lettered_at",
                    "deliveries")
    list_filter = ("queue", "reason")
    search_fields = ("task_id", "task_name")
    actions = ("retry",)
    readonly_fields = ("task_id", "task_name", "queue", "reason", "dead_lettered_at",
                       "deliveries", "args", "kwargs")

    def fastq_app(self) -> Any:
        """The App whose broker holds the dead letters."""
        return current_app()

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: Any) -> bool:
        # a retry runs the task again: as much as deleting the letter, so that permission
        return request.user.has_perm("fastq.delete_deadletter")

    def changelist_view(self, request: Any, extra_context: Any = None) -> Any:
        # only a plain GET refreshes: the action's POST must act on the rows it was shown
        if request.method == "GET":
            try:
                mirror_dead_letters(self.fastq_app().broker)
            except (BrokerError, ConnectionError) as exc:
                self.message_user(request, f"could not read the dead letters from the broker "
                                  f"({exc}); the list below is from the last read",
                                  messages.ERROR)
        return super().changelist_view(request, extra_context)

    @admin.action(description="Retry: publish to their queue again", permissions=("retry",))
    def retry(self, request: Any, queryset: Any) -> None:
        broker = self.fastq_app().broker
        retried = gone = 0
        handled: list[int] = []
        for letter in queryset:
            try:
                moved = broker.retry_dead_letter(letter.queue, letter.task_id)
            except ConfigurationError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                break
            except (BrokerError, ConnectionError) as exc:
                self.message_user(request, f"the broker failed while retrying "
                                  f"{letter.task_id} ({exc}); try again", messages.ERROR)
                break
            retried += moved
            gone += not moved
            handled.append(letter.pk)
        queryset.filter(pk__in=handled).delete()
        if retried:
            self.message_user(request, f"{retried} dead letter(s) published to their queue "
                              f"again", messages.SUCCESS)
        if gone:
            self.message_user(request, f"{gone} dead letter(s) were no longer in the broker "
                              f"(retried elsewhere, or expired)", messages.WARNING)
