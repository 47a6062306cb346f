"""Execution pools behind the Pool interface; ``POOLS`` maps names to implementations."""

from __future__ import annotations

import difflib
import importlib

from ...exceptions import ConfigurationError
from .base import Pool

#: Pool name -> "module:Class".
POOLS: dict[str, str] = {
    "solo": "fastq.worker.pools.solo:SoloPool",
    "prefork": "fastq.worker.pools.prefork:PreforkPool",
}

#: Pools the design names that this version does not ship yet.
PLANNED_POOLS = frozenset({"threads", "gevent", "eventlet", "asyncio"})


def pool_class(name: str) -> type[Pool]:
    """The Pool class called ``name``, or one given as a dotted ``module:Class`` path."""
    target = POOLS.get(name)
    if target is None and ":" in name:
        target = name
    if target is None:
        if name in PLANNED_POOLS:
            raise ConfigurationError(
                f"pool {name!r} is not available in this version of fastq; use -P solo")
        close = difflib.get_close_matches(name, sorted(POOLS) + sorted(PLANNED_POOLS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigurationError(f"unknown pool {name!r}{hint}; available: {', '.join(POOLS)}")
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)
