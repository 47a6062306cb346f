"""Finds task modules to import: ``<package>.tasks`` of listed packages
(``app.autodiscover_tasks``), and of every installed Django app.

A fastq App configured from Django settings asks for the Django part. Django may not be set up yet
at that moment (the App is often configured while the settings module itself is being
imported), so the import waits: for ``FastqConfig.ready()`` in a process that sets Django
up, or for a worker's start, which imports ``fastq.contrib.django.startup``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger("fastq.contrib.django")

#: The module a worker imports at start (listed in the App's ``imports``) to set Django up.
STARTUP_MODULE = "fastq.contrib.django.startup"

#: Submodule of each installed app holding its tasks (Celery's ``related_name``).
TASKS_MODULE = "tasks"

#: the ``related_name``s asked for before Django was ready
_wanted: set[str] = set()
_discovered = False


def django_configured() -> bool:
    """Whether this process uses Django settings (configured, or named by
    ``DJANGO_SETTINGS_MODULE``), without importing Django when it is not installed."""
    import os
    import sys

    if "django.conf" not in sys.modules and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return False
    try:
        from django.conf import settings
    except ImportError:
        return False
    return bool(settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE"))


def django_pending() -> bool:
    """Whether this process uses Django settings and Django is not set up yet."""
    if not django_configured():
        return False
    from django.apps import apps

    return not apps.ready


def task_modules(packages: Iterable[str], related_name: str = TASKS_MODULE) -> list[str]:
    """``<package>.<related_name>`` of each package that has that module, found without
    importing it (each package itself is imported, as finding a submodule needs).

    A package that cannot be imported is an error; one without the module is skipped, as
    Celery skips it.
    """
    found = []
    for package in packages:
        name = f"{package}.{related_name}" if related_name else package
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError as exc:
            if exc.name != package and not package.startswith(f"{exc.name}."):
                raise
            raise ModuleNotFoundError(
                f"autodiscover_tasks: no package named {package!r}", name=package) from None
        if spec is not None:
            found.append(name)
    return found


def is_django_settings(obj: Any) -> bool:
    """Whether ``obj`` (given to ``config_from_object``) is Django's settings, by name only."""
    if isinstance(obj, str):
        return obj.partition(":")[0] == "django.conf"
    return type(obj).__module__ == "django.conf"


def discover_when_ready(app: Any, related_name: str = TASKS_MODULE) -> None:
    """Import every installed app's ``related_name`` module now if Django is set up,
    else once it is."""
    from django.apps import apps

    _wanted.add(related_name)
    # a worker imports it at start in any case: it also installs the Django fix-up
    # (database connections closed after tasks, dropped at fork)
    if STARTUP_MODULE not in app.conf.imports:
        app.conf.imports = (*app.conf.imports, STARTUP_MODULE)
    if apps.ready:
        autodiscover_tasks(related_name)


def on_django_ready() -> None:
    """``FastqConfig.ready()``: discover if a configured App asked for it."""
    for related_name in sorted(_wanted):
        autodiscover_tasks(related_name)


def wanted_related_names() -> list[str]:
    """The module names a worker's start-up discovers in every Django app."""
    return sorted(_wanted) or [TASKS_MODULE]


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
