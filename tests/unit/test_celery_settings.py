"""Celery's settings on fastq: every documented name accepted, the ones fastq does not
apply warned about once each, old uppercase names mapped, conf.humanize()/table()."""

from __future__ import annotations

import logging
import sys
import types
import uuid
from datetime import datetime, timedelta
from datetime import timezone as datetime_timezone

import pytest

from fastq import App, Queue
from fastq import config as config_module
from fastq.config import IGNORED_SETTINGS, Settings
from fastq.exceptions import ConfigurationError


def settings_module(**values) -> types.ModuleType:
    module = types.ModuleType(f"settings_{uuid.uuid4().hex}")
    vars(module).update(values)
    return module


#: ~30 settings a production Celery 5 project commonly has
COMMON = dict(
    broker_url="memory://common", result_backend="redis://:s3cret@127.0.0.1:6379/1",
    broker_transport_options={"visibility_timeout": 3600},
    broker_connection_retry_on_startup=True, broker_heartbeat=10, broker_pool_limit=10,
    task_serializer="json", result_serializer="json", accept_content=["json"],
    timezone="UTC", enable_utc=True, result_expires=3600, result_extended=True,
    task_default_queue="default", task_queues=(Queue("default"), Queue("billing")),
    task_routes={"proj.billing.*": {"queue": "billing"}}, task_create_missing_queues=True,
    task_annotations={"proj.add": {"rate_limit": "10/s"}}, task_acks_late=True,
    task_reject_on_worker_lost=True, task_track_started=True, task_time_limit=60,
    task_soft_time_limit=50, task_store_errors_even_if_ignored=True,
    task_send_sent_event=True, task_eager_propagates=True, worker_prefetch_multiplier=1,
    worker_max_tasks_per_child=1000, worker_send_task_events=True,
    worker_hijack_root_logger=False, worker_cancel_long_running_tasks_on_connection_loss=True,
    task_queue_max_priority=10, task_default_priority=5, imports=("json",),
)


def test_a_common_celery_settings_module_loads_and_warns_once_per_ignored_setting(caplog):
    config_module._warned_ignored.clear()
    app = App("common")
    with caplog.at_level(logging.WARNING, logger="fastq.config"):
        app.config_from_object(settings_module(**COMMON))
        app.config_from_object(settings_module(**COMMON))  # again: no second warning
    warned = [r.getMessage().split()[1] for r in caplog.records]
    expected = sorted(name for name in COMMON
                      if name in IGNORED_SETTINGS and name not in Settings.__dataclass_fields__)
    assert sorted(warned) == expected and len(expected) >= 6
    for record in caplog.records:
        assert "accepted but not applied: " in record.getMessage()
    conf = app.conf
    assert conf.task_default_queue == "default" and conf.task_time_limit == 60
    assert conf.worker_hijack_root_logger is False  # read back as set
    assert [q.name for q in app.queues.consumed(None)] == ["default", "billing"]
    assert app.route("proj.billing.pay") == "billing"


def test_every_celery_setting_is_a_field_or_ignored_with_a_reason():
    defaults = pytest.importorskip("celery.app.defaults")
    for name in defaults.SETTING_KEYS:
        assert name in Settings.__dataclass_fields__ or IGNORED_SETTINGS.get(name), name
    for old, new in defaults._TO_NEW_KEY.items():
        assert config_module._OLD_NAMES.get(old) == new, old


def test_old_uppercase_names_map_like_celerys():
    app = App("old")
    app.config_from_object(settings_module(
        BROKER_URL="memory://old", CELERY_RESULT_BACKEND="memory://", CELERYD_CONCURRENCY=3,
        CELERY_ALWAYS_EAGER=True, CELERYD_TASK_TIME_LIMIT=7,
        CELERY_EAGER_PROPAGATES_EXCEPTIONS=True, CELERY_ROUTES={"a": "b"},
        CELERY_TASK_RESULT_EXPIRES=60, DEBUG=True, SOME_CONSTANT=1))
    conf = app.conf
    assert (conf.broker_url, conf.result_backend, conf.worker_concurrency) == \
        ("memory://old", "memory://", 3)
    assert conf.task_always_eager and conf.task_eager_propagates
    assert (conf.task_time_limit, conf.task_routes, conf.result_expires) == (7, {"a": "b"}, 60)
    conf.update(CELERY_DEFAULT_QUEUE="q")
    assert conf.task_default_queue == "q"


def test_unknown_names_are_still_errors_with_the_nearest_name():
    with pytest.raises(ConfigurationError, match="did you mean 'worker_hijack_root_logger'"):
        Settings().update(worker_hijack_root_loger=False)
    with pytest.raises(ConfigurationError, match="did you mean 'task_queues'"):
        Settings().update(task_queue=[])


def test_humanize_and_table_mask_secrets():
    conf = Settings()
    conf.update(broker_url="amqp://user:hunter2@127.0.0.1//", task_default_queue="q",
                security_key="PRIVATE")
    table = conf.table()
    assert table["broker_url"] == "amqp://user:***@127.0.0.1//"
    assert table["security_key"] == "********"
    assert "task_serializer" not in table and "task_serializer" in conf.table(with_defaults=True)
    assert conf.table(censored=False)["broker_url"].endswith("hunter2@127.0.0.1//")
    text = conf.humanize()
    assert "task_default_queue: 'q'" in text and "hunter2" not in text
    assert "worker_hijack_root_logger" in conf and "nonsense" not in conf


def test_celerys_default_of_every_setting_loads_under_its_new_and_old_names():
    defaults = pytest.importorskip("celery.app.defaults")
    refused: dict[str, str] = {}
    for name in defaults.SETTING_KEYS:
        try:
            Settings().update({name: defaults.DEFAULTS[name]})
        except ConfigurationError as exc:
            refused[name] = str(exc)
    for old, new in defaults._TO_NEW_KEY.items():
        try:
            Settings().update({old: defaults.DEFAULTS[new]})
        except ConfigurationError as exc:
            refused[old] = str(exc)
    assert refused == {}
    conf = Settings()
    conf.from_object(settings_module(**{name: defaults.DEFAULTS[name]
                                        for name in defaults.SETTING_KEYS}))
    # Celery's defaults in fastq's terms: one day in seconds, UTC, no table names, and
    # its beat_max_loop_interval of 0 ("the scheduler's default") as fastq's default
    assert conf.result_expires == 86400.0
    assert conf.timezone is None and conf.enable_utc
    assert conf.database_table_names == {}
    assert conf.beat_max_loop_interval == Settings().beat_max_loop_interval > 0


def test_timedeltas_give_seconds_to_every_seconds_setting():
    seconds = [name for name, kind in config_module._FIELD_TYPES.items()
               if kind.startswith("float")]
    assert "result_expires" in seconds and "task_time_limit" in seconds
    conf = Settings()
    for name in seconds:
        conf.update({name: timedelta(minutes=2, milliseconds=500)})
        assert getattr(conf, name) == 120.5, name
    app = App("old-timedelta")
    app.config_from_object(settings_module(CELERY_TASK_RESULT_EXPIRES=timedelta(hours=1),
                                           CELERYD_TASK_TIME_LIMIT=timedelta(seconds=30)))
    assert (app.conf.result_expires, app.conf.task_time_limit) == (3600.0, 30.0)
    django_style = App("namespaced")
    django_style.config_from_object(settings_module(CELERY_RESULT_EXPIRES=timedelta(days=2)),
                                    namespace="CELERY")
    assert django_style.conf.result_expires == 172800.0


def test_no_timezone_means_utc_unless_enable_utc_is_off():
    from fastq.schedules import UTC, app_zone

    app = App("zone", broker=f"memory://{uuid.uuid4()}")
    app.conf.timezone = None
    assert app_zone(app) is UTC
    app.conf.enable_utc = False
    local = datetime.now().astimezone().tzinfo
    assert app_zone(app).utcoffset(datetime.now()) == local.utcoffset(datetime.now())


def test_callable_values_of_settings_in_a_module_are_settings_not_helpers():
    def route(name, args, kwargs, options, task=None, **kw):
        return {"queue": "routed"}

    class SomeTimer:
        pass

    class SomeScheduler:
        pass

    app = App("callables", broker=f"memory://{uuid.uuid4()}")
    app.config_from_object(settings_module(task_routes=route, worker_timer=SomeTimer,
                                           beat_scheduler=SomeScheduler, helper=lambda: None,
                                           timezone=datetime_timezone))
    assert app.conf.task_routes is route and app.conf.worker_timer is SomeTimer
    assert app.conf.beat_scheduler is SomeScheduler
    # `from datetime import timezone` in a settings module is an import, not the setting
    assert app.conf.timezone == "UTC"
    assert app.route("any.task") == "routed"


def test_beat_settings_fastq_applies_are_not_listed_as_ignored():
    for name in IGNORED_SETTINGS:
        assert name not in Settings.__dataclass_fields__, name
        assert "yet" not in IGNORED_SETTINGS[name].split(), name
    config_module._warned_ignored.clear()
    conf = Settings()
    conf.update(beat_schedule={"a": {"task": "t.a", "schedule": 5.0}},
                beat_max_loop_interval=timedelta(seconds=2), beat_scheduler="django")
    assert not config_module._warned_ignored
    assert conf.beat_max_loop_interval == 2.0 and conf.beat_scheduler == "django"
    conf.apply_env({"FASTQ_BEAT_SCHEDULER": "celery.beat:PersistentScheduler"})
    assert conf.beat_scheduler == "celery.beat:PersistentScheduler"


@pytest.fixture
def beat_app(monkeypatch):
    """An App with one periodic task, importable as ``-A beat_settings_app:app``."""
    app = App("beat-settings", broker=f"memory://{uuid.uuid4()}",
              backend=f"memory://{uuid.uuid4()}")
    app.conf.beat_schedule = {"every-hour": {"task": "t.hourly", "schedule": 3600.0}}
    module = types.ModuleType("beat_settings_app")
    module.app = app
    monkeypatch.setitem(sys.modules, "beat_settings_app", module)
    yield app
    app.close()


def _dry_run(*args: str):
    from click.testing import CliRunner

    from fastq import cli

    return CliRunner().invoke(cli.main, ["beat", "-A", "beat_settings_app:app", "--dry-run",
                                         *args])


def test_beat_scheduler_is_the_default_of_fastq_beat_dash_s(beat_app, monkeypatch):
    from fastq.beat import Entry
    from fastq.contrib.django import beat as django_beat
    from fastq.schedules import schedule

    class TablesStandIn:
        """Stands in for django-celery-beat's tables."""

        def entries(self, app):
            return {"from-tables": Entry("from-tables", "t.tables", schedule(7200.0, app=app))}

    monkeypatch.setattr(django_beat, "DjangoBeatSource", TablesStandIn)
    for scheduler in ("celery.beat:PersistentScheduler", None):
        beat_app.conf.beat_scheduler = scheduler
        done = _dry_run()
        assert done.exit_code == 0, done.output
        assert "every-hour" in done.output and "from-tables" not in done.output
    # Celery also takes the class itself
    database_scheduler = type("DatabaseScheduler", (),
                              {"__module__": "django_celery_beat.schedulers"})
    for scheduler in ("django", "django_celery_beat.schedulers:DatabaseScheduler",
                      database_scheduler):
        beat_app.conf.beat_scheduler = scheduler
        done = _dry_run()
        assert done.exit_code == 0, done.output
        assert "every-hour" in done.output and "from-tables" in done.output
    beat_app.conf.beat_scheduler = "django"
    done = _dry_run("-S", "celery.beat:PersistentScheduler")  # the option wins
    assert done.exit_code == 0 and "from-tables" not in done.output, done.output
    beat_app.conf.beat_scheduler = "redbeat.RedBeatScheduler"
    done = _dry_run()
    assert done.exit_code != 0
    assert "beat_scheduler" in done.output and "redbeat.RedBeatScheduler" in done.output


def test_ignored_settings_read_none_until_set_and_unknown_names_raise():
    conf = Settings()
    assert conf.broker_pool_limit is None and conf.get("worker_direct", 3) is None
    conf.broker_pool_limit = 7
    conf["BROKER_POOL_LIMIT"] = 8  # Celery's old name, the same setting
    assert conf.broker_pool_limit == 8 and conf.table()["broker_pool_limit"] == 8
    assert Settings().broker_pool_limit is None  # the value is the instance's, not shared
    with pytest.raises(AttributeError):
        conf.no_such_setting  # noqa: B018
