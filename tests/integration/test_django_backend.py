"""The django-db:// backend on SQLite and PostgreSQL, and fastq in a Django project.

Django is set up once per session by ``django_support`` from
``tests.django_project.settings``: a SQLite file as ``default`` and a PostgreSQL database
created for this run (dropped after) as ``postgres``; the migrations run on both. Worker
processes read the same settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from fastq.exceptions import ConfigurationError
from fastq.testing.contracts import BackendContract
from tests.integration.conftest import ROOT, WorkerProcess

# a result store: no code with a compiled twin
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]

django = pytest.importorskip("django")

def _empty_table(alias: str) -> None:
    from fastq.contrib.django.models import TaskResult

    TaskResult.objects.using(alias).all().delete()


def _row(alias: str, task_id: str):
    from fastq.contrib.django.models import TaskResult

    return TaskResult.objects.using(alias).get(task_id=task_id)


class DjangoBackendChecks(BackendContract):
    """The contract plus what the ORM store adds, for one database alias."""

    alias = "default"

    def test_migration_created_the_table(self) -> None:
        from django.db import connections

        with connections[self.alias].cursor() as cursor:
            tables = connections[self.alias].introspection.table_names(cursor)
        assert "fastq_taskresult" in tables
        from django.db.migrations.recorder import MigrationRecorder

        applied = MigrationRecorder(connections[self.alias]).applied_migrations()
        assert ("fastq", "0001_initial") in applied

    def test_every_row_gets_an_expiry(self) -> None:
        backend = self.make_backend(expires=600)
        task_id = str(uuid.uuid4())
        before = time.time()
        backend.store(task_id, "SUCCESS", 1)
        expires = _row(self.alias, task_id).expires.timestamp()
        assert before + 600 <= expires <= time.time() + 600
        kept = self.make_backend(expires=None)
        kept.store("kept-" + task_id, "SUCCESS", 1)
        assert _row(self.alias, "kept-" + task_id).expires is None

    def test_cleanup_deletes_only_expired_rows(self) -> None:
        short, forever = self.make_backend(expires=0.2), self.make_backend(expires=None)
        short.store_many((f"short-{n}", "SUCCESS", n, None, None) for n in range(3))
        forever.store("forever", "SUCCESS", "kept")
        time.sleep(0.4)
        assert forever.cleanup() == 3
        assert forever.get("forever")["result"] == "kept"

    def test_an_expired_success_can_be_stored_again(self) -> None:
        backend = self.make_backend(expires=0.2)
        backend.store("reused", "SUCCESS", "old")
        time.sleep(0.4)
        backend.store("reused", "FAILURE", ValueError("new"))
        assert backend.get("reused")["status"] == "FAILURE"

    def test_extended_fields_fill_their_columns(self, backend) -> None:
        task_id = str(uuid.uuid4())
        backend.store(task_id, "SUCCESS", 3, extra={
            "name": "shop.total", "args": [[1, 2]], "kwargs": {"discount": 0},
            "worker": "w1@host", "retries": 0, "queue": "celery"})
        row = _row(self.alias, task_id)
        assert (row.state, row.name, row.worker) == ("SUCCESS", "shop.total", "w1@host")
        assert row.args == "[[1,2]]" and row.kwargs == '{"discount":0}'
        assert row.date_done is not None
        plain = str(uuid.uuid4())
        backend.store(plain, "SUCCESS", 3)
        row = _row(self.alias, plain)
        assert row.name is row.args is row.kwargs is row.worker is None

    def test_a_later_record_in_one_batch_does_not_replace_a_success(self, backend) -> None:
        backend.store_many([("same", "STARTED", None, None, None),
                            ("same", "SUCCESS", "done", None, None),
                            ("same", "FAILURE", ValueError("late"), None, None)])
        meta = backend.get("same")
        assert meta["status"] == "SUCCESS" and meta["result"] == "done"

    def test_store_many_is_one_transaction(self, backend) -> None:
        from django.db import connections

        backend.store("existing", "STARTED")
        fresh = str(uuid.uuid4())

        inserted = []

        def fail_after_the_insert(execute, sql, params, many, context):
            verb = sql.lstrip().split(None, 1)[0].upper()
            if verb == "UPDATE" and inserted:
                raise RuntimeError("the database went away mid-batch")
            result = execute(sql, params, many, context)
            if verb == "INSERT":
                inserted.append(sql)
            return result

        with connections[self.alias].execute_wrapper(fail_after_the_insert):
            with pytest.raises(RuntimeError, match="mid-batch"):
                # the insert of `fresh` runs before the update of `existing`
                backend.store_many([(fresh, "SUCCESS", 1, None, None),
                                    ("existing", "SUCCESS", 2, None, None)])
        assert inserted, "the batch never reached its insert"
        assert backend.get(fresh)["status"] == "PENDING"
        assert backend.get("existing")["status"] == "STARTED"

    def test_concurrent_writers_of_the_same_ids_keep_success(self) -> None:
        ids = [f"race-{n}" for n in range(120)]
        errors: list[BaseException] = []

        def write(state: str) -> None:
            backend = self.make_backend()
            try:
                for start in range(0, len(ids), 8):
                    result = "ok" if state == "SUCCESS" else ValueError("lost the race")
                    backend.store_many((task_id, state, result, None, None)
                                       for task_id in ids[start:start + 8])
            except BaseException as exc:
                errors.append(exc)
            finally:
                backend.close()

        threads = [threading.Thread(target=write, args=(state,))
                   for state in ("SUCCESS", "FAILURE", "RETRY")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        reader = self.make_backend()
        assert {reader.get(task_id)["status"] for task_id in ids} == {"SUCCESS"}


@pytest.mark.usefixtures("django_databases")
class TestDjangoBackendSQLite(DjangoBackendChecks):
    alias = "default"

    @pytest.fixture
    def backend_url(self) -> str:
        _empty_table(self.alias)
        return "django-db://"  # no alias: the routers' choice, `default` here

    def test_url_without_alias_follows_the_routers(self, backend) -> None:
        from fastq.contrib.django.backend import DjangoBackend

        assert isinstance(backend, DjangoBackend)
        assert backend.alias is None and backend._db_for_write() == "default"

    def test_signed_results_are_refused_with_a_clear_error(self, backend) -> None:
        from fastq import serialization

        codec = serialization.Codec("auth", "application/data", "binary",
                                    lambda obj: b"signed", lambda raw: {})
        with pytest.raises(ConfigurationError, match="not supported by the django-db"):
            backend.sign_results(codec)


@pytest.mark.usefixtures("django_databases")
class TestDjangoBackendPostgres(DjangoBackendChecks):
    alias = "postgres"

    @pytest.fixture
    def backend_url(self) -> str:
        _empty_table(self.alias)
        return "django-db://postgres"

    def test_a_forked_child_opens_its_own_session(self, backend) -> None:
        from django.db import connections

        def session_pid() -> int:
            with connections[self.alias].cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                return cursor.fetchone()[0]

        backend.store("before-fork", "STARTED")
        parent_session = session_pid()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through its exit code
            code = 1
            try:
                backend.store("from-child", "SUCCESS", os.getpid())
                code = 0 if session_pid() != parent_session else 2
            finally:
                os._exit(code)
        _pid, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert session_pid() == parent_session
        assert backend.get("from-child")["result"] == child
        assert backend.get("before-fork")["status"] == "STARTED"

    def test_unknown_alias_names_the_configured_ones(self) -> None:
        from fastq.backends import create_backend

        with pytest.raises(ConfigurationError, match="'nope'.*default, postgres"):
            create_backend("django-db://nope")


# -- fastq in a Django project --------------------------------------------------------

def _run_python(code: str, env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _child_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return dict(os.environ, PYTHONPATH=path, **extra)


def test_django_is_imported_only_when_the_backend_is_used() -> None:
    out = _run_python(
        "import sys\n"
        "from fastq import App\n"
        "app = App('t', broker='memory://lazy', backend='django-db://')\n"
        "app.config_from_object({'result_expires': 5})\n"
        "print('django' in sys.modules)\n", _child_env())
    assert out.strip() == "False"


def test_a_missing_django_names_the_extra_to_install() -> None:
    out = _run_python(
        "import sys\n"
        "sys.modules['django'] = None  # as if Django were not installed\n"
        "from fastq.backends import create_backend\n"
        "from fastq.exceptions import ImproperlyInstalled\n"
        "try:\n"
        "    create_backend('django-db://')\n"
        "except ImproperlyInstalled as exc:\n"
        "    print(exc)\n", _child_env())
    assert "pip install 'fastq[django]'" in out


def test_configuring_from_django_settings_before_setup_discovers_tasks_once_ready(
        django_databases) -> None:
    out = _run_python(
        "from fastq import App\n"
        "app = App('t')\n"
        "app.config_from_object('django.conf:settings', namespace='FASTQ')\n"
        "print(sorted(n for n in app.tasks if n.startswith('shop.')))\n"
        "print(app.conf.result_backend, app.conf.result_extended, app.conf.imports)\n"
        "import django\n"
        "django.setup()\n"
        "print(sorted(n for n in app.tasks if n.startswith('shop.')))\n",
        _child_env(**django_databases))
    before, conf, after = out.splitlines()
    assert before == "[]"
    assert conf == "django-db:// True ('fastq.contrib.django.startup',)"
    assert after == "['shop.database', 'shop.pg_backend_pid', 'shop.refuse', 'shop.total']"


def test_configuring_after_setup_discovers_tasks_at_once(django_databases) -> None:
    out = _run_python(
        "import django\n"
        "django.setup()\n"
        "from django.conf import settings\n"
        "from fastq import App\n"
        "app = App('t')\n"
        "app.config_from_object(settings, namespace='FASTQ')\n"
        "print(sorted(n for n in app.tasks if n.startswith('shop.')), app.conf.imports)\n",
        _child_env(**django_databases))
    # listed all the same: a worker imports it to install the Django fix-up
    assert out.strip() == ("['shop.database', 'shop.pg_backend_pid', 'shop.refuse', 'shop.total'] "
                           "('fastq.contrib.django.startup',)")


def test_namespace_reads_only_prefixed_django_settings(django_databases) -> None:
    from django.conf import settings

    from fastq import App

    app = App("t", broker="memory://django-namespace")
    app.config_from_object(settings, namespace="FASTQ")
    assert app.conf.result_backend == "django-db://"
    assert app.conf.result_extended is True
    assert app.conf.task_default_queue == "django-tests"
    assert app.conf.timezone == "UTC"  # Django's TIME_ZONE is not fastq's `timezone`
    app.close()


class DjangoWorker(WorkerProcess):
    app_module = "tests.apps.django_app"


@pytest.fixture(params=["default", "postgres"])
def django_worker(request, django_databases, sqlite_env, monkeypatch):
    """A worker factory on a SQLite broker storing results through django-db://, and the
    producer App of the same module, on the parametrized database."""
    import importlib

    tmp_path, url, run_log, env = sqlite_env
    alias = request.param
    _empty_table(alias)
    backend = "django-db://" if alias == "default" else f"django-db://{alias}"
    monkeypatch.setenv("FASTQ_RESULT_BACKEND", backend)
    env.update(django_databases, FASTQ_RESULT_BACKEND=backend)
    started: list[WorkerProcess] = []

    def make() -> WorkerProcess:
        worker = DjangoWorker(tmp_path, url, run_log, env)
        started.append(worker)
        return worker.start()

    sys.modules.pop("tests.apps.django_app", None)
    producer = importlib.import_module("tests.apps.django_app").app
    yield make, producer, alias
    for worker in started:
        worker.stop()
    producer.close()


def test_a_worker_stores_results_that_the_test_reads(django_worker) -> None:
    make_worker, producer, alias = django_worker
    worker = make_worker()
    assert producer.backend_url.startswith("django-db://")
    total = producer.send_task("shop.total", ([1, 2, 3],), {"discount": 1})
    refused = producer.send_task("shop.refuse", ("closed",))
    orm = producer.send_task("shop.database")
    assert total.get(timeout=30) == 5
    with pytest.raises(ValueError, match="closed"):
        refused.get(timeout=30)
    vendor, _count = orm.get(timeout=30)
    assert vendor == "sqlite"  # the tasks' own ORM use goes to `default`
    row = _row(alias, total.id)
    assert (row.state, row.name) == ("SUCCESS", "shop.total")
    assert (row.args, row.kwargs) == ("[[1,2,3]]", '{"discount":1}')
    assert row.worker and row.expires is not None
    assert _row(alias, refused.id).state == "FAILURE"
    assert "tasks=" in worker.log() and "backend=django-db://" in worker.log()


# -- Celery's Django behaviour: sending on commit, connections closed after tasks --------
@pytest.fixture
def eager_app(django_databases):
    from fastq import App

    app = App("on-commit", broker=f"memory://{uuid.uuid4()}", task_always_eager=True)
    ran: list[int] = []

    @app.task
    def record(value):
        ran.append(value)

    yield app, record, ran
    app.close()


@pytest.mark.parametrize("alias", ["default", "postgres"])
def test_delay_on_commit_sends_only_once_the_transaction_commits(eager_app, alias) -> None:
    from django.db import transaction

    _app, record, ran = eager_app
    with transaction.atomic(using=alias):
        record.apply_async_on_commit((1,), using=alias)
        if alias == "default":
            assert record.delay_on_commit(2) is None
        assert ran == []
    assert ran == ([1, 2] if alias == "default" else [1])
    with pytest.raises(RuntimeError), transaction.atomic(using=alias):
        record.apply_async_on_commit((3,), using=alias)
        raise RuntimeError("roll back")
    record.delay_on_commit(4)  # outside a transaction: at once
    assert ran[-1] == 4 and 3 not in ran


def test_connections_past_their_age_are_closed_after_a_task(django_databases) -> None:
    from django.db import connections

    from fastq.contrib.django import fixup

    conn = connections["postgres"]
    conn.ensure_connection()
    conn.close_at = time.monotonic() + 60  # as CONN_MAX_AGE = 60 would set it
    fixup.close_after_task(task=None)
    assert conn.connection is not None
    conn.close_at = time.monotonic() - 1  # past its age (CONN_MAX_AGE = 0: at once)
    fixup.close_after_task(task=None)
    assert conn.connection is None


def test_a_forked_child_forgets_the_parents_connections_without_closing_them(
        django_databases) -> None:
    from django.db import connections

    from fastq.contrib.django import fixup

    conn = connections["postgres"]
    conn.ensure_connection()
    inherited = conn.connection
    fixup.drop_inherited_connections()
    assert conn.connection is None and not inherited.closed  # the parent's stays usable
    with conn.cursor() as cursor:  # the child opens its own
        cursor.execute("SELECT 1")
    assert conn.connection is not inherited
    inherited.close()
    fixup._inherited.remove(inherited)


@pytest.mark.parametrize("django_worker", ["postgres"], indirect=True)
def test_a_worker_closes_the_database_connection_after_each_task(django_worker) -> None:
    make_worker, producer, _alias = django_worker
    make_worker()
    first = producer.send_task("shop.pg_backend_pid").get(timeout=30)
    second = producer.send_task("shop.pg_backend_pid").get(timeout=30)
    assert first != second  # CONN_MAX_AGE = 0: a new connection for each task, as Celery


def test_autodiscover_tasks_calls_its_callable_once_django_is_set_up(
        django_databases, tmp_path, monkeypatch) -> None:
    from fastq import App

    name = f"pkg_{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "tasks.py").write_text(
        "from fastq import shared_task\n\n@shared_task\ndef ping():\n    return 'pong'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = App("discover", broker=f"memory://{uuid.uuid4()}")
    app.autodiscover_tasks(lambda: [name], force=True)
    assert f"{name}.tasks.ping" in app.tasks
    app.close()
