"""fastq._speedups: which compiled modules are usable, why not, the fix; the worker banner."""

from __future__ import annotations

import logging
import os
import uuid

import pytest

from fastq import App, _speedups
from fastq.brokers.amqp import load_driver
from fastq.config import NON_SETTING_ENV
from fastq.exceptions import ImproperlyInstalled

# each test sets the switches itself, so one pass covers both; CI's FASTQ_NO_SPEEDUPS=1
# pass adds nothing
pytestmark = pytest.mark.twin_neutral

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAVE_C = _speedups._built("_amqp") and _speedups._built("_consumer")
needs_build = pytest.mark.skipif(not HAVE_C, reason="the extensions are not built here")


@pytest.fixture
def switches(monkeypatch):
    """Neither switch set; the test sets what it needs."""
    for name in _speedups.ENV_SWITCHES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def not_built(switches):
    """As if setup.py had skipped both extensions (and nothing had imported them)."""
    switches.setattr(_speedups, "_built", lambda name: False)
    return switches


def test_the_switches_are_not_settings() -> None:
    assert set(_speedups.ENV_SWITCHES) <= NON_SETTING_ENV


@needs_build
def test_a_built_module_is_used(switches) -> None:
    state = _speedups.status("_consumer")
    assert state.available and state.reason == "" and state.describe() == "compiled"
    assert _speedups.load("_amqp") is not None
    assert _speedups.rabbitmq_c_version()


def test_forced_off_is_a_choice_not_a_fault(switches) -> None:
    switches.setenv("FASTQ_NO_SPEEDUPS", "1")
    switches.setenv("FASTQ_REQUIRE_SPEEDUPS", "1")  # the switch off wins, as in ci/test.sh
    state = _speedups.status("_consumer")
    assert not state.available and state.forced_off
    assert state.describe() == "pure Python (forced off by FASTQ_NO_SPEEDUPS=1)"
    assert _speedups.load("_consumer") is None
    assert load_driver("amqp")[1] == "py-amqp"


@needs_build
def test_asking_for_the_c_driver_overrides_the_switch(switches) -> None:
    switches.setenv("FASTQ_NO_SPEEDUPS", "1")
    assert load_driver("amqp", "rabbitmq-c")[1] == "rabbitmq-c"


def test_not_built_without_headers_names_the_package_and_the_rebuild(not_built) -> None:
    not_built.setattr(_speedups, "_RABBITMQ_HEADERS", ())
    state = _speedups.status("_amqp")
    assert not state.available and not state.forced_off
    assert state.reason == "not built: rabbitmq-c's headers were missing when fastq was installed"
    assert state.fix.startswith("apt-get install librabbitmq-dev")
    # imported from this checkout: rebuilt in place
    assert state.fix.endswith(f"pip install --force-reinstall --no-deps --no-cache-dir -e {ROOT}")
    assert state.describe() == f"pure Python ({state.reason}; fix: {state.fix})"


def test_not_built_with_headers_present_needs_only_the_rebuild(not_built) -> None:
    not_built.setattr(_speedups, "_RABBITMQ_HEADERS", (__file__,))
    not_built.setattr(_speedups.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    state = _speedups.status("_consumer")
    assert state.reason == "not built when fastq was installed"
    assert state.fix == f"pip install --force-reinstall --no-deps --no-cache-dir -e {ROOT}"


def test_the_fix_for_an_install_from_an_index_offers_the_wheel(not_built) -> None:
    not_built.setattr(_speedups, "_installed_from", lambda: None)
    not_built.setattr(_speedups, "_RABBITMQ_HEADERS", ())
    fix = _speedups.status("_amqp").fix
    assert "--only-binary fastq fastq" in fix
    assert "apt-get install librabbitmq-dev" in fix and "--no-binary fastq fastq" in fix


def test_a_missing_module_is_silent_unless_required(not_built) -> None:
    assert _speedups.load("_consumer") is None
    not_built.setenv("FASTQ_REQUIRE_SPEEDUPS", "1")
    with pytest.raises(ImproperlyInstalled) as info:
        _speedups.load("_consumer")
    assert info.value.name == "fastq._speedups._consumer"
    message = str(info.value)
    assert message.startswith("the compiled consumer loop (fastq._speedups._consumer) is not "
                              "built")
    assert "FASTQ_REQUIRE_SPEEDUPS=1 requires it; fix: " in message and "\n" not in message


def test_asking_for_a_missing_driver_is_an_error(not_built) -> None:
    with pytest.raises(ImproperlyInstalled, match="the configuration asks for it"):
        load_driver("amqp", "rabbitmq-c")
    assert load_driver("amqp")[1] == "py-amqp"  # not asked: the twin


@needs_build
def test_an_import_failure_is_reported_with_its_error(switches) -> None:
    error = "librabbitmq.so.4: cannot open shared object file: No such file or directory"
    switches.setitem(_speedups._attempts, "_amqp", (None, error))
    state = _speedups.status("_amqp")
    assert state.reason == f"not importable: {error}"
    assert state.fix.startswith("apt-get install librabbitmq4")
    switches.setitem(_speedups._attempts, "_amqp", (None, "undefined symbol: PyFoo"))
    assert _speedups.status("_amqp").fix.startswith("pip install --force-reinstall")


def test_an_unknown_module_name_is_refused() -> None:
    with pytest.raises(ValueError, match="_amqp, _consumer"):
        _speedups.status("_nope")


# -- the worker banner --------------------------------------------------------------
def _worker(broker: str):
    from fastq.worker.supervisor import Worker

    app = App("banner", broker=broker, worker_enable_remote_control=False)
    return Worker(app, health_file=os.devnull)


def _missing_consumer(monkeypatch) -> None:
    from fastq.worker import consumer

    monkeypatch.setattr(_speedups, "_RABBITMQ_HEADERS", ())
    monkeypatch.setattr(consumer, "STATUS", _speedups.status("_consumer"))


def test_banner_off_rabbitmq_names_the_consumer_only(not_built, caplog) -> None:
    _missing_consumer(not_built)
    worker = _worker(f"memory://{uuid.uuid4()}")
    caplog.set_level(logging.INFO, logger="fastq.worker")
    worker.log_banner()
    (record,) = caplog.records  # no warning: the compiled AMQP driver is irrelevant here
    assert record.levelno == logging.INFO
    assert record.getMessage().endswith(
        "; consumer: pure Python (not built: rabbitmq-c's headers were missing when fastq "
        f"was installed; fix: apt-get install librabbitmq-dev, then pip install "
        f"--force-reinstall --no-deps --no-cache-dir -e {ROOT})")
    assert "AMQP driver" not in record.getMessage()


def test_banner_on_rabbitmq_warns_once_with_the_fix(not_built, caplog) -> None:
    _missing_consumer(not_built)
    worker = _worker("amqp://guest:secret@127.0.0.1:1//")  # never connected
    caplog.set_level(logging.INFO, logger="fastq.worker")
    worker.log_banner()
    info, warning = caplog.records
    assert info.levelno == logging.INFO and "secret" not in info.getMessage()
    assert "; AMQP driver: py-amqp " in info.getMessage()
    assert info.getMessage().endswith("(rabbitmq-c: not built: rabbitmq-c's headers were "
                                      "missing when fastq was installed)")
    assert warning.levelno == logging.WARNING
    text = warning.getMessage()
    assert "the rabbitmq-c AMQP driver and the compiled consumer loop are not in use" in text
    assert "3-4x slower on RabbitMQ" in text
    assert text.endswith(f"fix: apt-get install librabbitmq-dev, then pip install "
                         f"--force-reinstall --no-deps --no-cache-dir -e {ROOT}")


def test_banner_on_rabbitmq_with_the_switch_off_does_not_warn(switches, caplog) -> None:
    from fastq.worker import consumer

    switches.setenv("FASTQ_NO_SPEEDUPS", "1")
    switches.setattr(consumer, "STATUS", _speedups.status("_consumer"))
    worker = _worker("amqp://guest:guest@127.0.0.1:1//")
    caplog.set_level(logging.INFO, logger="fastq.worker")
    worker.log_banner()
    (record,) = caplog.records
    assert record.getMessage().endswith(
        "consumer: pure Python (forced off by FASTQ_NO_SPEEDUPS=1); AMQP driver: py-amqp "
        f"{__import__('amqp').__version__} (rabbitmq-c: forced off by FASTQ_NO_SPEEDUPS=1)")


@needs_build
def test_banner_names_the_compiled_parts_in_use(switches) -> None:
    from fastq.worker import consumer

    switches.setattr(consumer, "STATUS", _speedups.status("_consumer"))
    banner = _worker("amqp://guest:guest@127.0.0.1:1//").banner()
    assert banner.endswith(
        f"; consumer: compiled; AMQP driver: rabbitmq-c {_speedups.rabbitmq_c_version()}")
