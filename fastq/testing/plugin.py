"""pytest plugin: fixtures for testing fastq apps."""

from __future__ import annotations

import pathlib

import pytest


@pytest.fixture
def fastq_tmp_sqlite_url(tmp_path: pathlib.Path) -> str:
    """A ``sqlite://`` URL for a fresh file in the test's temporary directory."""
    return f"sqlite:///{tmp_path}/fastq.sqlite3"
