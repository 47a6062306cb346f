"""The Flask extension without servers: settings from app.config, tasks in the app context."""

from __future__ import annotations

import asyncio

import pytest

flask = pytest.importorskip("flask")

from fastq import App  # noqa: E402
from fastq.contrib.flask import FastQ, FlaskTask, settings_from_config  # noqa: E402
from fastq.exceptions import ConfigurationError  # noqa: E402


def make_flask(**config) -> flask.Flask:
    app = flask.Flask("flask-contrib-test")
    app.config.update(config)
    return app


def test_settings_come_from_nested_and_prefixed_keys_fastq_last() -> None:
    config = {"CELERY": {"broker_url": "memory://nested", "result_expires": 10},
              "CELERY_BROKER_URL": "memory://celery", "FASTQ_RESULT_EXPIRES": 20,
              "CELERY_TASK_DEFAULT_QUEUE": "jobs", "SECRET_KEY": "not ours"}
    ext = FastQ(make_flask(**config))
    conf = ext.fastq_app.conf
    assert conf.broker_url == "memory://celery"
    assert conf.result_expires == 20
    assert conf.task_default_queue == "jobs"
    assert [key for key, _, _ in settings_from_config(config)] == [
        "CELERY['broker_url']", "CELERY['result_expires']", "CELERY_BROKER_URL",
        "CELERY_TASK_DEFAULT_QUEUE", "FASTQ_RESULT_EXPIRES"]


def test_celery_3_names_are_understood_and_unknown_keys_refused() -> None:
    ext = FastQ(make_flask(CELERY_ALWAYS_EAGER=True, CELERY_BROKER_URL="memory://"))
    assert ext.fastq_app.conf.task_always_eager is True
    with pytest.raises(ConfigurationError, match="FASTQ_BROKER_UTL.*did you mean 'broker_url'"):
        FastQ(make_flask(FASTQ_BROKER_UTL="memory://"))


def test_the_environment_still_wins(monkeypatch) -> None:
    monkeypatch.setenv("FASTQ_TASK_DEFAULT_QUEUE", "from-env")
    ext = FastQ(make_flask(CELERY_TASK_DEFAULT_QUEUE="from-flask"))
    assert ext.fastq_app.conf.task_default_queue == "from-env"


def test_tasks_defined_before_init_app_run_in_its_context() -> None:
    ext = FastQ()

    @ext.task(name="where")
    def where():
        return flask.current_app.config["MARK"]

    @ext.task(name="awhere")
    async def awhere():
        return flask.current_app.config["MARK"]

    assert isinstance(where, FlaskTask)
    with pytest.raises(RuntimeError, match="init_app"):
        where()
    ext.init_app(make_flask(MARK="first", FASTQ_BROKER_URL="memory://",
                            FASTQ_TASK_ALWAYS_EAGER=True))
    assert where() == "first"
    assert where.delay().get(timeout=1) == "first"
    assert asyncio.run(awhere()) == "first"
    assert awhere.delay().get(timeout=1) == "first"
    assert ext.fastq_app.main == "flask-contrib-test"


def test_a_context_already_active_is_kept() -> None:
    ext = FastQ(make_flask(MARK="bound"))

    @ext.task(name="mark")
    def mark():
        return flask.current_app.config["MARK"]

    with make_flask(MARK="view's own").app_context():
        assert mark() == "view's own"
    assert mark() == "bound"


def test_an_existing_fastq_app_is_configured_in_place() -> None:
    fastq_app = App("existing", broker="memory://")
    flask_app = make_flask(FASTQ_RESULT_EXPIRES=5)
    ext = FastQ(flask_app, fastq_app=fastq_app)
    assert ext.fastq_app is fastq_app and fastq_app.conf.result_expires == 5
    assert issubclass(fastq_app.Task, FlaskTask)
    assert flask_app.extensions["fastq"] is ext
