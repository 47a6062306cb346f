"""The project's fastq App, configured from Django's settings (the ``CELERY_*`` names), with
the ``tasks`` module of every installed app discovered."""

import os

from fastq import App

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = App("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
