"""The policy every broker shares (fastq/brokers/base.py): the backoff, the one bounded
retry of a publish, the reconnect limit, and the mailbox a broker without control lacks."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from fastq import App
from fastq.brokers.base import Backoff, Broker, Delivery, PartlyPublished
from fastq.exceptions import BrokerConnectionLost, BrokerError, ConfigurationError, PublishTimeout
from fastq.testing.contracts import make_message

# plain Python: no code with a compiled twin
pytestmark = pytest.mark.twin_neutral


def test_backoff_doubles_to_the_cap_counts_failures_and_resets() -> None:
    b = Backoff(0.1, 2.0)
    assert b.due(0.0) and b.failures == 0
    delays = [b.failed(100.0) for _ in range(7)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert b.failures == 7
    assert not b.due(101.0) and b.due(102.0)
    b.succeeded()
    assert b.failures == 0
    assert b.due(0.0) and b.failed(0.0) == 0.1


class _Flaky(Broker):
    """Fails the first ``failures`` publish attempts with ``error(attempt, messages)``."""

    def __init__(self, failures: int, error: Any = None, **options: Any) -> None:
        super().__init__("flaky://user:secret@host", **options)
        self.failures = failures
        self.error = error or (lambda attempt, messages: BrokerConnectionLost("refused"))
        self.attempts: list[list[str]] = []
        self.published: list[str] = []

    def _publish(self, messages: Sequence[Any]) -> None:
        self.attempts.append([m.headers["id"] for m in messages])
        if len(self.attempts) <= self.failures:
            raise self.error(len(self.attempts), messages)
        self.published.extend(m.headers["id"] for m in messages)

    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        return []

    def ack_many(self, tags: Iterable[Any]) -> None:
        pass

    def release_many(self, tags: Iterable[Any]) -> None:
        pass

    def reject(self, tag: Any, requeue: bool) -> None:
        pass

    def dead_letter(self, tag: Any, reason: str) -> None:
        pass

    def purge(self, queue: str) -> int:
        return 0


def test_a_publish_is_retried_until_the_broker_answers() -> None:
    broker = _Flaky(3, publish_timeout=5)
    message = make_message()
    broker.publish(message)
    assert len(broker.attempts) == 4
    assert broker.published == [message.headers["id"]]


def test_a_publish_gives_up_after_publish_timeout_naming_the_broker_and_the_fix() -> None:
    broker = _Flaky(10**6, publish_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(PublishTimeout, match="unreachable within 0.3s") as caught:
        broker.publish_many([make_message(), make_message()])
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 0.6
    assert "could not publish 2 message(s)" in str(caught.value)
    assert "secret" not in str(caught.value)  # the URL's password is masked
    assert "broker_connection_timeout" in str(caught.value)
    assert isinstance(caught.value.__cause__, BrokerConnectionLost)


def test_a_refusal_is_not_retried_and_zero_timeout_means_one_attempt() -> None:
    refused = _Flaky(1, error=lambda attempt, messages: BrokerError("no such exchange"))
    with pytest.raises(BrokerError, match="no such exchange"):
        refused.publish(make_message())
    assert len(refused.attempts) == 1
    once = _Flaky(1, publish_timeout=0)
    with pytest.raises(BrokerConnectionLost):
        once.publish(make_message())
    assert len(once.attempts) == 1


def test_a_retry_sends_only_what_a_partial_attempt_left() -> None:
    broker = _Flaky(2, error=lambda attempt, messages: PartlyPublished("lost", 1),
                    publish_timeout=5)
    messages = [make_message() for _ in range(4)]
    ids = [m.headers["id"] for m in messages]
    broker.publish_many(messages)
    assert broker.attempts == [ids, ids[1:], ids[2:]]


def test_empty_batches_are_not_sent() -> None:
    broker = _Flaky(0)
    broker.publish_many([])
    assert broker.attempts == []


def test_reconnects_give_up_after_connection_max_retries() -> None:
    forever = _Flaky(0)
    for _ in range(1000):
        forever._reconnect_failed(ConnectionRefusedError("refused"))
    limited = _Flaky(0, connection_max_retries=2)
    limited._reconnect_failed(ConnectionRefusedError("refused"))  # lost
    limited._reconnect_failed(ConnectionRefusedError("refused"))  # retry 1 failed
    with pytest.raises(BrokerError, match="after 2 retries.*broker_connection_max_retries"):
        limited._reconnect_failed(ConnectionRefusedError("refused"))  # retry 2 failed
    limited.reconnect_backoff.succeeded()  # back: the count starts again
    limited._reconnect_failed(ConnectionRefusedError("refused"))


def test_the_app_hands_its_connection_settings_to_the_broker(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/broker.sqlite3"
    app = App("policy", broker=url, broker_connection_timeout=1.5,
              broker_connection_max_retries=7)
    assert (app.broker.publish_timeout, app.broker.connection_max_retries) == (1.5, 7)
    app.close()
    app = App("policy", broker=url, broker_connection_retry=False)
    assert (app.broker.publish_timeout, app.broker.connection_max_retries) == (0.0, 0)
    app.close()
    app = App("policy", broker=url, broker_transport_options={"publish_timeout": 9})
    with pytest.raises(ConfigurationError, match="broker_connection_timeout"):
        app.broker  # noqa: B018 - building it is the point


def test_a_broker_without_control_says_so() -> None:
    broker = _Flaky(0)
    assert "control" not in broker.capabilities
    with pytest.raises(ConfigurationError, match="_Flaky.*'control' capability.*"
                       "worker_enable_remote_control=False"):
        broker.mailbox(60)


def test_backoff_counts_the_recoveries_that_end_a_run_of_failures() -> None:
    backoff = Backoff(0.1, 1.0)
    backoff.succeeded()
    assert backoff.recoveries == 0  # a success after a success recovers from nothing
    backoff.failed(0.0)
    backoff.failed(0.1)
    backoff.succeeded()
    backoff.succeeded()
    assert (backoff.recoveries, backoff.failures) == (1, 0)
