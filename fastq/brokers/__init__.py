"""Brokers behind one small interface; ``BROKER_SCHEMES`` maps URL schemes to implementations."""

from __future__ import annotations

import difflib
import importlib
import os

from ..exceptions import ConfigurationError, ImproperlyInstalled
from .base import Broker, Delivery

#: URL scheme -> "module:Class", imported only when used.
BROKER_SCHEMES: dict[str, str] = {
    "memory": "fastq.brokers.memory:MemoryBroker",
    "sqlite": "fastq.brokers.sqlite:SQLiteBroker",
}

#: Extra to install for a scheme whose implementation needs an optional dependency.
SCHEME_EXTRAS: dict[str, str] = {}

#: Where the embedded default broker lives, relative to the working directory.
DEFAULT_BROKER_URL = "sqlite:///.fastq/broker.sqlite3"


def broker_class(url: str) -> type[Broker]:
    """The Broker class for ``url``; a clear error for unknown or uninstalled schemes."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    target = BROKER_SCHEMES.get(scheme)
    if target is None:
        known = sorted(BROKER_SCHEMES)
        close = difflib.get_close_matches(scheme, known, n=1)
        hint = f" (did you mean '{close[0]}://'?)" if close else ""
        raise ConfigurationError(
            f"unknown broker URL scheme {scheme!r} in {mask_url(url)!r}{hint}; "
            f"known schemes: {', '.join(known)}"
        )
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = SCHEME_EXTRAS.get(scheme)
        hint = f"; install it with: pip install 'fastq[{extra}]'" if extra else ""
        raise ImproperlyInstalled(f"broker {scheme}:// needs {exc.name}{hint}") from exc
    return getattr(module, class_name)


def create_broker(url: str | None, **options) -> Broker:
    """A Broker for ``url`` (the embedded SQLite default when None)."""
    url = url or DEFAULT_BROKER_URL
    return broker_class(url)(url, **options)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` for logs and errors."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _password = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite://`` URL: ``sqlite:///rel/path``, ``sqlite:////abs/path``.

    ``sqlite://`` alone (no path) means the embedded default file.
    """
    rest = url.split("://", 1)[1] if "://" in url else url
    if not rest:
        rest = "/" + DEFAULT_BROKER_URL.split("://", 1)[1].lstrip("/")
    path = rest[1:] if rest.startswith("/") else rest
    path = path.split("?", 1)[0]
    return os.path.abspath(os.path.expanduser(path))


__all__ = ["Broker", "Delivery", "BROKER_SCHEMES", "broker_class", "create_broker", "mask_url"]
