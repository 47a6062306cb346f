"""Pyramid add-on: ``config.include("fastq.contrib.pyramid")`` configures a fastq App from the ``celery.*`` / ``fastq.*`` keys of the Pyramid settings (the ini file's app section).

::

    [app:main]
    use = egg:proj
    pyramid.includes = fastq.contrib.pyramid
    fastq.app = proj.tasks:app               # the App to configure (default: the current one)
    fastq.broker_url = redis://localhost:6379/0
    celery.result_backend = redis://localhost:6379/0
    fastq.task_routes = {"proj.tasks.report": {"queue": "slow"}}

Values are text, read as the ``FASTQ_<NAME>`` variable of the same setting would be
(JSON for dicts such as ``task_routes``); ``fastq.*`` wins over
``celery.*``, and the process's ``FASTQ_*`` environment over both. Views reach the App
as ``request.fastq_app`` (or ``registry.fastq_app``); tasks reach the Pyramid registry
with ``pyramid_registry_of(task.app)``.

A worker loads the same ini once per process through Pyramid's ``bootstrap``, so its
tasks see the registry the web process has: ``fastq worker --ini production.ini``
(``fastq.contrib.ini``, which also reads a ``[fastq]`` section) does it, or a
``proj/worker.py`` holding ``fastq_app = bootstrap("production.ini")["registry"].fastq_app``
and ``fastq worker -A proj.worker:fastq_app``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .._state import current_app
from ..app import App
from ..config import setting_from_text
from ..exceptions import ConfigurationError

#: Settings prefixes read, lowest precedence first.
PREFIXES = ("celery.", "fastq.")

#: The settings key naming the App to configure (``pkg.module:attr``); not a fastq setting.
APP_KEY = "fastq.app"

def settings_from_pyramid(settings: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """``(settings key, setting name, value)`` for each fastq setting in Pyramid's
    settings, in the order they are applied (later ones win)."""
    return [(key, key[len(prefix):], value)
            for prefix in PREFIXES
            for key, value in settings.items()
            if key.startswith(prefix) and key != APP_KEY]


def apply_text_settings(app: App, entries: Iterable[tuple[str, str, Any]]) -> None:
    """Apply ``(where, setting name, value)`` entries to ``app`` in order, text read as the
    ``FASTQ_<NAME>`` variable would be; the environment's ``FASTQ_*`` still win.

    Raises:
        ConfigurationError: a name is no setting, or a value one it cannot take; the
            message starts with the entry's ``where`` (the key and file it came from).
    """
    for where, name, value in entries:
        try:
            if isinstance(value, str):
                name, value = setting_from_text(name, value)
            setattr(app.conf, name, value)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
    # the environment wins, and connections made so far follow the new URLs
    app.config_from_object({})


def configure_from_pyramid(app: App, settings: Mapping[str, Any]) -> None:
    """Apply the fastq settings among Pyramid's ``settings`` to ``app``; the
    environment's ``FASTQ_*`` still win.

    Raises:
        ConfigurationError: a key names no setting, or holds a value it cannot take; the
            message names the key.
    """
    apply_text_settings(app, [(f"Pyramid setting {key!r}", name, value)
                              for key, name, value in settings_from_pyramid(settings)])


def bind_pyramid_registry(app: App, registry: Any) -> None:
    """Make ``registry`` the one ``pyramid_registry_of(app)`` returns."""
    app.__dict__["pyramid_registry"] = registry


def pyramid_registry_of(app: App) -> Any:
    """The Pyramid registry ``config.include`` last bound ``app`` to.

    Raises:
        RuntimeError: no Pyramid configuration included this add-on for ``app`` in this
            process (a worker must load the ini with ``bootstrap``).
    """
    registry = app.__dict__.get("pyramid_registry")
    if registry is None:
        raise RuntimeError(f"fastq app {app.main!r} has no Pyramid registry: load the ini "
                           "with pyramid.paster.bootstrap in this process first")
    return registry


def includeme(config: Any) -> None:
    """Pyramid's hook for ``config.include``: configure the App, expose it on the
    registry and requests."""
    settings = config.get_settings()
    named = settings.get(APP_KEY)
    # without fastq.app: the App the project created last, the one shared_task uses
    app = config.maybe_dotted(named) if named else current_app()
    if not isinstance(app, App):
        raise ConfigurationError(f"Pyramid setting {APP_KEY!r} = {named!r} is not a fastq App")
    configure_from_pyramid(app, settings)
    bind_pyramid_registry(app, config.registry)
    config.registry.fastq_app = app
    config.add_request_method(lambda request: request.registry.fastq_app, "fastq_app",
                              reify=True)


__all__ = ["apply_text_settings", "bind_pyramid_registry", "configure_from_pyramid",
           "includeme", "pyramid_registry_of", "settings_from_pyramid"]
