"""fastq: a fast, trustworthy task queue that speaks Celery's wire protocol."""

# The public names load on first use, so that ``fastq worker -P gevent`` can monkey-patch
# the standard library before anything fastq imports touches sockets or threads.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _state

__version__ = "0.1.0"

#: Every exception fastq raises to its users (the whole of ``fastq.exceptions``).
_EXCEPTIONS = (
    "FastqError", "ConfigurationError", "ImproperlyInstalled", "ExtraNotInstalled",
    "BrokerError", "BrokerConnectionLost", "PublishTimeout", "PublishNacked", "AMQPError",
    "DecodeError", "MessageTooLarge", "ContentDisallowed", "MessageRejected",
    "TaskNotRegistered", "NotRegistered",
    "TaskError", "TaskRevokedError", "TimeLimitExceeded", "MaxRetriesExceededError",
    "SoftTimeLimitExceeded", "ResultTimeout", "TimeoutError",
    "TaskControl", "Retry", "Reject", "Ignore",
    # Celery's names: aliases, or small classes where fastq has no counterpart
    "CeleryError", "ImproperlyConfigured", "TaskPredicate", "RetryTaskError",
    "OperationalError", "InvalidTaskError", "CeleryWarning", "AlwaysEagerIgnored",
    "DuplicateNodenameWarning", "DuplicateTaskNameWarning", "FixupWarning", "NotConfigured",
    "SecurityWarning", "CPendingDeprecationWarning", "CDeprecationWarning", "SecurityError",
    "QueueNotFound", "IncompleteStream", "AlreadyRegistered", "ChordError", "BackendError",
    "BackendGetMetaError", "BackendStoreError", "WorkerLostError", "Terminated",
    "WorkerShutdown", "WorkerTerminate", "SystemTerminate",
)

#: public name -> the module that defines it
_PUBLIC = {
    "App": "app", "Celery": "app", "current_app": "app", "shared_task": "app",
    "Signature": "canvas", "chain": "canvas", "signature": "canvas", "group": "canvas",
    "chord": "canvas", "chunks": "canvas", "xmap": "canvas", "xstarmap": "canvas",
    "maybe_signature": "canvas", "subtask": "canvas",
    "AsyncResult": "result", "EagerResult": "result", "GroupResult": "result",
    "Request": "task", "Task": "task", "TaskOptions": "task",
    "Queue": "routing", "Exchange": "routing", "Broadcast": "routing",
    **dict.fromkeys(_EXCEPTIONS, "exceptions"),
}

# ``TimeoutError`` (Celery's name for ``ResultTimeout``) is ``fastq.TimeoutError`` but is
# left out of ``__all__``: ``from fastq import *`` would shadow the builtin TimeoutError,
# and ``except TimeoutError`` would then miss every other timeout.
__all__ = [
    "App", "Celery", "Task", "Request", "TaskOptions", "AsyncResult", "EagerResult", "GroupResult",
    "shared_task", "current_app", "Signature", "signature", "chain", "group", "chord",
    "chunks", "xmap", "xstarmap", "maybe_signature", "subtask",
    "Queue", "Exchange", "Broadcast",
    "FastqError", "ConfigurationError", "ImproperlyInstalled", "ExtraNotInstalled",
    "BrokerError", "BrokerConnectionLost", "PublishTimeout", "PublishNacked", "AMQPError",
    "DecodeError", "MessageTooLarge", "ContentDisallowed", "MessageRejected",
    "TaskNotRegistered", "NotRegistered",
    "TaskError", "TaskRevokedError", "TimeLimitExceeded", "MaxRetriesExceededError",
    "SoftTimeLimitExceeded", "ResultTimeout",
    "TaskControl", "Retry", "Reject", "Ignore",
    *_EXCEPTIONS[_EXCEPTIONS.index("CeleryError"):],
]

if TYPE_CHECKING:
    from ._state import current_app
    from .app import App, Celery, shared_task
    from .canvas import (
        Signature,
        chain,
        chord,
        chunks,
        group,
        maybe_signature,
        signature,
        subtask,
        xmap,
        xstarmap,
    )
    from .exceptions import (
        AMQPError,
        BrokerConnectionLost,
        BrokerError,
        ConfigurationError,
        ContentDisallowed,
        DecodeError,
        ExtraNotInstalled,
        FastqError,
        Ignore,
        ImproperlyInstalled,
        MaxRetriesExceededError,
        MessageRejected,
        MessageTooLarge,
        NotRegistered,
        PublishNacked,
        PublishTimeout,
        Reject,
        ResultTimeout,
        Retry,
        SoftTimeLimitExceeded,
        TaskControl,
        TaskError,
        TaskNotRegistered,
        TaskRevokedError,
        TimeLimitExceeded,
    )
    from .exceptions import TimeoutError as TimeoutError  # re-exported, not in __all__
    from .result import AsyncResult, EagerResult, GroupResult
    from .routing import Broadcast, Exchange, Queue
    from .task import Request, Task, TaskOptions


def _default_app() -> Any:
    return importlib.import_module(".app", __name__).App("default")


# The package sits above every layer: it tells the lower ones how to make the default app.
_state.default_app_factory = _default_app


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'fastq' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])
