"""fastq: a fast, trustworthy task queue that speaks Celery's wire protocol."""

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

__version__ = "0.1.0"

__all__ = [
    "App", "Task", "Request", "AsyncResult", "GroupResult", "shared_task", "current_app",
    "Signature", "signature", "chain", "group",
    "Retry", "Reject", "Ignore", "MaxRetriesExceededError", "SoftTimeLimitExceeded",
    "TimeLimitExceeded", "TaskRevokedError",
]
