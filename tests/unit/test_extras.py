"""A missing optional package: one line naming the extra to install, and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from fastq import _extras
from fastq.exceptions import ExtraNotInstalled, ImproperlyInstalled

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# none of this touches code with a compiled twin
pytestmark = pytest.mark.twin_neutral


def run_cli(tmp_path, hidden: list[str], argv: list[str], **env: str):
    """``python -m fastq <argv>`` in ``tmp_path`` with the ``hidden`` modules made
    unimportable, as if their packages were not installed."""
    code = textwrap.dedent(f"""
        import runpy, sys
        for name in {hidden!r}:
            sys.modules[name] = None  # "import name" now fails as for a missing package
        sys.argv = ["fastq", *{argv!r}]
        runpy.run_module("fastq", run_name="__main__", alter_sys=True)
    """)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("FASTQ_")}
    environ.update(PYTHONPATH=ROOT, **env)
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=60)


CASES = {
    "gevent": (["gevent"], ["worker", "-P", "gevent"], {},
               "gevent is not installed (needed by -P gevent): pip install 'fastq[gevent]'"),
    "eventlet": (["eventlet"], ["worker", "--pool=eventlet"], {},
                 "eventlet is not installed (needed by -P eventlet): "
                 "pip install 'fastq[eventlet]'"),
    "redis-broker": (["redis"], ["worker"], {"FASTQ_BROKER_URL": "redis://127.0.0.1:1/0"},
                     "redis is not installed (needed by the redis:// broker): "
                     "pip install 'fastq[redis]'"),
    "sql-backend": (["sqlalchemy"], ["worker"],
                    {"FASTQ_RESULT_BACKEND": "db+postgresql://u:secret@127.0.0.1:1/x"},
                    "SQLAlchemy is not installed (needed by the db+postgresql:// result "
                    "backend): pip install 'fastq[sql]'"),
    "psycopg": (["psycopg"], ["result", "some-id"],
                {"FASTQ_RESULT_BACKEND": "db+postgresql://u:secret@127.0.0.1:1/x"},
                "psycopg is not installed (needed by the db+postgresql+psycopg:// result "
                "backend): pip install 'fastq[sql]'"),
    "pymysql": (["pymysql"], ["result", "some-id"],
                {"FASTQ_RESULT_BACKEND": "db+mysql://u:secret@127.0.0.1:1/x"},
                "PyMySQL is not installed (needed by the db+mysql+pymysql:// result "
                "backend): pip install 'fastq[sql]'"),
    "sqs": (["boto3"], ["worker"], {"FASTQ_BROKER_URL": "sqs://"},
            "boto3 is not installed (needed by the sqs:// broker): pip install 'fastq[sqs]'"),
    "memcached": (["pymemcache"], ["worker"],
                  {"FASTQ_RESULT_BACKEND": "cache+memcached://127.0.0.1:1/"},
                  "pymemcache is not installed (needed by the cache+memcached:// result "
                  "backend): pip install 'fastq[memcached]'"),
    "django": (["django"], ["worker"], {"FASTQ_RESULT_BACKEND": "django-db://"},
               "Django is not installed (needed by the django-db:// result backend): "
               "pip install 'fastq[django]'"),
    "py-amqp": (["amqp"], ["worker"],
                {"FASTQ_BROKER_URL": "amqp://127.0.0.1:1//", "FASTQ_NO_SPEEDUPS": "1"},
                "py-amqp is not installed (needed by amqp:// while the rabbitmq-c driver is "
                "forced off by FASTQ_NO_SPEEDUPS=1): pip install 'fastq[amqp]'"),
    "pyamqp-url": (["amqp"], ["call", "t.add"], {"FASTQ_BROKER_URL": "pyamqp://127.0.0.1:1//"},
                   "py-amqp is not installed (needed by pyamqp://): pip install 'fastq[amqp]'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_cli_prints_one_line_and_exits_2(tmp_path, case) -> None:
    hidden, argv, env, line = CASES[case]
    done = run_cli(tmp_path, hidden, argv, **env)
    assert (done.returncode, done.stderr) == (2, line + "\n"), done.stdout
    assert done.stdout == ""


@pytest.mark.parametrize("module, codec", [("msgpack", "msgpack"), ("yaml", "yaml")])
def test_a_serializer_names_its_extra(monkeypatch, module, codec) -> None:
    from fastq import serialization

    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ExtraNotInstalled) as info:
        serialization.dumps({"a": 1}, codec)
    dist, extra = _extras.OPTIONAL[module]
    assert str(info.value) == (f"{dist} is not installed (needed by the {codec} serializer): "
                               f"pip install 'fastq[{extra}]'")
    with pytest.raises(ExtraNotInstalled):  # decoding too: not a DecodeError
        serialization.loads(b"x", serialization.CODECS[codec].content_type,
                            accept={serialization.CODECS[codec].content_type})


def test_the_exception_is_an_import_error_with_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gevent", None)
    with pytest.raises(ImportError) as info:
        _extras.require("gevent")
    assert isinstance(info.value, ImproperlyInstalled)
    assert (info.value.name, info.value.extra) == ("gevent", "gevent")
    assert str(info.value) == "gevent is not installed: pip install 'fastq[gevent]'"


def test_a_package_that_fails_to_import_is_told_apart() -> None:
    if not _extras.installed("gevent"):
        pytest.skip("gevent is not installed here")
    # installed (found on the path) but one of its own imports fails
    broken = ModuleNotFoundError("No module named 'zope.event'", name="zope.event")
    error = _extras.error(broken, "-P gevent", module="gevent")
    assert str(error) == ("gevent is installed but cannot be imported (No module named "
                          "'zope.event') (needed by -P gevent): pip install --force-reinstall "
                          "'fastq[gevent]'")


def test_an_unknown_module_is_left_as_it_was() -> None:
    exc = ModuleNotFoundError("No module named 'nothing_known'", name="nothing_known")
    assert _extras.error(exc) is exc


def test_every_extra_named_exists_in_pyproject() -> None:
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        declared = tomllib.load(fh)["project"]["optional-dependencies"]
    assert {extra for _dist, extra in _extras.OPTIONAL.values()} <= set(declared)
