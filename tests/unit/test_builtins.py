"""Celery's built-in tasks and the worker's chord handling, on the in-memory broker and
result store with the worker in a thread: the join, chord_unlock's polling, errbacks."""

from __future__ import annotations

import logging
import threading
import uuid

import pytest

from fastq import App
from fastq.backends.memory import MemoryBackend
from fastq.builtins import chord_messages
from fastq.exceptions import ChordError, ConfigurationError
from fastq.worker import _consumer_py
from fastq.worker.executor import Executor
from fastq.worker.pools.solo import SoloPool


class NoChordsBackend(MemoryBackend):
    """A store that cannot join chords: the client sends celery.chord_unlock instead."""

    capabilities = frozenset({"groups"})


@pytest.fixture(params=["join", "unlock"])
def app(request):
    app = App("builtins", broker=f"memory://{uuid.uuid4()}",
              backend=f"memory://{uuid.uuid4()}", worker_ack_interval=0.01)
    if request.param == "unlock":
        app._backend = NoChordsBackend(f"memory://{uuid.uuid4()}")
    calls: list = []
    app.calls = calls

    @app.task(name="b.add")
    def add(x, y):
        return x + y

    @app.task(name="b.tsum")
    def tsum(values):
        calls.append(("tsum", list(values)))
        return sum(values)

    @app.task(name="b.fail")
    def fail(message):
        raise ValueError(message)

    @app.task(name="b.on_error")
    def on_error(request, exc, traceback):
        calls.append(("errback", request.id, type(exc).__name__))

    @app.task(name="b.on_error_old")
    def on_error_old(task_id):
        calls.append(("errback-old", task_id))

    executor = Executor(app, "mem@test")
    pool = SoloPool(executor, 1)
    pool.start()
    consumer = _consumer_py.Consumer(app, app.broker, executor, pool, ["celery"], 4,
                                     ack_batch_size=64, ack_interval=0.01, hostname="mem@test")
    thread = threading.Thread(target=consumer.run, daemon=True)
    thread.start()
    yield app
    consumer.stop()
    thread.join(10)
    pool.stop()
    app.close()


def sig(task: str, *args, **options) -> dict:
    return {"task": task, "args": list(args), "kwargs": {}, "options": options,
            "subtask_type": None, "immutable": False}


def send_chord(app: App, header: list, body: dict) -> str:
    body["options"].setdefault("task_id", str(uuid.uuid4()))
    app.publish_many(chord_messages(app, header, body))
    return body["options"]["task_id"]


def test_the_body_gets_the_results_in_header_order(app) -> None:
    body_id = send_chord(app, [sig("b.add", i, i) for i in range(5)], sig("b.tsum"))
    assert app.AsyncResult(body_id).get(timeout=10) == 20
    assert app.calls == [("tsum", [0, 2, 4, 6, 8])]


def test_an_immutable_body_an_empty_header_and_a_chain_body(app) -> None:
    immutable = {**sig("b.add", 5, 5), "immutable": True}
    assert app.AsyncResult(send_chord(app, [sig("b.add", 1, 1)], immutable)).get(
        timeout=10) == 10
    assert app.AsyncResult(send_chord(app, [], sig("b.tsum"))).get(timeout=10) == 0
    last_id = str(uuid.uuid4())
    chain = {"task": "celery.chain", "args": [], "kwargs": {"tasks": [
        sig("b.tsum"), sig("b.add", 100, task_id=last_id)]}, "options": {},
        "subtask_type": "chain", "immutable": False}
    send_chord(app, [sig("b.add", 1, 2), sig("b.add", 3, 4)], chain)
    assert app.AsyncResult(last_id).get(timeout=10) == 110


def test_a_failing_member_fails_the_body_and_calls_both_kinds_of_errback(app) -> None:
    body = sig("b.tsum", link_error=[sig("b.on_error"), sig("b.on_error_old")])
    failed = sig("b.fail", "no", task_id="the-failed-one")
    body_id = send_chord(app, [sig("b.add", 1, 1), failed], body)
    with pytest.raises(ChordError, match="Dependency the-failed-one raised ValueError"):
        app.AsyncResult(body_id).get(timeout=10)
    deadline = threading.Event()
    for _ in range(200):
        if ("errback-old", body_id) in app.calls:
            break
        deadline.wait(0.02)
    assert app.calls.count(("errback", body_id, "ChordError")) == 1
    assert app.calls.count(("errback-old", body_id)) == 1
    assert not [call for call in app.calls if call[0] == "tsum"]


def test_a_task_errback_gets_request_exc_and_traceback(app) -> None:
    result = app.send_task("b.fail", ("x",), link_error=[sig("b.on_error"),
                                                          sig("b.on_error_old")])
    with pytest.raises(ValueError):
        result.get(timeout=10)
    for _ in range(200):
        if ("errback-old", result.id) in app.calls:
            break
        threading.Event().wait(0.02)
    assert ("errback", result.id, "ValueError") in app.calls


def test_map_starmap_accumulate_and_chunks(app) -> None:
    add = sig("b.add")
    assert app.send_task("celery.starmap", (), {"task": add, "it": [[1, 2], [3, 4]]}).get(
        timeout=10) == [3, 7]
    assert app.send_task("celery.map", (), {"task": sig("b.tsum"), "it": [[1, 2]]}).get(
        timeout=10) == [3]
    assert app.send_task("celery.accumulate", (1, 2, 3)).get(timeout=10) == [1, 2, 3]
    assert app.send_task("celery.accumulate", (1, 2, 3), {"index": 1}).get(timeout=10) == 2
    parts = app.send_task("celery.chunks", (), {"task": add, "it": [[1, 1], [2, 2], [3, 3]],
                                                "n": 2}).get(timeout=10)
    (_group_id, _), members = parts
    assert [app.AsyncResult(m[0][0]).get(timeout=10) for m in members] == [[2, 4], [6]]
    with pytest.raises(NotImplementedError):
        app.send_task("celery.chain").get(timeout=10)


def test_a_malformed_chord_field_is_logged_and_the_worker_goes_on(app, caplog) -> None:
    if "chords" not in app.backend.capabilities:
        pytest.skip("without a join the members' chord field is not read")
    bad = app.build_message("b.add", (1, 2), group_id="g-bad", group_index=0,
                            chord="not a signature")
    with caplog.at_level(logging.ERROR, logger="fastq.worker"):
        app.publish_many([bad])
        # one worker thread: the bad message is dealt with before this one runs
        assert app.send_task("b.add", (2, 2)).get(timeout=10) == 4
    # refused on receipt (fastq.protocol) or when counted (the backend): named, logged
    assert "chord" in caplog.text and bad.headers["id"] in caplog.text


class ReplyOnlyBackend(MemoryBackend):
    """Like rpc://: each result goes to the caller's reply queue, out of workers' reach."""

    capabilities = frozenset({"reply_to"})


def test_chords_are_refused_on_a_backend_workers_cannot_read() -> None:
    app = App("rpc", broker=f"memory://{uuid.uuid4()}")
    app._backend = ReplyOnlyBackend(f"memory://{uuid.uuid4()}")
    try:
        with pytest.raises(ConfigurationError, match="chords need a result backend"):
            chord_messages(app, [sig("b.add", 1, 1)], sig("b.tsum"))
    finally:
        app.close()


def test_a_member_revoked_before_it_runs_fails_the_chord(app) -> None:
    if "chords" not in app.backend.capabilities:
        pytest.skip("chord_unlock reads the REVOKED result like any other")
    from fastq.states import REVOKED
    from fastq.task import Request
    from fastq.worker.executor import revoked_error_dict

    body = sig("b.tsum", task_id=str(uuid.uuid4()))
    messages = chord_messages(app, [sig("b.add", 1, 1), sig("b.add", 2, 2)], body,
                              group_id="g-revoked")
    app.publish_many(messages[:1])
    # what the consumer does with a member revoked on receipt: store_now, not run
    executor = Executor(app, "mem@test")
    member = messages[1]
    request = Request(dict(member.headers), [2, 2], {}, {"chord": body})
    executor.store_now(member.headers["id"], REVOKED, revoked_error_dict("revoked"),
                       request=request)
    with pytest.raises(ChordError, match="raised TaskRevokedError"):
        app.AsyncResult(body["options"]["task_id"]).get(timeout=10)


def test_a_group_body_gives_the_results_to_each_member(app) -> None:
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    body = {"task": "celery.group", "args": [], "options": {}, "subtask_type": "group",
            "immutable": False, "kwargs": {"tasks": [sig("b.tsum", task_id=ids[0]),
                                                     sig("b.tsum", task_id=ids[1])]}}
    app.publish_many(chord_messages(app, [sig("b.add", 1, 1), sig("b.add", 2, 2)], body))
    assert [app.AsyncResult(task_id).get(timeout=10) for task_id in ids] == [6, 6]


def test_which_errbacks_are_called_with_request_exc_and_traceback() -> None:
    # Celery 5.7's rule (_call_task_errbacks): a task not bound, taking more than one
    # positional argument besides those its signature binds
    from fastq.execution import errback_takes_request as _takes_request

    app = App("arity", broker=f"memory://{uuid.uuid4()}")
    try:
        @app.task(name="e.full")
        def full(request, exc, traceback):
            pass

        @app.task(name="e.old")
        def old(task_id):
            pass

        @app.task(name="e.tagged")
        def tagged(request, exc, traceback, tag):
            pass

        @app.task(name="e.bound", bind=True)
        def bound(self, request, exc, traceback):
            pass

        @app.task(name="e.star")
        def star(*args):
            pass

        assert _takes_request(full, sig("e.full"))
        assert not _takes_request(old, sig("e.old"))
        assert _takes_request(tagged, sig("e.tagged", "x"))
        assert not _takes_request(tagged, sig("e.tagged", 1, 2, 3))
        assert not _takes_request(bound, sig("e.bound"))  # sent as a task: it may retry
        assert _takes_request(star, sig("e.star"))
    finally:
        app.close()


def _chord_dict(header: list, body: dict) -> dict:
    return {"task": "celery.chord", "args": [], "options": {}, "immutable": False,
            "subtask_type": "chord", "kwargs": {"header": {
                "task": "celery.group", "args": [], "options": {}, "immutable": False,
                "subtask_type": "group", "kwargs": {"tasks": header}}, "body": body}}


def test_a_chain_step_that_is_a_chord_gets_the_parent_value_and_the_rest(app) -> None:
    # chain(add(1, 1), chord([add(1), add(2)], tsum), add(100)), as Celery's wire form:
    # the rest after the chord linked to its body, or left in the chain
    linked_id, rest_id = str(uuid.uuid4()), str(uuid.uuid4())
    linked = _chord_dict([sig("b.add", 1), sig("b.add", 2)],
                         sig("b.tsum", link=[sig("b.add", 100, task_id=linked_id)]))
    app.send_task("b.add", (1, 1), chain=[linked])
    assert app.AsyncResult(linked_id).get(timeout=10) == 107
    in_chain = _chord_dict([sig("b.add", 1), sig("b.add", 2)], sig("b.tsum"))
    app.send_task("b.add", (1, 1), chain=[sig("b.add", 100, task_id=rest_id), in_chain])
    assert app.AsyncResult(rest_id).get(timeout=10) == 107
    # a group followed by a task is a chord
    group_step = dict(_chord_dict([sig("b.add", 1), sig("b.add", 2)], {})["kwargs"]["header"])
    after_id = str(uuid.uuid4())
    app.send_task("b.add", (1, 1), chain=[sig("b.tsum", task_id=after_id), group_step])
    assert app.AsyncResult(after_id).get(timeout=10) == 7
