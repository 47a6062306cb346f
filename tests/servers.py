"""The servers the tests talk to, on loopback: a test whose server is down is skipped,
naming the command that starts it, on a developer's machine, and fails in CI (``CI=1``),
where ``ci/services.sh`` has started every one of them."""

from __future__ import annotations

import os
import socket

import pytest

#: service -> loopback port
PORTS = {"RabbitMQ": 5672, "Redis": 6379, "PostgreSQL": 5432, "MariaDB": 3306,
         "memcached": 11211}


def listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(service: str, port: int | None = None, *, module_level: bool = False) -> None:
    """Skip (locally) or fail (in CI) unless ``service`` listens on its loopback port."""
    port = PORTS[service] if port is None else port
    if listening(port):
        return
    reason = f"no {service} server on 127.0.0.1:{port}; start it with `bash ci/services.sh`"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)
