"""``fastq doctor`` against the RabbitMQ and Redis servers on loopback."""

from __future__ import annotations

import importlib.util

import pytest

from tests.integration.redis_support import REDIS_URL, free_port, require_redis
from tests.integration.test_amqp_broker import URL
from tests.unit.test_doctor import line_with, run_doctor

pytestmark = pytest.mark.integration


def test_reachable_rabbitmq_and_redis_exit_0(tmp_path) -> None:
    require_redis()
    done = run_doctor(tmp_path, URL, REDIS_URL)
    assert done.returncode == 0, done.stdout + done.stderr
    # run_doctor's process gets no FASTQ_* variables: the driver is the one built here,
    # also in CI's FASTQ_NO_SPEEDUPS=1 pass
    built = importlib.util.find_spec("fastq._speedups._amqp") is not None
    driver = "rabbitmq-c" if built else "py-amqp"
    assert line_with(done.stdout, "broker amqp://").startswith(
        f"  ok    broker amqp://guest:***@127.0.0.1:5672//: reachable through {driver} (")
    assert line_with(done.stdout, "result backend").startswith(
        f"  ok    result backend {REDIS_URL}: reachable (")
    assert "guest:guest" not in done.stdout
    assert done.stdout.rstrip().endswith("fastq can work as configured")


def test_rabbitmq_up_and_redis_down_exits_1(tmp_path) -> None:
    port = free_port()
    done = run_doctor(tmp_path, URL, f"redis://:pw@127.0.0.1:{port}/0")
    assert done.returncode == 1
    assert line_with(done.stdout, "broker amqp://").startswith("  ok    ")
    backend = line_with(done.stdout, "result backend")
    assert backend.startswith(f"  FAIL  result backend redis://:***@127.0.0.1:{port}/0: "
                              "unreachable: ")
    assert backend.endswith(f"fix: start it at 127.0.0.1:{port}, or set result_backend to "
                            "one that runs")


def test_rpc_results_ride_on_the_broker(tmp_path) -> None:
    done = run_doctor(tmp_path, URL, "rpc://")
    assert done.returncode == 0, done.stdout
    assert "  ok    result backend rpc://: replies travel over the broker" in done.stdout


def test_the_redis_broker_is_probed_too(tmp_path) -> None:
    require_redis()
    done = run_doctor(tmp_path, REDIS_URL)
    assert done.returncode == 0, done.stdout
    assert line_with(done.stdout, "broker redis://").startswith(
        f"  ok    broker {REDIS_URL}: reachable (")
    assert "  --    result backend: none configured" in done.stdout
