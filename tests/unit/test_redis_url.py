"""Parsing of Redis broker URLs (no server needed): TCP, TLS, Unix socket, Sentinel."""

from __future__ import annotations

import pytest

from fastq.brokers import broker_class
from fastq.brokers.redis import RedisBroker, parse_url
from fastq.exceptions import ConfigurationError


@pytest.mark.parametrize("scheme", ["redis", "rediss", "redis+socket", "redis+sentinel"])
def test_every_scheme_selects_the_redis_broker(scheme) -> None:
    assert broker_class(f"{scheme}://localhost") is RedisBroker


def test_tcp_url_keeps_redis_py_options_and_takes_fastq_ones() -> None:
    parsed = parse_url("redis://:s3cret@127.0.0.1:6380/4?global_keyprefix=app:&"
                       "lease_seconds=12&socket_keepalive=true")
    assert parsed["kind"] == "tcp" and parsed["db"] == 4
    assert parsed["url"] == "redis://:s3cret@127.0.0.1:6380/4?socket_keepalive=true"
    assert parsed["options"] == {"global_keyprefix": "app:", "lease_seconds": 12.0}


def test_tls_url() -> None:
    parsed = parse_url("rediss://127.0.0.1:6390/0?ssl_cert_reqs=required")
    assert parsed["kind"] == "tcp"
    assert parsed["url"] == "rediss://127.0.0.1:6390/0?ssl_cert_reqs=required"


def test_unix_socket_url() -> None:
    parsed = parse_url("redis+socket:///run/redis/redis.sock?virtual_host=3")
    assert parsed["kind"] == "unix" and parsed["db"] == 3
    assert parsed["url"] == "unix:///run/redis/redis.sock?db=3"


def test_sentinel_url_in_kombus_form() -> None:
    parsed = parse_url("redis+sentinel://:pw@10.0.0.1:26379;sentinel://10.0.0.2:26380;"
                       "sentinel://10.0.0.3/2?master_name=mymaster")
    assert parsed["kind"] == "sentinel"
    assert parsed["sentinels"] == [("10.0.0.1", 26379), ("10.0.0.2", 26380),
                                   ("10.0.0.3", 26379)]
    assert parsed["password"] == "pw" and parsed["db"] == 2
    assert parsed["options"] == {"master_name": "mymaster"}


def test_sentinel_needs_a_master_name() -> None:
    broker = RedisBroker("redis+sentinel://127.0.0.1:26379")
    with pytest.raises(ConfigurationError, match="master_name"):
        broker.client  # noqa: B018 - building the client is the point


def test_sentinel_builds_a_master_client_without_connecting() -> None:
    broker = RedisBroker("redis+sentinel://127.0.0.1:26379/1", master_name="mymaster")
    client = broker.client
    try:
        assert client.connection_pool.service_name == "mymaster"
    finally:
        broker.close()


def test_not_a_redis_url() -> None:
    with pytest.raises(ConfigurationError):
        parse_url("amqp://localhost")
