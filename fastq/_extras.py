"""The optional packages fastq uses, the extra that installs each, and the one-line error for a missing one."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .exceptions import ExtraNotInstalled

#: module imported -> (the name pip knows it by, the fastq extra that installs it)
OPTIONAL: dict[str, tuple[str, str]] = {
    "amqp": ("py-amqp", "amqp"),
    "redis": ("redis", "redis"),
    "boto3": ("boto3", "sqs"),
    "sqlalchemy": ("SQLAlchemy", "sql"),
    "psycopg": ("psycopg", "sql"),
    "pymysql": ("PyMySQL", "sql"),
    "pymemcache": ("pymemcache", "memcached"),
    "django": ("Django", "django"),
    "msgpack": ("msgpack", "msgpack"),
    "yaml": ("PyYAML", "yaml"),
    "gevent": ("gevent", "gevent"),
    "eventlet": ("eventlet", "eventlet"),
    "ephem": ("ephem", "solar"),
    "cryptography": ("cryptography", "auth"),
    "prometheus_client": ("prometheus-client", "prometheus"),
    "rich": ("rich", "monitor"),
    "opentelemetry": ("opentelemetry-api", "otel"),
}


def require(module: str, needed_by: str = "") -> ModuleType:
    """Import ``module`` (a key of ``OPTIONAL``, or a submodule of one) and return it.

    ``needed_by`` says what wants it ("-P gevent", "the redis:// broker") in the message.

    Raises:
        ExtraNotInstalled: it is not installed, or is but fails to import; the message is
            one line ending in the pip command that fixes it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise error(exc, needed_by, module=module) from None


def error(exc: ImportError, needed_by: str = "", module: str | None = None) -> ImportError:
    """``exc`` as an ``ExtraNotInstalled`` when it is about a package an extra installs
    (``module``, when the caller knows which it imported); ``exc`` itself otherwise (a
    bug, or a package fastq does not know of)."""
    if isinstance(exc, ExtraNotInstalled):
        return exc
    top = (module or exc.name or "").split(".")[0]
    if top not in OPTIONAL:
        return exc
    dist, extra = OPTIONAL[top]
    why = f" (needed by {needed_by})" if needed_by else ""
    if isinstance(exc, ModuleNotFoundError) and not installed(top):
        message = f"{dist} is not installed{why}: pip install 'fastq[{extra}]'"
    else:  # present, but it or one of its own dependencies fails to load
        message = (f"{dist} is installed but cannot be imported ({exc}){why}: "
                   f"pip install --force-reinstall 'fastq[{extra}]'")
    return ExtraNotInstalled(message, name=top, extra=extra)


def installed(module: str) -> bool:
    """Whether ``module`` can be found, without importing it (a ``None`` shim in
    ``sys.modules`` counts as absent)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def install_command(module: str) -> str:
    """The pip command that installs ``module``'s extra."""
    return f"pip install 'fastq[{OPTIONAL[module][1]}]'"


__all__ = ["OPTIONAL", "error", "install_command", "installed", "require"]
