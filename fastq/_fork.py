"""The current process id without a system call: objects holding connections check it
on every use to notice a fork, and a syscall per publish is dear on some machines."""

from __future__ import annotations

import os

_pid = os.getpid()


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)


def getpid() -> int:
    """``os.getpid()``, kept up to date across ``os.fork`` (and multiprocessing's fork)."""
    return _pid
