"""A broker that is down: a publish waits ``broker_connection_timeout`` once (not once per
layer), and a worker stops after ``broker_connection_max_retries`` reconnects.

The servers are "down" as loopback ports nobody listens on, so nothing here needs
RabbitMQ, Redis or SQS running.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time

import pytest

from fastq import App
from fastq.brokers import create_broker
from fastq.exceptions import BrokerError, PublishTimeout

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAVE_C = (os.environ.get("FASTQ_NO_SPEEDUPS") != "1"
          and importlib.util.find_spec("fastq._speedups._amqp") is not None)
AMQP_DRIVERS = ["py-amqp"] + (["rabbitmq-c"] if HAVE_C else [])


def closed_port() -> int:
    """A loopback port with no listener: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def down_urls() -> list:
    port = closed_port()
    urls = [pytest.param(f"amqp://guest:guest@127.0.0.1:{port}//?driver={driver}",
                         id=f"amqp-{driver}") for driver in AMQP_DRIVERS]
    urls.append(pytest.param(f"redis://127.0.0.1:{port}/0", id="redis"))
    # made-up credentials: botocore wants some before it tries to connect
    urls.append(pytest.param(f"sqs://fake:fake@127.0.0.1:{port}", id="sqs"))
    return urls


@pytest.mark.parametrize("url", down_urls())
def test_a_publish_waits_broker_connection_timeout_once(url) -> None:
    timeout = 1.0
    app = App("down", broker_url=url, broker_connection_timeout=timeout)
    try:
        started = time.monotonic()
        with pytest.raises(PublishTimeout, match=f"unreachable within {timeout}s"):
            app.send_task("t.add", (1, 2))
        elapsed = time.monotonic() - started
    finally:
        app.close()
    # it did wait (the broker's retries ran), and the wait was not doubled by a second
    # retry loop above or below the broker's
    assert timeout * 0.95 <= elapsed < 2 * timeout, elapsed


@pytest.mark.parametrize("url", [u for u in down_urls() if u.id != "sqs"])
def test_a_consumer_gives_up_after_connection_max_retries(url) -> None:
    broker = create_broker(url, connection_max_retries=2)
    try:
        started = time.monotonic()
        with pytest.raises(BrokerError, match="gave up reconnecting .* after 2 retries"):
            for _ in range(20):  # each fetch makes at most the attempts its timeout allows
                assert broker.fetch(["down"], 10, 0.5) == []
        assert time.monotonic() - started < 5
    finally:
        broker.close()


WORKER = """
import sys
from fastq import App
from fastq.worker.supervisor import Worker

app = App("down", broker=sys.argv[1], worker_enable_remote_control=False,
          broker_connection_max_retries=2)
print("exit", Worker(app, health_file=sys.argv[2]).run())
"""


def test_a_worker_stops_when_its_broker_stays_down(tmp_path) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    env = {**os.environ, "PYTHONPATH": ROOT}
    # a health file of its own: the worker replaces it while running and deletes it at exit
    health = str(tmp_path / "health.json")
    done = subprocess.run([sys.executable, "-c", WORKER, url, health], env=env,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.stdout.split() == ["exit", "1"], done.stderr
    assert "after 2 retries" in done.stderr and "broker_connection_max_retries" in done.stderr
