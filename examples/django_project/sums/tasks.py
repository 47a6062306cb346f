"""The app's tasks, found by ``app.autodiscover_tasks()``."""

from django.conf import settings

from fastq import shared_task


@shared_task(name="sums.add")
def add(x: int, y: int) -> int:
    # Django is set up in the worker: its settings are at hand
    return x + y + settings.SUMS_OFFSET
