"""``fastq doctor``'s checks: what is compiled, which extras are installed, whether the app's broker and backend answer."""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from . import _extras, _speedups
from ._registry import mask_url, scheme_of
from .exceptions import ConfigurationError, ImproperlyInstalled

if TYPE_CHECKING:
    from .app import App

#: Seconds a broker or backend gets to answer before it counts as unreachable.
DEFAULT_TIMEOUT = 3.0

OK, ABSENT, NOTE, FAIL = "ok", "--", "note", "FAIL"


@dataclass(frozen=True)
class Finding:
    """One line of the report: ``level`` (ok, --, note, FAIL), what was found, the fix."""

    level: str
    text: str
    fix: str = ""

    def __str__(self) -> str:
        return f"  {self.level:<5} {self.text}{'; fix: ' + self.fix if self.fix else ''}"


def header() -> str:
    return (f"fastq {_version('fastq') or '?'} on {platform.python_implementation()} "
            f"{platform.python_version()} ({sys.executable})")


# -- compiled parts ------------------------------------------------------------------
def check_speedups() -> list[Finding]:
    """One finding per compiled module: in use, switched off, or missing and why."""
    found = []
    for name, what in _speedups.MODULES.items():
        label = f"fastq._speedups.{name} ({what})"
        state = _speedups.status(name)
        if state.available:
            version = _speedups.rabbitmq_c_version() if name == "_amqp" else None
            linked = f", rabbitmq-c {version}" if version else ""
            found.append(Finding(OK, f"{label}: compiled{linked}"))
        elif state.forced_off:
            found.append(Finding(NOTE, f"{label}: {state.reason}; its pure-Python twin runs",
                                 state.fix))
        elif _speedups.required():
            found.append(Finding(FAIL, f"{label}: {state.reason}, and "
                                       f"{_speedups.REQUIRE_SPEEDUPS_ENV}=1 requires it",
                                 state.fix))
        else:
            found.append(Finding(NOTE, f"{label}: {state.reason}; its pure-Python twin runs "
                                       "(3-4x slower on RabbitMQ)", state.fix))
    return found


# -- optional extras -----------------------------------------------------------------
def check_extras() -> list[Finding]:
    """One finding per extra, listing its packages (absent ones with the pip command).
    Nothing is imported: a green library loaded here would be loaded unpatched."""
    by_extra: dict[str, list[str]] = {}
    for module, (_dist, extra) in _extras.OPTIONAL.items():
        by_extra.setdefault(extra, []).append(module)
    found = []
    for extra, modules in by_extra.items():
        present = [m for m in modules if _extras.installed(m)]
        have = ", ".join(f"{_extras.OPTIONAL[m][0]} {_module_version(m)}".rstrip()
                         for m in present)
        missing = [_extras.OPTIONAL[m][0] for m in modules if m not in present]
        if not missing:
            found.append(Finding(OK, f"{extra}: {have}"))
        else:
            found.append(Finding(ABSENT, f"{extra}: {have + '; ' if have else ''}"
                                         f"{', '.join(missing)} not installed "
                                         f"(pip install 'fastq[{extra}]')"))
    return found


def _module_version(module: str) -> str:
    return _version(module) or _version(_extras.OPTIONAL[module][0]) or ""


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


# -- the app's broker and backend ------------------------------------------------------
def check_app(app: App, timeout: float = DEFAULT_TIMEOUT) -> list[Finding]:
    """Whether the broker and the result backend ``app`` is configured with can work:
    their extras are installed and their servers answer within ``timeout`` seconds."""
    found = [_check_store("broker", app.broker_url, lambda: app.broker, "broker_url",
                          timeout)]
    backend_url = app.backend_url
    if backend_url is None:
        found.append(Finding(ABSENT, "result backend: none configured, so results are "
                                     "not stored (result_backend keeps them)"))
    else:
        found.append(_check_store("result backend", backend_url, lambda: app.backend,
                                  "result_backend", timeout))
    return found


def _check_store(kind: str, url: str, create: Callable[[], Any], setting: str,
                 timeout: float) -> Finding:
    """Create the broker or backend (its extra must be there), then see it work: a local
    file must be writable, a server must answer."""
    shown = f"{kind} {mask_url(url)}"
    try:
        store = create()
    except (ImproperlyInstalled, ConfigurationError) as exc:
        return Finding(FAIL, f"{shown}: {exc}")
    scheme = scheme_of(url)
    if scheme == "memory":
        return Finding(OK, f"{shown}: in this process only")
    if scheme == "rpc":
        return Finding(OK, f"{shown}: replies travel over the broker")
    if scheme == "sqlite":
        return _check_file(shown, store.path, setting)
    if scheme == "db+sqlite":
        return _check_file(shown, store.engine.url.database or "", setting)
    driver = getattr(store, "driver_name", None)
    return _probe(shown, url, _connector(store), store.close, timeout,
                  f" through {driver}" if driver else "", setting)


def _connector(store: Any) -> Callable[[], Any]:
    """What reaching this broker or backend's server takes, and no more."""
    if hasattr(store, "connect"):  # a broker
        return store.connect
    engine = getattr(store, "engine", None)
    if engine is not None:
        # a connection, not a read: reading would create the tables in that database
        return lambda: engine.connect().close()
    return lambda: store.get("fastq-doctor-probe")


def _probe(shown: str, url: str, connect: Callable[[], Any], close: Callable[[], Any],
           timeout: float, how: str, setting: str) -> Finding:
    """Run ``connect`` in a thread for at most ``timeout`` seconds; a thread because not
    every client takes a timeout for everything it does on connecting."""
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            connect()
            outcome.append(None)
        except BaseException as exc:  # reported, whatever the client raised
            outcome.append(exc)
        finally:
            try:
                close()
            except Exception:  # closing after a failed connect may fail too
                pass

    began = time.monotonic()
    thread = threading.Thread(target=attempt, name="fastq-doctor-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    where = _host_of(url)
    fix = f"start it{' at ' + where if where else ''}, or set {setting} to one that runs"
    if not outcome:
        return Finding(FAIL, f"{shown}: no answer within {timeout:g} s", fix)
    if outcome[0] is not None:
        exc = outcome[0]
        said = _scrub(str(exc) or type(exc).__name__, url)
        return Finding(FAIL, f"{shown}: unreachable: {said}", fix)
    took = (time.monotonic() - began) * 1000
    return Finding(OK, f"{shown}: reachable{how} ({took:.0f} ms)")


def _check_file(shown: str, path: str, setting: str) -> Finding:
    """A SQLite database works when the file is writable, or can be created."""
    path = os.path.abspath(path)
    if os.path.exists(path):
        if os.access(path, os.R_OK | os.W_OK):
            return Finding(OK, f"{shown}: file {path}")
        return Finding(FAIL, f"{shown}: {path} is not writable by this user",
                       f"change its permissions, or set {setting} to another file")
    parent = os.path.dirname(path)
    while parent and not os.path.isdir(parent):
        parent = os.path.dirname(parent) if os.path.dirname(parent) != parent else ""
    if parent and os.access(parent, os.W_OK | os.X_OK):
        return Finding(OK, f"{shown}: file {path} (created on first use)")
    return Finding(FAIL, f"{shown}: cannot create {path} (no write access to "
                         f"{parent or 'its directory'})", f"set {setting} to a writable place")


def _host_of(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname or ""
    except ValueError:
        return ""


def _scrub(text: str, url: str) -> str:
    """``text`` without the password of ``url``, should a client quote it back."""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in {password, unquote(password or "")} - {None, ""}:
        text = text.replace(secret, "***")  # type: ignore[arg-type]
    return text


def run(app: App | None, app_name: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[list[str], int]:
    """The report's lines and the exit code: 1 when something configured cannot work."""
    sections: list[tuple[str, list[Finding]]] = [
        ("compiled parts", check_speedups()),
        ("optional extras", check_extras()),
    ]
    if app is not None:
        sections.append((app_name, check_app(app, timeout)))
    lines = [header()]
    for title, findings in sections:
        lines += ["", title, *map(str, findings)]
    failures = sum(f.level == FAIL for _, findings in sections for f in findings)
    lines.append("")
    lines.append(f"{failures} problem(s): fastq cannot work as configured until fixed"
                 if failures else "fastq can work as configured")
    return lines, 1 if failures else 0


__all__ = ["DEFAULT_TIMEOUT", "Finding", "check_app", "check_extras", "check_speedups", "run"]
