"""The exceptions fastq raises, rooted in builtins so callers can catch them generically.

Tree::

    FastqError(Exception)
    ├── ConfigurationError(FastqError, ValueError)      bad setting name or value
    ├── ImproperlyInstalled(FastqError, ImportError)     an optional dependency is missing
    │   └── ExtraNotInstalled(ImproperlyInstalled)       ... one a fastq extra installs; has .extra
    ├── BrokerError(FastqError)
    │   ├── BrokerConnectionLost(BrokerError, ConnectionError)   recoverable
    │   ├── PublishTimeout(BrokerError, TimeoutError)            broker unreachable for too long
    │   ├── PublishNacked(BrokerError)                           the broker refused a publish
    │   └── AMQPError(BrokerError)                               RabbitMQ closed a channel or
    │                                                            connection; has .reply_code
    ├── DecodeError(FastqError, ValueError)              payload cannot be decoded
    │   ├── ContentDisallowed(DecodeError)               content type not in accept_content
    │   ├── MessageTooLarge(DecodeError)                 body (or what it inflates to) over the bound
    │   ├── SecurityError(DecodeError)                   a signed body did not verify
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

Every name of ``celery.exceptions`` is importable from here. Where fastq has the same
condition under another name, the Celery name is an alias (``NotRegistered``,
``TimeoutError``, ``ImproperlyConfigured`` = ``ConfigurationError``, ``CeleryError`` =
``FastqError``, ``TaskPredicate`` = ``TaskControl``, ``OperationalError`` = ``BrokerError``,
``InvalidTaskError`` = ``MessageRejected``); the few with no fastq counterpart (warnings,
``ChordError``, ``WorkerLostError``, ...) are small classes at the end, so an ``except``
or ``import`` written for Celery keeps working. Every class here is also exported from ``fastq``
(``fastq.ResultTimeout``); ``fastq.TimeoutError`` is left out of ``fastq.__all__`` so that
``from fastq import *`` does not shadow the builtin ``TimeoutError``.
"""

from __future__ import annotations

from typing import Any


class FastqError(Exception):
    """Base of every error fastq raises on its own behalf."""


class ConfigurationError(FastqError, ValueError):
    """A setting has an unknown name or an invalid value."""


class ImproperlyInstalled(FastqError, ImportError):
    """An optional dependency needed by the chosen configuration is not installed."""


class ExtraNotInstalled(ImproperlyInstalled):
    """A package that one of fastq's extras installs is missing (or cannot be imported).

    The message is one line ending in the fix (``pip install 'fastq[gevent]'``);
    ``name`` is the module that failed to import and ``extra`` the extra that installs it.
    Raised through ``fastq._extras``.
    """

    def __init__(self, message: str, *, name: str, extra: str) -> None:
        super().__init__(message, name=name)
        self.extra = extra


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


class MessageTooLarge(DecodeError):
    """A body, or what its compression inflates to, is over ``worker_max_message_size``."""


class MessageRejected(DecodeError):
    """A delivery is not a valid task message; ``reason`` is a short machine-readable code.

    Reasons used: ``content-disallowed``, ``decode-error``, ``unknown-format``,
    ``protocol-v1``, ``invalid-body``, ``invalid-headers``, ``invalid-eta``,
    ``unknown-compression``, ``too-large``, ``signature``, ``unknown-task``, ``redelivery-limit``,
    ``rejected``.
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
                 when: float | object | None = None,
                 sig: tuple[Any, Any] | None = None) -> None:
        self.message = message
        self.exc = exc
        self.when = when
        #: ``(args, kwargs)`` of the next run, when it runs in the caller (eager mode)
        self.sig = sig
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


# -- Celery's names (``celery.exceptions``) ------------------------------------------

CeleryError = FastqError
ImproperlyConfigured = ConfigurationError
TaskPredicate = TaskControl
RetryTaskError = Retry
OperationalError = BrokerError
InvalidTaskError = MessageRejected


class CeleryWarning(UserWarning):
    """Base of the warnings Celery's API may emit (fastq emits none of these today)."""


class AlwaysEagerIgnored(CeleryWarning):
    """Celery's warning for a setting ignored because ``task_always_eager`` is on."""


class DuplicateNodenameWarning(CeleryWarning):
    """Two workers answered with the same node name."""


class DuplicateTaskNameWarning(CeleryWarning):
    """A task name was registered twice."""


class FixupWarning(CeleryWarning):
    """A framework fix-up (Django) could not be applied."""


class NotConfigured(CeleryWarning):
    """Celery's warning for an app used before it was configured."""


class SecurityWarning(CeleryWarning):
    """An insecure setting is in use (pickle accepted, say)."""


class CPendingDeprecationWarning(PendingDeprecationWarning):
    """Celery's pending-deprecation warning class."""


class CDeprecationWarning(DeprecationWarning):
    """Celery's deprecation warning class."""


class SecurityError(DecodeError):
    """Message signing failed, or a signed body did not verify (unknown signer, bad
    signature, expired certificate): the worker dead-letters it with reason ``signature``."""


class QueueNotFound(TaskError, KeyError):
    """A task was routed to a queue that is not declared (``task_create_missing_queues``
    off)."""


class IncompleteStream(TaskError):
    """``AsyncResult.iterdeps()`` / ``collect()`` reached a result that is not ready."""


class AlreadyRegistered(TaskError):
    """Celery's error for a task registered twice under one name."""


class ChordError(TaskError):
    """A member of a chord failed, so its callback cannot run."""


class BackendError(FastqError):
    """The result backend failed an operation."""


class BackendGetMetaError(BackendError):
    """Reading a result from the backend failed."""


class BackendStoreError(BackendError):
    """Storing a result in the backend failed."""


class WorkerLostError(FastqError):
    """The process running a task died before the task ended."""


class Terminated(FastqError):
    """The task was terminated (``revoke(terminate=True)``)."""


class WorkerShutdown(SystemExit):
    """Raised in a worker to ask for a warm shutdown."""


class WorkerTerminate(SystemExit):
    """Raised in a worker to ask for a cold shutdown."""


SystemTerminate = WorkerTerminate
