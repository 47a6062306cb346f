"""The beat's commands: ``fastq schedule`` edits seen by a running beat within
``--max-interval``, ``fastq beat --dry-run``, ``fastq worker -B`` (prefork: the parent
alone runs the beat), and the AMQP-only leader queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests import servers
from tests.integration.test_beat_processes import Setup, _duplicates, _seconds


def _fastq(setup: Setup, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "fastq", *args, "-A", "beatapp"],
                          env=setup.env, cwd=str(setup.dir), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def setup(tmp_path):
    made = Setup(tmp_path, f"sqlite:///{tmp_path}/broker.sqlite3")
    # this app's own entries are left out: only what `fastq schedule` adds runs
    made.env["BEAT_ONLY_DB"] = "1"
    source = (tmp_path / "beatapp.py").read_text()
    (tmp_path / "beatapp.py").write_text(source + (
        "\nif os.environ.get('BEAT_ONLY_DB'):\n    app.conf.beat_schedule = {}\n"))
    yield made
    made.close()


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def _runs(setup: Setup) -> list[str]:
    if not os.path.exists(setup.runs):
        return []
    with open(setup.runs) as fh:
        return [line.split()[0] for line in fh if line.strip()]


@pytest.mark.twin_neutral  # no compiled twin in the beat or the schedule commands
def test_schedule_commands_reach_a_running_beat(setup):
    setup.start("worker", log="worker.log")
    setup.start_beat(0)
    out = _fastq(setup, "schedule", "add", "db-entry", "--task", "beatapp.record",
                 "--every", "1")
    assert "added db-entry" in out
    assert "db-entry  beatapp.record" in _fastq(setup, "schedule", "list")
    _wait_for(lambda: len(_runs(setup)) >= 2)  # picked up within --max-interval 1
    _fastq(setup, "schedule", "pause", "db-entry")
    assert "paused" in _fastq(setup, "schedule", "list")
    time.sleep(2)  # a run in flight at the pause may still land
    paused_count = len(_runs(setup))
    time.sleep(3)
    assert len(_runs(setup)) == paused_count
    _fastq(setup, "schedule", "resume", "db-entry")
    _wait_for(lambda: len(_runs(setup)) >= paused_count + 2)
    _fastq(setup, "schedule", "remove", "db-entry")
    assert "no periodic tasks" in _fastq(setup, "schedule", "list")
    assert all(run.startswith("db-entry@") for run in _runs(setup))


@pytest.mark.twin_neutral  # no compiled twin in the beat or the schedule commands
def test_schedule_add_rejects_a_bad_crontab(setup):
    done = subprocess.run([sys.executable, "-m", "fastq", "schedule", "add", "x", "--task",
                           "beatapp.record", "--cron", "*/5 * *", "-A", "beatapp"],
                          env=setup.env, cwd=str(setup.dir), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "5 fields" in done.stderr


@pytest.mark.twin_neutral  # no compiled twin in the beat or the schedule commands
@pytest.mark.parametrize("backend", ["rpc://", None])
def test_schedule_commands_refuse_an_app_with_no_shared_store(tmp_path, backend):
    # RabbitMQ with rpc:// (or no) results: no store the beats read, so an entry added
    # would be lost; the command says so and exits 2 (nothing connects to the broker)
    setup = Setup(tmp_path, "amqp://guest:secret@127.0.0.1:5672//", backend)
    for command in (["add", "x", "--task", "beatapp.record", "--every", "1"], ["list"],
                    ["pause", "x"]):
        done = subprocess.run([sys.executable, "-m", "fastq", "schedule", *command, "-A",
                               "beatapp"], env=setup.env, cwd=str(setup.dir),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        [line] = done.stderr.splitlines()  # one line, no traceback
        assert "needs a store the beats share" in line and "set result_backend" in line
        assert "secret" not in line and done.stdout == ""


@pytest.mark.twin_neutral  # no compiled twin in the beat or the schedule commands
def test_dry_run_prints_the_next_runs(setup):
    _fastq(setup, "schedule", "add", "nightly", "--task", "beatapp.record", "--cron",
           "30 2 * * mon-fri")
    out = _fastq(setup, "beat", "--dry-run", "--until", "2099-01-01")
    assert "nightly  beatapp.record" in out
    first = out.splitlines()[0]
    assert "T02:30:00" in first


@pytest.mark.twin_neutral  # no compiled twin in the beat or the schedule commands
def test_worker_with_beat_in_the_prefork_parent_only(tmp_path):
    setup = Setup(tmp_path, f"sqlite:///{tmp_path}/broker.sqlite3")
    try:
        worker = setup.start("worker", "-P", "prefork", "-c", "2", "-B", log="worker.log")
        _wait_for(lambda: len([r for r in _runs(setup) if r.startswith("every-second@")])
                  >= 5, timeout=60)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        log = setup.log("worker.log")
        # one beat: the parent's (a child running one would log its own owner id)
        owners = {line.split("beat ", 1)[1].split(":")[1] for line in log.splitlines()
                  if "claims runs in" in line}
        assert owners == {str(worker.pid)}
        executed = setup.executed()
        assert _duplicates(executed) == 0
        ticks = _seconds(executed)
        assert {round(b - a, 6) for a, b in zip(ticks, ticks[1:])} == {1.0}
    finally:
        setup.close()


def test_amqp_only_beats_elect_one_leader(tmp_path):
    servers.require("RabbitMQ")
    setup = Setup(tmp_path, "amqp://guest:guest@127.0.0.1:5672//", "rpc://")
    setup.env["BEAT_QUEUE"] = f"beat-{uuid.uuid4().hex[:8]}"
    try:
        setup.start("worker", log="worker.log")
        beats = [setup.start_beat(n) for n in range(2)]
        _wait_for(lambda: len(_runs(setup)) >= 3, timeout=60)
        logs = [setup.log(f"beat{n}.log") for n in range(2)]
        leaders = [n for n in range(2) if "leads (no shared store" in logs[n]]
        assert len(leaders) == 1
        beats[leaders[0]].kill()
        beats[leaders[0]].wait()
        killed_at = time.time()
        other = 1 - leaders[0]
        _wait_for(lambda: "leads (no shared store" in setup.log(f"beat{other}.log"))
        _wait_for(lambda: any(line.startswith("every-second@") for line in _runs(setup)
                              if float(_due_of(line)) > killed_at + 1), timeout=30)
        setup.stop(beats[other])
        executed = setup.executed()
        assert _duplicates(executed) == 0
    finally:
        setup.close()


def _due_of(run: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(run.split("@", 1)[1]).timestamp()
