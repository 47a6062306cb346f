"""Brokers behind one small interface; ``BROKER_SCHEMES`` maps URL schemes to implementations."""

from __future__ import annotations

import os

from .._registry import load_scheme, mask_url
from .base import Broker, Delivery

#: URL scheme -> "module:Class", imported only when used.
BROKER_SCHEMES: dict[str, str] = {
    "memory": "fastq.brokers.memory:MemoryBroker",
    "sqlite": "fastq.brokers.sqlite:SQLiteBroker",
    "redis": "fastq.brokers.redis:RedisBroker",
    "rediss": "fastq.brokers.redis:RedisBroker",
    "redis+socket": "fastq.brokers.redis:RedisBroker",
    "redis+sentinel": "fastq.brokers.redis:RedisBroker",
    "amqp": "fastq.brokers.amqp:AMQPBroker",
    "amqps": "fastq.brokers.amqp:AMQPBroker",
    "pyamqp": "fastq.brokers.amqp:AMQPBroker",
    "sqs": "fastq.brokers.sqs:SQSBroker",
}

#: Extra to install for a scheme whose implementation needs an optional dependency.
SCHEME_EXTRAS: dict[str, str] = {
    "redis": "redis", "rediss": "redis", "redis+socket": "redis", "redis+sentinel": "redis",
    "amqp": "amqp", "amqps": "amqp", "pyamqp": "amqp",
    "sqs": "sqs",
}

#: Where the embedded default broker lives, relative to the working directory.
DEFAULT_BROKER_URL = "sqlite:///.fastq/broker.sqlite3"


def broker_class(url: str) -> type[Broker]:
    """The Broker class for ``url``; a clear error for unknown or uninstalled schemes."""
    return load_scheme("broker", url, BROKER_SCHEMES, SCHEME_EXTRAS)


def create_broker(url: str | None, **options) -> Broker:
    """A Broker for ``url`` (the embedded SQLite default when None)."""
    url = url or DEFAULT_BROKER_URL
    return broker_class(url)(url, **options)


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite://`` URL: ``sqlite:///rel/path``, ``sqlite:////abs/path``.

    ``sqlite://`` alone (no path) means the embedded default file.
    """
    rest = url.split("://", 1)[1] if "://" in url else url
    if not rest:
        rest = "/" + DEFAULT_BROKER_URL.split("://", 1)[1].lstrip("/")
    path = rest[1:] if rest.startswith("/") else rest
    path = path.split("?", 1)[0]
    return os.path.abspath(os.path.expanduser(path))


__all__ = ["Broker", "Delivery", "BROKER_SCHEMES", "broker_class", "create_broker", "mask_url"]
