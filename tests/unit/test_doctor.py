"""``fastq doctor`` without servers: compiled parts, extras, local stores, unreachable ports."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from fastq import App, _speedups, doctor
from tests.unit.test_extras import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = pytest.mark.twin_neutral


def run_doctor(tmp_path, broker: str, backend: str | None = None, *extra_args: str,
               hidden: tuple[str, ...] = (), **env: str):
    """``python -m fastq doctor -A doctorapp`` for an app with this broker and backend."""
    (tmp_path / "doctorapp.py").write_text(
        f"from fastq import App\napp = App('doctorapp', broker={broker!r}, "
        f"backend={backend!r})\n")
    return run_cli(tmp_path, list(hidden), ["doctor", "-A", "doctorapp", *extra_args], **env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def line_with(output: str, text: str) -> str:
    return next(line for line in output.splitlines() if text in line)


def test_a_healthy_embedded_setup_exits_0(tmp_path) -> None:
    done = run_doctor(tmp_path, "sqlite:///queue/broker.sqlite3")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    for title in ("compiled parts", "optional extras", "app doctorapp"):
        assert f"\n{title}\n" in out
    path = tmp_path / "queue" / "broker.sqlite3"
    assert f"  ok    broker sqlite:///queue/broker.sqlite3: file {path} (created on first " \
           f"use)" in out
    assert not path.exists() and not (tmp_path / "queue").exists()  # nothing created
    assert out.rstrip().endswith("fastq can work as configured")
    assert done.stderr == ""


def test_an_unreachable_broker_exits_1_without_its_password(tmp_path) -> None:
    port = free_port()
    done = run_doctor(tmp_path, f"amqp://guest:s3cret@127.0.0.1:{port}//",
                      f"redis://:s3cret@127.0.0.1:{port}/0")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "s3cret" not in done.stdout + done.stderr
    broker = line_with(done.stdout, "broker amqp://")
    assert broker.startswith(f"  FAIL  broker amqp://guest:***@127.0.0.1:{port}//: unreachable: ")
    assert broker.endswith(f"fix: start it at 127.0.0.1:{port}, or set broker_url to one that "
                           "runs")
    assert line_with(done.stdout, "result backend").startswith(
        f"  FAIL  result backend redis://:***@127.0.0.1:{port}/0: unreachable")
    assert done.stdout.rstrip().endswith(
        "2 problem(s): fastq cannot work as configured until fixed")


def test_a_server_that_never_answers_times_out(tmp_path) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        done = run_doctor(tmp_path, f"amqp://guest:guest@127.0.0.1:{port}//", None,
                          "--timeout", "0.5")
    assert done.returncode == 1
    assert f"broker amqp://guest:***@127.0.0.1:{port}//: no answer within 0.5 s" in done.stdout


def test_a_configured_backend_without_its_extra_exits_1(tmp_path) -> None:
    done = run_doctor(tmp_path, "memory://doctor", "db+postgresql://u:pw@127.0.0.1:1/x",
                      hidden=("sqlalchemy",))
    assert done.returncode == 1
    assert ("  FAIL  result backend db+postgresql://u:***@127.0.0.1:1/x: SQLAlchemy is not "
            "installed (needed by the db+postgresql:// result backend): "
            "pip install 'fastq[sql]'") in done.stdout
    # the extras section says the same, without counting it as a problem
    assert line_with(done.stdout, "  --    sql: ").endswith(
        "SQLAlchemy not installed (pip install 'fastq[sql]')")


def test_an_absent_extra_is_listed_with_its_pip_command(tmp_path) -> None:
    done = run_doctor(tmp_path, "memory://doctor", hidden=("gevent",))
    assert done.returncode == 0
    assert "  --    gevent: gevent not installed (pip install 'fastq[gevent]')" in done.stdout


# -- in-process: compiled parts as doctor reports them -------------------------------
@pytest.fixture
def not_built(monkeypatch):
    for name in _speedups.ENV_SWITCHES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_speedups, "_built", lambda name: False)
    monkeypatch.setattr(_speedups, "_RABBITMQ_HEADERS", ())
    return monkeypatch


def test_missing_compiled_parts_are_notes_with_the_fix(not_built) -> None:
    amqp, consumer = doctor.check_speedups()
    assert amqp.level == consumer.level == doctor.NOTE
    assert str(consumer) == (
        "  note  fastq._speedups._consumer (the compiled consumer loop): not built: "
        "rabbitmq-c's headers were missing when fastq was installed; its pure-Python twin "
        "runs (3-4x slower on RabbitMQ); fix: apt-get install librabbitmq-dev, then pip "
        f"install --force-reinstall --no-deps --no-cache-dir -e {ROOT}")
    app = App("doctor", broker=f"memory://{uuid.uuid4()}")
    assert doctor.run(app, "app")[1] == 0


def test_required_compiled_parts_that_are_missing_exit_1(not_built) -> None:
    not_built.setenv("FASTQ_REQUIRE_SPEEDUPS", "1")
    findings = doctor.check_speedups()
    assert [f.level for f in findings] == [doctor.FAIL, doctor.FAIL]
    assert "and FASTQ_REQUIRE_SPEEDUPS=1 requires it" in findings[0].text
    lines, code = doctor.run(None, "")
    assert code == 1 and lines[-1].startswith("2 problem(s)")


def test_the_switch_off_is_a_note_not_a_problem(monkeypatch) -> None:
    monkeypatch.setenv("FASTQ_NO_SPEEDUPS", "1")
    monkeypatch.setenv("FASTQ_REQUIRE_SPEEDUPS", "1")
    assert {f.level for f in doctor.check_speedups()} == {doctor.NOTE}


@pytest.mark.skipif(not _speedups._built("_amqp"), reason="the extensions are not built here")
def test_built_compiled_parts_are_ok(monkeypatch) -> None:
    monkeypatch.delenv("FASTQ_NO_SPEEDUPS", raising=False)
    amqp, consumer = doctor.check_speedups()
    assert amqp.text == (f"fastq._speedups._amqp (the rabbitmq-c AMQP driver): compiled, "
                         f"rabbitmq-c {_speedups.rabbitmq_c_version()}")
    assert consumer.level == doctor.OK


def test_an_unwritable_sqlite_file_is_a_problem(tmp_path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    finding = doctor._check_file("broker x", str(locked / "db.sqlite3"), "broker_url")
    assert finding.level == doctor.FAIL and "no write access" in finding.text
