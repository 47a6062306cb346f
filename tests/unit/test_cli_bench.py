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
