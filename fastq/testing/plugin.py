"""pytest plugin: fixtures for testing fastq apps (loaded through the ``pytest11`` entry point).

``fastq_app`` is an App on a private in-memory broker and result store, made from
``fastq_config`` (settings), ``fastq_includes`` (task modules to import) and
``fastq_parameters`` (``App()`` arguments); ``fastq_worker`` runs a real worker for it in
a thread (pool ``fastq_worker_pool``, options ``fastq_worker_parameters``). Override
any of those fixtures in a conftest.py or test module to change them (they are
session-scoped so that ``fastq_session_app`` and ``fastq_session_worker``, one App and
worker for the whole run, may use them; a function-scoped override suits the others).
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

import pytest


@pytest.fixture
def fastq_tmp_sqlite_url(tmp_path: pathlib.Path) -> str:
    """A ``sqlite://`` URL for a fresh file in the test's temporary directory."""
    return f"sqlite:///{tmp_path}/fastq.sqlite3"


@pytest.fixture(scope="session")
def fastq_config() -> dict[str, Any]:
    """Settings of ``fastq_app`` (Celery's names); a private ``memory://`` broker and
    result store unless these name others."""
    return {}


@pytest.fixture(scope="session")
def fastq_includes() -> Sequence[str]:
    """Modules ``fastq_app`` imports (and its worker's ``include``), so their tasks register."""
    return ()


@pytest.fixture(scope="session")
def fastq_parameters() -> dict[str, Any]:
    """Keyword arguments of ``App()`` for ``fastq_app`` (``main``, settings)."""
    return {}


@pytest.fixture(scope="session")
def fastq_worker_pool() -> str:
    """The pool of ``fastq_worker``: ``solo``, ``threads`` or ``asyncio``."""
    return "solo"


@pytest.fixture(scope="session")
def fastq_worker_parameters() -> dict[str, Any]:
    """Options of ``fastq_worker``: ``concurrency``, ``queues``, ``hostname``,
    ``prefetch_multiplier``."""
    return {}


@pytest.fixture
def fastq_app(fastq_config: dict[str, Any], fastq_includes: Sequence[str],
              fastq_parameters: dict[str, Any]) -> Iterator[Any]:
    """An App for this test alone, the current App while it runs; closed afterwards."""
    from .worker import isolated_app

    with isolated_app(fastq_config, fastq_includes, **fastq_parameters) as app:
        yield app


@pytest.fixture
def fastq_worker(fastq_app: Any, fastq_worker_pool: str,
                 fastq_worker_parameters: dict[str, Any]) -> Iterator[Any]:
    """A worker consuming ``fastq_app``'s queues in a thread of the test process, started
    before the test and stopped after it (``fastq.testing.worker.ThreadWorker``)."""
    from .worker import start_worker

    with start_worker(fastq_app, pool=fastq_worker_pool, **fastq_worker_parameters) as worker:
        yield worker


@pytest.fixture(scope="session")
def fastq_session_app(fastq_config: dict[str, Any], fastq_includes: Sequence[str],
                      fastq_parameters: dict[str, Any]) -> Iterator[Any]:
    """``fastq_app`` made once for the whole test run."""
    from .worker import isolated_app

    with isolated_app(fastq_config, fastq_includes, **fastq_parameters) as app:
        yield app


@pytest.fixture(scope="session")
def fastq_session_worker(fastq_session_app: Any, fastq_worker_pool: str,
                         fastq_worker_parameters: dict[str, Any]) -> Iterator[Any]:
    """A worker for ``fastq_session_app``, running for the whole test run."""
    from .worker import start_worker

    with start_worker(fastq_session_app, pool=fastq_worker_pool,
                      **fastq_worker_parameters) as worker:
        yield worker
