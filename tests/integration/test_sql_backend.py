"""The SQL result backend on PostgreSQL, MariaDB and a SQLite file: the contract and more."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from fastq.backends import Backend, create_backend
from fastq.backends.sql import SQLBackend, sqlalchemy_url
from fastq.exceptions import ConfigurationError
from fastq.testing.contracts import BackendContract
from tests.integration.sql_support import (
    MARIADB_URL,
    POSTGRES_URL,
    drop_tables,
    require_server,
    unique_table_prefix,
)

# a result store: no code with a compiled twin
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


def _store_results(url: str, prefix: str, id_prefix: str, count: int, batch: int) -> None:
    """Child process: store ``count`` SUCCESS results in batches."""
    backend = SQLBackend(url, table_prefix=prefix)
    try:
        for start in range(0, count, batch):
            backend.store_many((f"{id_prefix}-{n}", "SUCCESS", n, None, None)
                               for n in range(start, min(start + batch, count)))
    finally:
        backend.close()


class SQLBackendTests(BackendContract):
    """The contract plus SQL specifics; each subclass names a server URL."""

    url = ""

    @pytest.fixture
    def backend_url(self) -> Iterator[str]:
        self.prefix = unique_table_prefix()
        yield self.url
        drop_tables(self.url, self.prefix)

    def make_backend(self, **options: Any) -> Backend:
        backend = create_backend(self.backend_url, table_prefix=self.prefix, **options)
        self._made_backends.append(backend)
        return backend

    def table_names(self, backend: SQLBackend) -> set[str]:
        return set(sa.inspect(backend.engine).get_table_names())

    def test_url_scheme_selects_it_and_tables_appear_on_first_use(self, backend) -> None:
        assert isinstance(backend, SQLBackend)
        names = {f"{self.prefix}taskmeta", f"{self.prefix}tasksetmeta"}
        assert not names & self.table_names(backend)
        backend.get("anything")
        assert names <= self.table_names(backend)

    def test_rows_carry_the_document_and_expiry(self, backend) -> None:
        backend = self.make_backend(expires=3600)
        task_id = str(uuid.uuid4())
        backend.store(task_id, "SUCCESS", {"n": 1})
        with backend.engine.connect() as conn:
            status, document, expires_at = conn.execute(
                sa.select(backend.tasks.c.status, backend.tasks.c.document,
                          backend.tasks.c.expires_at)
                .where(backend.tasks.c.task_id == task_id)).one()
        assert status == "SUCCESS"
        assert b'"result":{"n":1}' in bytes(document)
        assert 3590 < expires_at - time.time() <= 3600

    def test_an_expired_success_can_be_stored_again(self) -> None:
        backend = self.make_backend(expires=0.2)
        task_id = str(uuid.uuid4())
        backend.store(task_id, "SUCCESS", "old")
        time.sleep(0.4)
        backend.store(task_id, "STARTED")
        assert backend.get(task_id)["status"] == "STARTED"
        backend.store_many([(task_id, "SUCCESS", "new", None, None)])
        assert backend.get(task_id)["result"] == "new"

    def test_table_names_option(self) -> None:
        task_table, group_table = f"{self.prefix}t", f"{self.prefix}g"
        backend = create_backend(self.backend_url,
                                 table_names={"task": task_table, "group": group_table})
        try:
            backend.store("named", "SUCCESS", 1)
            backend.save_group("named-group", [["named-group", None], []])
            assert {task_table, group_table} <= self.table_names(backend)
        finally:
            backend.drop_tables()
            backend.close()
        with pytest.raises(ConfigurationError, match="table_names"):
            create_backend(self.backend_url, table_names={"tasks": "x"})

    def test_threads_and_processes_write_concurrently(self, backend) -> None:
        backend.get("create the tables before the race")
        errors: list[BaseException] = []

        def write(n: int) -> None:
            try:
                for i in range(30):
                    backend.store_many([(f"t{n}-{i}", "STARTED", None, None, None),
                                        (f"shared-{i}", "SUCCESS", n, None, None)])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(3)]
        context = multiprocessing.get_context("spawn")
        process = context.Process(target=_store_results,
                                  args=(self.backend_url, self.prefix, "p", 200, 20))
        process.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        process.join(60)
        assert not errors, errors
        assert process.exitcode == 0
        ids = [f"t{n}-{i}" for n in range(3) for i in range(30)]
        ids += [f"shared-{i}" for i in range(30)] + [f"p-{n}" for n in range(200)]
        assert set(backend._get_many(ids)) == set(ids)
        # each shared id keeps the first SUCCESS stored: one of the writers' numbers
        assert {backend.get(f"shared-{i}")["result"] for i in range(30)} <= {0, 1, 2}


class TestSQLiteFile(SQLBackendTests):
    @pytest.fixture
    def backend_url(self, tmp_path) -> Iterator[str]:
        self.prefix = unique_table_prefix()
        self.url = f"db+sqlite:///{tmp_path}/nested/results.db"
        yield self.url


class OneTransactionTests:
    """Servers that refuse a too-long id: a failing row undoes its whole batch."""

    def test_store_many_is_one_transaction(self, backend) -> None:
        good = str(uuid.uuid4())
        with pytest.raises(sa.exc.DBAPIError):
            backend.store_many([(good, "SUCCESS", 1, None, None),
                                ("x" * 400, "SUCCESS", 2, None, None)])
        assert backend.get(good)["status"] == "PENDING"

    def test_unreachable_server_raises_connection_error(self) -> None:
        url = self.url.replace("127.0.0.1:", "127.0.0.1:1")  # port 15432 / 13306: nobody
        backend = create_backend(url, table_prefix=self.prefix)
        try:
            with pytest.raises(ConnectionError, match="failed during get"):
                backend.get("x")
        finally:
            backend.close()


class TestPostgreSQL(OneTransactionTests, SQLBackendTests):
    url = POSTGRES_URL

    @pytest.fixture(autouse=True)
    def _server(self) -> None:
        require_server(5432, "PostgreSQL")


class TestMariaDB(OneTransactionTests, SQLBackendTests):
    url = MARIADB_URL

    @pytest.fixture(autouse=True)
    def _server(self) -> None:
        require_server(3306, "MariaDB")


@pytest.mark.parametrize(("url", "expected"), [
    ("db+postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
    ("db+postgresql+psycopg://h/db", "postgresql+psycopg://h/db"),
    ("db+mysql://root@h:3306/db", "mysql+pymysql://root@h:3306/db"),
    ("db+mysql+pymysql://root@h/db", "mysql+pymysql://root@h/db"),
    ("db+sqlite:///rel.db", "sqlite:///rel.db"),
    ("DB+sqlite:////abs.db", "sqlite:////abs.db"),
])
def test_sqlalchemy_url_names_the_installed_driver(url, expected) -> None:
    assert sqlalchemy_url(url) == expected


def test_app_hands_its_settings_to_the_backend(tmp_path) -> None:
    from fastq import App

    app = App("sqlcfg", broker=f"memory://{uuid.uuid4()}",
              result_backend=f"db+sqlite:///{tmp_path}/r.db",
              database_table_names={"task": "my_tasks", "group": "my_groups"},
              result_backend_transport_options={"engine_options": {"echo": False}},
              result_expires=120)
    try:
        backend = app.backend
        assert isinstance(backend, SQLBackend)
        assert (backend.task_table_name, backend.group_table_name) == ("my_tasks", "my_groups")
        assert backend.expires == 120
    finally:
        app.close()
