"""Paste-style ini files (Pyramid, Pylons) for ``fastq worker --ini`` and ``fastq beat --ini``: the settings they hold, the App they name, the Pyramid app they define.

::

    [fastq]                                  # or [celery]; names without a prefix
    app = proj.tasks:app                     # the App (or -A, or fastq.app below)
    broker_url = redis://localhost:6379/0

    [app:main]
    use = egg:proj
    pyramid.includes = fastq.contrib.pyramid
    fastq.result_backend = redis://localhost:6379/0

Settings apply in this order, later ones winning: the ``[celery]`` section, the
``[fastq]`` section, then the ``celery.*`` and ``fastq.*`` keys of ``[app:main]`` (read
as ``fastq.contrib.pyramid`` reads them), and the process's ``FASTQ_*`` environment over
all. ``%(here)s`` is the ini file's directory, as in Paste.

When ``[app:main]`` is there and Pyramid is installed, the app is built once per worker
process (Pyramid's ``bootstrap``), so tasks reach its registry with
``pyramid_registry_of(task.app)``; prefork children started with fork inherit the
parent's, spawned ones build their own.

The web process reads only ``[app:main]``'s keys (``config.include`` is handed the app's
settings, not the file): settings both sides need belong there, and the sections hold
what only workers and the beat use.
"""

from __future__ import annotations

import configparser
import os
from typing import Any

from ..app import App
from ..exceptions import ConfigurationError
from ..loader import load_app
from .pyramid import APP_KEY, apply_text_settings, bind_pyramid_registry, settings_from_pyramid

#: Sections read as settings, lowest precedence first.
SETTINGS_SECTIONS = ("celery", "fastq")

#: The section of the WSGI app Paste builds by default.
APP_SECTION = "app:main"

#: The key of a settings section naming the App (``pkg.module:attr``); not a setting.
SECTION_APP_KEY = "app"

#: Where a spawned worker child finds the ini and the ``-A`` of its parent.
INI_ENV = "FASTQ_INI"
INI_APP_ENV = "FASTQ_INI_APP"

#: The ``-A`` that makes a spawned child load the App as its parent did: from the ini.
CHILD_APP_SPEC = "fastq.contrib.ini:app_from_environment"


class IniFile:
    """The parts of one ini file fastq reads.

    Raises (on construction):
        ConfigurationError: the file is missing or not an ini file.
    """

    def __init__(self, path: str) -> None:
        self.name = path  # as the user wrote it, for messages
        self.path = os.path.abspath(path)
        if not os.path.isfile(self.path):
            raise ConfigurationError(f"ini file {path!r} not found")
        # Paste's two defaults; they show up in every section, so they are left out below
        self._parser = configparser.ConfigParser(defaults={
            "here": os.path.dirname(self.path), "__file__": self.path})
        self._parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
        try:
            self._parser.read(self.path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"ini file {path!r} cannot be read: "
                                     f"{_first_line(exc)}") from None

    def section(self, name: str) -> dict[str, str] | None:
        """The section's own keys (not ``[DEFAULT]``'s), interpolated; None if absent."""
        if not self._parser.has_section(name):
            return None
        inherited = set(self._parser.defaults())
        try:
            return {key: value for key, value in self._parser.items(name)
                    if key not in inherited}
        except configparser.Error as exc:
            raise ConfigurationError(f"ini file {self.name!r}, [{name}]: "
                                     f"{_first_line(exc)}") from None

    def settings(self) -> list[tuple[str, str, str]]:
        """``(where, setting name, text)`` for every fastq setting, in the order applied.

        Raises:
            ConfigurationError: the file holds no fastq settings at all.
        """
        entries = []
        for name in SETTINGS_SECTIONS:
            for key, value in (self.section(name) or {}).items():
                if key != SECTION_APP_KEY:
                    entries.append((f"ini file {self.name!r}, [{name}] {key!r}", key, value))
        app_keys = settings_from_pyramid(self.section(APP_SECTION) or {})
        entries += [(f"ini file {self.name!r}, [{APP_SECTION}] {key!r}", name, value)
                    for key, name, value in app_keys]
        if not entries and self.app_spec() is None:
            raise ConfigurationError(
                f"ini file {self.name!r} has no [fastq] or [celery] section and no "
                f"fastq.*/celery.* keys in [{APP_SECTION}]")
        return entries

    def app_spec(self) -> str | None:
        """The App the file names: ``app`` of ``[fastq]``/``[celery]``, else ``fastq.app``
        of ``[app:main]``."""
        for name in reversed(SETTINGS_SECTIONS):
            spec = (self.section(name) or {}).get(SECTION_APP_KEY)
            if spec:
                return spec
        return (self.section(APP_SECTION) or {}).get(APP_KEY) or None

    def defines_pyramid_app(self) -> bool:
        """An ``[app:main]`` section, and Pyramid installed to build it."""
        if self.section(APP_SECTION) is None:
            return False
        try:
            import pyramid.paster  # noqa: F401
        except ImportError:
            return False  # a Pylons-era file: its keys are still read
        return True


def load_app_from_ini(path: str, app_spec: str | None = None) -> App:
    """The App named by ``app_spec`` (``-A``) or by the ini file, configured from the
    file; its Pyramid app built in this process if it defines one.

    Raises:
        ConfigurationError: the file is missing, unreadable, holds no fastq settings or
            one fastq does not know, or names no App; the message names the file and key.
    """
    ini = IniFile(path)
    entries = ini.settings()
    spec = app_spec or ini.app_spec()
    registry = None
    if spec is None:
        if not ini.defines_pyramid_app():
            raise ConfigurationError(
                f"ini file {path!r} names no fastq App: give -A pkg.module:attr, or "
                f"'{SECTION_APP_KEY} = pkg.module:attr' in its [fastq] section")
        registry = _bootstrap_pyramid(ini.path)
        app = getattr(registry, "fastq_app", None)
        if not isinstance(app, App):
            raise ConfigurationError(
                f"ini file {path!r}: its Pyramid app does not include "
                "fastq.contrib.pyramid; name the App with -A pkg.module:attr")
    else:
        app = load_app(spec)
    apply_text_settings(app, entries)
    if registry is None and ini.defines_pyramid_app():
        registry = _bootstrap_pyramid(ini.path)
    if registry is not None:
        # a Pyramid app that does not include the add-on still lends tasks its registry
        bind_pyramid_registry(app, registry)
    return app


def export_for_children(path: str, app_spec: str | None) -> str:
    """Tell worker children started with spawn/forkserver how to load the App (they
    inherit the environment, not the parent's memory); returns the ``-A`` they get."""
    os.environ[INI_ENV] = os.path.abspath(path)
    if app_spec:
        os.environ[INI_APP_ENV] = app_spec
    else:
        os.environ.pop(INI_APP_ENV, None)
    return CHILD_APP_SPEC


def app_from_environment() -> App:
    """The App of a spawned worker child, loaded from the ini as its parent loaded it."""
    return load_app_from_ini(os.environ[INI_ENV], os.environ.get(INI_APP_ENV))


def _bootstrap_pyramid(path: str) -> Any:
    import sys

    from pyramid.paster import bootstrap

    # the console script's sys.path lacks the working directory, which -A's lookup adds
    # and ``use = call:proj:main`` needs as much
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    # kept open for the life of the process: tasks run inside this app's set-up
    return bootstrap(path)["registry"]


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


__all__ = ["IniFile", "app_from_environment", "export_for_children", "load_app_from_ini"]
