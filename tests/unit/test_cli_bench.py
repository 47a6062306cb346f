"""The error paths of ``fastq bench``: none of these runs a benchmark or needs a server."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from fastq import cli


@pytest.fixture
def no_benchmarks(monkeypatch):
    """Fail the test if a benchmark program's main were reached."""
    def refuse(name):
        raise AssertionError(f"benchmark {name} was about to run")

    monkeypatch.setattr(cli, "_import_benchmark", refuse)


def test_plot_without_matplotlib_says_how_to_install_it(monkeypatch, no_benchmarks, tmp_path):
    # None in sys.modules makes ``import matplotlib`` raise ImportError, installed or not
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = CliRunner().invoke(cli.main, ["bench", "--plot", str(tmp_path / "out.png")])
    assert result.exit_code == 2
    assert "pip install matplotlib" in result.output
    assert not (tmp_path / "out.png").exists()


def test_unknown_benchmark_name_is_a_usage_error(no_benchmarks):
    result = CliRunner().invoke(cli.main, ["bench", "--which", "throughput,nope"])
    assert result.exit_code == 2
    assert "'nope'" in result.output
    assert "throughput, latency, publish" in result.output


def test_outside_a_source_checkout_says_where_to_run_it(monkeypatch):
    real_import = cli.importlib.import_module

    def no_bench(name, *args, **kwargs):
        if name == "bench" or name.startswith("bench."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(cli.importlib, "import_module", no_bench)
    result = CliRunner().invoke(cli.main, ["bench", "--which", "publish"])
    assert result.exit_code == 2
    assert "fastq bench needs a source checkout: run it from the repository root" \
        in result.output


def test_depth_pools_parse_in_order_once_each_and_name_their_curves():
    from bench import depth

    assert depth.parse_pools("prefork2, solo,prefork2") == ["prefork2", "solo"]
    with pytest.raises(ValueError, match="'thread'"):
        depth.parse_pools("solo,thread")
    with pytest.raises(ValueError, match="none given"):
        depth.parse_pools(",")
    assert depth.label("redis", "solo", ["solo"]) == "redis"  # the default output's shape
    assert depth.label("redis", "solo", ["solo", "prefork2"]) == "redis/solo"
    assert depth.label("redis", "prefork2", ["prefork2"]) == "redis/prefork2"


def test_cpu_reads_ticks_past_a_command_name_with_spaces_and_parentheses():
    from bench import cpu

    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
    # utime stime cutime cstime ...
    line = "42 (a) b (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 3 2 20 0 1 0 99\n"
    assert cpu.stat_ticks(line) == 7 + 5 + 3 + 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_cpu_of_a_process_tree_counts_its_children():
    import os
    import signal
    import subprocess
    import time

    from bench import cpu

    # a shell whose child spins: the shell itself waits, so the CPU is the child's
    proc = subprocess.Popen(["sh", "-c", f"{sys.executable} -c 'while 1: pass' & wait"],
                            start_new_session=True)
    try:
        time.sleep(0.2)  # let the child start
        before = cpu.tree_cpu(proc.pid)
        time.sleep(0.5)
        spent = cpu.tree_cpu(proc.pid) - before
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the shell and its child, nothing else
        proc.wait()
    assert spent > 0.05  # half a second of spinning, on however busy a machine
