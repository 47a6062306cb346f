"""``fastq worker --ini`` and ``fastq beat --ini`` as real processes: settings from a
Paste-style ini file's sections, the App it names, its Pyramid app built in every worker
process (forked or spawned); a bad file ends the command with one line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.integration.conftest import ROOT, WorkerProcess
from tests.integration.redis_support import delete_keys, redis_prefix  # noqa: F401
from tests.integration.test_pyramid import ini_app  # noqa: F401

pytestmark = [
    pytest.mark.integration,
    # WebOb 1.8, Pyramid's request library, still imports the cgi module
    pytest.mark.filterwarnings("ignore:'cgi' is deprecated:DeprecationWarning"),
]

#: A project with no web framework: the ini names the App and holds a beat schedule.
PLAIN_APP = '''
import os
from fastq import App

app = App("iniproject")


@app.task(name="iniproject.record")
def record(tag):
    with open(os.environ["INI_TEST_RUNS"], "a") as fh:
        fh.write(f"{tag} {app.conf.task_default_queue}\\n")
'''

PLAIN_INI = """
[celery]
broker_url = memory://overridden-by-the-fastq-section
task_default_queue = from-celery-section

[fastq]
app = iniproject:app
broker_url = sqlite:///%(here)s/broker.sqlite3
task_default_queue = from-the-ini
beat_schedule = {"tick": {"task": "iniproject.record", "schedule": 0.5, "args": ["beat"]}}
"""


def _clean_env(tmp_path) -> dict:
    """The environment of a child process: FASTQ_* settings would win over the ini."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("FASTQ_") or key in ("FASTQ_NO_SPEEDUPS",
                                                      "FASTQ_REQUIRE_SPEEDUPS")}
    env.update(PYTHONPATH=os.pathsep.join([ROOT, str(tmp_path)]),
               FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"))
    return env


class PyramidIniWorker(WorkerProcess):
    app_module = "examples.pyramid_app:fastq_app"


@pytest.fixture
def pyramid_ini(ini_app, tmp_path):  # noqa: F811 - the fixture imported above
    """test_pyramid's ini for examples/pyramid_app.py (its settings in ``[app:main]``),
    the WSGI app built from it, and a factory of ``fastq worker --ini`` processes."""
    wsgi, fastq_app, ini, queue = ini_app
    workers: list[WorkerProcess] = []

    def start_worker(*extra: str) -> WorkerProcess:
        worker = PyramidIniWorker(tmp_path, fastq_app.broker_url, str(tmp_path / "runs.log"),
                                  _clean_env(tmp_path))
        workers.append(worker)
        return worker.start("--ini", str(ini), "-Q", queue, *extra)

    yield wsgi, start_worker
    for worker in workers:
        worker.stop()


def _sum_through_the_web_app(wsgi, x: int, y: int) -> int:
    from webob import Request

    sent = Request.blank(f"/sums?x={x}&y={y}", method="POST").get_response(wsgi)
    assert sent.status_code == 200, sent.text
    task_id = sent.json["task_id"]
    try:
        read = Request.blank(f"/sums/{task_id}?wait=30").get_response(wsgi)
        assert read.status_code == 200, read.text
        return read.json["value"]
    finally:
        delete_keys(f"celery-task-meta-{task_id}")


def _start(tmp_path, env, *args: str) -> subprocess.Popen:
    log = open(tmp_path / f"{args[0]}.log", "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "fastq.cli", *args], env=env,
                                cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


@pytest.mark.parametrize("pool", [
    pytest.param(["-P", "solo"], id="solo"),
    pytest.param(["-P", "prefork", "-c", "2"], id="prefork-fork"),
    # a spawned child shares no memory with its parent: it builds the Pyramid app itself
    pytest.param(["-P", "prefork", "-c", "1", "--start-method", "spawn"], id="prefork-spawn"),
])
def test_tasks_of_a_worker_started_with_ini_reach_the_pyramid_registry(pyramid_ini, pool):
    wsgi, start_worker = pyramid_ini
    worker = start_worker(*pool)
    # 2 + 3 + the ini's sums.offset, read from the registry inside the task
    assert _sum_through_the_web_app(wsgi, 2, 3) == 105, worker.log()


def test_without_an_app_named_the_worker_takes_the_one_the_pyramid_app_includes(
        ini_app, tmp_path):  # noqa: F811 - the fixture imported above
    wsgi, _fastq_app, ini, queue = ini_app
    # neither -A nor fastq.app: the App is the one config.include bound in the registry
    unnamed = tmp_path / "unnamed.ini"
    unnamed.write_text("".join(line for line in ini.read_text().splitlines(keepends=True)
                               if not line.startswith("fastq.app")))
    worker = _start(tmp_path, _clean_env(tmp_path), "worker", "--ini", str(unnamed),
                    "-Q", queue, "-l", "info")
    try:
        assert _sum_through_the_web_app(wsgi, 2, 3) == 105, _logs(tmp_path)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_a_worker_and_a_beat_take_app_settings_and_schedule_from_the_ini(tmp_path):
    (tmp_path / "iniproject.py").write_text(PLAIN_APP)
    (tmp_path / "project.ini").write_text(PLAIN_INI)
    runs = tmp_path / "runs.txt"
    env = dict(_clean_env(tmp_path), INI_TEST_RUNS=str(runs))
    # neither names the App with -A: the [fastq] section does
    processes = [_start(tmp_path, env, "worker", "--ini", "project.ini", "-l", "info"),
                 _start(tmp_path, env, "beat", "--ini", "project.ini", "--max-interval", "0.5")]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (runs.exists() and runs.read_text()):
            assert all(p.poll() is None for p in processes), _logs(tmp_path)
            time.sleep(0.1)
        assert runs.exists(), _logs(tmp_path)
        # the worker consumed the queue the [fastq] section named, on its %(here)s broker
        assert runs.read_text().splitlines()[0] == "beat from-the-ini"
        assert (tmp_path / "broker.sqlite3").exists()
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def _logs(tmp_path) -> str:
    return "\n".join(path.read_text(errors="replace") for path in tmp_path.glob("*.log"))


BAD_INIS = {
    "missing file": (None, "ini file 'absent.ini' not found"),
    "not an ini file": ("broker_url = redis://\n", "cannot be read"),
    "no settings": ("[app:other]\nuse = egg:x\n", r"'bad.ini' has no \[fastq\] or \[celery\] "
                    r"section and no fastq.\*/celery.\* keys in \[app:main\]"),
    "unknown setting": ("[fastq]\napp = iniproject:app\nbrokr_url = redis://\n",
                        r"\[fastq\] 'brokr_url': .*did you mean 'broker_url'"),
    "bad value": ("[app:main]\nfastq.app = iniproject:app\nfastq.task_routes = {oops\n",
                  r"\[app:main\] 'fastq.task_routes': .*must be JSON"),
    "no app": ("[fastq]\nbroker_url = memory://\n", "names no fastq App"),
}


@pytest.mark.parametrize("command", ["worker", "beat"])
@pytest.mark.parametrize("case", list(BAD_INIS))
def test_a_bad_ini_ends_the_command_with_one_line_and_exit_code_2(tmp_path, command, case):
    import re

    text, expected = BAD_INIS[case]
    (tmp_path / "iniproject.py").write_text(PLAIN_APP)
    path = "absent.ini"
    if text is not None:
        path = "bad.ini"
        (tmp_path / path).write_text(text)
    done = subprocess.run([sys.executable, "-m", "fastq.cli", command, "--ini", path],
                          env=_clean_env(tmp_path), cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    assert re.search(expected, lines[0]), lines[0]
