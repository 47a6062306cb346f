"""Resolves a URL's scheme to a lazily imported class, with errors that suggest a fix."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from . import _extras
from .exceptions import ConfigurationError, ExtraNotInstalled, ImproperlyInstalled


def scheme_of(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` for logs and errors."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _password = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def load_scheme(kind: str, url: str, schemes: dict[str, str], extras: dict[str, str]) -> Any:
    """The class registered as ``"module:Class"`` in ``schemes`` for ``url``'s scheme.

    Raises:
        ConfigurationError: the scheme is unknown (naming the closest known one).
        ImproperlyInstalled: its module needs a package that is not installed.
    """
    scheme = scheme_of(url)
    target = schemes.get(scheme)
    if target is None:
        known = sorted(schemes)
        close = difflib.get_close_matches(scheme, known, n=1)
        hint = f" (did you mean '{close[0]}://'?)" if close else ""
        raise ConfigurationError(
            f"unknown {kind} URL scheme {scheme!r} in {mask_url(url)!r}{hint}; "
            f"known schemes: {', '.join(known)}")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        known = _extras.error(exc, needed_by=f"the {scheme}:// {kind}")
        if isinstance(known, ExtraNotInstalled):
            raise known from None
        extra = extras.get(scheme)
        hint = f"; install it with: pip install 'fastq[{extra}]'" if extra else ""
        raise ImproperlyInstalled(f"{kind} {scheme}:// needs {exc.name}{hint}") from exc
    return getattr(module, class_name)
