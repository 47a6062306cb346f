"""The exceptions fastq raises, rooted in builtins so callers can catch them generically.

Tree::

    FastqError(Exception)
    ├── ConfigurationError(FastqError, ValueError)      bad setting name or value
    ├── ImproperlyInstalled(FastqError, ImportError)     an optional dependency is missing
    ├── BrokerError(FastqError)
    │   ├── BrokerConnectionLost(BrokerError, ConnectionError)   recoverable
    │   ├── PublishTimeout(BrokerError, TimeoutError)            broker unreachable for too long
    │   ├── PublishNacked(BrokerError)                           the broker refused a publish
    │   └── AMQPError(BrokerError)                               RabbitMQ closed a channel or
    │                                                            connection; has .reply_code
    ├── DecodeError(FastqError, ValueError)              payload cannot be decoded
    │   ├── ContentDisallowed(DecodeError)               content type not in accept_content
    │   └── MessageRejected(DecodeError)                 not a valid task message; has .reason
    ├── TaskNotRegistered(FastqError, KeyError)          unknown task name
    ├── TaskError(FastqError)                            raised into callers of AsyncResult.get()
    │   ├── TaskRevokedError(TaskError)
    │   ├── TimeLimitExceeded(TaskError)
    │   └── MaxRetriesExceededError(TaskError)
    ├── SoftTimeLimitExceeded(FastqError)                raised inside a task at its soft limit
    ├── ResultTimeout(FastqError, TimeoutError)          AsyncResult.get(timeout=) ran out
    └── TaskControl(Exception)                           control flow raised *by* tasks
        ├── Retry                                        self.retry(): republish, then stop
        ├── Reject                                       reject the message (requeue or dead-letter)
        └── Ignore                                       stop, store nothing, ack

The Celery names (``NotRegistered``, ``TimeoutError``) are aliases so code written for
Celery's exception names keeps working.
"""

from __future__ import annotations


class FastqError(Exception):
    """Base of every error fastq raises on its own behalf."""


class ConfigurationError(FastqError, ValueError):
    """A setting has an unknown name or an invalid value."""


class ImproperlyInstalled(FastqError, ImportError):
    """An optional dependency needed by the chosen configuration is not installed."""


class BrokerError(FastqError):
    """The broker refused or failed an operation.

    ``recoverable`` tells the reconnect logic whether retrying the same operation after
    reconnecting can succeed.
    """

    recoverable = False


class BrokerConnectionLost(BrokerError, ConnectionError):
    """The connection to the broker is gone; reconnecting may help."""

    recoverable = True


class PublishTimeout(BrokerError, TimeoutError):
    """A publish could not reach the broker within the configured bound."""


class PublishNacked(BrokerError):
    """The broker negatively confirmed (nacked) or returned a published message.

    RabbitMQ nacks only on internal errors, so publishing again may succeed.
    """

    recoverable = True


class AMQPError(BrokerError):
    """RabbitMQ closed the channel or the connection with an error code.

    ``reply_code`` and ``reply_text`` are the server's (e.g. 406 and
    ``PRECONDITION_FAILED - inequivalent arg 'durable' ...``); ``scope`` says which of
    the two was closed.
    """

    def __init__(self, reply_code: int, reply_text: str, scope: str = "channel") -> None:
        super().__init__(f"RabbitMQ closed the {scope}: {reply_code} {reply_text}")
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.scope = scope


class DecodeError(FastqError, ValueError):
    """A payload could not be decoded with its declared content type or compression."""


class ContentDisallowed(DecodeError):
    """The message's content type is not listed in ``accept_content``."""


class MessageRejected(DecodeError):
    """A delivery is not a valid task message; ``reason`` is a short machine-readable code.

    Reasons used: ``content-disallowed``, ``decode-error``, ``unknown-format``,
    ``protocol-v1``, ``invalid-body``, ``invalid-headers``, ``invalid-eta``,
    ``unknown-compression``, ``unknown-task``, ``redelivery-limit``, ``rejected``.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class TaskNotRegistered(FastqError, KeyError):
    """No task with this name is registered in the app."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


NotRegistered = TaskNotRegistered


class TaskError(FastqError):
    """Base of errors describing how a task ended, re-raised by ``AsyncResult.get()``."""


class TaskRevokedError(TaskError):
    """The task was revoked or expired before it ran."""


class TimeLimitExceeded(TaskError):
    """The task ran past its hard time limit and was terminated."""


class MaxRetriesExceededError(TaskError):
    """``self.retry()`` was called more than ``max_retries`` times."""


class SoftTimeLimitExceeded(FastqError):
    """Raised inside a task when it reaches its soft time limit; the task may clean up."""


class ResultTimeout(FastqError, TimeoutError):
    """``AsyncResult.get(timeout=...)`` ran out before the task finished."""


TimeoutError = ResultTimeout  # noqa: A001 - Celery's name for the same condition


class TaskControl(Exception):  # noqa: N818 - these are signals, not errors
    """Base of exceptions a task raises to steer the worker rather than report an error."""


class Retry(TaskControl):
    """Raised by ``Task.retry()`` once the retry message is published.

    ``exc`` is the exception that caused the retry (or None), ``when`` the countdown in
    seconds or ETA it was scheduled for.
    """

    def __init__(self, message: str | None = None, exc: BaseException | None = None,
                 when: float | object | None = None) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        super().__init__(message, exc, when)

    def __str__(self) -> str:
        if self.message:
            return self.message
        if self.exc is not None:
            return f"Retry in {self.when}s: {self.exc!r}"
        return f"Retry in {self.when}s"


class Reject(TaskControl):
    """Raised by a task to reject its message: requeue it, or dead-letter it with ``reason``."""

    def __init__(self, reason: object = None, requeue: bool = False) -> None:
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason, requeue)


class Ignore(TaskControl):
    """Raised by a task to stop without storing a result; the message is acked."""
