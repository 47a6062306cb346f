"""Signatures (a task call to make later) and the workflows built of them, in Celery's
wire form: chain, group, chord, chunks, xmap and xstarmap."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, cast

from ._state import current_app
from .exceptions import ChordError
from .protocol import new_task_id
from .result import AsyncResult, EagerResult, GroupResult

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

    from .app import App
    from .task import TaskOptions

__all__ = ["Signature", "chain", "chord", "chunks", "group", "maybe_signature", "signature",
           "xmap", "xstarmap"]

#: Options Celery's own code passes to ``apply_async`` that name its producer machinery;
#: they arrive in signature dicts from Celery clients and mean nothing to fastq.
_CELERY_ONLY_OPTIONS = ("add_to_parent", "producer", "connection", "publisher", "router",
                        "result_cls", "route_name", "stamped_headers", "stamps")

#: What makes a task a member of a group or a chord: on a chain, they belong to its last
#: task (the one whose result is the chain's); on a chord, to its body.
_MEMBERSHIP_OPTIONS = ("group_id", "group_index", "chord")


def _wire(value: Any) -> Any:
    """``value`` with every Signature in it turned into Celery's plain dict."""
    if isinstance(value, Signature):
        return value.to_dict()
    if isinstance(value, dict):
        return {key: _wire(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wire(item) for item in value]
    return value


class Signature(dict[str, Any]):  # Celery's Signature is a dict too
    """A task name with arguments and options, to send later or attach with ``link=``.

    A dict in Celery's signature form (celery-protocol.md §1.4.2), as Celery's is:
    ``sig["task"]``, ``json.dumps(sig)`` and ``Signature(sig_dict)`` all work.
    """

    #: subtask_type -> class, for ``from_dict`` (filled in below the classes)
    TYPES: ClassVar[dict[str, type[Signature]]] = {}

    def __init__(self, task: str | Mapping[str, Any] | Any = None,
                 args: Iterable[Any] | None = (), kwargs: Mapping[str, Any] | None = None,
                 options: Mapping[str, Any] | None = None, *, subtask_type: str | None = None,
                 immutable: bool = False, app: App | None = None, **more_options: Any) -> None:
        if isinstance(task, Mapping):  # Signature(a_signature_dict), as Celery allows
            data = task
            task = data["task"]
            args, kwargs = data.get("args"), data.get("kwargs")
            options = data.get("options")
            subtask_type = data.get("subtask_type")
            immutable = bool(data.get("immutable"))
        elif task is not None and not isinstance(task, str):
            task = task.name  # a Task
        super().__init__(task=task, args=tuple(args or ()), kwargs=dict(kwargs or {}),
                         options={**(options or {}), **more_options},
                         subtask_type=subtask_type, immutable=immutable)
        self.app = app

    # -- the dict's fields as attributes, as in Celery ---------------------------------
    @property
    def task(self) -> str:
        name: str = self["task"]
        return name

    @property
    def args(self) -> tuple[Any, ...]:
        args: tuple[Any, ...] = self["args"]
        return args

    @args.setter
    def args(self, value: Iterable[Any]) -> None:
        self["args"] = tuple(value)

    @property
    def kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = self["kwargs"]
        return kwargs

    @kwargs.setter
    def kwargs(self, value: Mapping[str, Any]) -> None:
        self["kwargs"] = dict(value)

    @property
    def options(self) -> dict[str, Any]:
        """``apply_async`` options (``TaskOptions``) sent with it."""
        options: dict[str, Any] = self["options"]
        return options

    @options.setter
    def options(self, value: Mapping[str, Any]) -> None:
        self["options"] = dict(value)

    @property
    def subtask_type(self) -> str | None:
        kind: str | None = self["subtask_type"]
        return kind

    @property
    def immutable(self) -> bool:
        return bool(self["immutable"])

    @immutable.setter
    def immutable(self, value: bool) -> None:
        self["immutable"] = bool(value)

    @property
    def id(self) -> str | None:
        """The task id once frozen (or set with ``task_id=``), else None."""
        task_id: str | None = self.options.get("task_id")
        return task_id

    # -- building --------------------------------------------------------------------
    def set(self, **options: Unpack[TaskOptions]) -> Signature:
        """Add apply_async options (queue, countdown, ...); returns self."""
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        """Whether the parent's result is left out of the arguments (``.si()``)."""
        self.immutable = immutable

    def link(self, callback: Signature | Mapping[str, Any]) -> Signature | Mapping[str, Any]:
        """Call ``callback`` with this task's result when it succeeds; returns it."""
        self.options.setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature | Mapping[str, Any]
                   ) -> Signature | Mapping[str, Any]:
        """Call ``errback`` when this task fails; returns it."""
        self.options.setdefault("link_error", []).append(errback)
        return errback

    def on_error(self, errback: Signature | Mapping[str, Any]) -> Signature:
        """``link_error``, returning self so that it can be chained."""
        self.link_error(errback)
        return self

    def clone(self, args: Iterable[Any] | None = None, kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Self:
        """A copy (nested signatures copied too), ``args`` prepended unless immutable,
        ``kwargs`` and ``options`` merged in."""
        copy = cast("Self", type(self).from_dict(self, app=self.app))
        if args and not copy.immutable:
            copy.args = (*args, *copy.args)
        if kwargs:
            copy.kwargs = {**copy.kwargs, **kwargs}
        copy.options.update(options)
        return copy

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               chord: Signature | None = None, root_id: str | None = None,
               parent_id: str | None = None, group_index: int | None = None
               ) -> AsyncResult[Any] | GroupResult:
        """Give the task its id now (keeping one it has) and return its result handle;
        the other arguments make it a member of a group or chord."""
        options = self.options
        task_id = options.get("task_id") or _id or new_task_id()
        options["task_id"] = task_id
        for key, value in (("group_id", group_id), ("chord", chord), ("root_id", root_id),
                           ("parent_id", parent_id), ("group_index", group_index)):
            if value is not None:
                options[key] = value
        return AsyncResult(task_id, app=self.app, task_name=self.task)

    # -- the wire form ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Celery's plain dict of it, nested signatures included."""
        return {"task": self.task, "args": _wire(self.args), "kwargs": _wire(self.kwargs),
                "options": _wire(self.options), "subtask_type": self.subtask_type,
                "immutable": self.immutable}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], app: App | None = None) -> Signature:
        """The signature (of the class its ``subtask_type`` names) from Celery's dict.

        Raises:
            ValueError: ``data`` is not a signature dict, or names an unknown
                ``subtask_type``.
        """
        if isinstance(data, Signature):  # a copy: checked when it was made
            target = type(data) if issubclass(type(data), cls) else cls
            return target._rebuild(data, app)
        if not isinstance(data, Mapping):
            raise ValueError(f"not a signature: expected a dict, got {data!r:.80}")
        if not isinstance(data.get("task"), str) and data.get("subtask_type") is None:
            raise ValueError(f"malformed signature: no task name in {dict(data)!r:.120}")
        kind = data.get("subtask_type")
        if kind is None:  # chunks and maps are written with none, as Celery does
            target = cls
        elif kind in Signature.TYPES:
            target = Signature.TYPES[kind]
        else:
            raise ValueError(f"unknown signature subtask_type {kind!r} (known: "
                             f"{', '.join(sorted(Signature.TYPES))})")
        if target is not cls and cls is not Signature and not issubclass(target, cls):
            raise ValueError(f"a {kind or 'task'} signature is not a {cls.__name__}")
        for field, kinds in (("args", (list, tuple)), ("kwargs", Mapping),
                             ("options", Mapping)):
            if data.get(field) is not None and not isinstance(data[field], kinds):
                raise ValueError(f"malformed signature {data.get('task')!r}: {field} is a "
                                 f"{type(data[field]).__name__}")
        return target._rebuild(data, app)

    @classmethod
    def _rebuild(cls, data: Mapping[str, Any], app: App | None) -> Signature:
        options = dict(data.get("options") or {})
        for key in ("link", "link_error"):
            if options.get(key):
                found = options[key]
                options[key] = [maybe_signature(s, app, clone=True) for s in
                                (found if isinstance(found, (list, tuple)) else [found])]
        if options.get("chord") is not None:
            options["chord"] = maybe_signature(options["chord"], app, clone=True)
        return Signature(data["task"], data.get("args"), data.get("kwargs"), options,
                         subtask_type=data.get("subtask_type"),
                         immutable=bool(data.get("immutable")), app=app)

    def _app(self) -> App:
        if self.app is None:
            self.app = current_app()
        return self.app

    # -- running ---------------------------------------------------------------------
    def apply_async(self, args: Iterable[Any] | None = (),
                    kwargs: Mapping[str, Any] | None = None,
                    **options: Unpack[TaskOptions]) -> Any:
        """Send it; ``args`` are prepended unless the signature is immutable."""
        full_args = self.args if self.immutable else (*(args or ()), *self.args)
        return self._app().send_task(self.task, full_args,
                                     _plain_kwargs({**self.kwargs, **(kwargs or {})}),
                                     **_send_options({**self.options, **options}))

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Send it with these arguments (prepended, unless immutable)."""
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task's function here, now (Celery's ``sig()``), not as a message."""
        full_args = self.args if self.immutable else (*args, *self.args)
        return self._app().tasks[self.task](*full_args, **{**self.kwargs, **kwargs})

    def apply(self, args: Iterable[Any] | None = (), kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> EagerResult[Any]:
        """Run it in the caller (``Task.apply``), with its rest of chain and callbacks."""
        full_args = self.args if self.immutable else (*(args or ()), *self.args)
        task = self._app().tasks[self.task]
        result: EagerResult[Any] = task.apply(full_args, {**self.kwargs, **(kwargs or {})},
                                              **_send_options({**self.options, **options}))
        return result

    # -- composing -------------------------------------------------------------------
    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, chain):
            return chain(self, *other.tasks, app=self.app)
        if isinstance(other, Signature):
            return chain(self, other, app=self.app)
        return NotImplemented

    def __ior__(self, other: Any) -> Signature:  # type: ignore[override]
        return self.__or__(other)

    def __repr__(self) -> str:
        args = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs.items())])
        return f"{self.task}({args}){'!' if self.immutable else ''}"

    # a dict subclass with attributes: copies must be of the subclass, with its app
    def __copy__(self) -> Signature:
        return self.clone()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_signature_from_dict, (self.to_dict(),))


def _plain_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a message: a signature in them (``celery.map``'s task)
    as its plain dict, for serializers that know only plain types; other values as
    they are, unwalked."""
    if any(isinstance(value, Signature) for value in kwargs.values()):
        return {key: _wire(value) for key, value in kwargs.items()}
    return kwargs


def _signature_from_dict(data: dict[str, Any]) -> Signature:
    return Signature.from_dict(data)


def _send_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options for ``send_task``: Celery-only ones dropped, signatures in wire form."""
    for key in _CELERY_ONLY_OPTIONS:
        options.pop(key, None)
    if isinstance(options.get("chord"), Signature):
        options["chord"] = options["chord"].to_dict()
    return options


def _set_parent(result: AsyncResult[Any] | GroupResult, parent: AsyncResult[Any] | GroupResult
                ) -> None:
    """Make ``parent`` the parent of the first result of ``result``'s own line (the
    first task of a chain, the header of a chord), without reading the backend."""
    node: Any = result
    seen = set()
    while True:
        if node.id in seen:
            raise RuntimeError(f"result {node.id} is its own ancestor")
        seen.add(node.id)
        above = node._parent if isinstance(node, AsyncResult) else node.parent
        if above is None:
            node.parent = parent
            return
        node = above


class chain(Signature):  # noqa: N801 - Celery's name
    """Run signatures one after the other, each receiving its parent's result.

    ``chain(a, b, c)``, ``chain([a, b, c])`` or ``a | b | c``. A group followed by a
    task becomes a chord (the group's results go to the task), as in Celery.
    """

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping):
            tasks = tuple(tasks[0])
        steps = [maybe_signature(t, app) for t in tasks]
        super().__init__("celery.chain", (), {"tasks": steps}, options, subtask_type="chain",
                         app=app or next((s.app for s in steps if s.app is not None), None))

    @property
    def tasks(self) -> list[Signature]:
        steps: list[Signature] = self.kwargs["tasks"]
        return steps

    @classmethod
    def _rebuild(cls, data: Mapping[str, Any], app: App | None) -> Signature:
        return chain(*_members(data, "tasks"), app=app, **(data.get("options") or {}))

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, chain):
            return chain(*self.tasks, *other.tasks, app=self.app, **self.options)
        if isinstance(other, Signature):
            return chain(*self.tasks, other, app=self.app, **self.options)
        return NotImplemented

    def link(self, callback: Signature | Mapping[str, Any]) -> Signature | Mapping[str, Any]:
        """Call ``callback`` with the chain's result: linked to its last task."""
        return self.tasks[-1].link(callback)

    def link_error(self, errback: Signature | Mapping[str, Any]
                   ) -> Signature | Mapping[str, Any]:
        """Call ``errback`` when any task of the chain fails: linked to each."""
        for step in self.tasks:
            step.link_error(errback)
        return errback

    def _steps(self) -> list[Signature]:
        """The steps as they are sent: nested chains spread out, a group followed by
        anything made a chord with the rest as its body, anything after a chord moved
        into its body. Only the last step can then be a group or a chord. The steps
        themselves, not copies: freezing gives them their ids, as in Celery."""
        flat: list[Signature] = []
        for step in self.tasks:
            flat.extend(step._steps() if isinstance(step, chain) else [step])
        for index, step in enumerate(flat):
            if isinstance(step, (group, chord)) and index < len(flat) - 1:
                rest = flat[index + 1:]
                body = rest[0] if len(rest) == 1 else chain(*rest, app=self.app)
                if isinstance(step, group):
                    step = chord(step, body, app=self.app)
                else:
                    step.body = step.body | body
                return [*flat[:index], step]
        return flat

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               chord: Signature | None = None, root_id: str | None = None,
               parent_id: str | None = None, group_index: int | None = None
               ) -> AsyncResult[Any] | GroupResult:
        """Give every step its id (the last the chain's ``task_id`` or ``_id``) and return
        the last step's result, its ``parent`` the step before, and so on."""
        steps = self._steps()
        if not steps:
            raise ValueError("an empty chain has nothing to run")
        self.kwargs["tasks"] = steps
        membership = _pop_membership(self.options)
        results: list[AsyncResult[Any] | GroupResult] = []
        for index, step in enumerate(steps):
            if index < len(steps) - 1:
                results.append(step.freeze(root_id=root_id))
            else:
                results.append(step.freeze(
                    self.options.pop("task_id", None) or _id,
                    group_id=membership.get("group_id", group_id),
                    chord=membership.get("chord", chord), root_id=root_id,
                    group_index=membership.get("group_index", group_index)))
        for before, after in itertools.pairwise(results):
            _set_parent(after, before)
        self.options["task_id"] = results[-1].id
        return results[-1]

    def apply_async(self, args: Iterable[Any] | None = (),
                    kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> Any:
        """Send the first task with the rest embedded; returns the last task's result,
        each ``.parent`` the step before it."""
        sig = self.clone()
        task_id = options.pop("task_id", None)
        sig.options.update(_pop_membership(options))
        # a callback gets the chain's result: its last task's; an errback is called
        # whichever task fails
        for key, add in (("link", sig.link), ("link_error", sig.link_error)):
            for found in (sig.options.pop(key, None), options.pop(key, None)):
                for item in _as_list(found):
                    add(item)
        result = sig.freeze(task_id)
        steps = sig.tasks
        first, rest = steps[0], steps[1:]
        if rest and not _is_plain(steps[-1]) and sig._app().conf.task_always_eager:
            # the eager path runs an embedded chain's next step as one task by name: a
            # group or chord step runs here instead, each step given its parent's value
            ran = first.apply_async(args, kwargs, **{
                k: v for k, v in {**sig.options, **options}.items() if k != "task_id"})
            for step in rest:
                value = ran.join() if isinstance(ran, GroupResult) else ran.get()
                ran = step.apply_async((value,))
            return ran
        if not rest:
            return first.apply_async(args, kwargs, **{**sig.options, **options,
                                                      "task_id": result.id})
        embedded = [step.to_dict() for step in reversed(rest)]  # the next task last
        sent = first.apply_async(args, kwargs, chain=embedded,
                                 **{k: v for k, v in {**sig.options, **options}.items()
                                    if k != "task_id"})
        if isinstance(sent, EagerResult):  # the whole chain ran here, under the first
            return sent.find(result.id) or sent
        return result

    def apply(self, args: Iterable[Any] | None = (), kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        """Run every step here, now, each given the value of the step before (Celery's
        ``chain.apply``); returns the last step's result, each ``.parent`` the step
        before. A failing step raises, as its ``get()`` would."""
        task_id = options.pop("task_id", None)
        steps = self.clone()._steps()
        ran: Any = None
        for index, step in enumerate(steps):
            step_options = {**self.options, **options}
            step_options.pop("task_id", None)
            if index == len(steps) - 1 and task_id is not None:
                step_options["task_id"] = task_id
            if ran is None:
                result = step.apply(args, kwargs, **step_options)
            else:
                value = ran.join() if isinstance(ran, GroupResult) else ran.get()
                result = step.apply((value,), **step_options)
                _set_parent(result, ran)
            ran = result
        return ran

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Send the chain, with these arguments given to its first task."""
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``chain(...)(args)``: send it, as Celery's does (not run here)."""
        return self.apply_async(args, kwargs)

    def unchain_tasks(self) -> list[Signature]:
        """Copies of the steps, nested chains spread out."""
        return self.clone()._steps()

    def __repr__(self) -> str:
        return " | ".join(map(repr, self.tasks)) if self.tasks else "chain()"


def _is_plain(sig: Signature) -> bool:
    return not isinstance(sig, (chain, group, chord))


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [] if value is None else [value]


def _pop_membership(options: dict[str, Any]) -> dict[str, Any]:
    """Take the group/chord membership options out of ``options``."""
    return {key: options.pop(key) for key in _MEMBERSHIP_OPTIONS if key in options}


def _members(data: Mapping[str, Any], key: str) -> list[Signature]:
    """Copies of the member signatures of a chain or group dict."""
    members = (data.get("kwargs") or {}).get(key)
    if isinstance(members, Mapping):  # Celery writes a chord's header as a group dict
        members = (members.get("kwargs") or {}).get("tasks")
    if not isinstance(members, (list, tuple)):
        raise ValueError(f"malformed {data.get('subtask_type')} signature: kwargs.{key} "
                         f"is not a list of signatures")
    return [maybe_signature(m, None, clone=True) for m in members]


class group(Signature):  # noqa: N801 - Celery's name
    """Run signatures in parallel; their results come back together as a GroupResult.

    ``group(sig1, sig2)`` or ``group(sigs)``. Each member's message carries the group's
    id and its index in the ``group``/``group_index`` headers, as Celery's do. Nested
    groups are spread into this one.
    """

    def __init__(self, *tasks: Any, app: App | None = None, **options: Any) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], Mapping):
            tasks = tuple(tasks[0])
        members = [maybe_signature(t, app) for t in tasks]
        super().__init__("celery.group", (), {"tasks": members}, options,
                         subtask_type="group",
                         app=app or next((s.app for s in members if s.app is not None), None))

    @property
    def tasks(self) -> list[Signature]:
        members: list[Signature] = self.kwargs["tasks"]
        return members

    @classmethod
    def _rebuild(cls, data: Mapping[str, Any], app: App | None) -> Signature:
        return group(*_members(data, "tasks"), app=app, **(data.get("options") or {}))

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, group) and len(other.tasks) == 1:
            other = other.tasks[0]
        if isinstance(other, group) or not isinstance(other, Signature):
            return super().__or__(other)
        return chord(self, other, app=self.app)

    def link_error(self, errback: Signature | Mapping[str, Any]
                   ) -> Signature | Mapping[str, Any]:
        """Call ``errback`` when any member fails: linked to each."""
        for member in self.tasks:
            member.link_error(errback)
        return errback

    def _flat(self) -> list[Signature]:
        members: list[Signature] = []
        for member in self.tasks:
            if isinstance(member, group):
                members.extend(member._flat())
            else:
                members.append(member)
        return members

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               chord: Signature | None = None, root_id: str | None = None,
               parent_id: str | None = None, group_index: int | None = None) -> GroupResult:
        """Give the group its id (``task_id``, else ``_id``) and every member its own;
        ``chord`` makes every member part of that chord."""
        gid = self.options.get("task_id") or _id or new_task_id()
        self.options["task_id"] = gid
        chord = self.options.pop("chord", None) or chord
        self.kwargs["tasks"] = members = self._flat()
        # as Celery: members learn the group's own id when it is sent (a chord's header
        # is frozen with it as ``group_id``)
        results = [member.freeze(group_id=group_id, chord=chord, root_id=root_id,
                                 group_index=index) for index, member in enumerate(members)]
        return GroupResult(gid, results, app=self._app())

    def apply_async(self, args: Iterable[Any] | None = (),
                    kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> GroupResult:
        """Send every member in one broker batch; ``args`` are prepended to each
        (unless immutable); ``options`` apply to all. ``task_id`` sets the group's id.

        The group is not saved: call ``.save()`` on the result to ``restore`` it elsewhere.
        """
        sig = self._copy_to_run(options)
        chord_body = options.pop("chord", None)
        result = sig.freeze(chord=chord_body)
        eager = sig._send(args, kwargs, options)
        if eager is not None:  # the members ran here: their results are known
            result.results = eager
        return result

    def apply(  # type: ignore[override]  # a group's result is a GroupResult
            self, args: Iterable[Any] | None = (), kwargs: Mapping[str, Any] | None = None,
            **options: Any) -> GroupResult:
        """Run every member here, now, in order (Celery's ``group.apply``); ``args`` are
        prepended to each (unless immutable)."""
        sig = self._copy_to_run(options)
        result = sig.freeze()
        result.results = [member.apply(args, kwargs, **options) for member in sig.tasks]
        return result

    def _copy_to_run(self, options: dict[str, Any]) -> group:
        """A copy to send or run, given the id ``options`` name (``task_id`` or
        ``group_id``, taken out of them)."""
        if not self.tasks:
            raise ValueError("an empty group has nothing to run")
        sig = self.clone()
        gid = options.pop("task_id", None) or options.pop("group_id", None)
        if gid:
            sig.options["task_id"] = gid
        return sig

    def _send(self, args: Iterable[Any] | None, kwargs: Mapping[str, Any] | None,
              options: dict[str, Any]) -> list[Any] | None:
        """Send the frozen members: plain tasks in one batch, workflows one by one.
        With ``task_always_eager`` they run here: returns their results."""
        app = self._app()
        if app.conf.task_always_eager:
            return [member.apply_async(args, kwargs, **options) for member in self.tasks]
        messages = []
        shared = {k: v for k, v in self.options.items() if k not in ("task_id", "group_id")}
        for member in self.tasks:
            if isinstance(member, (chain, group, chord, chunks)):
                member.apply_async(args, kwargs, **{**shared, **options, "group_id": self.id})
                continue
            merged = _send_options({**shared, **member.options, **options,
                                    "group_id": self.id})
            full_args = member.args if member.immutable else (*(args or ()), *member.args)
            messages.append(app.build_message(member.task, full_args,
                                              _plain_kwargs({**member.kwargs,
                                                             **(kwargs or {})}),
                                              **merged))
        if messages:
            app.publish_many(messages)
        return None

    def delay(self, *args: Any, **kwargs: Any) -> GroupResult:
        """Send every member, with these arguments given to each."""
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **options: Any) -> GroupResult:
        """``group(...)(args)``: send it, as Celery's does (not run here)."""
        return self.apply_async(args, **options)

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Signature]:  # type: ignore[override]
        return iter(self.tasks)

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.tasks))})"


def _chord_size(sig: Signature) -> int:
    """How many results a chord header member adds to the join (Celery's count): a task
    1, a chain what its last step adds, a group its members', a chord its body's."""
    if isinstance(sig, chain):
        return _chord_size(sig.tasks[-1]) if sig.tasks else 0
    if isinstance(sig, group):
        return sum(map(_chord_size, sig.tasks))
    if isinstance(sig, chord):
        return _chord_size(sig.body)
    return 1


class chord(Signature):  # noqa: N801 - Celery's name
    """Run a group (the header), then one task (the body) with the list of its results.

    ``chord(header)(body)``, ``chord(header, body).apply_async()`` or ``group | sig``.
    Every header message embeds the body (``chord``) with the group id and its index; the
    worker that stores the last header result sends the body. An empty header sends the
    body at once, with ``[]``.
    """

    def __init__(self, header: Any = (), body: Any = None, args: Iterable[Any] | None = (),
                 kwargs: Mapping[str, Any] | None = None, *, app: App | None = None,
                 **options: Any) -> None:
        if isinstance(header, Mapping) and not isinstance(header, group):
            header = maybe_signature(header, app)
        if not isinstance(header, group):
            header = group(header, app=app)
        body = maybe_signature(body, app) if body is not None else None
        super().__init__("celery.chord", args,
                         {"kwargs": dict(kwargs or {}), "header": header, "body": body},
                         options, subtask_type="chord",
                         app=app or header.app or (body.app if body is not None else None))

    @property
    def tasks(self) -> group:
        header: group = self.kwargs["header"]
        return header

    header = tasks

    @property
    def body(self) -> Signature:
        body: Signature = self.kwargs["body"]
        return body

    @body.setter
    def body(self, value: Signature) -> None:
        self.kwargs["body"] = value

    @classmethod
    def _rebuild(cls, data: Mapping[str, Any], app: App | None) -> Signature:
        kwargs = data.get("kwargs") or {}
        if not isinstance(kwargs, Mapping) or "header" not in kwargs:
            raise ValueError("malformed chord signature: no kwargs.header")
        header = kwargs["header"]
        if isinstance(header, Mapping):
            header = maybe_signature(header, app, clone=True)
        elif isinstance(header, (list, tuple)):
            header = [maybe_signature(m, app, clone=True) for m in header]
        else:
            raise ValueError("malformed chord signature: kwargs.header is not a list or group")
        body = maybe_signature(kwargs.get("body"), app, clone=True)
        return chord(header, body, data.get("args"), kwargs.get("kwargs"),
                     app=app, **(data.get("options") or {}))

    def __or__(self, other: Any) -> Signature:  # type: ignore[override]
        if isinstance(other, group) and len(other.tasks) == 1:
            other = other.tasks[0]
        if isinstance(other, Signature) and not isinstance(other, (group, chain)):
            copy = self.clone()
            copy.body = copy.body | other
            return copy
        return super().__or__(other)

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               chord: Signature | None = None, root_id: str | None = None,
               parent_id: str | None = None, group_index: int | None = None
               ) -> AsyncResult[Any] | GroupResult:
        """Give the header its group id and every task its id; returns the body's result,
        whose first ``parent`` is the header's GroupResult. ``_id`` is the body's id; the
        other arguments make the body a member of an enclosing group or chord."""
        membership = _pop_membership(self.options)
        header = self.tasks
        header.options.setdefault("task_id", new_task_id())
        # only ids here, as Celery writes a chord not sent yet (inside a chain): the
        # members learn the body and the group id when the chord is sent
        header_result = header.freeze(root_id=root_id)
        body_result = self.body.freeze(
            _id, group_id=membership.get("group_id", group_id),
            chord=membership.get("chord", chord), root_id=root_id,
            group_index=membership.get("group_index", group_index))
        self.options["task_id"] = header.id  # Celery's chord id: the header's
        _set_parent(body_result, header_result)
        return body_result

    def link(self, callback: Signature | Mapping[str, Any]) -> Signature | Mapping[str, Any]:
        """Call ``callback`` with the body's result."""
        return self.body.link(callback)

    def link_error(self, errback: Signature | Mapping[str, Any]
                   ) -> Signature | Mapping[str, Any]:
        """Call ``errback`` when the chord fails: linked to the body, which the worker
        fails with a ChordError when a header task fails."""
        return self.body.link_error(errback)

    def apply(self, args: Iterable[Any] | None = (), kwargs: Mapping[str, Any] | None = None,
              **options: Any) -> Any:
        """Run the header here, now, then the body with the header's values, in order
        (Celery's ``chord.apply``); ``args`` go to the header's members. Returns the
        body's result.

        Raises:
            ChordError: a member failed (the body is not run), as in a worker.
        """
        header = self.tasks.clone().apply(args, kwargs)
        try:
            values = header.join()
        except Exception as exc:
            failed = next((r.id for r in header.results
                           if isinstance(r, EagerResult) and r.failed()), "?")
            raise ChordError(f"Dependency {failed} raised {exc!r}") from exc
        return self.body.clone().apply((values,), **{**self.options, **options})

    def __call__(self, body: Signature | None = None, **options: Any) -> Any:
        """``chord(header)(body)``: send it with this body."""
        return self.apply_async((), {"body": body} if body is not None else None, **options)

    def apply_async(self, args: Iterable[Any] | None = (),
                    kwargs: Mapping[str, Any] | None = None,
                    **options: Any) -> Any:
        """Send the header (``args`` prepended to each member); returns the body's result.

        ``link``/``link_error`` go to the body, as in Celery; ``countdown``/``eta`` to
        every header task; the other options to both.
        """
        kwargs = dict(kwargs or {})
        body = kwargs.pop("body", None) or self.body
        if body is None:
            raise ValueError("a chord needs a body: chord(header)(body) or chord(header, body)")
        sig = chord(self.tasks.clone(), maybe_signature(body, self.app).clone(),
                    self.args, self.kwargs["kwargs"], app=self.app, **self.options)
        for key, add in (("link", sig.body.link), ("link_error", sig.body.link_error)):
            for found in (sig.options.pop(key, None), options.pop(key, None)):
                for item in _as_list(found):
                    add(item)
        sig.options.update(_pop_membership(options))
        task_id = options.pop("task_id", None)
        # the chord's own options and these go to every header task and, but for the
        # header's delay, to the body, as in Celery
        options = {**{k: v for k, v in sig.options.items()
                      if k != "task_id" and k not in _MEMBERSHIP_OPTIONS}, **options}
        sig.body.options.update({k: v for k, v in options.items()
                                 if k not in ("countdown", "eta", "parent_id")})
        app = sig._app()
        partial = (*(args or ()), *sig.args) if not sig.immutable else sig.args
        if app.conf.task_always_eager:  # the header runs here, then the body with its results
            values = sig.tasks.apply_async(partial, kwargs, **options).join() \
                if sig.tasks.tasks else []
            return sig.body.apply_async((values,))
        body_result = sig.freeze(task_id)
        header = sig.tasks
        header_result = header.freeze(group_id=header.id, chord=sig.body)
        # the body (a chain's last task) carries the header's group id, unless it is a
        # member of an enclosing group already
        last = sig.body
        while isinstance(last, chain) and last.tasks:
            last = last.tasks[-1]
        last.options.setdefault("group_id", header.id)
        if not header.tasks:
            sig.body.apply_async(([],))
            return body_result
        set_chord_size = getattr(app.backend, "set_chord_size", None)
        try:
            if set_chord_size is not None:  # the backend counts the header's results
                set_chord_size(header.id, sum(map(_chord_size, header.tasks)))
        except NotImplementedError:  # it cannot: Celery's chord_unlock polls them instead
            app.publish_many([_chord_unlock_message(app, header_result, sig.body)])
        header._send(partial, kwargs, options)
        return body_result

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Send the chord, these arguments given to every header task."""
        return self.apply_async(args, kwargs)

    def __repr__(self) -> str:
        return f"chord({self.tasks!r}, {self.body!r})"


def _chord_unlock_message(app: App, header: GroupResult, body: Signature) -> Any:
    """Celery's ``celery.chord_unlock`` call for a backend that cannot join: it polls the
    header's results every second, then sends the body (sent before the header, as
    Celery does, in the body's queue)."""
    return app.build_message(
        "celery.chord_unlock", (header.id, body.to_dict()),
        {"interval": None, "max_retries": None,
         "result": [member.as_tuple() for member in header.results],
         "_chord_unlock_exchange_type": "direct"},  # Celery's, for AMQP; ignored here
        countdown=1, queue=body.options.get("queue"), priority=body.options.get("priority"))


class chunks(Signature):  # noqa: N801 - Celery's name
    """``it`` split into parts of ``n`` argument tuples, each part one ``celery.starmap``
    task of a group (Celery's ``task.chunks(it, n)``)."""

    def __init__(self, task: Signature | Mapping[str, Any], it: Iterable[Any], n: int,
                 *, app: App | None = None, **options: Any) -> None:
        if n < 1:
            raise ValueError(f"chunks of {n} items: the size must be at least 1")
        sig: Signature = maybe_signature(task, app)
        # subtask_type None, as Celery writes it: the worker runs celery.chunks by name
        super().__init__("celery.chunks", (), {"task": sig, "it": list(it), "n": n},
                         options, immutable=True, app=app or sig.app)

    @classmethod
    def _rebuild(cls, data: Mapping[str, Any], app: App | None) -> Signature:
        kwargs = data.get("kwargs") or {}
        try:
            return chunks(kwargs["task"], kwargs["it"], kwargs["n"], app=app,
                          **(data.get("options") or {}))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed chunks signature: {exc!r}") from None

    def group(self) -> group:
        """The group of ``celery.starmap`` tasks it sends."""
        task, it, n = self.kwargs["task"], self.kwargs["it"], self.kwargs["n"]
        parts = [it[i:i + n] for i in range(0, len(it), n)]
        return group([xstarmap(task, part, app=self.app) for part in parts], app=self.app)

    def apply_async(self, args: Iterable[Any] | None = (),
                    kwargs: Mapping[str, Any] | None = None, **options: Any) -> Any:
        """Send the parts as a group; returns the GroupResult (one list per part)."""
        return self.group().apply_async(args, kwargs, **{**self.options, **options})

    def __call__(self, **options: Any) -> Any:
        return self.apply_async(**options)


class _map(Signature):
    """One task that calls ``task`` for each item of ``it`` and returns the list."""

    #: the built-in task that runs it
    builtin: ClassVar[str]
    kind: ClassVar[str]

    def __init__(self, task: Signature | Mapping[str, Any], it: Iterable[Any], *,
                 app: App | None = None, **options: Any) -> None:
        sig: Signature = maybe_signature(task, app)
        super().__init__(self.builtin, (), {"task": sig, "it": list(it)}, options,
                         immutable=True, app=app or sig.app)

    @classmethod
    def _rebuild(cls, data: Mapping[str, Any], app: App | None) -> Signature:
        kwargs = data.get("kwargs") or {}
        try:
            return cls(kwargs["task"], kwargs["it"], app=app, **(data.get("options") or {}))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed {cls.kind} signature: {exc!r}") from None

    def __repr__(self) -> str:
        return f"[{self.kwargs['task']!r}(x) for x in {self.kwargs['it']!r:.60}]"


class xmap(_map):  # noqa: N801 - Celery's name
    """``[task(item) for item in it]`` in one ``celery.map`` task."""

    builtin = "celery.map"
    kind = "xmap"


class xstarmap(_map):  # noqa: N801 - Celery's name
    """``[task(*item) for item in it]`` in one ``celery.starmap`` task."""

    builtin = "celery.starmap"
    kind = "xstarmap"


Signature.TYPES.update(chain=chain, group=group, chord=chord, chunks=chunks, xmap=xmap,
                       xstarmap=xstarmap)


def signature(varies: str | Mapping[str, Any], args: Iterable[Any] | None = (),
              kwargs: Mapping[str, Any] | None = None, *, app: App | None = None,
              **options: Any) -> Signature:
    """A Signature for a task name, or (a copy of) one from a signature or its dict:
    a dict's ``subtask_type`` picks the class (chain, group, chord, ...).

    Raises:
        ValueError: a malformed signature dict, or an unknown ``subtask_type``.
    """
    if isinstance(varies, Signature):
        return varies.clone()
    if isinstance(varies, Mapping):
        return Signature.from_dict(varies, app=app)
    return Signature(varies, args, kwargs, options, app=app)


def maybe_signature(d: Any, app: App | None = None, clone: bool = False) -> Any:
    """``d`` as a Signature: None stays None, a dict is rebuilt, a Signature is kept
    (copied with ``clone``), a list is done member by member; ``app`` is bound to it
    when given.

    Raises:
        ValueError: ``d`` is none of these, or a malformed signature dict.
    """
    if d is None:
        return None
    if isinstance(d, list):  # Celery's: a list of them (link=[...])
        return [maybe_signature(item, app, clone) for item in d]
    if isinstance(d, Signature):
        if clone:
            d = d.clone()
    elif isinstance(d, Mapping):
        d = Signature.from_dict(d, app=app)
    else:
        raise ValueError(f"not a signature: {d!r:.80}")
    if app is not None:
        d.app = app
    return d


#: Celery's old name for ``signature``
subtask = signature
