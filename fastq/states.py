"""Celery's task states and the sets of them that callers test (``celery.states``)."""

from __future__ import annotations

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
RETRY = "RETRY"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
IGNORED = "IGNORED"

#: The task has ended: its result will not change.
READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED})
#: The stored result is an exception.
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED})
#: ``AsyncResult.get()`` raises the stored exception.
PROPAGATE_STATES = frozenset({FAILURE, REVOKED})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
ALL_STATES = frozenset({PENDING, RECEIVED, STARTED, RETRY, SUCCESS, FAILURE, REVOKED,
                        REJECTED, IGNORED})


#: From the state that wins to the one that loses; ``None`` stands for any custom state
#: (``update_state(state="PROGRESS")``), which ranks below the final states and above the
#: built-in unfinished ones. Celery's order, so merged states compare the same way.
PRECEDENCE = [SUCCESS, FAILURE, None, REVOKED, STARTED, RECEIVED, REJECTED, RETRY, PENDING]
_RANK = {name: index for index, name in enumerate(PRECEDENCE)}
_CUSTOM_RANK = _RANK[None]


def precedence(state: str | None) -> int:
    """The rank of ``state`` in ``PRECEDENCE``: lower wins; a custom state ranks as ``None``."""
    return _RANK.get(state, _CUSTOM_RANK)


class state(str):  # noqa: N801 - Celery's name
    """A state name that compares by precedence: ``state(PENDING) < state(SUCCESS)``,
    and a custom state is above STARTED and below SUCCESS."""

    __slots__ = ()

    def __gt__(self, other: str) -> bool:
        return precedence(self) < precedence(other)

    def __ge__(self, other: str) -> bool:
        return precedence(self) <= precedence(other)

    def __lt__(self, other: str) -> bool:
        return precedence(self) > precedence(other)

    def __le__(self, other: str) -> bool:
        return precedence(self) >= precedence(other)


__all__ = ["PENDING", "RECEIVED", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED",
           "REJECTED", "IGNORED", "READY_STATES", "EXCEPTION_STATES", "PROPAGATE_STATES",
           "UNREADY_STATES", "ALL_STATES", "PRECEDENCE", "precedence", "state"]
