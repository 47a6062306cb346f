"""Stack dumps of every thread (and greenlet) of this process, for SIGUSR1."""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import traceback

logger = logging.getLogger("fastq.worker")


def format_stacks() -> str:
    """The current stack of every thread, then of every suspended greenlet, as text."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    parts = [f"stacks of process {os.getpid()}:"]
    for ident, frame in sys._current_frames().items():
        parts.append(f"\n--- thread {names.get(ident, '?')} ({ident}) ---\n")
        parts.append("".join(traceback.format_stack(frame)))
    parts.extend(_greenlet_stacks())
    return "".join(parts).rstrip()


def _greenlet_stacks() -> list[str]:
    # Only when greenlets are in use (gevent/eventlet pools): walking gc is slow, and a
    # process without them has nothing to show.
    greenlet_module = sys.modules.get("greenlet")
    if greenlet_module is None:
        return []
    parts = []
    for obj in gc.get_objects():
        if isinstance(obj, greenlet_module.greenlet) and obj.gr_frame is not None:
            parts.append(f"\n--- greenlet {obj!r} ---\n")
            parts.append("".join(traceback.format_stack(obj.gr_frame)))
    return parts


def dump_stacks() -> None:
    """Log the stacks of every thread at WARNING, so they show at the default level."""
    logger.warning("%s", format_stacks())
