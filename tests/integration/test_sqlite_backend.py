"""The backend contract on a SQLite file, and several processes sharing one file."""

from __future__ import annotations

import multiprocessing
import threading
import uuid

import pytest

from fastq.backends import create_backend
from fastq.backends.sqlite import SQLiteBackend
from fastq.testing.contracts import BackendContract

# no compiled twin in the SQLite broker or backend
pytestmark = pytest.mark.twin_neutral


def _store_results(url: str, prefix: str, count: int, batch: int) -> None:
    """Child process: store ``count`` SUCCESS results in batches."""
    backend = SQLiteBackend(url)
    try:
        for start in range(0, count, batch):
            backend.store_many((f"{prefix}-{n}", "SUCCESS", n, None, None)
                               for n in range(start, min(start + batch, count)))
    finally:
        backend.close()


def _store_one(url: str, task_id: str, state: str, result: object) -> None:
    """Child process: store one state for ``task_id``."""
    backend = SQLiteBackend(url)
    try:
        if state == "FAILURE":
            result = ValueError(result)
        backend.store(task_id, state, result)
    finally:
        backend.close()


def _run(targets: list[tuple]) -> None:
    """Run each ``(function, *args)`` in its own spawned process, all at once."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target[0], args=target[1:]) for target in targets]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        if process.is_alive():
            process.kill()
            process.join()
    assert [p.exitcode for p in processes] == [0] * len(processes)


class TestSQLiteBackend(BackendContract):
    @pytest.fixture
    def backend_url(self, fastq_tmp_sqlite_url: str) -> str:
        return fastq_tmp_sqlite_url

    def test_url_scheme_selects_it(self, backend, tmp_path) -> None:
        assert isinstance(backend, SQLiteBackend)
        assert backend.path == str(tmp_path / "fastq.sqlite3")

    def test_relative_path_and_missing_directories(self, tmp_path, monkeypatch) -> None:
        monkeypatch.chdir(tmp_path)
        backend = create_backend("sqlite:///nested/dir/results.sqlite3")
        try:
            backend.store("t", "SUCCESS", 1)
            assert (tmp_path / "nested" / "dir" / "results.sqlite3").exists()
            assert backend.get("t")["result"] == 1
        finally:
            backend.close()

    def test_many_ids_read_in_chunks(self, backend) -> None:
        ids = [str(uuid.uuid4()) for _ in range(1234)]
        backend.store_many((task_id, "SUCCESS", None, None, None) for task_id in ids)
        assert set(backend._get_many(ids)) == set(ids)

    def test_threads_get_their_own_connections(self, backend) -> None:
        errors: list[BaseException] = []

        def write(n: int) -> None:
            try:
                for i in range(50):
                    backend.store(f"thread-{n}-{i}", "SUCCESS", i)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        ids = [f"thread-{n}-{i}" for n in range(4) for i in range(50)]
        assert len(backend._get_many(ids)) == 200
        backend.close()  # the writers have ended: their connections close too
        assert backend._opened == []

    def test_processes_write_concurrently(self, backend_url) -> None:
        _run([(_store_results, backend_url, "a", 300, 7),
              (_store_results, backend_url, "b", 300, 1)])
        backend = self.make_backend()
        ids = [f"{prefix}-{n}" for prefix in "ab" for n in range(300)]
        stored = backend._get_many(ids)
        assert set(stored) == set(ids)
        assert backend.get("b-299")["result"] == 299

    def test_success_from_one_process_survives_failure_from_another(self, backend_url) -> None:
        task_id = str(uuid.uuid4())
        _run([(_store_one, backend_url, task_id, "SUCCESS", "first")])
        _run([(_store_one, backend_url, task_id, "FAILURE", "late")])
        meta = self.make_backend().get(task_id)
        assert meta["status"] == "SUCCESS" and meta["result"] == "first"
