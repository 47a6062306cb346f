"""The typed public surface: mypy over a typed example app and over misuse of the API,
the example run for real, and the exports and option tables kept in step with the code."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import fastq
import fastq._state
import fastq.app
import fastq.exceptions
from fastq import App, AsyncResult, EagerResult, Request, Task
from fastq.task import TaskDecoratorOptions, TaskOptions

ROOT = Path(__file__).resolve().parents[2]
TYPING = ROOT / "tests" / "typing"
EXAMPLE = TYPING / "example_app.py"
ERRORS = TYPING / "example_errors.py"

#: What the lead runs in CI too (from the repository root).
MYPY_COMMAND = [sys.executable, "-m", "mypy", "--config-file", "tests/typing/mypy.ini",
                "tests/typing/example_app.py", "tests/typing/example_errors.py"]

_ERROR_LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: .*\[(?P<code>[a-z-]+)\]$")
_MARKER = re.compile(r"#\s*E:\s*(?P<codes>[a-z-]+(?:\s*,\s*[a-z-]+)*)\s*$")


def _expected_errors(path: Path) -> set[tuple[int, str]]:
    expected = set()
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        marker = _MARKER.search(text)
        if marker:
            expected.update((number, code.strip()) for code in marker["codes"].split(","))
    return expected


@pytest.fixture(scope="module")
def mypy_errors() -> dict[str, set[tuple[int, str]]]:
    if importlib.util.find_spec("mypy") is None:
        reason = "mypy is not installed (pip install mypy, or the dev extra)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must check the types")
        pytest.skip(reason)
    # no cache: a stale one would hide a change in fastq; about 3 s on the CI machine
    done = subprocess.run([*MYPY_COMMAND, "--cache-dir", os.devnull], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: mypy itself failed
    errors: dict[str, set[tuple[int, str]]] = {}
    for text in done.stdout.splitlines():
        match = _ERROR_LINE.match(text)
        if match:
            errors.setdefault(Path(match["path"]).as_posix(), set()).add(
                (int(match["line"]), match["code"]))
    return errors


def test_mypy_strict_passes_on_the_example_and_on_fastq_itself(mypy_errors):
    unexpected = {path: found for path, found in mypy_errors.items()
                  if path != "tests/typing/example_errors.py"}
    assert unexpected == {}


def test_mypy_rejects_each_misuse_and_nothing_else(mypy_errors):
    found = mypy_errors.get("tests/typing/example_errors.py", set())
    expected = _expected_errors(ERRORS)
    assert expected, "no '# E:' markers found"
    assert sorted(found - expected) == [], "errors not marked in example_errors.py"
    assert sorted(expected - found) == [], "misuse that mypy no longer rejects"


def test_the_example_runs(monkeypatch):
    # the example defines shared tasks and makes its App current: undo both afterwards
    monkeypatch.setattr(fastq.app, "_shared_tasks", list(fastq.app._shared_tasks))
    monkeypatch.setattr(fastq._state, "_current", fastq._state._current)
    spec = importlib.util.spec_from_file_location("fastq_typing_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        out = module.main()
    finally:
        module.app.close()
    assert out["add"] == 3 and out["direct"] == 4 and out["apply_async"] == 7
    assert out["greet"] == "hello ann?" and out["fetch"] == b"x"
    assert out["count"] == 2 and out["total"] == 6 and out["echo"] == "hi"
    assert out["apply"] == 11 and out["chain"] == 7 and out["chain2"] == 12
    assert out["group"] == [0, 2, 4] and out["linked"] == 2
    assert out["by_name"] == "hello cid!" and out["send_later"] == 5


# -- exports ----------------------------------------------------------------------------
def test_every_exception_is_exported_from_fastq():
    classes = {name for name, value in vars(fastq.exceptions).items()
               if isinstance(value, type) and issubclass(value, BaseException)
               and value.__module__ == "fastq.exceptions"}
    aliases = {"NotRegistered", "TimeoutError"}
    for name in classes | aliases:
        assert getattr(fastq, name) is getattr(fastq.exceptions, name), name
    assert fastq.TimeoutError is fastq.ResultTimeout
    assert issubclass(fastq.ResultTimeout, TimeoutError)  # the builtin


def test_all_lists_every_public_name_but_the_timeout_alias():
    # ``from fastq import *`` must not shadow the builtin TimeoutError
    assert "TimeoutError" not in fastq.__all__
    assert set(fastq.__all__) == set(fastq._PUBLIC) - {"TimeoutError"}
    assert len(fastq.__all__) == len(set(fastq.__all__))
    for name in fastq.__all__:
        assert getattr(fastq, name) is not None
    assert fastq.EagerResult is EagerResult and fastq.TaskOptions is TaskOptions


# -- the option tables follow the code --------------------------------------------------
def test_task_options_are_what_send_task_accepts():
    parameters = inspect.signature(App.message_template).parameters
    accepted = {name for name, p in parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and not name.startswith("_")}
    assert set(TaskOptions.__annotations__) == accepted | {"task_id"}
    assert not TaskOptions.__required_keys__


def test_task_decorator_options_are_the_task_options():
    assert set(TaskDecoratorOptions.__annotations__) | {"bind", "base"} == Task.OPTIONS


# -- the runtime is unchanged -----------------------------------------------------------
def test_generics_subscript_at_runtime_and_add_nothing_per_instance():
    assert typing.get_args(Task[[int, int], int]) == ((int, int), int)
    assert typing.get_origin(AsyncResult[int]) is AsyncResult
    assert EagerResult[str] is not None
    # typing.Generic has no __new__ or __init__: making a Task or a result costs as before
    assert Task.__new__ is object.__new__ and AsyncResult.__new__ is object.__new__


def test_request_keeps_its_slots_and_reads_the_headers():
    headers = {"id": "t1", "task": "x.add", "retries": 2, "eta": None, "parent_id": "p",
               "root_id": "r", "group": "g", "group_index": 1, "timelimit": [10, 5],
               "custom": "yes"}
    request = Request(headers, [1], {"y": 2}, {"callbacks": None, "chain": [{"task": "n"}]},
                      properties={"reply_to": "q", "correlation_id": "c"})
    assert not hasattr(request, "__dict__")
    assert (request.id, request.task, request.retries, request.eta) == ("t1", "x.add", 2, None)
    assert (request.parent_id, request.root_id, request.group, request.group_index) == (
        "p", "r", "g", 1)
    assert request.timelimit == [10, 5] and request.correlation_id == "c"
    assert request.reply_to == "q" and request.chain == [{"task": "n"}]
    assert request.callbacks is None and request.called_directly is False
    assert request.custom_headers == {"custom": "yes"}
    bare = Request({"id": "t2", "task": "x"}, [], {}, {})
    assert bare.retries == 0 and bare.timelimit == (None, None) and bare.correlation_id == "t2"
