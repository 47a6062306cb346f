"""The table behind the ``django-db://`` result backend: one row per task id."""

from __future__ import annotations

from django.db import models


class TaskResult(models.Model):
    """The last stored state of a task.

    ``document`` is Celery's meta document as JSON, what ``AsyncResult`` reads; the other
    columns repeat parts of it for queries and the admin. A row whose ``expires`` has
    passed is treated as absent and deleted by the backend's ``cleanup()``.
    """

    task_id = models.CharField("task id", max_length=255, primary_key=True)
    state = models.CharField(max_length=50)
    document = models.TextField(help_text="the meta document, JSON")
    date_done = models.DateTimeField("done at", null=True, blank=True)
    expires = models.DateTimeField(null=True, blank=True, db_index=True,
                                   help_text="empty: kept until forgotten")
    # filled only with result_extended on
    name = models.CharField("task name", max_length=255, null=True, blank=True)
    args = models.TextField(null=True, blank=True, help_text="positional arguments, JSON")
    kwargs = models.TextField(null=True, blank=True, help_text="keyword arguments, JSON")
    worker = models.CharField(max_length=255, null=True, blank=True)

    class Meta:
        db_table = "fastq_taskresult"
        verbose_name = "task result"
        verbose_name_plural = "task results"

    def __str__(self) -> str:
        return f"{self.task_id} {self.state}"


class DeadLetter(models.Model):
    """A copy of one of the broker's dead letters, for the admin's list of them.

    The broker holds the dead letters; this table only mirrors them. ``admin.py``
    replaces its rows with the broker's newest dead letters each time the list is opened,
    so filters, search and actions work as on any model; nothing else reads or writes it.
    """

    id = models.BigAutoField(primary_key=True)
    queue = models.CharField(max_length=255)
    task_id = models.CharField("task id", max_length=255)
    task_name = models.CharField("task name", max_length=255, blank=True)
    reason = models.CharField(max_length=255)
    dead_lettered_at = models.DateTimeField("dead-lettered at", null=True, blank=True)
    deliveries = models.PositiveIntegerField(default=1, help_text="times it was delivered")
    args = models.TextField(blank=True, help_text="the argsrepr header")
    kwargs = models.TextField(blank=True, help_text="the kwargsrepr header")

    class Meta:
        db_table = "fastq_deadletter"
        ordering = ("-dead_lettered_at",)
        verbose_name = "dead letter"
        verbose_name_plural = "dead letters"

    def __str__(self) -> str:
        return f"{self.task_name or '?'} {self.task_id} ({self.reason})"
