"""What Celery's App carries besides tasks and settings: ``app.log`` (setting up
logging) and ``app.loader`` (importing the task modules), as far as applications and
Django integrations use them."""

from __future__ import annotations

import importlib
import logging
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App

#: Celery's default log line for a worker process.
LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


class Logging:
    """``app.log``: ``setup()`` puts one handler on the root logger, as Celery's does
    when the application has configured none."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.configured = False

    def setup(self, loglevel: int | str | None = None, logfile: str | None = None,
              redirect_stdouts: bool = False, redirect_level: str = "WARNING",
              colorize: bool | None = None, hostname: str | None = None) -> bool:
        """Log at ``loglevel`` (default WARNING) to ``logfile`` or stderr.

        A root logger that already has handlers is left as it is (the application set
        logging up itself, or ``worker_hijack_root_logger`` is off), only its level set.
        ``redirect_stdouts``, ``redirect_level``, ``colorize`` and ``hostname`` are
        accepted for Celery's signature and not used. Returns whether a handler was added.
        """
        level = _level(loglevel)
        root = logging.getLogger()
        added = False
        if not root.handlers:
            handler: logging.Handler = (logging.FileHandler(logfile) if logfile
                                        else logging.StreamHandler(sys.stderr))
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            root.addHandler(handler)
            added = True
        root.setLevel(level)
        self.configured = True
        return added

    def get_default_logger(self, name: str = "fastq", **kwargs: Any) -> logging.Logger:
        """The logger fastq's worker writes to."""
        return logging.getLogger(name)


def _level(value: int | str | None) -> int:
    if value is None:
        return logging.WARNING
    if isinstance(value, int):
        return value
    level = logging.getLevelName(value.upper())
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {value!r}")
    return level


class Loader:
    """``app.loader``: imports modules the way the worker does at start
    (``imports``/``include``, then the modules ``autodiscover_tasks`` found)."""

    def __init__(self, app: App) -> None:
        self.app = app

    def import_module(self, name: str, package: str | None = None) -> Any:
        return importlib.import_module(name, package)

    def import_default_modules(self) -> list[Any]:
        """Import ``imports`` and ``include``, then finalize the App."""
        conf = self.app.conf
        modules = [importlib.import_module(name) for name in (*conf.imports, *conf.include)]
        self.app.finalize()
        return modules

    def read_configuration(self) -> dict[str, Any]:
        """Celery reads ``celeryconfig`` here; fastq's settings are already in ``conf``."""
        return {}

    def on_worker_init(self) -> None:
        self.import_default_modules()

    def now(self, utc: bool = True) -> Any:
        from datetime import datetime, timezone

        return datetime.now(timezone.utc) if utc else datetime.now()
