# A Celery 5 project as its users write it (tests/compat/test_migration.py runs it on
# Celery, then with its imports changed to fastq). Only the imports may name Celery.
from .celery import app

__all__ = ("app",)
