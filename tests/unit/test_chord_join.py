"""The chord join of the result backends (memory here; Redis in
tests/integration/test_chords.py): counted by member, the body dispatched once."""

from __future__ import annotations

import threading
import uuid

import pytest

from fastq.backends.base import ChordPart, ChordReady
from fastq.backends.memory import MemoryBackend
from fastq.exceptions import ChordError

BODY = {"task": "t.tsum", "args": [], "kwargs": {}, "options": {"task_id": "body-id"},
        "subtask_type": None, "immutable": False}


def join_checks(backend) -> None:
    """What every backend with the ``chords`` capability does; called per backend."""
    group_id = f"g-{uuid.uuid4()}"
    seen: list[ChordReady] = []
    backend.set_chord_size(group_id, 3)

    def part(task_id: str, index: int) -> ChordPart:
        return ChordPart(task_id, group_id, index, {"chord": BODY})

    # out of order, with the member at index 0 delivered twice (a redelivery)
    assert not backend.on_chord_part_return(part("c", 2), "SUCCESS", 30, seen.append)
    assert not backend.on_chord_part_return(part("a", 0), "SUCCESS", 10, seen.append)
    assert not backend.on_chord_part_return(part("a", 0), "SUCCESS", 99, seen.append)
    assert seen == []
    assert backend.on_chord_part_return(part("b", 1), "SUCCESS", 20, seen.append)
    assert len(seen) == 1
    assert seen[0].results == [10, 20, 30] and seen[0].error is None
    assert seen[0].body == BODY and seen[0].group_id == group_id
    # done: a late duplicate of any member neither recreates the chord nor dispatches
    assert not backend.on_chord_part_return(part("b", 1), "SUCCESS", 20, seen.append)
    assert len(seen) == 1

    # a failed member: the body is not sent, the ready chord carries a ChordError
    failing = f"g-{uuid.uuid4()}"
    backend.set_chord_size(failing, 2)
    backend.on_chord_part_return(ChordPart("x", failing, 0, {"chord": BODY}), "FAILURE",
                                 ValueError("boom"), seen.append)
    assert backend.on_chord_part_return(ChordPart("y", failing, 1, {"chord": BODY}),
                                        "SUCCESS", 1, seen.append)
    assert seen[1].results is None and isinstance(seen[1].error, ChordError)
    assert str(seen[1].error) == "Dependency x raised ValueError('boom')"

    # a dispatch that raises still marks the chord done (Celery's rule: never twice)
    raising = f"g-{uuid.uuid4()}"
    backend.set_chord_size(raising, 1)

    def explode(ready: ChordReady) -> None:
        raise RuntimeError("broker down")
    with pytest.raises(RuntimeError):
        backend.on_chord_part_return(ChordPart("z", raising, 0, {"chord": BODY}),
                                     "SUCCESS", 1, explode)
    assert not backend.on_chord_part_return(ChordPart("z", raising, 0, {"chord": BODY}),
                                            "SUCCESS", 1, seen.append)


def concurrent_checks(backend, members: int = 40, threads: int = 8) -> None:
    """Members finishing at the same moment (each twice) dispatch the body once."""
    group_id = f"g-{uuid.uuid4()}"
    backend.set_chord_size(group_id, members)
    seen: list[ChordReady] = []
    lock = threading.Lock()

    def dispatch(ready: ChordReady) -> None:
        with lock:
            seen.append(ready)

    def run(offset: int) -> None:
        for index in range(offset, members, threads):
            for _ in range(2):
                backend.on_chord_part_return(
                    ChordPart(f"m{index}", group_id, index, {"chord": BODY}), "SUCCESS",
                    index, dispatch)
    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(seen) == 1 and seen[0].results == list(range(members))


def test_memory_backend_joins_by_member() -> None:
    join_checks(MemoryBackend(f"memory://{uuid.uuid4()}"))


def test_memory_backend_dispatches_once_under_concurrency() -> None:
    concurrent_checks(MemoryBackend(f"memory://{uuid.uuid4()}"))


def test_claimer_redelivered_takes_its_claim_back() -> None:
    # the worker that claimed died before sending: its member, redelivered, claims again
    backend = MemoryBackend(f"memory://{uuid.uuid4()}")
    group_id = "g-claim"
    backend.set_chord_size(group_id, 1)
    assert backend._chord_add(group_id, "a", "0", b"[1,\"a\",\"SUCCESS\",1]", "a", None)
    assert not backend._chord_add(group_id, "a", "0", b"[1,\"a\",\"SUCCESS\",1]", "other", None)
    assert backend._chord_add(group_id, "a", "0", b"[1,\"a\",\"SUCCESS\",1]", "a", None)


def test_malformed_chord_field_is_a_clear_error() -> None:
    backend = MemoryBackend(f"memory://{uuid.uuid4()}")
    with pytest.raises(ValueError, match="malformed chord body"):
        backend.on_chord_part_return(ChordPart("a", "g", 0, {"chord": "t.tsum"}), "SUCCESS",
                                     1, lambda ready: None)
    with pytest.raises(ValueError, match="no group id"):
        backend.on_chord_part_return(ChordPart("a", None, 0, {"chord": BODY}), "SUCCESS", 1,
                                     lambda ready: None)


def test_a_chord_without_a_size_never_dispatches() -> None:
    backend = MemoryBackend(f"memory://{uuid.uuid4()}")
    assert not backend.on_chord_part_return(ChordPart("a", "g-nosize", 0, {"chord": BODY}),
                                            "SUCCESS", 1, lambda ready: None)


def test_sqlite_backend_joins_by_member(tmp_path) -> None:
    from fastq.backends.sqlite import SQLiteBackend

    backend = SQLiteBackend(f"sqlite:///{tmp_path / 'results.db'}")
    try:
        join_checks(backend)
        concurrent_checks(backend, members=20, threads=4)
        assert backend.cleanup() == 0  # nothing expired yet; the chord tables are swept too
    finally:
        backend.close()


def test_a_saved_header_with_groups_gives_the_body_nested_lists() -> None:
    # Celery's apply_chord saves the header under the chord's id when a member is a
    # group; the body then gets a list per group, read from the stored results
    backend = MemoryBackend(f"memory://{uuid.uuid4()}")
    group_id = f"g-{uuid.uuid4()}"
    backend.save_group(group_id, [[group_id, None], [
        [["inner", None], [[["a", None], None], [["b", None], None]]],
        [["c", None], None]]])
    for task_id, value in (("a", 1), ("b", 2), ("c", 3)):
        backend.store(task_id, "SUCCESS", value)
    backend.set_chord_size(group_id, 3)
    seen: list[ChordReady] = []
    for index, task_id in enumerate("abc"):
        backend.on_chord_part_return(ChordPart(task_id, group_id, index, {"chord": BODY}),
                                     "SUCCESS", None, seen.append)
    assert [ready.results for ready in seen] == [[[1, 2], 3]]
    # a failed member among them fails the chord as usual
    failing = f"g-{uuid.uuid4()}"
    backend.save_group(failing, [[failing, None], [
        [["inner2", None], [[["x", None], None]]]]])
    backend.store("x", "FAILURE", ValueError("bad"))
    backend.set_chord_size(failing, 1)
    backend.on_chord_part_return(ChordPart("x", failing, 0, {"chord": BODY}), "FAILURE",
                                 ValueError("bad"), seen.append)
    assert str(seen[-1].error) == "Dependency x raised ValueError('bad')"
