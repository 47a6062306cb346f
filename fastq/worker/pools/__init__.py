"""Execution pools behind the Pool interface; ``POOLS`` maps names to implementations."""

from __future__ import annotations

import difflib
import importlib

from ...exceptions import ConfigurationError
from .base import Pool

#: Pool name -> "module:Class".
POOLS: dict[str, str] = {
    "solo": "fastq.worker.pools.solo:SoloPool",
    "threads": "fastq.worker.pools.threads:ThreadPool",
    "gevent": "fastq.worker.pools.gevent:GeventPool",
    "eventlet": "fastq.worker.pools.eventlet:EventletPool",
    "asyncio": "fastq.worker.pools.asyncio:AsyncioPool",
    "prefork": "fastq.worker.pools.prefork:PreforkPool",
}


def pool_class(name: str) -> type[Pool]:
    """The Pool class called ``name``: a built-in, one a package registers under the
    ``fastq.pools`` entry point group, or a dotted ``module:Class`` path."""
    target = POOLS.get(name)
    if target is None and ":" in name:
        target = name
    if target is None:
        plugin = _entry_point(name)
        if plugin is not None:
            return plugin.load()
    if target is None:
        close = difflib.get_close_matches(name, sorted(POOLS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigurationError(f"unknown pool {name!r}{hint}; available: {', '.join(POOLS)}")
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def _entry_point(name: str):
    from importlib.metadata import entry_points

    for entry in entry_points(group="fastq.pools", name=name):
        return entry
    return None
