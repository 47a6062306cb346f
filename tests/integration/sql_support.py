"""Helpers for tests against the SQL servers on loopback: URLs, availability, table cleanup."""

from __future__ import annotations

import uuid

from tests import servers

#: The loopback servers the tests use (ci/services.sh starts them when installed).
POSTGRES_URL = "db+postgresql://postgres@127.0.0.1:5432/test"
MARIADB_URL = "db+mysql://root@127.0.0.1:3306/test"


def require_server(port: int, name: str) -> None:
    """Skip locally, fail in CI, when nothing listens on ``port`` (ci/services.sh)."""
    servers.require(name, port)


def unique_table_prefix() -> str:
    """A table name prefix of this test alone, so parallel runs never share tables."""
    return f"fastqtest_{uuid.uuid4().hex[:10]}_"


def drop_tables(url: str, prefix: str) -> None:
    """Drop the tables a backend with ``prefix`` made (nothing if it made none)."""
    from fastq.backends.sql import SQLBackend

    backend = SQLBackend(url, table_prefix=prefix)
    try:
        backend.drop_tables()
    finally:
        backend.close()
