"""Running a task in the caller (``Task.apply``, ``task_always_eager``) through the
worker's own execution path: retries run again at once, callbacks and chains run here."""

from __future__ import annotations

import functools
import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

from ._time import now_isoformat
from .backends.base import ChordReady, exception_to_dict
from .exceptions import ChordError
from .execution import Child, Execution, child_arguments
from .limits import ThreadLimiter
from .protocol import new_task_id
from .result import EagerResult
from .states import FAILURE, PROPAGATE_STATES, RETRY, SUCCESS
from .task import Request

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .app import App
    from .exceptions import Retry
    from .task import Task

logger = logging.getLogger("fastq.worker")

#: Signature options that shape the eager run; the rest (queue, countdown, ...) concern a
#: broker, and a task run here has none.
_CHILD_OPTIONS = ("task_id", "link", "link_error", "headers", "time_limit", "soft_time_limit",
                  "group_id", "group_index", "shadow", "chord")


class EagerExecution(Execution):
    """One eager call and everything it sets off (retries, callbacks, the rest of a chain)."""

    def __init__(self, app: App) -> None:
        super().__init__(app.conf, "eager")
        self.app = app
        self.tasks = app.tasks
        if threading.current_thread() is not threading.main_thread() or not hasattr(
                signal, "SIGALRM"):
            self.limiter = _thread_limiter()  # SIGALRM reaches only the main thread
        self.propagate_hook_errors = True  # Celery raises a failing hook to the caller
        self._retry: Retry | None = None
        #: the chords joined here (``apply_chord``), by group id: the header's size, the
        #: members' results by index, then the body's EagerResult or the ChordError
        self._chords: dict[str, dict[str, Any]] = {}

    def _store_failure(self, request: Request, state: str, exc: BaseException, task: Task,
                       ignore_result: bool, tb: str | None = "",
                       retry: Retry | None = None) -> None:
        super()._store_failure(request, state, exc, task, ignore_result, tb, retry)
        self._retry = retry

    def send_children(self, request: Request, children: list[Child]) -> None:
        for child in children:
            request.add_child(self._apply_child(child, parent_id=request.id,
                                                root_id=request.root_id or request.id))

    def _apply_child(self, child: Child, **links: Any) -> EagerResult:
        sig = child.signature
        args, kwargs = child_arguments(child)
        options = sig.get("options") or {}
        return self.apply(self.app.get_task(sig["task"]), args, kwargs, chain=child.chain,
                          **links, **{key: options[key] for key in _CHILD_OPTIONS
                                      if key in options})

    def apply(self, task: Task, args: Iterable | None, kwargs: dict | None, *,
              throw: bool | None = None, retries: int = 0, **options: Any) -> EagerResult:
        """Run ``task`` here until it ends (retrying at once), then its follow-ups."""
        task_id = options.pop("task_id", None) or new_task_id()
        # The worker's headers and embed, from the same template a message is built from;
        # reply_to="" because an eager result goes to no one.
        template = self.app.message_template(task.name, _task=task, reply_to="",
                                             retries=retries, **_message_options(options))
        args, kwargs = list(args or ()), dict(kwargs or {})
        while True:
            headers = template.headers.copy()
            headers.update(id=task_id, retries=retries, ignore_result=False)
            headers["root_id"] = headers["root_id"] or task_id
            request = Request(headers, args, kwargs, dict(template.embed), hostname="eager",
                              is_eager=True)
            self._retry = None
            self.run(task, request)
            if self.pending_chord_parts:  # a chord member: counted before its result is made
                self._join_chord_parts()
            outcome = self._take(task_id)
            if outcome is not None and outcome[1] == RETRY:
                retries += 1
                retry = self._retry
                if retry is not None and retry.sig is not None:
                    args, kwargs = list(retry.sig[0]), dict(retry.sig[1])
                continue
            break
        return self._result(task_id, outcome, throw, request._children)

    def _extended(self, request: Request | None) -> dict | None:
        # the children an outcome names are those sent before it was recorded (its
        # callbacks, not its errbacks), as a worker stores them
        children = request._children if request is not None else None
        return {"children": list(children)} if children else None

    def _take(self, task_id: str) -> tuple | None:
        """The last outcome recorded for ``task_id`` (its STARTED or RETRY records before
        it are dropped); a parent's, recorded before its callbacks ran, stays."""
        found = None
        kept = []
        pending = self.pending_results
        while pending:
            record = pending.popleft()
            if record[0] == task_id:
                found = record
            else:
                kept.append(record)
        pending.extend(kept)
        return found

    def _result(self, task_id: str, outcome: tuple | None, throw: bool | None,
                children: list | None) -> EagerResult:
        if outcome is None:  # Ignore, or a Reject: nothing was stored, as in a worker
            meta = {"status": "IGNORED", "result": None, "traceback": None, "task_id": task_id}
        else:
            _, state, value, tb, extra = outcome
            children = extra.get("children") if extra else None
            if state == FAILURE and isinstance(value, BaseException):
                propagate = self.conf.task_eager_propagates if throw is None else throw
                if propagate:
                    raise value
                value = exception_to_dict(value)
            meta = {"status": state, "result": value, "traceback": tb, "task_id": task_id}
            if state == SUCCESS or state == FAILURE:
                meta["date_done"] = now_isoformat()
        return EagerResult(task_id, meta, app=self.app, children=children)

    # -- chords ----------------------------------------------------------------------
    def apply_chord(self, header: list[dict], body: dict, args: Iterable = (),
                    parent: Request | None = None) -> EagerResult:
        """Run chord ``header`` (signature dicts, plain or chains) here, each member
        carrying the body as a worker's would, then the body with their results in
        order; returns the body's EagerResult. Raises ChordError when a member failed."""
        group_id = new_task_id()
        links = {"parent_id": parent.id, "root_id": parent.root_id or parent.id} \
            if parent is not None else {}
        if not header:
            return self._apply_child(Child(body, ([],), None), **links)
        self._chords[group_id] = {"size": len(header), "results": {}}
        for index, member in enumerate(header):
            last = {"chord": body, "group_id": group_id, "group_index": index}
            if member.get("subtask_type") == "chain":
                steps = list((member.get("kwargs") or {}).get("tasks") or ())
                if not steps:
                    raise ValueError(f"chord {group_id}: an empty chain as member {index}")
                steps[-1] = dict(steps[-1], options={**(steps[-1].get("options") or {}),
                                                     **last})
                child = Child(steps[0], tuple(args), steps[:0:-1] or None)
            elif member.get("subtask_type") is None:
                child = Child(dict(member, options={**(member.get("options") or {}), **last}),
                              tuple(args), None)
            else:
                raise ValueError(f"chord {group_id}: a {member.get('subtask_type')} as a "
                                 f"header member cannot run eagerly: {member!r:.200}")
            self._apply_child(child, **links)
            if "error" in self._chords[group_id]:
                break
        joined = self._chords.pop(group_id)
        if "error" in joined:
            raise joined["error"]
        return joined["body"]

    def _join_chord_parts(self) -> None:
        """Count the chord members that just finished: in the chords run here
        (``apply_chord``), else, as a worker does, in the result backend's join."""
        parts = self.pending_chord_parts
        while parts:
            part, state, result = parts.popleft()
            joined = self._chords.get(part.group)  # type: ignore[arg-type]
            if joined is None:
                self.app.backend.on_chord_part_return(
                    part, state, result, functools.partial(self._chord_ready, part))
            elif "error" not in joined:
                if state in PROPAGATE_STATES:
                    joined["error"] = ChordError(f"Dependency {part.id} raised {result!r}")
                    continue
                joined["results"][part.group_index] = result
                if len(joined["results"]) == joined["size"]:
                    ordered = [value for _, value in sorted(joined["results"].items())]
                    joined["body"] = self._chord_ready(part, ChordReady(
                        part.group, part.embed["chord"], ordered, None))  # type: ignore[arg-type]

    def _chord_ready(self, part: Any, ready: ChordReady) -> EagerResult | None:
        """Run a joined chord's body here (its parent the last member, which was
        recorded already: as in a worker, the body is not among its children)."""
        if ready.error is not None:
            logger.error("Chord %s failed: %s", ready.group_id, ready.error)
            return None
        result = self._apply_child(Child(ready.body, (ready.results,), None), parent_id=part.id,
                                   root_id=getattr(part, "root_id", None) or part.id)
        return result


_shared_thread_limiter: ThreadLimiter | None = None


def _thread_limiter() -> ThreadLimiter:
    # one watchdog thread for every eager call made off the main thread
    global _shared_thread_limiter
    if _shared_thread_limiter is None:
        _shared_thread_limiter = ThreadLimiter()
    return _shared_thread_limiter


def _message_options(options: dict) -> dict:
    # countdown, eta, expires, queue, priority: nothing to wait for or route to here
    for ignored in ("countdown", "eta", "expires", "queue", "priority", "serializer",
                    "compression", "reply_to", "retry", "retry_policy", "exchange",
                    "routing_key"):
        options.pop(ignored, None)
    return options


def apply_chord(app: App, header: list[dict], body: dict, args: Iterable = (),
                parent: Request | None = None) -> EagerResult:
    """Run a chord in the caller (Celery's eager ``chord.apply``): the header here, then
    the body with the members' results; returns the body's EagerResult."""
    return EagerExecution(app).apply_chord(header, body, args, parent)


def apply(app: App, task: Task, args: Iterable | None = None, kwargs: dict | None = None,
          **options: Any) -> EagerResult:
    """Run ``task`` in the caller as a worker would, and return its EagerResult."""
    return EagerExecution(app).apply(task, args, kwargs, **options)


__all__ = ["EagerExecution", "apply", "apply_chord"]
