"""The example Django project; its fastq App loads with Django, so ``shared_task`` uses it."""

from .fastq import app as fastq_app

__all__ = ["fastq_app"]
