"""Cython accelerators for the hot path, and the one place that knows which are usable and why not.

Two compiled modules have a pure-Python twin: ``_amqp`` (the rabbitmq-c AMQP driver;
twin ``fastq/brokers/_amqp_py.py`` on py-amqp) and ``_consumer`` (the consumer; twin
``fastq/worker/_consumer_py.py``). The rest are the same ``.py`` files built a second
time by Cython (``setup.py``'s ``PURE_PYTHON_SPEEDUPS``): the consumer loop, its ack
decisions and the AMQP confirm tracker, so both twins run the same lines. ``FASTQ_NO_SPEEDUPS=1``
forces the twins; ``FASTQ_REQUIRE_SPEEDUPS=1`` (CI sets it) turns a missing module into
an ``ImproperlyInstalled`` error naming it. Both are read here and nowhere else at run
time (``setup.py`` reads them at build time). The switches are read on every call, so
a test may flip them; only the import attempt itself is remembered.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass
from types import ModuleType

from ..exceptions import ImproperlyInstalled

#: ``1`` forces the pure-Python twins (build and import).
NO_SPEEDUPS_ENV = "FASTQ_NO_SPEEDUPS"
#: ``1`` makes a compiled module that cannot be used an import error.
REQUIRE_SPEEDUPS_ENV = "FASTQ_REQUIRE_SPEEDUPS"
#: The switches above: package switches, not settings (``config`` skips them).
ENV_SWITCHES = (NO_SPEEDUPS_ENV, REQUIRE_SPEEDUPS_ENV)

#: Compiled module -> what it is, as messages name it.
MODULES = {
    "_amqp": "the rabbitmq-c AMQP driver",
    "_consumer": "the compiled consumer loop",
}

#: Where Debian's librabbitmq-dev puts rabbitmq-c's header (setup.py finds it through
#: pkg-config; a stat is enough to tell whether it is there now).
_RABBITMQ_HEADERS = ("/usr/include/amqp.h", "/usr/include/rabbitmq-c/amqp.h",
                     "/usr/local/include/amqp.h", "/usr/local/include/rabbitmq-c/amqp.h")


@dataclass(frozen=True)
class Status:
    """Whether one compiled module is usable in this process; if not, why and the fix."""

    #: the module's name in this package: ``_amqp`` or ``_consumer``
    name: str
    #: the imported module, or None when it is not used
    module: ModuleType | None
    #: why it is not used ("" when it is)
    reason: str = ""
    #: the command that makes it usable ("" when it is, or nothing would)
    fix: str = ""
    #: switched off on purpose (FASTQ_NO_SPEEDUPS=1), not missing
    forced_off: bool = False

    @property
    def available(self) -> bool:
        return self.module is not None

    def why(self) -> str:
        """The reason it is not used and, unless that was on purpose, the fix."""
        fix = self.fix and not self.forced_off
        return f"{self.reason}{'; fix: ' + self.fix if fix else ''}"

    def describe(self) -> str:
        """``compiled``, or ``pure Python (<reason>; fix: <command>)``, for banners."""
        return "compiled" if self.available else f"pure Python ({self.why()})"


def disabled() -> bool:
    """Whether ``FASTQ_NO_SPEEDUPS=1`` forces the pure-Python twins."""
    return os.environ.get(NO_SPEEDUPS_ENV) == "1"


def required() -> bool:
    """Whether ``FASTQ_REQUIRE_SPEEDUPS=1`` makes a missing compiled module an error."""
    return os.environ.get(REQUIRE_SPEEDUPS_ENV) == "1"


#: name -> (module or None, the ImportError's text); one attempt per process
_attempts: dict[str, tuple[ModuleType | None, str]] = {}


def _attempt(name: str) -> tuple[ModuleType | None, str]:
    if name not in _attempts:
        try:
            _attempts[name] = (importlib.import_module(f"{__name__}.{name}"), "")
        except ImportError as exc:
            _attempts[name] = (None, str(exc))
    return _attempts[name]


def _built(name: str) -> bool:
    """Whether the build left an extension file for ``name`` (found without importing)."""
    return importlib.util.find_spec(f"{__name__}.{name}") is not None


def status(name: str, *, asked: bool = False) -> Status:
    """The state of compiled module ``name`` (``_amqp`` or ``_consumer``).

    ``asked``: the configuration names this module explicitly (``driver=rabbitmq-c``),
    which ``FASTQ_NO_SPEEDUPS`` does not override. Imports the module unless switched off.
    """
    if name not in MODULES:
        raise ValueError(f"no compiled module {name!r} (known: {', '.join(MODULES)})")
    if disabled() and not asked:
        return Status(name, None, f"forced off by {NO_SPEEDUPS_ENV}=1",
                      f"unset {NO_SPEEDUPS_ENV} to use it", forced_off=True)
    if not _built(name):
        headers = any(os.path.exists(path) for path in _RABBITMQ_HEADERS)
        if headers:  # so something else was missing then: a compiler, pkg-config, Cython
            reason = "not built when fastq was installed"
        else:
            reason = "not built: rabbitmq-c's headers were missing when fastq was installed"
        return Status(name, None, reason, _rebuild_command(headers))
    module, error = _attempt(name)
    if module is None:
        fix = ("apt-get install librabbitmq4 (rabbitmq-c's shared library)"
               if "librabbitmq" in error else _rebuild_command(True))
        return Status(name, None, f"not importable: {error}", fix)
    return Status(name, module)


def load(name: str, *, asked: bool = False) -> ModuleType | None:
    """Compiled module ``name`` when it is usable, else None (use the twin).

    Raises:
        ImproperlyInstalled: it is not usable and ``FASTQ_REQUIRE_SPEEDUPS=1`` is set or
            ``asked`` is true (the configuration named it); the message says why and
            gives the fix.
    """
    state = status(name, asked=asked)
    if state.available or state.forced_off or not (asked or required()):
        return state.module
    who = "the configuration asks for it" if asked else f"{REQUIRE_SPEEDUPS_ENV}=1 requires it"
    raise ImproperlyInstalled(
        f"{MODULES[name]} (fastq._speedups.{name}) is {state.reason}, and {who}"
        f"{'; fix: ' + state.fix if state.fix else ''}", name=f"{__name__}.{name}")


def rabbitmq_c_version() -> str | None:
    """The version of rabbitmq-c the AMQP driver is linked with, when it is usable
    (or in use: a configuration that asks for it overrides FASTQ_NO_SPEEDUPS)."""
    module = sys.modules.get(f"{__name__}._amqp") or status("_amqp").module
    return getattr(module, "RABBITMQ_C_VERSION", None)


def _rebuild_command(have_headers: bool) -> str:
    """The command that rebuilds fastq with its extensions, for how it was installed."""
    packages = [] if have_headers else ["librabbitmq-dev"]
    packages += [tool for tool in ("gcc", "pkg-config") if shutil.which(tool) is None]
    apt = f"apt-get install {' '.join(packages)}, then " if packages else ""
    # --no-cache-dir: pip would otherwise reuse the wheel it built without the extensions
    reinstall = "pip install --force-reinstall --no-deps --no-cache-dir"
    source = _installed_from()
    if source is not None:
        return f"{apt}{reinstall} {source}"
    # from an index: the binary wheel carries rabbitmq-c, a source build needs the headers
    return (f"{reinstall} --only-binary fastq fastq (the wheel carries rabbitmq-c), or "
            f"{apt}{reinstall} --no-binary fastq fastq")


def _installed_from() -> str | None:
    """What to give ``pip install`` to rebuild this copy: the source tree the package is
    in (``-e <dir>``) or was installed from, or None when it came from an index."""
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    root = os.path.dirname(package_dir)
    if all(os.path.exists(os.path.join(root, f)) for f in ("setup.py", "pyproject.toml")):
        return f"-e {root}"  # the package is imported from its checkout
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        recorded = distribution("fastq").read_text("direct_url.json")
    except (PackageNotFoundError, OSError):
        return None
    url = (json.loads(recorded) if recorded else {}).get("url", "")
    return url[len("file://"):] if url.startswith("file://") else None


__all__ = ["ENV_SWITCHES", "MODULES", "NO_SPEEDUPS_ENV", "REQUIRE_SPEEDUPS_ENV", "Status",
           "disabled", "load", "rabbitmq_c_version", "required", "status"]
