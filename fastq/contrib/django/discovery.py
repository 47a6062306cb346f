"""Finds a Django project's tasks: imports the ``tasks`` module of every installed app.

A fastq App configured from Django settings asks for this. Django may not be set up yet
at that moment (the App is often configured while the settings module itself is being
imported), so the import waits: for ``FastqConfig.ready()`` in a process that sets Django
up, or for a worker's start, which imports ``fastq.contrib.django.startup``.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

logger = logging.getLogger("fastq.contrib.django")

#: The module a worker imports at start (listed in the App's ``imports``) to set Django up.
STARTUP_MODULE = "fastq.contrib.django.startup"

#: Submodule of each installed app holding its tasks (Celery's ``related_name``).
TASKS_MODULE = "tasks"

_wanted = False
_discovered = False


def is_django_settings(obj: Any) -> bool:
    """Whether ``obj`` (given to ``config_from_object``) is Django's settings, by name only."""
    if isinstance(obj, str):
        return obj.partition(":")[0] == "django.conf"
    return type(obj).__module__ == "django.conf"


def discover_when_ready(app: Any) -> None:
    """Import every installed app's ``tasks`` now if Django is set up, else once it is."""
    global _wanted
    from django.apps import apps

    if apps.ready:
        autodiscover_tasks()
        return
    _wanted = True
    if STARTUP_MODULE not in app.conf.imports:
        app.conf.imports = (*app.conf.imports, STARTUP_MODULE)


def on_django_ready() -> None:
    """``FastqConfig.ready()``: discover if a configured App is waiting for it."""
    if _wanted:
        autodiscover_tasks()


def autodiscover_tasks(related_name: str = TASKS_MODULE) -> list[str]:
    """Import ``<app>.<related_name>`` of every installed Django app that has one.

    Django must be set up. An app without the module is skipped; an error raised while
    importing one that exists propagates, as it would for any import. Returns the
    names of the modules imported (each at most once per process).
    """
    global _discovered
    from django.apps import apps
    from django.utils.module_loading import module_has_submodule

    found = []
    for config in apps.get_app_configs():
        if module_has_submodule(config.module, related_name):
            name = f"{config.name}.{related_name}"
            importlib.import_module(name)
            found.append(name)
    if not _discovered:
        _discovered = True
        logger.debug("imported the tasks of the Django apps: %s", ", ".join(found) or "none")
    return found
