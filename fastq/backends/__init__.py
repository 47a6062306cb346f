"""Result backends behind one interface; ``BACKEND_SCHEMES`` maps URL schemes to them."""

from __future__ import annotations

import difflib
import importlib

from ..exceptions import ConfigurationError, ImproperlyInstalled
from .base import Backend

#: URL scheme -> "module:Class", imported only when used.
BACKEND_SCHEMES: dict[str, str] = {
    "memory": "fastq.backends.memory:MemoryBackend",
    "sqlite": "fastq.backends.sqlite:SQLiteBackend",
}

#: Extra to install for a scheme whose implementation needs an optional dependency.
SCHEME_EXTRAS: dict[str, str] = {}


def backend_class(url: str) -> type[Backend]:
    """The Backend class for ``url``; a clear error for unknown or uninstalled schemes."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else url.lower()
    target = BACKEND_SCHEMES.get(scheme)
    if target is None:
        known = sorted(BACKEND_SCHEMES)
        close = difflib.get_close_matches(scheme, known, n=1)
        hint = f" (did you mean '{close[0]}://'?)" if close else ""
        from ..brokers import mask_url

        raise ConfigurationError(
            f"unknown result backend scheme {scheme!r} in {mask_url(url)!r}{hint}; "
            f"known schemes: {', '.join(known)}"
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = SCHEME_EXTRAS.get(scheme)
        hint = f"; install it with: pip install 'fastq[{extra}]'" if extra else ""
        raise ImproperlyInstalled(f"result backend {scheme}:// needs {exc.name}{hint}") from exc
    return getattr(module, class_name)


def create_backend(url: str, **options) -> Backend:
    """A Backend for ``url``."""
    return backend_class(url)(url, **options)


__all__ = ["Backend", "BACKEND_SCHEMES", "backend_class", "create_backend"]
