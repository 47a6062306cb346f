"""Fixtures the whole suite shares (``impl``, the compiled or the pure-Python twin), and
how pytest-xdist may spread the suite over processes (CI's ``-n 2 --dist loadfile``)."""

from __future__ import annotations

import pytest

from fastq import _speedups

#: Test files that share something on a real server only one of them may use at a time:
#: each group runs in one xdist process, one file after the other. Every other file is a
#: group of its own: its tests run in order in one process, beside other files.
#: - counted from outside: the Redis connections named ``fastq-result-waiter`` on the shared
#:   server (``test_async_results`` counts them; the others' waiters would be counted too)
SHARED = {
    "tests/integration/test_async_results.py": "redis-result-waiters",
    "tests/integration/test_async_uvloop.py": "redis-result-waiters",
    "tests/integration/test_fastapi_example.py": "redis-result-waiters",
    "tests/integration/test_tornado_example.py": "redis-result-waiters",
}


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, when it is installed
def pytest_xdist_make_scheduler(config, log):
    """With ``--dist loadfile``: each file, or each group of files in ``SHARED``, runs in
    one process. (xdist's own ``loadgroup`` marks do nothing under pytest 9: it renames
    ``item._nodeid``, which pytest 9 no longer reads.)

    Tests marked ``serial`` act on a whole server (``rabbitmqctl close_all_connections``):
    CI leaves them out of the parallel run (``-m "not serial"``) and runs them after it.
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED.get(path, path)

    return SharedFileScheduling(config, log)


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
