"""Tasks found only by discovery: nothing imports this module but fastq.contrib.django."""

from fastq import shared_task


@shared_task(name="shop.total")
def total(prices, discount=0):
    return sum(prices) - discount


@shared_task(name="shop.refuse")
def refuse(reason):
    raise ValueError(reason)


@shared_task(name="shop.database")
def database():
    """Queries through the ORM inside the worker, so Django must have been set up there."""
    from django.db import connection

    from fastq.contrib.django.models import TaskResult

    return [connection.vendor, TaskResult.objects.filter(state="SUCCESS").count()]


@shared_task(name="shop.pg_backend_pid")
def pg_backend_pid():
    """The server process of this task's PostgreSQL connection: a new one per task when
    the worker closes connections after each task (CONN_MAX_AGE = 0)."""
    from django.db import connections

    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]
