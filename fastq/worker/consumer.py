"""Selects the consumer loop: the Cython one when built and allowed, else the pure-Python twin."""

from __future__ import annotations

from .. import _speedups

#: why the compiled loop is or is not used (see fastq._speedups)
STATUS = _speedups.status("_consumer")
_compiled = _speedups.load("_consumer")  # raises under FASTQ_REQUIRE_SPEEDUPS=1 when missing

if _compiled is not None:
    Consumer = _compiled.Consumer
else:
    from ._consumer_py import Consumer  # type: ignore[assignment]

IMPLEMENTATION = "c" if _compiled is not None else "py"
REASON = STATUS.reason

__all__ = ["Consumer", "IMPLEMENTATION", "REASON", "STATUS"]
