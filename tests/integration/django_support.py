"""Django set up once per test session from ``tests.django_project.settings``, for every
test module that needs it in-process (Django's settings cannot be configured twice).

``django_project_databases`` (session): a fresh SQLite file as ``default`` and a fresh
PostgreSQL database as ``postgres`` (dropped at the end), every app's migrations run on
both. ``django_databases`` (module): the same, with the variables that name them set in
``os.environ`` while the module runs, so worker processes read the same settings.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_DSN = "host=127.0.0.1 port=5432 user=postgres"
SETTINGS_MODULE = "tests.django_project.settings"


def _pg_admin(statement: str) -> None:
    import psycopg

    try:
        with psycopg.connect(f"{PG_DSN} dbname=postgres", autocommit=True,
                             connect_timeout=3) as conn:
            conn.execute(statement)
    except psycopg.OperationalError as exc:
        pytest.fail(f"no PostgreSQL on 127.0.0.1:5432 (user postgres, trust): {exc}; "
                    f"start it with `bash ci/services.sh`")


def _set_environ(values: dict[str, str]) -> dict[str, str | None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    return saved


def _restore_environ(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def django_project_databases(tmp_path_factory) -> Iterator[dict[str, str]]:
    import django
    from django.conf import settings

    if settings.configured:
        pytest.fail("Django was configured before django_support; it must configure it")
    pg_name = f"fastq_django_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{pg_name}"')
    values = {
        "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
        "FASTQ_TEST_DJANGO_SQLITE": str(tmp_path_factory.mktemp("django") / "db.sqlite3"),
        "FASTQ_TEST_DJANGO_PG_NAME": pg_name,
    }
    saved = _set_environ(values)
    try:
        django.setup()
        from django.core.management import call_command

        for alias in ("default", "postgres"):
            call_command("migrate", database=alias, verbosity=0)
    finally:
        _restore_environ(saved)
    try:
        yield values
    finally:
        from django.db import connections

        connections.close_all()
        _pg_admin(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def django_databases(django_project_databases) -> Iterator[dict[str, str]]:
    saved = _set_environ(django_project_databases)
    try:
        yield django_project_databases
    finally:
        _restore_environ(saved)
