"""Imported by a worker at start (from ``imports``): sets Django up, imports the apps'
tasks and installs the database fix-up.

A fastq App configured from Django settings lists this module in its ``imports``, as
Celery's Django fix-up calls ``django.setup()`` at worker start.
"""

from __future__ import annotations

import django
from django.apps import apps

from ...discovery import autodiscover_tasks, wanted_related_names
from . import fixup

if not apps.ready:
    django.setup()
for _related_name in wanted_related_names():
    autodiscover_tasks(_related_name)
fixup.install()
