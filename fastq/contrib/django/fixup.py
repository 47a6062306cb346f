"""What Celery's Django fix-up does to database connections in a worker: a task's
connections are closed after it when they are broken or past ``CONN_MAX_AGE``
(``close_old_connections``, as a Django request ends), and a prefork child drops every
connection it inherited from its parent at start.

Installed once per process by ``install()`` (the worker's Django start-up calls it);
connected to ``task_postrun`` and ``worker_process_init``.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("fastq.contrib.django")

#: The raw connections a forked child inherited. Kept, never closed: closing one would
#: send the server a goodbye on the parent's socket and break the parent's connection.
_inherited: list[Any] = []
_installed = False


def close_after_task(task: Any = None, **_: Any) -> None:
    """``task_postrun``: close the connections that are broken or too old, as Django
    does after a request; a task run eagerly inside the caller leaves them alone."""
    request = getattr(task, "request", None)
    if getattr(request, "is_eager", False):
        return
    from django.db import close_old_connections

    try:
        close_old_connections()
    except Exception:  # a broken connection must not turn a finished task into a failure
        logger.exception("could not close the Django database connections after a task")


def drop_inherited_connections(**_: Any) -> None:
    """``worker_process_init``: forget every connection made by the parent before the
    fork, without I/O on it, so this child opens its own on first use."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.connection is not None:
            _inherited.append(conn.connection)
            conn.connection = None
        conn.close_at = None


def install() -> None:
    """Connect the two receivers (once per process)."""
    global _installed
    if _installed:
        return
    from ... import signals

    signals.task_postrun.connect(close_after_task, weak=False,
                                 dispatch_uid="fastq.contrib.django.close_after_task")
    signals.worker_process_init.connect(
        drop_inherited_connections, weak=False,
        dispatch_uid="fastq.contrib.django.drop_inherited_connections")
    _installed = True
