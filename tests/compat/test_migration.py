"""The migration test: a Celery 5 project (``tests/compat/project``) run on Celery, then
with its imports changed to fastq, must pass the same checks.

The project is a copy of what Celery users write: a settings module with the common
settings, tasks with ``base=`` classes and hooks, signal receivers, ``update_state``
progress, routing to three queues, a chain, a group, a link, and its unit tests in eager
mode. ``checks.py`` runs its checks against a worker of the same system (``celery
worker -P solo`` / ``fastq worker``), on Redis and again on RabbitMQ (results in Redis),
and, in another process, in eager mode, and prints each check's outcome. The fastq copy is made in ``tmp_path``: ``celery`` and ``kombu``
become ``fastq`` in its import lines, nothing else changes.

Each (system, broker, check) is one test, so the pass counts on each system are the
test counts (about 15 s in all: the workers start once per system and broker).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests import servers
from tests.integration.redis_support import REDIS_URL, delete_keys, require_redis

#: RabbitMQ on loopback (results stay in Redis, a common Celery set-up)
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
BROKERS = {"redis": REDIS_URL, "amqp": AMQP_URL}

pytest.importorskip("celery")

# the fastq workers run the compiled consumer (and, on RabbitMQ, driver): not twin-neutral
pytestmark = [pytest.mark.integration]

PROJECT = Path(__file__).parent / "project"
#: the checkout under test: its fastq, not an installed one, runs the migrated copy
ROOT = Path(__file__).resolve().parents[2]
CHECKS_SOURCE = (PROJECT / "checks.py").read_text()
WORKER_CHECKS = re.findall(r"^def (check_\w+)\(", CHECKS_SOURCE, re.M)
EAGER_CHECKS = re.findall(r"^def (eager_\w+)\(", CHECKS_SOURCE, re.M)

#: ``from celery.x import y`` / ``import kombu``: the lines the migration changes
_IMPORT_LINE = re.compile(r"^(\s*(?:from|import)\s+)(celery|kombu)\b", re.M)


def migrate_imports(source: str) -> str:
    """``source`` with Celery's and kombu's modules named ``fastq`` in its import lines."""
    return _IMPORT_LINE.sub(r"\1fastq", source)


def copy_project(target: Path, system: str) -> Path:
    shutil.copytree(PROJECT, target, ignore=shutil.ignore_patterns("__pycache__"))
    if system == "fastq":
        for path in target.rglob("*.py"):
            path.write_text(migrate_imports(path.read_text()))
    return target


def worker_argv(system: str, queues: str, prefix: str) -> list[str]:
    if system == "celery":
        celery = shutil.which("celery") or str(Path(sys.executable).with_name("celery"))
        return [celery, "-A", "proj", "worker", "-P", "solo", "-Q", queues, "-l", "info",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                "-n", f"{prefix}@%h"]
    return [sys.executable, "-m", "fastq.cli", "worker", "-A", "proj", "-P", "solo",
            "-Q", queues, "-l", "info", "-n", f"{prefix}@%h"]


def run_project(system: str, broker: str, base: Path) -> dict[str, str]:
    """Run the project's checks on ``system`` over ``broker``: each check's outcome."""
    require_redis()
    if broker == "amqp":
        servers.require("RabbitMQ")
    prefix = f"compat-{system}-{uuid.uuid4().hex[:8]}"
    project = copy_project(base / system, system)
    worker_log = base / f"{system}-worker.log"
    env = dict(os.environ, COMPAT_PREFIX=prefix, COMPAT_BROKER_URL=BROKERS[broker],
               COMPAT_RESULT_BACKEND=REDIS_URL,
               PYTHONPATH=os.pathsep.join([str(project), str(ROOT)]),
               FASTQ_WORKER_STATE_DIR=str(base / f"{system}-workers"))
    for name in ("COMPAT_EAGER", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    worker_env = dict(env, COMPAT_EVENTS=str(base / f"{system}-events.jsonl"))
    # the unit tests run under Django, as Celery's Django projects do (delay_on_commit)
    eager_env = dict(env, COMPAT_EAGER="1", COMPAT_EVENTS=str(base / f"{system}-eager.jsonl"),
                     DJANGO_SETTINGS_MODULE="proj.django_settings")
    queues = ",".join(f"{prefix}-{name}" for name in ("default", "billing", "reports"))
    outcomes: dict[str, str] = {}
    with open(worker_log, "wb") as log:
        worker = subprocess.Popen(worker_argv(system, queues, prefix), env=worker_env,
                                  cwd=project, stdout=log, stderr=subprocess.STDOUT)
        try:
            # the eager run needs no worker (nor broker): it runs while the worker starts,
            # once per system
            eager = None
            if broker == "redis":
                eager = subprocess.Popen([sys.executable, "checks.py", "eager"],
                                         env=eager_env, cwd=project, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
            outcomes.update(_outcomes(
                subprocess.run([sys.executable, "checks.py", "worker"], env=worker_env,
                               cwd=project, capture_output=True, text=True, timeout=180),
                WORKER_CHECKS, worker_log))
            if eager is not None:
                out, err = eager.communicate(timeout=120)
                outcomes.update(_outcomes(subprocess.CompletedProcess(
                    eager.args, eager.returncode, out, err), EAGER_CHECKS, None))
        finally:
            _stop(worker, system)
            delete_keys(f"*{prefix}*")
            if broker == "amqp":
                _delete_amqp_names(prefix)
    return outcomes


def _delete_amqp_names(prefix: str) -> None:
    """The project's queues and exchanges (named after ``prefix``), and fastq's dead-letter
    queues beside them."""
    import amqp

    conn = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest")
    conn.connect()
    try:
        for name in ("default", "billing", "reports"):
            for queue in (f"{prefix}-{name}", f"{prefix}-{name}.dead"):
                channel = conn.channel()
                channel.queue_delete(queue)
                channel.close()
            channel = conn.channel()
            channel.exchange_delete(f"{prefix}-{name}")
            channel.close()
    finally:
        conn.close()


def _outcomes(done: subprocess.CompletedProcess, names: list[str],
              worker_log: Path | None) -> dict[str, str]:
    lines = done.stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1])
    except (IndexError, ValueError):
        log = worker_log.read_text(errors="replace")[-3000:] if worker_log else ""
        why = f"checks.py did not run (exit {done.returncode}):\n{done.stderr[-3000:]}"
        if log:
            why += f"\n-- worker log --\n{log}"
        return dict.fromkeys(names, f"fail: {why}")
    if worker_log is not None and any(v != "ok" for v in found.values()):
        log = worker_log.read_text(errors="replace")[-2000:]
        found = {k: v if v == "ok" else f"{v}\n-- worker log (end) --\n{log}"
                 for k, v in found.items()}
    return found


def _stop(worker: subprocess.Popen, system: str) -> None:
    if worker.poll() is None:
        # Celery 5.7 takes ~7 s to exit even on SIGQUIT, and everything is checked by
        # now: kill it, as the interop tests do; fastq stops warmly at once
        worker.send_signal(signal.SIGKILL if system == "celery" else signal.SIGTERM)
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)


_runs: dict[tuple[str, str], dict[str, str]] = {}


@pytest.fixture(scope="module")
def project_outcomes(tmp_path_factory):
    """The outcomes on each system and broker, each run once for the whole module."""

    def outcomes(system: str, broker: str) -> dict[str, str]:
        key = (system, broker)
        if key not in _runs:
            base = tmp_path_factory.mktemp(f"compat-{system}-{broker}")
            _runs[key] = run_project(system, broker, base)
        return _runs[key]

    return outcomes


def _cases():
    for broker in BROKERS:
        for system in ("celery", "fastq"):
            # the eager checks use no broker: run once, with Redis
            names = WORKER_CHECKS + (EAGER_CHECKS if broker == "redis" else [])
            for name in names:
                # Celery's own run has no fastq code in it: once is enough
                marks = [pytest.mark.twin_neutral] if system == "celery" else []
                yield pytest.param(system, broker, name, id=f"{system}-{broker}-{name}",
                                   marks=marks)


@pytest.mark.parametrize(("system", "broker", "check"), list(_cases()))
def test_the_project_check_passes(project_outcomes, system: str, broker: str,
                                  check: str) -> None:
    outcome = project_outcomes(system, broker).get(check, "fail: not run")
    assert outcome == "ok", f"{system} on {broker}: {check}: {outcome}"


def test_the_import_rewrite_changes_only_celery_and_kombu_imports() -> None:
    source = ("from celery import Celery\nimport celery.signals\nfrom kombu import Queue\n"
              "from .celery import app\nimport proj.celery\nx = 'celery'\n")
    assert migrate_imports(source) == (
        "from fastq import Celery\nimport fastq.signals\nfrom fastq import Queue\n"
        "from .celery import app\nimport proj.celery\nx = 'celery'\n")
