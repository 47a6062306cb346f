"""The task logger (Celery's ``celery.utils.log.get_task_logger``): records logged inside a
task carry ``task_name`` and ``task_id``, for a format like
``%(task_name)s[%(task_id)s]: %(message)s``."""

from __future__ import annotations

import logging

from ..task import current_request

#: Celery's default format for records of the task logger in a worker.
TASK_LOG_FORMAT = ("[%(asctime)s: %(levelname)s/%(processName)s] "
                   "%(task_name)s[%(task_id)s]: %(message)s")

#: The parent of every task logger: a worker puts the task format on its handler.
TASK_LOGGER_NAME = "fastq.task"


class TaskContextFilter(logging.Filter):
    """Adds ``task_name`` and ``task_id`` to each record (``"???"`` outside a task), so
    any formatter may name them; the record is always kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = current_request()
        if request is None:
            record.__dict__.setdefault("task_name", "???")
            record.__dict__.setdefault("task_id", "???")
        else:
            record.__dict__.setdefault("task_name", request.shadow or request.name)
            record.__dict__.setdefault("task_id", request.id)
        return True


_FILTER = TaskContextFilter()


class TaskFormatter(logging.Formatter):
    """A formatter for the task format: fills ``task_name``/``task_id`` for records that
    did not come through a task logger."""

    def format(self, record: logging.LogRecord) -> str:
        _FILTER.filter(record)
        return super().format(record)


def get_task_logger(name: str) -> logging.Logger:
    """The logger ``name`` as a task logger: its records carry the running task's name
    and id, and it propagates through ``fastq.task``.

    Raises:
        RuntimeError: ``name`` is ``fastq.task`` itself, as in Celery.
    """
    if name == TASK_LOGGER_NAME:
        raise RuntimeError(f"logger name {name!r} is reserved for the parent of task loggers")
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    # the task format (set on fastq.task's handler by a worker) applies to its records
    logger.parent = logging.getLogger(TASK_LOGGER_NAME)
    return logger


def get_logger(name: str) -> logging.Logger:
    """A plain logger (Celery's ``get_logger``)."""
    return logging.getLogger(name)


__all__ = ["get_task_logger", "get_logger", "TaskFormatter", "TaskContextFilter",
           "TASK_LOG_FORMAT", "TASK_LOGGER_NAME"]
