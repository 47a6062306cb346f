"""fastq: a fast, trustworthy task queue that speaks Celery's wire protocol."""

# The public names load on first use, so that ``fastq worker -P gevent`` can monkey-patch
# the standard library before anything fastq imports touches sockets or threads.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "App": "app", "current_app": "app", "shared_task": "app",
    "Signature": "canvas", "chain": "canvas", "signature": "canvas", "group": "canvas",
    "Ignore": "exceptions", "MaxRetriesExceededError": "exceptions", "Reject": "exceptions",
    "Retry": "exceptions", "SoftTimeLimitExceeded": "exceptions",
    "TaskRevokedError": "exceptions", "TimeLimitExceeded": "exceptions",
    "AsyncResult": "result", "GroupResult": "result", "Request": "task", "Task": "task",
}

__all__ = [
    "App", "Task", "Request", "AsyncResult", "GroupResult", "shared_task", "current_app",
    "Signature", "signature", "chain", "group",
    "Retry", "Reject", "Ignore", "MaxRetriesExceededError", "SoftTimeLimitExceeded",
    "TimeLimitExceeded", "TaskRevokedError",
]

if TYPE_CHECKING:
    from .app import App, current_app, shared_task
    from .canvas import Signature, chain, group, signature
    from .exceptions import (
        Ignore,
        MaxRetriesExceededError,
        Reject,
        Retry,
        SoftTimeLimitExceeded,
        TaskRevokedError,
        TimeLimitExceeded,
    )
    from .result import AsyncResult, GroupResult
    from .task import Request, Task


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'fastq' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
