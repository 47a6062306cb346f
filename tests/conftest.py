"""Fixtures the whole suite shares: ``impl``, the compiled or the pure-Python twin."""

from __future__ import annotations

import pytest

from fastq import _speedups

#: the twins: "c" (rabbitmq-c and the compiled consumer), "py" (py-amqp, Python loop)
IMPLEMENTATIONS = ("c", "py")


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request) -> str:
    """Runs a test once per twin; the compiled one is left out where it is switched off
    (``FASTQ_NO_SPEEDUPS=1``) or not built, unless CI requires it."""
    if request.param == "c":
        for name in _speedups.MODULES:
            state = _speedups.status(name)
            if state.available:
                continue
            reason = f"the compiled twin is not in use: {name} is {state.reason}"
            if _speedups.required() and not state.forced_off:
                pytest.fail(reason, pytrace=False)
            pytest.skip(reason)
    return request.param
