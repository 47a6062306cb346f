"""The canvas API: signatures as Celery's dicts, rebuilding from them, composing with
``|``, freezing, cloning, and ``Task.replace`` on an in-memory worker."""

from __future__ import annotations

import json
import pickle
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import fastq
from fastq import App, GroupResult, Signature
from fastq.canvas import chain, chord, chunks, group, maybe_signature, signature, xmap, xstarmap
from fastq.result import AsyncResult
from fastq.worker import _consumer_py
from fastq.worker.executor import Executor
from fastq.worker.pools.solo import SoloPool


@pytest.fixture
def app() -> Iterator[App]:
    app = App("api", broker=f"memory://{uuid.uuid4()}", worker_ack_interval=0.01)
    app.task(name="api.add")(_add)
    app.task(name="api.tsum")(_tsum)
    yield app
    app.close()


def _add(x: int, y: int) -> int:
    return x + y


def _tsum(numbers: list[int]) -> int:
    return sum(numbers)


def _sigs(app: App) -> tuple[Any, Any]:
    return app.tasks["api.add"], app.tasks["api.tsum"]


def test_a_signature_is_celerys_dict(app) -> None:
    add, _ = _sigs(app)
    sig = add.s(1, y=2).set(queue="q1")
    assert isinstance(sig, dict)
    assert sig["task"] == "api.add" and sig["args"] == (1,) and sig["kwargs"] == {"y": 2}
    assert sig.options == sig["options"] == {"queue": "q1"}
    assert json.loads(json.dumps(sig)) == {
        "task": "api.add", "args": [1], "kwargs": {"y": 2}, "options": {"queue": "q1"},
        "subtask_type": None, "immutable": False}
    assert Signature(json.loads(json.dumps(sig))) == sig
    assert pickle.loads(pickle.dumps(sig)) == sig


@pytest.mark.parametrize("build", [
    lambda add, tsum: add.s(1) | add.s(2),
    lambda add, tsum: group(add.s(1, 1), add.s(2, 2)),
    lambda add, tsum: chord([add.s(1, 1), add.s(2) | add.s(3)], tsum.s()),
    lambda add, tsum: add.chunks([(1, 2), (3, 4)], 1),
    lambda add, tsum: add.map([1, 2]),
    lambda add, tsum: add.starmap([(1, 2)]),
    lambda add, tsum: chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s()),
], ids=["chain", "group", "chord", "chunks", "xmap", "xstarmap", "chain-to-chord"])
def test_signature_rebuilds_each_kind_from_its_json(app, build) -> None:
    sig = build(*_sigs(app))
    data = json.loads(json.dumps(sig))
    rebuilt = signature(data, app=app)
    # Celery writes chunks and maps with subtask_type null: a plain signature of the
    # built-in task; with their subtask_type named, the class comes back
    assert type(rebuilt) is (type(sig) if sig.subtask_type else Signature)
    if isinstance(sig, (chunks, xmap, xstarmap)):
        named = signature({**data, "subtask_type": type(sig).__name__}, app=app)
        assert type(named) is type(sig) and named.to_dict()["kwargs"] == data["kwargs"]
    assert json.loads(json.dumps(rebuilt)) == json.loads(json.dumps(sig))
    assert rebuilt.to_dict() == json.loads(json.dumps(sig))


def test_rebuilt_members_are_signatures(app) -> None:
    add, tsum = _sigs(app)
    data = json.loads(json.dumps(chord([add.s(1, 1) | add.s(2)], tsum.s().on_error(add.si(0, 0)))))
    rebuilt = maybe_signature(data, app=app)
    assert isinstance(rebuilt, chord) and isinstance(rebuilt.tasks, group)
    assert isinstance(rebuilt.tasks.tasks[0], chain)
    assert isinstance(rebuilt.body.options["link_error"][0], Signature)
    assert maybe_signature(None) is None
    assert maybe_signature(rebuilt) is rebuilt and maybe_signature(rebuilt, clone=True) == rebuilt
    assert maybe_signature(rebuilt, clone=True) is not rebuilt


@pytest.mark.parametrize("bad, message", [
    ({"task": "x", "subtask_type": "sandwich"}, "unknown signature subtask_type 'sandwich'"),
    ({"args": [1]}, "no task name"),
    ({"task": "x", "args": "oops"}, "args is a str"),
    ({"task": "celery.group", "subtask_type": "group", "kwargs": {}}, "kwargs.tasks"),
    ({"task": "celery.chord", "subtask_type": "chord", "kwargs": {}}, "no kwargs.header"),
    ({"task": "celery.chunks", "subtask_type": "chunks", "kwargs": {"it": []}}, "chunks"),
    ([1, 2], "expected a dict"),
])
def test_a_malformed_signature_dict_is_a_clear_error(bad, message) -> None:
    with pytest.raises(ValueError, match=message):
        signature(bad) if isinstance(bad, dict) else Signature.from_dict(bad)


def test_or_between_all_kinds(app) -> None:
    add, tsum = _sigs(app)
    assert isinstance(add.s(1) | add.s(2), chain)
    assert len((add.s(1) | add.s(2)) | add.s(3)) and len(((add.s(1) | add.s(2)) | add.s(3)).tasks) == 3
    upgraded = group(add.s(1), add.s(2)) | tsum.s()
    assert isinstance(upgraded, chord) and upgraded.body["task"] == "api.tsum"
    longer = upgraded | add.s(10)
    assert isinstance(longer, chord) and isinstance(longer.body, chain)
    assert isinstance(upgraded.body, Signature) and not isinstance(upgraded.body, chain)
    then_group = add.s(1) | group(add.s(1), add.s(2))
    assert isinstance(then_group, chain) and isinstance(then_group.tasks[-1], group)
    assert isinstance(chain(add.s(1), group(add.s(2))) | tsum.s(), chain)
    sig = add.s(1)
    sig |= add.s(2)
    assert isinstance(sig, chain)


def test_freeze_gives_ids_and_results(app) -> None:
    add, tsum = _sigs(app)
    sig = add.s(1, 2)
    result = sig.freeze()
    assert isinstance(result, AsyncResult) and sig.id == result.id == sig.options["task_id"]
    assert sig.freeze().id == result.id  # frozen once
    grouped = group(add.s(1, 1), add.s(2, 2))
    group_result = grouped.freeze()
    assert isinstance(group_result, GroupResult)
    assert [r.id for r in group_result] == [m.id for m in grouped.tasks]
    body_result = chord([add.s(1, 1)], tsum.s()).freeze()
    assert isinstance(body_result._parent, GroupResult)  # type: ignore[union-attr]
    chained = (add.s(1, 1) | add.s(2) | add.s(3))
    last = chained.freeze("the-last-id")
    assert last.id == "the-last-id" and last._parent._parent is not None  # type: ignore[union-attr]


def test_clone_copies_members_and_set_immutable(app) -> None:
    add, tsum = _sigs(app)
    original = chord([add.s(1, 1)], tsum.s())
    copy = original.clone()
    copy.tasks.tasks[0].set(queue="elsewhere")
    copy.body.set_immutable(True)
    assert "queue" not in original.tasks.tasks[0].options and not original.body.immutable
    partial = add.s(2).clone((1,), queue="q")
    assert partial.args == (1, 2) and partial.options == {"queue": "q"}
    assert add.si(2).clone((1,)).args == (2,)


def test_public_names_as_celerys() -> None:
    import celery.canvas

    for name in ("Signature", "chain", "chord", "chunks", "group", "maybe_signature",
                 "signature", "xmap", "xstarmap"):
        assert hasattr(celery.canvas, name) and getattr(fastq, name) is getattr(
            fastq.canvas, name)
    assert {chunks, xmap, xstarmap} <= {getattr(fastq, n) for n in fastq.__all__}


def test_eager_chord_and_chunks(app) -> None:
    app.conf.task_always_eager = True
    add, tsum = _sigs(app)
    assert chord([add.s(i, i) for i in range(4)])(tsum.s()).get() == 12
    assert chord([], tsum.s()).delay().get() == 0
    assert chain(add.s(1, 1), group(add.s(1), add.s(2)), tsum.s()).delay().get() == 7
    assert chain(add.s(1, 1), group(add.s(1), add.s(2))).delay().get() == [3, 4]
    nested = chord([add.s(1, 1) | add.s(1), chord([add.s(2, 2), add.s(3, 3)], tsum.s())],
                   tsum.s())
    assert nested.delay().get() == 13
    assert add.chunks(zip(range(4), range(4)), 2).delay().join() == [[0, 2], [4, 6]]
    assert (add.s(1, 1) | add.s(2))().get() == 4 and chain(add.s(1))(5).get() == 6
    assert group(add.s(1), add.s(2))(10).join() == [11, 12]


# -- Task.replace on an in-memory worker ---------------------------------------------

@pytest.fixture
def worker(app) -> Iterator[None]:
    yield from _worker(app)


def _worker(app: App) -> Iterator[None]:
    """A solo worker on ``app``'s queue ``celery``, in a thread."""
    executor = Executor(app, "api@test")
    pool = SoloPool(executor, 1)
    pool.start()
    consumer = _consumer_py.Consumer(app, app.broker, executor, pool, ["celery"], 4,
                                     ack_batch_size=64, ack_interval=0.01,
                                     hostname="api@test")
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    yield
    consumer.stop()
    thread.join(10)
    pool.stop()


def test_replace_takes_over_the_id_and_the_rest_of_the_chain(app, worker) -> None:
    add, tsum = _sigs(app)

    @app.task(name="api.swap", bind=True)
    def swap(self, x):
        return self.replace(add.s(x, 100))

    result = swap.delay(1)
    assert result.get(timeout=5) == 101  # stored under the replaced task's id
    chained = (swap.s(1) | add.s(1000)).delay()
    assert chained.get(timeout=5) == 1101 and chained.parent.get(timeout=5) == 101
    callback_id = str(uuid.uuid4())
    linked = swap.apply_async((2,), link=add.s(1).set(task_id=callback_id))
    assert linked.get(timeout=5) == 102  # the callback moved to the replacement
    assert app.AsyncResult(callback_id).get(timeout=5) == 103
    # a chord member replaced: the replacement counts for the chord under the same id
    assert chord([swap.s(1), add.s(1, 1)], tsum.s()).delay().get(timeout=5) == 103


def test_replace_counts_its_nesting_in_celerys_header(app, worker) -> None:
    @app.task(name="api.depth", bind=True)
    def depth(self, n):
        if n:
            return self.replace(depth.s(n - 1))
        return self.request.replaced_task_nesting

    assert depth.delay(0).get(timeout=5) == 0
    assert depth.delay(3).get(timeout=5) == 3  # three replacements deep
    message = app.build_message("api.depth", (0,), replaced_task_nesting=2)
    assert message.headers["replaced_task_nesting"] == 2


def test_replace_with_a_group_or_a_chain_when_the_builtins_exist(app, worker) -> None:
    if "celery.accumulate" not in app.tasks:
        pytest.skip("the worker side's built-in tasks are not registered yet")
    add, tsum = _sigs(app)

    @app.task(name="api.fan", bind=True)
    def fan(self, n):
        return self.replace(group(add.s(i, i) for i in range(n)))

    @app.task(name="api.steps", bind=True)
    def steps(self, x):
        return self.replace(add.s(x, 1) | add.s(10))

    assert fan.delay(3).get(timeout=5) == [0, 2, 4]
    assert steps.delay(1).get(timeout=5) == 12
    assert (steps.s(1) | add.s(1000)).delay().get(timeout=5) == 1012
    assert (fan.s(2) | tsum.s()).delay().get(timeout=5) == 2


def test_replace_in_eager_mode_returns_the_value(app) -> None:
    add, _ = _sigs(app)

    @app.task(name="api.swap_eager", bind=True)
    def swap(self, x):
        return self.replace(add.s(x, 5))

    assert swap.apply((1,)).get() == 6
    with pytest.raises(ValueError, match="called directly"):
        swap(1)


# -- fastq's chords on a fastq worker (the join is the worker side's) -----------------

def test_chords_run_on_a_fastq_worker(app, worker) -> None:
    if "celery.starmap" not in app.tasks:
        pytest.skip("the worker side's built-in tasks are not registered yet")
    add, tsum = _sigs(app)
    result = chord(add.s(i, i) for i in range(5))(tsum.s())
    assert result.get(timeout=5) == 20 and result.parent.join(timeout=5) == [0, 2, 4, 6, 8]
    assert chord([], tsum.s()).delay().get(timeout=5) == 0
    nested = chord([add.s(1, 1) | add.s(1), chord([add.s(2, 2), add.s(3, 3)], tsum.s())],
                   tsum.s())
    assert nested.apply_async().get(timeout=5) == 13
    then = chain(group(add.s(1, 1), add.s(2, 2)), tsum.s(), add.s(5)).apply_async()
    assert then.get(timeout=5) == 11 and then.parent.get(timeout=5) == 6
    assert add.chunks(zip(range(4), range(4)), 2).apply_async().join(timeout=5) == [[0, 2],
                                                                                  [4, 6]]
    assert add.starmap([(1, 2), (3, 4)]).delay().get(timeout=5) == [3, 7]
    assert tsum.map([[1, 2], [3]]).delay().get(timeout=5) == [3, 3]


def test_a_backend_that_cannot_join_polls_with_chord_unlock() -> None:
    app = App("unlock", broker=f"memory://{uuid.uuid4()}", worker_ack_interval=0.01)
    # a store without the join (rpc://, or any without the capability)
    app.backend.capabilities = frozenset({"groups"})  # type: ignore[misc]
    add = app.task(name="api.add")(_add)
    tsum = app.task(name="api.tsum")(_tsum)
    running = _worker(app)
    next(running)
    try:
        assert chord(add.s(i, i) for i in range(3))(tsum.s()).get(timeout=10) == 6
    finally:
        next(running, None)
        app.close()


def test_signature_rebuilds_what_celery_wrote(app) -> None:
    import celery

    celery_app = celery.Celery("written", broker="memory://", backend="cache+memory://")
    try:
        add = celery_app.task(name="api.add")(_add)
        tsum = celery_app.task(name="api.tsum")(_tsum)
        written = json.loads(json.dumps(celery.chord(
            [add.s(1, 1) | add.s(2), add.s(3, 3)], tsum.s().set(queue="q"))))
    finally:
        celery_app.close()
    rebuilt = signature(written, app=app)
    assert isinstance(rebuilt, chord) and isinstance(rebuilt.tasks.tasks[0], chain)
    assert rebuilt.body.options == {"queue": "q"} and len(rebuilt.tasks) == 2
    assert rebuilt.tasks.tasks[1].args == (3, 3)


def test_freeze_then_send_keeps_the_ids(app) -> None:
    add, tsum = _sigs(app)
    sent: list[Any] = []
    app.publish_many = lambda messages, **options: sent.extend(messages)  # type: ignore[method-assign]
    for canvas in (add.s(1, 1), add.s(1, 1) | add.s(2), group(add.s(1, 1), add.s(2, 2)),
                   chord([add.s(1, 1), add.s(2, 2)], tsum.s())):
        frozen = canvas.freeze()
        sent.clear()
        result = canvas.apply_async()
        assert result.id == frozen.id
        ids = {m.headers["id"] for m in sent}
        expected = [frozen] if isinstance(frozen, AsyncResult) else list(frozen)
        if isinstance(canvas, chord):
            expected = list(canvas.tasks.freeze())
        elif isinstance(canvas, chain):  # the first step is sent, the last embedded
            expected = [frozen._parent]  # type: ignore[union-attr]
        assert {r.id for r in expected} <= ids


def test_apply_runs_every_workflow_here_and_sends_nothing(app) -> None:
    add, tsum = _sigs(app)
    # Celery's chain/group/chord.apply(): run in the caller without task_always_eager
    assert group(add.s(1, 1), add.s(2, 2)).apply().join() == [2, 4]
    chained = (add.s(1, 1) | add.s(2)).apply()
    assert chained.get() == 4 and chained.parent.get() == 2
    assert (add.s(1, 1) | group(add.s(1), add.s(2)) | tsum.s()).apply().get() == 7
    assert chain(add.s(1, 1), chain(add.s(1), add.s(1))).apply().get() == 4
    assert chord([add.s(1), add.s(2)], tsum.s()).apply((5,)).get() == 13
    assert (add.s(1, 1) | chord([add.s(1), add.s(2)], tsum.s())).apply().get() == 7
    assert app.broker.queue_sizes() == {}  # nothing was published
