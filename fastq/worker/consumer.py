"""Selects the consumer loop: the Cython one when built, else the pure-Python twin."""

from __future__ import annotations

import os

from ..exceptions import ImproperlyInstalled

IMPLEMENTATION = "py"
REASON = "no compiled consumer for this broker yet"

if os.environ.get("FASTQ_NO_SPEEDUPS") == "1":
    REASON = "FASTQ_NO_SPEEDUPS=1"
    from ._consumer_py import Consumer
else:
    try:
        from .._speedups._consumer import Consumer  # type: ignore[no-redef]

        IMPLEMENTATION, REASON = "c", ""
    except ImportError as exc:
        if os.environ.get("FASTQ_REQUIRE_SPEEDUPS") == "1" and "_consumer" in str(exc.name):
            raise ImproperlyInstalled(
                f"FASTQ_REQUIRE_SPEEDUPS=1 but the compiled consumer is missing: {exc}") from exc
        from ._consumer_py import Consumer

__all__ = ["Consumer", "IMPLEMENTATION", "REASON"]
