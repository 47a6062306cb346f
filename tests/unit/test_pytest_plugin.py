"""The pytest plugin, run by pytest itself on a sample project (pytester), and start_worker."""

from __future__ import annotations

import pytest

from fastq import App
from fastq.testing.worker import isolated_app, start_worker

pytest_plugins = ["pytester"]

SAMPLE_TASKS = '''
from fastq import shared_task

@shared_task(name="sample.mul")
def mul(x, y):
    return x * y

@shared_task(name="sample.where", bind=True)
def where(self):
    return self.request.hostname
'''

SAMPLE_TESTS = '''
import pytest

from fastq import ResultTimeout


@pytest.fixture(scope="session")
def fastq_includes():
    return ["sample_tasks"]


@pytest.fixture(scope="session")
def fastq_config():
    return {"task_default_queue": "sample", "result_expires": 60}


def test_the_app_is_configured(fastq_app):
    assert fastq_app.conf.task_default_queue == "sample"
    assert fastq_app.conf.broker_url.startswith("memory://fastq-test-")
    assert "sample.mul" in fastq_app.tasks


def test_a_worker_runs_the_included_tasks(fastq_app, fastq_worker):
    result = fastq_app.tasks["sample.mul"].delay(6, 7)
    assert result.get(timeout=10) == 42
    assert fastq_app.tasks["sample.where"].delay().get(timeout=10) == fastq_worker.hostname


def test_without_a_worker_nothing_runs(fastq_app):
    with pytest.raises(ResultTimeout):
        fastq_app.tasks["sample.mul"].delay(1, 2).get(timeout=0.2)


BROKERS_SEEN = set()


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_has_its_own_broker(run, fastq_app):
    assert fastq_app.broker_url not in BROKERS_SEEN
    BROKERS_SEEN.add(fastq_app.broker_url)


@pytest.mark.parametrize("pool", ["threads", "asyncio"])
def test_other_in_process_pools(pool, fastq_app, request):
    from fastq.testing.worker import start_worker

    with start_worker(fastq_app, pool=pool, concurrency=4) as worker:
        results = [fastq_app.tasks["sample.mul"].delay(i, i) for i in range(20)]
        assert [r.get(timeout=10) for r in results] == [i * i for i in range(20)]
    assert worker.consumer.counters["acked"] == 20
'''

SAMPLE_SESSION = '''
import pytest


@pytest.fixture(scope="session")
def fastq_includes():
    return ["sample_tasks"]


@pytest.mark.parametrize("x", [2, 3])
def test_the_session_worker_outlives_one_test(x, fastq_session_app, fastq_session_worker):
    assert fastq_session_app.tasks["sample.mul"].delay(x, 10).get(timeout=10) == x * 10
    assert fastq_session_worker.consumer.counters["received"] >= x - 1
'''

SAMPLE_OVERRIDES = '''
import pytest


@pytest.fixture
def fastq_worker_pool():
    return "threads"


@pytest.fixture
def fastq_worker_parameters():
    return {"concurrency": 3, "hostname": "overridden@test"}


def test_worker_options_come_from_the_fixtures(fastq_app, fastq_worker):
    assert fastq_worker.hostname == "overridden@test"
    assert type(fastq_worker.pool).__name__ == "ThreadPool"
'''


def test_the_fixtures_through_the_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(sample_tasks=SAMPLE_TASKS, test_sample=SAMPLE_TESTS,
                        test_overrides=SAMPLE_OVERRIDES, test_session=SAMPLE_SESSION)
    pytester.syspathinsert()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=10)


def test_start_worker_outside_pytest_fixtures() -> None:
    with isolated_app() as app:
        @app.task(name="plain.add")
        def add(x, y):
            return x + y

        with start_worker(app) as worker:
            assert add.delay(2, 2).get(timeout=10) == 4
        assert worker.consumer.counters["received"] == 1
        # stopped: a task sent now waits for the next worker
        late = add.delay(3, 3)
        with start_worker(app):
            assert late.get(timeout=10) == 6


def test_the_app_settings_win_over_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("FASTQ_BROKER_URL", "redis://127.0.0.1:1/0")
    with isolated_app({"task_default_queue": "q"}, main="named") as app:
        assert isinstance(app, App) and app.main == "named"
        assert app.broker_url.startswith("memory://fastq-test-")
        assert app.conf.task_default_queue == "q"
