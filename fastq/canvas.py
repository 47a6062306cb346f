"""Signatures (a task call to make later), chains and groups, in Celery's wire form."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import App
    from .result import AsyncResult, GroupResult


class Signature:
    """A task name with arguments and options, to send later or attach with ``link=``.

    Serializes to Celery's signature dict (celery-protocol.md §1.4.2).
    """

    def __init__(self, task: str, args: Any = (), kwargs: dict | None = None,
                 options: dict | None = None, *, immutable: bool = False,
                 app: App | None = None) -> None:
        self.task = task
        self.args = tuple(args or ())
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        self.immutable = immutable
        self.app = app

    def set(self, **options: Any) -> Signature:
        """Add apply_async options (queue, countdown, ...); returns self."""
        self.options.update(options)
        return self

    def to_dict(self) -> dict:
        return {"task": self.task, "args": list(self.args), "kwargs": self.kwargs,
                "options": self.options, "subtask_type": None, "immutable": self.immutable}

    @classmethod
    def from_dict(cls, data: dict, app: App | None = None) -> Signature:
        return cls(data["task"], data.get("args") or (), data.get("kwargs") or {},
                   data.get("options") or {}, immutable=bool(data.get("immutable")), app=app)

    def _app(self) -> App:
        if self.app is None:
            from .app import current_app

            self.app = current_app()
        return self.app

    def apply_async(self, args: Any = (), kwargs: dict | None = None,
                    **options: Any) -> AsyncResult:
        """Send it; ``args`` are prepended unless the signature is immutable."""
        full_args = self.args if self.immutable else (*args, *self.args)
        merged = {**self.options, **options}
        return self._app().send_task(self.task, full_args, {**self.kwargs, **(kwargs or {})},
                                     **merged)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def __or__(self, other: Signature | chain) -> chain:
        if isinstance(other, chain):
            return chain(self, *other.tasks)
        return chain(self, other)

    def __repr__(self) -> str:
        args = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.task}({args}){'!' if self.immutable else ''}"


class chain:  # noqa: N801 - Celery's name
    """Run signatures one after the other, each receiving its parent's result."""

    def __init__(self, *tasks: Signature) -> None:
        self.tasks = tasks

    def __or__(self, other: Signature | chain) -> chain:
        more = other.tasks if isinstance(other, chain) else (other,)
        return chain(*self.tasks, *more)

    def apply_async(self, args: Any = (), kwargs: dict | None = None,
                    **options: Any) -> AsyncResult:
        """Send the first task with the rest embedded; returns the last task's result."""
        from .protocol import new_task_id

        if not self.tasks:
            raise ValueError("an empty chain has nothing to run")
        first, rest = self.tasks[0], self.tasks[1:]
        last_id = None
        embedded = []
        for sig in rest:
            sig.options.setdefault("task_id", new_task_id())
            last_id = sig.options["task_id"]
            embedded.append(sig.to_dict())
        embedded.reverse()  # the wire form keeps the next task last
        result = first.apply_async(args, kwargs, chain=embedded or None, **options)
        if last_id is None:
            return result
        return first._app().AsyncResult(last_id)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)


class group:  # noqa: N801 - Celery's name
    """Run signatures in parallel; their results come back together as a GroupResult.

    ``group(sig1, sig2)`` or ``group(sigs)``. Each member's message carries the group's
    id and its index in the ``group``/``group_index`` headers, as Celery's do.
    """

    def __init__(self, *tasks: Signature | Iterable[Signature]) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Signature):
            tasks = tuple(tasks[0])
        self.tasks: tuple[Signature, ...] = tasks  # type: ignore[assignment]

    def apply_async(self, args: Any = (), kwargs: dict | None = None,
                    **options: Any) -> GroupResult:
        """Send every member in one broker batch; ``args`` are prepended to each
        (unless immutable); ``options`` apply to all. ``task_id`` sets the group's id.

        The group is not saved: call ``.save()`` on the result to ``restore`` it elsewhere.
        """
        from .protocol import new_task_id
        from .result import GroupResult

        if not self.tasks:
            raise ValueError("an empty group has nothing to run")
        group_id = options.pop("task_id", None) or options.pop("group_id", None) or new_task_id()
        app = self.tasks[0]._app()
        if app.conf.task_always_eager:
            results = [sig.apply_async(args, kwargs, **{**options, "group_id": group_id,
                                                        "group_index": index})
                       for index, sig in enumerate(self.tasks)]
            return GroupResult(group_id, results, app=app)
        messages = []
        for index, sig in enumerate(self.tasks):
            merged = {**sig.options, **options, "group_id": group_id, "group_index": index}
            task_id = merged.pop("task_id", None) or new_task_id()
            full_args = sig.args if sig.immutable else (*args, *sig.args)
            messages.append(app.build_message(sig.task, full_args,
                                              {**sig.kwargs, **(kwargs or {})},
                                              task_id=task_id, **merged))
        app.publish_many(messages)
        return GroupResult(group_id, [app.AsyncResult(m.headers["id"]) for m in messages],
                           app=app)

    def delay(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        return iter(self.tasks)

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.tasks))})"


def signature(task: str | Signature, args: Any = (), kwargs: dict | None = None,
              **options: Any) -> Signature:
    """A Signature for a task name (Celery's ``signature``)."""
    if isinstance(task, Signature):
        return task
    return Signature(task, args, kwargs, options)
