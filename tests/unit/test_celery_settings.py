"""Celery's settings on fastq: every documented name accepted, the ones fastq does not
apply warned about once each, old uppercase names mapped, conf.humanize()/table()."""

from __future__ import annotations

import logging
import types
import uuid

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
