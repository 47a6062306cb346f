"""Monkey-patching for the gevent and eventlet pools, applied before anything else loads."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ._extras import require
from .exceptions import ExtraNotInstalled

GREEN_POOLS = ("gevent", "eventlet")

#: the green library this process patched itself for, once it has
patched: str | None = None


def requested_green_pool(argv: Sequence[str]) -> str | None:
    """The green pool a ``fastq worker`` command line asks for (-P/--pool), or None."""
    args = list(argv[1:])
    if "worker" not in args:
        return None
    pool = os.environ.get("FASTQ_WORKER_POOL")
    for index, arg in enumerate(args):
        if arg in ("-P", "--pool") and index + 1 < len(args):
            pool = args[index + 1]
        elif arg.startswith("--pool="):
            pool = arg.split("=", 1)[1]
        elif arg.startswith("-P") and len(arg) > 2:
            pool = arg[2:]
    return pool if pool in GREEN_POOLS else None


def patch(library: str) -> None:
    """Patch the standard library for ``library`` (gevent or eventlet), once."""
    global patched
    if patched == library:
        return
    if patched is not None:
        raise RuntimeError(f"this process is already patched for {patched}")
    if library == "gevent":
        require("gevent", "-P gevent")
        from gevent import monkey

        monkey.patch_all()
    elif library == "eventlet":
        import warnings

        with warnings.catch_warnings():
            # the user chose eventlet; its deprecation notice is for new projects
            warnings.simplefilter("ignore")
            eventlet = require("eventlet", "-P eventlet")

            eventlet.monkey_patch()
    else:
        raise ValueError(f"not a green pool: {library!r}")
    patched = library


def patch_for_command_line(argv: Sequence[str] | None = None) -> None:
    """Patch first thing when the command line runs a gevent or eventlet worker; when
    the library is missing, say which extra to install and exit 2, as the CLI does."""
    library = requested_green_pool(sys.argv if argv is None else argv)
    if library is not None:
        try:
            patch(library)
        except ExtraNotInstalled as exc:
            print(exc, file=sys.stderr)
            sys.exit(2)


def wait_readable(fd: int, timeout: float) -> None:
    """Wait up to ``timeout`` s for ``fd`` to be readable, through the patched library's
    hub, so other greenlets run meanwhile; for C code that would block the hub."""
    if patched == "gevent":
        from gevent.socket import wait_read

        try:
            wait_read(fd, timeout=timeout)
        except OSError:  # gevent's timeout (socket.timeout) and a closed socket
            pass
    elif patched == "eventlet":
        from eventlet.hubs import trampoline
        from eventlet.timeout import Timeout

        try:
            trampoline(fd, read=True, timeout=timeout, timeout_exc=Timeout)
        except (Timeout, OSError):
            pass
    else:
        import select

        select.select([fd], [], [], timeout)
