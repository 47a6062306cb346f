"""The messages fastq's canvas sends are the ones Celery 5.7 sends for the same workflow."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastq import App, chain, chord, group
from fastq.result import AsyncResult

pytest.importorskip("celery")

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
#: options only Celery's producer writes (its reply queue, its own bookkeeping)
_CELERY_ONLY = {"reply_to", "add_to_parent"}


def _normal(value: Any, ids: dict[str, str], options: bool = False) -> Any:
    """Ids renamed in the order they are met (keys walked sorted); options that Celery
    writes as null, or only for its producer, left out."""
    if isinstance(value, dict):
        return {key: _normal(value[key], ids, key == "options") for key in sorted(value)
                if not (options and (value[key] is None or key in _CELERY_ONLY))}
    if isinstance(value, (list, tuple)):
        return [_normal(item, ids) for item in value]
    if isinstance(value, str) and _UUID.match(value):
        return ids.setdefault(value, f"id{len(ids)}")
    return value


def _trace(sent: list[tuple[str, Any]]) -> list[Any]:
    ids: dict[str, str] = {}
    return [_normal(list(item), ids) for item in sent]


def add(x: int, y: int) -> int:
    return x + y


def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@pytest.fixture
def celery_side() -> Iterator[tuple[Any, list[tuple[str, Any]]]]:
    """A Celery app that records what it would publish, and the chord sizes it sets."""
    from celery import Celery

    app = Celery("w", broker="memory://", backend="cache+memory://")
    sent: list[tuple[str, Any]] = []

    def record(producer: Any, name: str, message: Any, **options: Any) -> None:
        headers = message.headers
        args, kwargs, embed = json.loads(json.dumps(message.body))
        queue = options.get("queue")
        sent.append(("task", [name, headers["group"], headers["group_index"], args, kwargs,
                              embed, getattr(queue, "name", queue),
                              options.get("priority") or 0]))

    app.amqp.send_task_message = record
    app.backend.set_chord_size = lambda gid, size: sent.append(("size", [gid, size]))
    app.task(name="w.add")(add)
    app.task(name="w.tsum")(tsum)
    yield app, sent
    app.close()


@pytest.fixture
def fastq_side() -> Iterator[tuple[App, list[tuple[str, Any]]]]:
    """A fastq app that records what it would publish, and the chord sizes it sets."""
    app = App("w", broker=f"memory://{uuid.uuid4()}", result_backend="memory://")
    sent: list[tuple[str, Any]] = []

    def record(messages: Any, **options: Any) -> None:
        for message in messages:
            headers = message.headers
            args, kwargs, embed = json.loads(message.body)
            sent.append(("task", [headers["task"], headers["group"], headers["group_index"],
                                  args, kwargs, embed, message.queue, message.priority]))

    app.publish_many = record  # type: ignore[method-assign]
    app.backend.set_chord_size = (  # type: ignore[attr-defined]
        lambda gid, size: sent.append(("size", [gid, size])))
    app.task(name="w.add")(add)
    app.task(name="w.tsum")(tsum)
    yield app, sent
    app.close()


def _sizes_last(sent: list[tuple[str, Any]]) -> list[Any]:
    """The messages, then the chord sizes set, sorted: Celery sets a chord's size just
    before its last header task, fastq before the first; when is not part of the wire."""
    trace = _trace([item for item in sent if item[0] == "task"]
                   + [item for item in sent if item[0] == "size"])
    return [item for item in trace if item[0] == "task"] + sorted(
        (item for item in trace if item[0] == "size"), key=repr)


def _same(celery_side: Any, fastq_side: Any,
          build: Callable[[Any, Any, Any, Any, Any], Any]) -> tuple[Any, Any]:
    import celery

    celery_app, celery_sent = celery_side
    fastq_app, fastq_sent = fastq_side
    theirs = build(celery_app.tasks["w.add"], celery_app.tasks["w.tsum"], celery.chain,
                   celery.group, celery.chord)
    ours = build(fastq_app.tasks["w.add"], fastq_app.tasks["w.tsum"], chain, group, chord)
    assert _sizes_last(fastq_sent) == _sizes_last(celery_sent)
    return theirs, ours


CANVASES: dict[str, Callable[[Any, Any, Any, Any, Any], Any]] = {
    "chord(header)(body)": lambda add, tsum, chain, group, chord:
        chord([add.s(1, 2), add.s(3, 4)])(tsum.s()),
    "chord.apply_async": lambda add, tsum, chain, group, chord:
        chord([add.s(1, 2), add.s(3, 4)], tsum.s()).apply_async(),
    "group | sig": lambda add, tsum, chain, group, chord:
        (group(add.s(1, 2), add.s(3, 4)) | tsum.s()).delay(),
    "immutable body": lambda add, tsum, chain, group, chord:
        chord([add.s(1, 2)], add.si(5, 5)).apply_async(),
    "partial args": lambda add, tsum, chain, group, chord:
        chord([add.s(1), add.s(2)], tsum.s()).apply_async((10,)),
    "empty header": lambda add, tsum, chain, group, chord:
        chord([], tsum.s()).apply_async(),
    "link_error": lambda add, tsum, chain, group, chord:
        chord([add.s(1, 1)], tsum.s()).apply_async(link_error=add.si(0, 0)),
    "chord of chains": lambda add, tsum, chain, group, chord:
        chord([add.s(1, 1) | add.s(1), add.s(2, 2)], tsum.s()).apply_async(),
    "nested chord": lambda add, tsum, chain, group, chord:
        chord([chord([add.s(1, 1), add.s(2, 2)], tsum.s()), add.s(3, 3)],
              tsum.s()).apply_async(),
    "chain, group, task": lambda add, tsum, chain, group, chord:
        chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s()).apply_async(),
    "chain ending in a group": lambda add, tsum, chain, group, chord:
        chain(add.s(1, 1), group(add.s(1), add.s(2))).apply_async(),
    "group, task, task": lambda add, tsum, chain, group, chord:
        chain(group(add.s(1, 1), add.s(2, 2)), tsum.s(), add.s(5)).apply_async(),
    "chain": lambda add, tsum, chain, group, chord:
        (add.s(1, 2) | add.s(3) | add.s(4)).apply_async(),
    "chain with link and link_error": lambda add, tsum, chain, group, chord:
        (add.s(1, 2) | add.s(3)).apply_async(link=tsum.si([1]), link_error=add.si(0, 0)),
    "chord with options": lambda add, tsum, chain, group, chord:
        chord([add.s(1, 2)], tsum.s()).apply_async(queue="qx", priority=3),
    "chord with a countdown": lambda add, tsum, chain, group, chord:
        chord([add.s(1, 2)], tsum.s()).apply_async(countdown=30),
    "group of a chain and a chord": lambda add, tsum, chain, group, chord:
        group(add.s(1, 1) | add.s(2), chord([add.s(3, 3)], tsum.s()), add.s(4, 4)).delay(),
    "group with options": lambda add, tsum, chain, group, chord:
        group(add.s(1, 1), add.s(2, 2)).apply_async(queue="qx", countdown=None),
    "chunks": lambda add, tsum, chain, group, chord:
        add.chunks(zip(range(5), range(5)), 2).apply_async(),
    "map": lambda add, tsum, chain, group, chord: tsum.map([[1, 2], [3]]).apply_async(),
    "starmap": lambda add, tsum, chain, group, chord:
        add.starmap([(1, 2), (3, 4)]).apply_async(),
}


@pytest.mark.parametrize("name", list(CANVASES))
def test_messages_match_celerys(celery_side, fastq_side, name: str) -> None:
    _same(celery_side, fastq_side, CANVASES[name])


def test_result_parents_match_celerys(celery_side, fastq_side) -> None:
    def shape(result: Any) -> list[str]:
        names = []
        while result is not None:
            names.append(type(result).__name__)
            # fastq's own pointer, not the stored parent_id a read would fetch
            result = result._parent if isinstance(result, AsyncResult) else result.parent
        return names

    for name in ("chord(header)(body)", "chain, group, task", "chain", "nested chord"):
        theirs, ours = _same(celery_side, fastq_side, CANVASES[name])
        assert shape(ours) == shape(theirs), name


def test_a_chord_on_a_backend_that_cannot_join_sends_chord_unlock(celery_side, fastq_side,
                                                                   tmp_path) -> None:
    """Celery's database backend and fastq's without the chords capability: the header
    is polled by ``celery.chord_unlock``, sent before it."""
    from celery.backends.database import DatabaseBackend

    celery_app, _ = celery_side
    celery_app.conf.result_backend = f"db+sqlite:///{tmp_path / 'results.db'}"
    celery_app.__dict__.pop("backend", None)
    celery_app._local.__dict__.pop("backend", None)
    assert isinstance(celery_app.backend, DatabaseBackend)

    def cannot(gid: str, size: int) -> None:
        raise NotImplementedError("no chords")

    fastq_side[0].backend.set_chord_size = cannot
    _same(celery_side, fastq_side, CANVASES["chord(header)(body)"])
    assert fastq_side[1][0][1][0] == "celery.chord_unlock"
