"""Task options and what a task does with them: retry backoff, option and task names,
routing, calling it directly, delay."""

import pytest

from fastq import App, shared_task
from fastq.exceptions import ConfigurationError, TaskNotRegistered


@pytest.fixture
def app():
    return App("t", broker="memory://opts")


def test_backoff_grows_exponentially_and_is_capped(app):
    @app.task(retry_backoff=2, retry_backoff_max=20, retry_jitter=False)
    def job():
        pass

    assert [job.backoff_countdown(n) for n in range(6)] == [2, 4, 8, 16, 20, 20]


def test_backoff_jitter_stays_within_the_exponential_bound(app):
    @app.task(retry_backoff=True, retry_jitter=True)
    def job():
        pass

    values = [job.backoff_countdown(3) for _ in range(200)]
    assert all(0 <= v <= 8 for v in values)
    assert len(set(values)) > 100


def test_unknown_task_option_is_refused(app):
    with pytest.raises(ConfigurationError, match="did you mean 'max_retries'"):
        app.task(max_retry=3)(lambda: None)


def test_unknown_task_name_suggests_a_registered_one(app):
    @app.task(name="app.tasks.send")
    def send():
        pass

    with pytest.raises(TaskNotRegistered, match="did you mean 'app.tasks.send'"):
        app.get_task("app.tasks.sned")


def test_call_runs_the_function_directly(app):
    @app.task(bind=True)
    def who(self):
        return self.request.called_directly

    assert who() is True


def test_shared_task_follows_the_current_app():
    @shared_task(name="shared.double")
    def double(x):
        return x * 2

    app = App("t2", broker="memory://shared", task_always_eager=True)
    assert "shared.double" in app.tasks
    assert double.delay(21).get() == 42


def test_delay_follows_settings_changed_between_calls(app):
    sent = []
    app.publish_many = sent.extend  # the messages, not a broker

    @app.task
    def job(x):
        pass

    job.delay(1)
    job.delay(2)
    app.conf.task_routes = {"*.job": "routed"}
    job.delay(3)
    job.priority, job.time_limit = 5, 10
    job.delay(4)
    app.conf.task_serializer = "msgpack"
    job.delay(5)
    job.expires = 60
    job.delay(6)
    first, second, routed, limited, packed, expiring = sent
    assert first.headers["id"] != second.headers["id"]
    assert second.headers["root_id"] == second.headers["id"]
    assert second.headers["argsrepr"] == "(2,)" and second.body == b'[[2],{},' \
        b'{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]'
    assert (first.queue, routed.queue) == ("celery", "routed")
    assert (routed.priority, limited.priority) == (0, 5)
    assert (routed.headers["timelimit"], limited.headers["timelimit"]) == ([None, None],
                                                                          [10, None])
    assert packed.properties["content_type"] == "application/x-msgpack"
    assert "expiration" not in packed.properties and expiring.headers["expires"]
    assert expiring.properties["expiration"] in ("60000", "59999")
