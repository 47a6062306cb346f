"""Settings: names, coercion, environment overrides, config_from_object."""

import types

import pytest

from fastq import App
from fastq.config import Settings
from fastq.exceptions import ConfigurationError


def test_unknown_setting_names_the_nearest_valid_one():
    with pytest.raises(ConfigurationError, match="did you mean 'broker_url'"):
        Settings().update(broker_ulr="memory://")


def test_values_are_coerced_and_checked():
    s = Settings()
    s.update(worker_prefetch_multiplier="8", task_acks_late="false", accept_content="json,msgpack")
    assert s.worker_prefetch_multiplier == 8
    assert s.task_acks_late is False
    assert s.accept_content == ("json", "msgpack")
    with pytest.raises(ConfigurationError, match="worker_prefetch_multiplier.*int"):
        s.update(worker_prefetch_multiplier="many")
    with pytest.raises(ConfigurationError, match="cannot be None"):
        s.update(task_default_queue=None)


def test_environment_overrides_code(monkeypatch):
    monkeypatch.setenv("FASTQ_TASK_DEFAULT_QUEUE", "from-env")
    monkeypatch.setenv("FASTQ_BROKER_TRANSPORT_OPTIONS", '{"poll_interval_max": 0.01}')
    app = App("t", broker="memory://cfg", task_default_queue="from-code")
    assert app.conf.task_default_queue == "from-env"
    assert app.conf.broker_transport_options == {"poll_interval_max": 0.01}


def test_bad_environment_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("FASTQ_RESULT_EXPIRES", "tomorrow")
    with pytest.raises(ConfigurationError, match="result_expires"):
        App("t", broker="memory://cfg")


def test_config_from_object_reads_modules_and_celery_namespaces():
    module = types.ModuleType("proj_settings")
    module.task_default_queue = "mod-queue"
    module.CELERY_RESULT_EXPIRES = 10
    module.helper = lambda: None  # functions in a config module are not settings
    app = App("t", broker="memory://cfg")
    app.config_from_object(module)
    assert app.conf.task_default_queue == "mod-queue"
    app.config_from_object(module, namespace="CELERY")
    assert app.conf.result_expires == 10.0
    typo = types.ModuleType("typo")
    typo.task_acks_lat = True
    with pytest.raises(ConfigurationError, match="task_acks_late"):
        app.config_from_object(typo)


def test_unknown_broker_scheme_suggests_one():
    app = App("t", broker="sqlit:///x.db")
    with pytest.raises(ConfigurationError, match="did you mean 'sqlite://'"):
        app.broker  # noqa: B018 - the property connects
