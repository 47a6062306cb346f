"""Celery's ``celery.utils`` paths that applications import (``fastq.utils.log``)."""
