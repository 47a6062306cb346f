"""Celery's built-in workflow tasks (``celery.chord_unlock``, ``celery.chunks``, ...) and
the sending of signature dicts (Celery's wire form) that chord bodies and errbacks need."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .backends.base import ChordPart, ChordReady, exception_from_dict
from .canvas import Signature
from .eager import apply_chord
from .exceptions import ChordError, ConfigurationError
from .execution import call_errback, errback_takes_request
from .protocol import new_task_id
from .states import EXCEPTION_STATES, FAILURE, PROPAGATE_STATES, READY_STATES
from .task import Request

if TYPE_CHECKING:
    from .app import App
    from .protocol import Message

logger = logging.getLogger("fastq.worker")

#: Options of a signature dict that ``App.build_message`` understands; the others
#: (Celery's ``stamped_headers``, ``reply_to`` of the client, ...) are not sent on.
SIGNATURE_OPTIONS = frozenset({
    "task_id", "countdown", "eta", "expires", "queue", "priority", "headers",
    "ignore_result", "serializer", "compression", "time_limit", "soft_time_limit",
    "link", "link_error", "shadow", "group_id", "group_index", "reply_to", "chord",
})

#: Seconds between ``celery.chord_unlock``'s polls (Celery's result_chord_retry_interval).
CHORD_UNLOCK_INTERVAL = 1.0

#: Composite signatures whose dict form names a real task (``task`` is celery.chunks,
#: celery.map, celery.starmap) and so are sent like a plain one.
_TASK_LIKE = (None, "chunks", "xmap", "xstarmap")


# -- sending signature dicts --------------------------------------------------------------

def check_signature(sig: Any, what: str = "signature") -> dict:
    """``sig`` if it is a signature dict; a ValueError naming it otherwise."""
    if not isinstance(sig, dict) or not isinstance(sig.get("task"), str):
        raise ValueError(f"malformed {what}: expected Celery's signature dict with a "
                         f"'task' name, got {sig!r:.200}")
    return sig


def signature_message(app: App, sig: dict, args: Sequence[Any] = (),
                      kwargs: dict | None = None, **extra: Any) -> Message:
    """The message for plain signature dict ``sig``: ``args`` before its own (unless
    immutable), its options, then ``extra`` (which win)."""
    check_signature(sig)
    options = {k: v for k, v in (sig.get("options") or {}).items() if k in SIGNATURE_OPTIONS}
    options.update(extra)
    own = list(sig.get("args") or ())
    full_args = own if sig.get("immutable") else [*args, *own]
    return app.build_message(sig["task"], full_args, {**(sig.get("kwargs") or {}),
                                                      **(kwargs or {})}, **options)


def signature_messages(app: App, sig: dict, args: Sequence[Any] = (),
                       last: dict | None = None, **extra: Any) -> list[Message]:
    """The messages that start signature dict ``sig`` (plain, chain, group or chord)
    with ``args`` given to its first tasks. ``last`` holds options for the task whose
    result is the signature's (a chain's last step: where a chord member's ``chord``,
    ``group_id`` and ``group_index`` go); ``extra`` go to every message."""
    kind = check_signature(sig).get("subtask_type")
    if kind in _TASK_LIKE:
        return [signature_message(app, sig, args, **extra, **(last or {}))]
    inner = sig.get("kwargs") or {}
    if kind == "chain":
        steps = [check_signature(step, "chain step") for step in inner.get("tasks") or ()]
        if not steps:
            return []
        if any(step.get("subtask_type") not in _TASK_LIKE for step in steps):
            raise ValueError(f"chain {sig.get('options', {}).get('task_id')}: only plain "
                             f"steps can be sent by a worker, got {steps!r:.200}")
        rest = []
        for position, step in enumerate(steps[1:], 1):
            step = dict(step, options=dict(step.get("options") or {}))
            step["options"].setdefault("task_id", new_task_id())
            if position == len(steps) - 1 and last:
                step["options"].update(last)
            rest.append(step)
        rest.reverse()  # the wire form keeps the next step last
        first_last = last if len(steps) == 1 else None
        return [signature_message(app, steps[0], args, chain=rest or None, **extra,
                                  **(first_last or {}))]
    if kind == "group":
        group_id = (sig.get("options") or {}).get("task_id") or new_task_id()
        messages = []
        for index, member in enumerate(inner.get("tasks") or ()):
            messages.extend(signature_messages(
                app, member, args, last={**(last or {}), "group_id": group_id,
                                         "group_index": index}, **extra))
        return messages
    if kind == "chord":
        header = inner.get("header")
        if isinstance(header, dict):  # a group signature, as Celery's chord keeps it
            header = (header.get("kwargs") or {}).get("tasks")
        group_id = (sig.get("options") or {}).get("group_id")
        return chord_messages(app, list(header or ()), check_signature(inner.get("body"),
                              "chord body"), args, group_id=group_id, **extra)
    raise ValueError(f"unknown signature type {kind!r} in {sig!r:.200}")


def chain_step_messages(app: App, sig: dict, args: Sequence[Any], rest: list | None,
                        **extra: Any) -> list[Message]:
    """The messages of a workflow's next step ``sig`` (a callback, or a chain's next)
    given its parent's value in ``args``; ``rest`` is what follows it in the chain,
    reversed as on the wire. A composite step carries the rest as Celery's does: after
    a chord's body, after a group as the body of a chord, at the end of a chain."""
    kind = check_signature(sig).get("subtask_type")
    if kind in _TASK_LIKE:
        return [signature_message(app, sig, args, chain=rest or None, **extra)]
    if rest:
        following = list(reversed(rest))
        inner = sig.get("kwargs") or {}
        if kind == "chord":
            sig = dict(sig, kwargs={**inner, "body": _chain_of(
                [check_signature(inner.get("body"), "chord body"), *following])})
        elif kind == "group":  # a group followed by tasks is a chord (Celery's upgrade)
            sig = {"task": "celery.chord", "args": [], "options": {}, "immutable": False,
                   "subtask_type": "chord", "kwargs": {"header": sig,
                                                       "body": _chain_of(following)}}
        elif kind == "chain":
            sig = dict(sig, kwargs={**inner, "tasks": [*(inner.get("tasks") or ()),
                                                       *following]})
    return signature_messages(app, sig, args, **extra)


def _chain_of(steps: list[dict]) -> dict:
    """One signature dict for ``steps`` run in turn: the step itself when alone."""
    if len(steps) == 1:
        return steps[0]
    return {"task": "celery.chain", "args": [], "kwargs": {"tasks": steps}, "options": {},
            "subtask_type": "chain", "immutable": False}


def apply_signature(app: App, sig: dict, args: Sequence[Any] = (), **extra: Any) -> None:
    """Send signature dict ``sig`` (any kind) with ``args`` given to its first tasks."""
    messages = signature_messages(app, sig, args, **extra)
    if messages:
        app.publish_many(messages)


def chord_messages(app: App, header: list, body: dict, args: Sequence[Any] = (),
                   group_id: str | None = None, **extra: Any) -> list[Message]:
    """The messages of a chord: each header member carries the body (``chord``), the
    group id and its index; the size is recorded first. A backend that cannot join
    gets Celery's ``celery.chord_unlock`` to poll instead. An empty header sends the
    body at once with ``[]``."""
    group_id = group_id or new_task_id()
    body, _ = _with_result_id(body) if body.get("subtask_type") in _TASK_LIKE else (body, "")
    if not header:
        return signature_messages(app, body, ([],), **extra)
    capabilities = app.backend.capabilities
    joins = "chords" in capabilities
    if not joins and "reply_to" in capabilities:
        # as Celery's ensure_chords_allowed: neither a join nor chord_unlock's polling
        # can read results that go to the caller's reply queue
        raise ConfigurationError(
            f"chords need a result backend that workers can read; "
            f"{type(app.backend).__name__} sends each result to its caller only: use "
            f"redis://, a db+ URL, sqlite:// or cache+memcached://")
    messages = []
    ids = []
    for index, member in enumerate(header):
        member, result_id = _with_result_id(check_signature(member, "chord header member"))
        last: dict[str, Any] = {"group_id": group_id, "group_index": index}
        if joins:
            last["chord"] = body
        messages.extend(signature_messages(app, member, args, last=last, **extra))
        ids.append(result_id)
    if joins:
        app.backend.set_chord_size(group_id, len(header))
    else:  # joined by polling: the members carry no chord
        messages.append(app.build_message(
            "celery.chord_unlock", (group_id, body),
            {"result": [[[task_id, None], None] for task_id in ids]},
            countdown=CHORD_UNLOCK_INTERVAL))
    return messages


def _with_result_id(member: dict) -> tuple[dict, str]:
    """A copy of chord member ``member`` whose result has an id, and that id: its own
    for a plain signature, its last step's for a chain."""
    kind = member.get("subtask_type")
    if kind == "chain":
        steps = list((member.get("kwargs") or {}).get("tasks") or ())
        if steps:
            last, result_id = _with_result_id(check_signature(steps[-1], "chain step"))
            steps[-1] = last
            return dict(member, kwargs={**member["kwargs"], "tasks": steps}), result_id
    if kind not in _TASK_LIKE:
        raise ValueError(f"a {kind} as a chord header member cannot be sent by a worker: "
                         f"{member!r:.200}")
    options = dict(member.get("options") or {})
    options.setdefault("task_id", new_task_id())
    return dict(member, options=options), options["task_id"]


# -- the chord's end: its body, or its failure --------------------------------------------

def send_chord_body(app: App, ready: ChordReady, parent_id: str | None = None,
                    root_id: str | None = None) -> None:
    """Send a joined chord's body with the ordered results, or fail it (``chord_error``)
    when a member failed; a body that cannot be sent fails the same way."""
    if ready.error is not None:
        logger.error("Chord %s failed: %s", ready.group_id, ready.error)
        chord_error(app, ready.body, ready.error)
        return
    try:
        apply_signature(app, ready.body, (ready.results,), parent_id=parent_id,
                        root_id=root_id)
    except Exception as exc:
        logger.exception("Chord %s: could not send its body", ready.group_id)
        chord_error(app, ready.body, ChordError(f"Callback error: {exc!r}"))


def chord_error(app: App, body: dict, exc: ChordError) -> None:
    """A chord that will not run its body: FAILURE stored for the body's results, its
    ``link_error`` called, and, when the body is itself an outer chord's member, that
    chord counted as failed too (so nobody waits on it)."""
    error = {"exc_type": "ChordError", "exc_message": [str(exc)],
             "exc_module": "celery.exceptions"}  # Celery's class, for Celery clients too
    backend = app.backend
    for target in _result_signatures(body):
        options = target.get("options") or {}
        task_id = options.get("task_id")
        if not task_id:
            continue
        backend.store(task_id, FAILURE, error)
        errbacks = options.get("link_error")
        if errbacks:
            request = Request({"id": task_id, "task": target["task"], "root_id": task_id,
                               "group": options.get("group_id")},
                              list(target.get("args") or ()), dict(target.get("kwargs") or {}),
                              {"errbacks": errbacks})
            call_errbacks(app, request, list(errbacks), exc, None)
        if options.get("chord"):
            part = ChordPart(task_id, options.get("group_id"), options.get("group_index"),
                             {"chord": options["chord"]})
            backend.on_chord_part_return(part, FAILURE, exc,
                                         functools.partial(send_chord_body, app))


def _result_signatures(sig: dict) -> list[dict]:
    """The plain signatures whose results stand for ``sig``'s: itself, a chain's steps,
    a group's members (each walked the same way)."""
    kind = sig.get("subtask_type")
    inner = sig.get("kwargs") or {}
    if kind == "chain":
        return [found for step in inner.get("tasks") or () for found in _result_signatures(step)]
    if kind == "group":
        return [found for member in inner.get("tasks") or ()
                for found in _result_signatures(member)]
    if kind == "chord":
        return _result_signatures(inner.get("body") or {})
    return [sig] if isinstance(sig, dict) else []


# -- errbacks ----------------------------------------------------------------------------

def call_errbacks(app: App, request: Request, errbacks: list, exc: BaseException,
                  tb: str | None) -> None:
    """A worker's errback call outside a run (a chord that failed): Celery's rule, as
    ``Execution.call_errbacks`` applies it; the errbacks not called here are sent as
    tasks with the failed task's id before their own arguments."""
    by_id = []
    for errback in errbacks:
        check_signature(errback, "link_error signature")
        task = app.tasks.get(errback["task"])
        if task is None or not errback_takes_request(task, errback):
            by_id.append(errback)
        else:
            call_errback(task, errback, request, exc, tb)
    if by_id:
        root_id = request.root_id or request.id
        app.publish_many([signature_message(app, errback, (request.id,), parent_id=request.id,
                                            root_id=root_id) for errback in by_id])


# -- the built-in tasks ------------------------------------------------------------------

def register_builtins(app: App) -> None:
    """Register Celery's built-in task names in ``app``, doing what Celery 5.7's do."""

    def backend_cleanup() -> None:
        app.backend.cleanup()

    def accumulate(self: Any, *args: Any, **kwargs: Any) -> Any:
        index = kwargs.get("index")
        return args[index] if index is not None else args

    def xmap(task: dict, it: Sequence[Any]) -> list:
        run = app.get_task(Signature.from_dict(check_signature(task)).task)
        return [run(item) for item in it]

    def xstarmap(task: dict, it: Sequence[Any]) -> list:
        run = app.get_task(Signature.from_dict(check_signature(task)).task)
        return [run(*item) for item in it]

    def chunks(task: dict, it: Sequence[Any], n: int) -> list:
        items = list(it)
        group_id = new_task_id()
        messages = [app.build_message("celery.starmap", (), {
            "task": check_signature(task), "it": items[start:start + n]},
            group_id=group_id, group_index=index)
            for index, start in enumerate(range(0, len(items), n))]
        app.publish_many(messages)
        # a GroupResult's tuple form (Celery returns the object itself)
        return [[group_id, None], [[[m.headers["id"], None], None] for m in messages]]

    def group(self: Any, tasks: list, result: Any, group_id: str, partial_args: Sequence,
              add_to_parent: bool = True) -> Any:
        messages = [signature_message(app, check_signature(task), partial_args,
                                      group_id=group_id, group_index=index)
                    for index, task in enumerate(tasks)]
        app.publish_many(messages)
        return result

    def chain(*args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("chain is not a real task")

    def chord(self: Any, header: Any, body: dict, partial_args: Sequence = (),
              interval: float | None = None, countdown: float = 1, max_retries: Any = None,
              eager: bool = False, **kwargs: Any) -> Any:
        # sent: returns the body's id; applied eagerly: the body's result, as Celery's
        # eager chord.apply gives it
        if isinstance(header, dict):  # a group signature
            header = (header.get("kwargs") or {}).get("tasks")
        if self.request.is_eager:  # Task.apply, task_always_eager: all of it here
            return apply_chord(app, [check_signature(member, "chord header member")
                                     for member in header or ()],
                               check_signature(body, "chord body"), partial_args,
                               self.request).get()
        messages = chord_messages(app, list(header or ()), check_signature(body, "chord body"),
                                  partial_args)
        app.publish_many(messages)
        return body.get("options", {}).get("task_id")

    def chord_unlock(self: Any, group_id: str, callback: dict, interval: float | None = None,
                     max_retries: int | None = None, result: list | None = None,
                     **kwargs: Any) -> None:
        unlock_chord(self, app, group_id, check_signature(callback, "chord body"), interval,
                     max_retries, result)

    for fun, name, options in (
            (backend_cleanup, "celery.backend_cleanup", {}),
            (accumulate, "celery.accumulate", {"bind": True}),
            (xmap, "celery.map", {}),
            (xstarmap, "celery.starmap", {}),
            (chunks, "celery.chunks", {}),
            (group, "celery.group", {"bind": True}),
            (chain, "celery.chain", {}),
            (chord, "celery.chord", {"bind": True, "ignore_result": False}),
            (chord_unlock, "celery.chord_unlock", {
                "bind": True, "ignore_result": True,
                "default_retry_delay": CHORD_UNLOCK_INTERVAL}),
    ):
        app._register(fun, {"name": name, "typing": False, **options})


def unlock_chord(task: Any, app: App, group_id: str, callback: dict, interval: float | None,
                 max_retries: int | None, result: list | None) -> None:
    """One poll of ``celery.chord_unlock``: retry later while a member is not ready;
    then the body with the results in order, or a ChordError naming the failed member."""
    try:
        ids = [entry[0][0] for entry in result or ()]
    except (TypeError, IndexError, KeyError):
        raise ValueError(f"chord_unlock {group_id}: malformed result list "
                         f"{result!r:.200}") from None
    metas = app.backend.get_many(ids)
    if any(meta["status"] not in READY_STATES for meta in metas):
        # Celery retries without a limit unless the chord gave one
        raise task.retry(countdown=CHORD_UNLOCK_INTERVAL if interval is None else interval,
                         max_retries=max_retries if max_retries is not None else 2 ** 62)
    values = []
    for task_id, meta in zip(ids, metas):
        if meta["status"] in PROPAGATE_STATES:
            value = meta["result"]
            if meta["status"] in EXCEPTION_STATES:
                value = exception_from_dict(value)
            send_chord_body(app, ChordReady(group_id, callback, None, ChordError(
                f"Dependency {task_id} raised {value!r}")))
            return
        values.append(meta["result"])
    send_chord_body(app, ChordReady(group_id, callback, values, None))


__all__ = ["register_builtins", "apply_signature", "signature_messages", "signature_message",
           "chain_step_messages",
           "chord_messages", "send_chord_body", "chord_error", "call_errbacks",
           "SIGNATURE_OPTIONS"]
