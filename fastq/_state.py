"""The current app: the one handles without an explicit app (results, signatures) use."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import App

_current: App | None = None
_lock = threading.Lock()
#: Makes the default app when none was created yet. Set by ``fastq/__init__.py``, which
#: sits above every layer and may import ``fastq.app``; this module may not.
default_app_factory: Callable[[], App] | None = None


def set_current_app(app: App) -> None:
    global _current
    _current = app


def current_app() -> App:
    """The most recently created App, or a default one made on first use."""
    if _current is None:
        with _lock:
            if _current is None:
                if default_app_factory is None:  # pragma: no cover - fastq/__init__ sets it
                    raise RuntimeError("no fastq App was created, and no default is known")
                default_app_factory()  # App.__init__ makes itself current
    assert _current is not None
    return _current
