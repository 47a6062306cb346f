"""Imported by a worker at start (from ``imports``): sets Django up and imports the apps' tasks.

A fastq App configured from Django settings before Django was set up lists this module
in its ``imports``, as Celery's Django fix-up calls ``django.setup()`` at worker start.
"""

from __future__ import annotations

import django
from django.apps import apps

from .discovery import autodiscover_tasks

if not apps.ready:
    django.setup()
autodiscover_tasks()
