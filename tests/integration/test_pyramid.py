"""fastq.contrib.pyramid with real Pyramid: settings read from an ini file's app section,
a POST through the WSGI app sends a task that a worker process (which bootstrapped the
same ini) runs with the registry's settings, a GET reads the result."""

from __future__ import annotations

import os
import sys
import textwrap
import uuid

import pytest

from fastq.exceptions import ConfigurationError
from tests.integration.conftest import ROOT, WorkerProcess
from tests.integration.redis_support import REDIS_URL, delete_keys, redis_prefix  # noqa: F401

pytestmark = [
    pytest.mark.integration,
    # WebOb 1.8, Pyramid's request library, still imports the cgi module
    pytest.mark.filterwarnings("ignore:'cgi' is deprecated:DeprecationWarning"),
]

pytest.importorskip("pyramid")

INI = """
[app:main]
use = call:examples.pyramid_app:main
fastq.app = examples.pyramid_app:fastq_app
celery.broker_url = memory://overridden-by-the-fastq-key
fastq.broker_url = {broker}
celery.result_backend = {backend}
fastq.task_routes = {{"examples.pyramid_app.add": {{"queue": "{queue}"}}}}
celery.CELERY_TASK_SERIALIZER = json
fastq.result_expires = 600
sums.offset = 100
"""


class PyramidWorker(WorkerProcess):
    app_module = "examples.pyramid_worker"


@pytest.fixture
def ini_app(redis_prefix, tmp_path, monkeypatch):  # noqa: F811 - the fixture imported above
    """The example's WSGI app built from an ini of this test's own, and the ini's path."""
    from pyramid.paster import get_app

    for key in [key for key in os.environ if key.startswith("FASTQ_")]:
        monkeypatch.delenv(key)  # the environment would win over the ini
    queue = f"sums-{uuid.uuid4().hex[:8]}"
    ini = tmp_path / "test.ini"
    ini.write_text(textwrap.dedent(INI.format(
        broker=f"{REDIS_URL}?global_keyprefix={redis_prefix}", backend=REDIS_URL,
        queue=queue)))
    sys.modules.pop("examples.pyramid_app", None)
    wsgi = get_app(str(ini))
    fastq_app = sys.modules["examples.pyramid_app"].fastq_app
    yield wsgi, fastq_app, ini, queue
    fastq_app.close()


def test_the_ini_configures_the_app(ini_app, redis_prefix):  # noqa: F811
    _wsgi, fastq_app, _ini, queue = ini_app
    conf = fastq_app.conf
    assert conf.broker_url == f"{REDIS_URL}?global_keyprefix={redis_prefix}"  # fastq.* wins
    assert conf.result_backend == REDIS_URL
    assert conf.task_routes == {"examples.pyramid_app.add": {"queue": queue}}
    assert conf.task_serializer == "json" and conf.result_expires == 600


def test_a_task_sent_by_a_view_runs_in_a_worker_that_bootstrapped_the_ini(ini_app, tmp_path):
    from webob import Request

    wsgi, fastq_app, ini, queue = ini_app
    sent = Request.blank("/sums?x=2&y=3", method="POST").get_response(wsgi)
    assert sent.status_code == 200, sent.text
    task_id = sent.json["task_id"]
    env = dict(os.environ, PYRAMID_INI=str(ini), PYTHONPATH=ROOT,
               FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"))
    worker = PyramidWorker(tmp_path, fastq_app.broker_url, str(tmp_path / "runs.log"), env)
    try:
        worker.start("-Q", queue, "-P", "solo")
        read = Request.blank(f"/sums/{task_id}?wait=30").get_response(wsgi)
        assert read.status_code == 200, read.text
        assert read.json == {"task_id": task_id, "value": 105}  # 2 + 3 + the ini's offset
    finally:
        worker.stop()
        delete_keys(f"celery-task-meta-{task_id}")


def test_an_unknown_key_names_itself_and_the_likely_setting():
    from pyramid.config import Configurator

    from fastq import App

    app = App("pyramid-typo", broker="memory://pyramid-typo")
    config = Configurator(settings={"fastq.brokr_url": "redis://", "fastq.app": app})
    with pytest.raises(ConfigurationError, match="'fastq.brokr_url'.*did you mean 'broker_url'"):
        config.include("fastq.contrib.pyramid")
    app.close()
