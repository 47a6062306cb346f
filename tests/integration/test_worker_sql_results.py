"""A real worker process on the SQLite broker storing its results in PostgreSQL."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from fastq import group
from tests.integration.sql_support import (
    POSTGRES_URL,
    drop_tables,
    require_server,
    unique_table_prefix,
)

# a result store: no code with a compiled twin
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


@pytest.fixture
def sqlite_env(sqlite_env, monkeypatch):
    """The SQLite broker of conftest.py, with results in PostgreSQL under a fresh prefix."""
    require_server(5432, "PostgreSQL")
    tmp_path, url, run_log, env = sqlite_env
    prefix = unique_table_prefix()
    values = {"FASTQ_RESULT_BACKEND": POSTGRES_URL,
              "FASTQ_RESULT_BACKEND_TRANSPORT_OPTIONS": json.dumps({"table_prefix": prefix})}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    env.update(values)
    yield tmp_path, url, run_log, env
    drop_tables(POSTGRES_URL, prefix)


def test_worker_results_land_in_postgresql(worker, producer, sqlite_env):
    from fastq.backends.sql import SQLBackend

    w = worker()
    backend = producer.backend
    assert isinstance(backend, SQLBackend) and backend.dialect == "postgresql"
    results = [producer.tasks["t.add"].delay(i, 1) for i in range(20)]
    assert [r.get(timeout=20) for r in results] == [i + 1 for i in range(20)]

    from tests.apps.sqlite_app import Boom

    failed = producer.tasks["t.fail"].delay("in postgres")
    with pytest.raises(Boom):
        failed.get(timeout=20)
    assert "raise Boom(message, 42)" in failed.traceback

    sent = group(producer.tasks["t.add"].s(i, i) for i in range(5)).delay().save()
    restored = producer.GroupResult.restore(sent.id)
    assert restored.join(timeout=20) == [0, 2, 4, 6, 8]

    # the rows are in PostgreSQL, in the prefixed table, with an expiry
    with backend.engine.connect() as conn:
        rows = conn.execute(sa.select(backend.tasks.c.task_id, backend.tasks.c.status,
                                      backend.tasks.c.expires_at)).all()
    by_id = {task_id: (status, expires_at) for task_id, status, expires_at in rows}
    assert by_id[results[0].id][0] == "SUCCESS" and by_id[failed.id][0] == "FAILURE"
    assert all(expires_at is not None for _status, expires_at in by_id.values())
    assert backend.task_table_name.startswith("fastqtest_")
    assert "could not store" not in w.log()
