"""No password in any output: a distinctive one in the broker and backend URLs, then the
worker (at debug level), the CLI and the failure paths, and every line and file they
leave is searched for it. Also: the files a worker writes are its user's alone (0600)."""

from __future__ import annotations

import glob
import json
import os
import socket
import stat
import subprocess
import sys
import time
import traceback

import pytest

from fastq import App
from tests.integration.redis_support import REDIS_URL
from tests.interop.processes import read_health

pytestmark = pytest.mark.integration

CANARY = "Zq7leakCanary91"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(tmp_path):
    return dict(os.environ, PYTHONPATH=ROOT, FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
                FASTQ_BROKER_URL=f"sqlite:///{tmp_path / 'broker.sqlite3'}",
                FASTQ_TEST_RUN_LOG=str(tmp_path / "runs.log"))


def run(args, env, cwd, timeout=60) -> str:
    done = subprocess.run([sys.executable, "-m", "fastq.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    return done.stdout + done.stderr


def assert_no_canary(where: str, text: str) -> None:
    assert CANARY not in text, f"the password leaked into {where}:\n{text[-3000:]}"


def test_the_worker_and_the_cli_never_print_a_password(env, tmp_path):
    port = closed_port()
    leaky = dict(env,
                 # refused by RabbitMQ: the worker reports the failure and gives up
                 FASTQ_BROKER_URL=f"amqp://guest:{CANARY}@127.0.0.1:5672//",
                 FASTQ_BROKER_CONNECTION_MAX_RETRIES="1",
                 # Redis without a password refuses AUTH; the other is not listening
                 FASTQ_RESULT_BACKEND=f"redis://:{CANARY}@127.0.0.1:6379/0")
    outputs = {
        "worker, wrong AMQP password": run(
            ["worker", "-A", "tests.apps.sqlite_app", "-l", "debug"], leaky, tmp_path),
        "worker, unreachable Redis broker": run(
            ["worker", "-A", "tests.apps.sqlite_app", "-l", "debug"],
            dict(leaky, FASTQ_BROKER_URL=f"redis://:{CANARY}@127.0.0.1:{port}/0"), tmp_path),
        "fastq status": run(["status", "-A", "tests.apps.sqlite_app"], leaky, tmp_path),
        "fastq status --json": run(["status", "-A", "tests.apps.sqlite_app", "--json"],
                                   leaky, tmp_path),
        "fastq doctor": run(["doctor", "-A", "tests.apps.sqlite_app", "--timeout", "2"],
                            leaky, tmp_path),
    }
    for where, text in outputs.items():
        assert_no_canary(where, text)
    # the failures were reported (so the searches above searched error messages)
    assert "ACCESS_REFUSED" in outputs["worker, wrong AMQP password"] or \
        "403" in outputs["worker, wrong AMQP password"], outputs["worker, wrong AMQP password"]
    assert "guest:***@" in outputs["fastq doctor"] or "***" in outputs["fastq doctor"]
    for name in glob.glob(str(tmp_path / "**" / "*"), recursive=True):
        if os.path.isfile(name):
            with open(name, "rb") as fh:
                assert CANARY.encode() not in fh.read(), name


def test_a_worker_running_tasks_logs_no_password_and_keeps_its_files_private(env, tmp_path):
    leaky = dict(env, FASTQ_RESULT_BACKEND=f"redis://:{CANARY}@127.0.0.1:6379/0")
    health = tmp_path / "workers" / "w.json"
    worker = subprocess.Popen(
        [sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.sqlite_app",
         "-l", "debug", "--health-file", str(health)],
        env=leaky, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        producer = App("producer", broker=env["FASTQ_BROKER_URL"])
        # Redis has no password here; redis-py sends it and goes on without one
        producer.send_task("t.add", (1, 2))
        producer.close()
        deadline = time.monotonic() + 20
        while not health.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the task runs and its result is stored meanwhile
        assert health.exists()
        assert stat.S_IMODE(os.stat(health).st_mode) == 0o600
        broker_file = tmp_path / "broker.sqlite3"
        assert stat.S_IMODE(os.stat(broker_file).st_mode) == 0o600
        assert_no_canary("the health file", health.read_text())
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert_no_canary("the worker's log", output)
    assert "redis://:***@127.0.0.1:6379/0" in output and "succeeded" in output, output


@pytest.mark.parametrize("url", [
    f"amqp://guest:{CANARY}@127.0.0.1:{{port}}//?driver=py-amqp",
    f"redis://:{CANARY}@127.0.0.1:{{port}}/0",
])
def test_errors_raised_to_callers_name_no_password(url):
    app = App("leak", broker_url=url.format(port=closed_port()), broker_connection_timeout=0.3)
    try:
        with pytest.raises(Exception) as info:
            app.send_task("t.add", (1, 2))
    finally:
        app.close()
    text = "".join(traceback.format_exception(info.value))
    assert_no_canary("the exception", text + repr(info.value))
    assert "127.0.0.1" in text


def test_a_result_backend_error_names_no_password():
    app = App("leak", broker="memory://leak",
              result_backend=f"redis://:{CANARY}@127.0.0.1:{closed_port()}/0")
    try:
        with pytest.raises(Exception) as info:
            app.AsyncResult("some-id").get(timeout=1)
    finally:
        app.close()
    text = "".join(traceback.format_exception(info.value))
    assert_no_canary("the exception", text + repr(info.value))



def test_inspect_conf_hides_secrets_inside_transport_options(env, tmp_path):
    """A password nested in a dict setting (Redis Sentinel's here) is hidden by
    ``fastq inspect conf``, in its text and its JSON replies, as at top level."""
    options = {"sentinel_kwargs": {"password": CANARY}, "dead_letter_max": 1234}
    leaky = dict(env, FASTQ_BROKER_URL=REDIS_URL,
                 FASTQ_BROKER_TRANSPORT_OPTIONS=json.dumps(options))
    health = tmp_path / "workers" / "w.json"
    node = f"secrets-{os.getpid()}@test"
    worker = subprocess.Popen(
        [sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.sqlite_app",
         "-n", node, "-Q", node, "-l", "debug", "--health-file", str(health)],
        env=leaky, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while read_health(str(health)).get("state") != "consuming":
            assert time.monotonic() < deadline and worker.poll() is None, "no worker"
            time.sleep(0.05)
        outputs = {f"fastq inspect conf{extra}": run(
            ["inspect", "conf", "-A", "tests.apps.sqlite_app", "-d", node, "-t", "5",
             *extra.split()], leaky, tmp_path) for extra in ("", " --json")}
    finally:
        worker.terminate()
        log = worker.communicate(timeout=30)[0]
    for where, text in outputs.items():
        assert_no_canary(where, text)
    # the replies did carry the option (so the searches above searched it)
    conf = json.loads(outputs["fastq inspect conf --json"])[node]
    assert conf["broker_transport_options"] == {"sentinel_kwargs": {"password": "********"},
                                                "dead_letter_max": 1234}, conf
    assert "dead_letter_max" in outputs["fastq inspect conf"], outputs["fastq inspect conf"]
    assert_no_canary("the worker's log", log)


def test_conf_table_hides_secrets_at_any_depth():
    app = App("leak", broker="memory://leak", broker_transport_options={
        "predefined_queues": {"q": {"url": "https://sqs.eu-west-1.amazonaws.com/1/q",
                                    "access_key_id": "AKID", "secret_access_key": CANARY}},
        "sentinel_kwargs": {"password": CANARY},
        "hosts": [f"redis://:{CANARY}@127.0.0.1:6379/0", (f"amqp://u:{CANARY}@h//",)],
        "region": "eu-west-1"})
    try:
        table = app.conf.table()
        assert_no_canary("conf.table()", repr(table))
        assert_no_canary("conf.humanize()", app.conf.humanize(with_defaults=True))
        options = table["broker_transport_options"]
        assert options["predefined_queues"]["q"] == {
            "url": "https://sqs.eu-west-1.amazonaws.com/1/q", "access_key_id": "********",
            "secret_access_key": "********"}
        assert options["hosts"] == ["redis://:***@127.0.0.1:6379/0", ("amqp://u:***@h//",)]
        assert options["region"] == "eu-west-1"
        assert CANARY in repr(app.conf.table(censored=False))
    finally:
        app.close()
