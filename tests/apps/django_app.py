"""A fastq App configured from the Django test project's settings, as a Django project would."""

import os

from fastq import App

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_project.settings")

app = App("tests.apps.django_app")
app.config_from_object("django.conf:settings", namespace="FASTQ")
