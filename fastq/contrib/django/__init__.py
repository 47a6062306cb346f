"""fastq in a Django project: the ``django-db://`` result backend and task discovery.

Add ``"fastq.contrib.django"`` to ``INSTALLED_APPS``, run ``manage.py migrate``, and
configure the App from Django settings::

    app = App("proj")
    app.config_from_object("django.conf:settings", namespace="FASTQ")

Then ``FASTQ_RESULT_BACKEND = "django-db://"`` stores results through the ORM, and the
``tasks`` module of every installed app is imported (by workers at start, and by any
process once Django is set up).
"""

from __future__ import annotations

from ...discovery import autodiscover_tasks

__all__ = ["autodiscover_tasks"]
