"""The Django app config of ``fastq.contrib.django``: label ``fastq``, task discovery on ready."""

from __future__ import annotations

from django.apps import AppConfig


class FastqConfig(AppConfig):
    """Holds the result model; once Django is set up, imports the apps' ``tasks`` modules
    if a fastq App asked for it by being configured from Django settings."""

    name = "fastq.contrib.django"
    label = "fastq"
    verbose_name = "fastq"

    def ready(self) -> None:
        from ... import discovery

        discovery.on_django_ready()
