"""Finds the App a command names with ``-A``, as Celery's ``-A`` does."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

from ._state import current_app
from .app import App
from .exceptions import ConfigurationError


class AppLoadError(ConfigurationError):
    """The -A target could not be imported or holds no App."""


def load_app(spec: str | None) -> App:
    """Find the App named by ``-A``: ``pkg.module``, ``pkg.module:attr``, or a package
    whose ``celery``/``app`` submodule or attribute holds the App (Celery's lookup)."""
    if not spec:
        return current_app()
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    module_name, _, attr = spec.partition(":")
    module = _import_user_module(module_name)
    if attr:
        found: Any = module
        for part in attr.split("."):
            found = getattr(found, part, None)
            if found is None:
                raise AppLoadError(f"module {module_name!r} has no attribute {attr!r}")
        if callable(found) and not isinstance(found, App):
            found = found()
        if not isinstance(found, App):
            raise AppLoadError(f"{spec!r} is a {type(found).__name__}, not a fastq App")
        return found
    for name in ("app", "celery"):
        candidate = getattr(module, name, None)
        if isinstance(candidate, App):
            return candidate
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if len(apps) == 1:
        return apps[0]
    for sub in ("celery", "app"):
        try:
            submodule = importlib.import_module(f"{module_name}.{sub}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{module_name}.{sub}":
                raise
            continue
        for name in ("app", "celery"):
            candidate = getattr(submodule, name, None)
            if isinstance(candidate, App):
                return candidate
    if len(apps) > 1:
        raise AppLoadError(f"module {module_name!r} holds several Apps; name one with "
                           f"-A {module_name}:NAME")
    raise AppLoadError(f"no fastq App found in module {module_name!r}; name it with "
                       f"-A {module_name}:NAME")


def _import_user_module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise AppLoadError(f"cannot import {name!r}: no module named {exc.name!r} "
                               f"(searched from {os.getcwd()})") from None
        _raise_user_error(name)
    except Exception:
        _raise_user_error(name)


def _raise_user_error(name: str):
    # Show the user's own frames, not fastq's or importlib's.
    exc_type, exc, tb = sys.exc_info()
    frames = [f for f in traceback.extract_tb(tb)
              if "importlib" not in f.filename and os.sep + "fastq" + os.sep not in f.filename]
    text = "".join(traceback.format_list(frames)) + "".join(
        traceback.format_exception_only(exc_type, exc))
    raise AppLoadError(f"error while importing {name!r}:\nTraceback (most recent call last):\n"
                       f"{text.rstrip()}")


__all__ = ["AppLoadError", "load_app"]
