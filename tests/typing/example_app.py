"""A small fastq app written the way a user writes one, with types.

``mypy --config-file tests/typing/mypy.ini tests/typing/example_app.py`` (strict) must
pass on it, and the ``assert_type`` lines pin what the public API's types are;
tests/unit/test_typing.py runs that, and runs ``main()`` too (the app is eager, so no
worker is needed), so the example stays true at runtime as well.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastq import (
    App,
    AsyncResult,
    EagerResult,
    GroupResult,
    MaxRetriesExceededError,
    PublishTimeout,
    Request,
    ResultTimeout,
    Signature,
    Task,
    TaskOptions,
    TaskRevokedError,
    TimeLimitExceeded,
    chain,
    group,
    shared_task,
    signature,
)
from fastq import TimeoutError as CeleryTimeoutError

if TYPE_CHECKING:
    from typing_extensions import Unpack, assert_type
else:
    def assert_type(value, _type):  # typing.assert_type from 3.11; a no-op either way
        return value

app = App("example", broker="memory://typing-example", task_always_eager=True)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="example.greet", queue="text", max_retries=2, rate_limit="10/s")
def greet(name: str, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


@app.task(bind=True, max_retries=3, autoretry_for=(ConnectionError,))
def fetch(self: Task[Any, Any], url: str, *, attempt: int = 0) -> bytes:
    request = self.request
    if not request.called_directly:
        assert isinstance(request, Request)
        assert_type(request.id, str)
        assert_type(request.retries, int)
        assert_type(request.eta, str | None)
        assert_type(request.delivery_info, dict[str, Any])
    if attempt > 3:
        raise self.retry(countdown=5)
    return url.encode()


class Counting(Task[Any, Any]):
    """A base class of the user's own, with state shared by its tasks."""

    calls = 0


@app.task(bind=True, base=Counting)
def count(self: Counting, step: int) -> int:
    self.calls += step
    return self.calls


@shared_task
def total(values: list[int]) -> int:
    return sum(values)


@shared_task(bind=True, ignore_result=False)
def echo(self: Task[Any, Any], text: str) -> str:
    return text


def send_later(task: Task[[int, int], int], **options: Unpack[TaskOptions]) -> int:
    """A helper of the user's own that forwards apply_async options, typed."""
    return task.apply_async((2, 3), **options).get()


def main() -> dict[str, Any]:
    """Call the tasks every way the API offers; returns what came back."""
    out: dict[str, Any] = {}

    result = add.delay(1, 2)
    assert_type(result, AsyncResult[int])
    out["add"] = assert_type(result.get(timeout=10), int)
    out["direct"] = assert_type(add(2, 2), int)

    later = add.apply_async((3, 4), countdown=0.1, queue="math", priority=5,
                            headers={"tenant": "a"}, expires=60.0, ignore_result=False)
    assert_type(later, AsyncResult[int])
    out["apply_async"] = later.get()

    assert_type(greet.delay("ann"), AsyncResult[str])
    out["greet"] = greet.delay("ann", punctuation="?").get()

    out["fetch"] = assert_type(fetch.delay("x", attempt=1).get(), bytes)
    out["count"] = assert_type(count.delay(2).get(), int)
    out["total"] = assert_type(total.delay([1, 2, 3]).get(), int)
    out["echo"] = assert_type(echo.delay("hi").get(), str)

    eager = add.apply((5, 6), throw=True)
    assert_type(eager, EagerResult[int])
    out["apply"] = eager.get()

    many = add.delay_many([(1, 1), (2, 2)])
    assert_type(many, list[AsyncResult[int]])

    # signatures, chains and groups carry no result type: their results are Any
    sig = add.s(1)
    assert_type(sig, Signature)
    assert_type(add.si(1, 1), Signature)
    assert_type(add.signature(1), Signature)
    assert_type(sig.set(countdown=1, queue="math"), Signature)
    assert_type(signature("example.greet", ("bob",), countdown=1), Signature)
    out["chain"] = (add.s(1, 1) | add.s(2) | add.s(3)).delay().get()
    out["chain2"] = chain(add.s(1, 1), add.s(10)).apply_async(queue="math").get()
    grouped = group(add.s(i, i) for i in range(3)).delay()
    assert_type(grouped, GroupResult)
    out["group"] = grouped.join(timeout=10)
    out["linked"] = add.apply_async((1, 1), link=add.s(100), link_error=[sig]).get()

    by_name = app.send_task("example.greet", ("cid",), countdown=0)
    assert_type(by_name, AsyncResult[Any])
    typed: AsyncResult[str] = by_name  # a result by name is Any until you say otherwise
    out["by_name"] = typed.get()
    assert_type(app.AsyncResult(by_name.id), AsyncResult[Any])  # by id, from anywhere

    try:
        add.delay(1, 1).get(timeout=0.5)
    except ResultTimeout:  # also fastq.TimeoutError, Celery's name
        out["timeout"] = True
    except (TaskRevokedError, TimeLimitExceeded, MaxRetriesExceededError) as exc:
        out["failed"] = exc
    except PublishTimeout:
        out["broker down"] = True
    assert CeleryTimeoutError is ResultTimeout
    out["send_later"] = send_later(add, countdown=1)
    return out


if __name__ == "__main__":
    print(main())
