"""Finding pools by name, dotted path and entry point; and the Pool interface's defaults."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from fastq.exceptions import ConfigurationError
from fastq.worker import pools
from fastq.worker.pools.base import Pool
from fastq.worker.pools.solo import SoloPool
from fastq.worker.pools.threads import ThreadPool


class CustomPool(SoloPool):
    """A user's pool."""


def test_builtin_names_and_dotted_paths():
    assert pools.pool_class("solo") is SoloPool
    assert pools.pool_class("threads") is ThreadPool
    assert pools.pool_class(f"{__name__}:CustomPool") is CustomPool


def test_a_pool_registered_as_an_entry_point_is_found(monkeypatch):
    entry = EntryPoint(name="custom", value=f"{__name__}:CustomPool", group="fastq.pools")
    monkeypatch.setattr("importlib.metadata.entry_points",
                        lambda group, name: [entry] if (group, name) == ("fastq.pools", "custom")
                        else [])
    assert pools.pool_class("custom") is CustomPool


def test_unknown_pool_names_the_close_one():
    with pytest.raises(ConfigurationError, match="did you mean 'threads'"):
        pools.pool_class("thread")


def test_every_builtin_pool_implements_the_interface():
    # importing is enough: creating a gevent/eventlet pool would monkey-patch this process
    for name in pools.POOLS:
        assert issubclass(pools.pool_class(name), Pool)
