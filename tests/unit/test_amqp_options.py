"""The AMQP broker's transport options: Celery's Redis/SQS-only ones are let through,
fastq's own reach the driver."""

import logging

import pytest

from fastq.brokers import amqp, create_broker
from fastq.exceptions import ConfigurationError

URL = "amqp://guest:guest@127.0.0.1:5999//"  # nothing listens: construction connects nothing


def test_visibility_timeout_is_ignored_with_one_note(caplog, monkeypatch):
    monkeypatch.setattr(amqp, "_noted_visibility_timeout", False)
    with caplog.at_level(logging.INFO, logger="fastq.brokers.amqp"):
        create_broker(URL, visibility_timeout=3600)
        create_broker(URL + "?visibility_timeout=3600")
    notes = [r for r in caplog.records if "visibility_timeout is ignored" in r.getMessage()]
    assert len(notes) == 1


def test_a_misspelt_option_is_still_an_error():
    with pytest.raises(ConfigurationError, match="visibilty_timeout"):
        create_broker(URL, visibilty_timeout=3600)


def test_rpc_timeout_reaches_the_driver_by_option_or_url():
    assert create_broker(URL)._params["rpc_timeout"] == amqp.DEFAULT_RPC_TIMEOUT
    assert create_broker(URL, rpc_timeout=5)._params["rpc_timeout"] == 5.0
    assert create_broker(URL + "?rpc_timeout=0")._params["rpc_timeout"] == 0.0
