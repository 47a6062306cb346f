"""Misuse of the public API that mypy must reject: the errors marked ``# E: <codes>``.

tests/unit/test_typing.py checks that mypy reports exactly these errors (line and code),
no more and no fewer, so a change that makes the types looser (an ``Any`` creeping in)
fails as surely as one that breaks the example. Never imported.
"""

from __future__ import annotations

from typing import Any

from fastq import App, Task, shared_task

app = App("errors", broker="memory://typing-errors")


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task(bind=True)
def fetch(self: Task[Any, Any], url: str) -> bytes:
    return url.encode()


@shared_task
def shout(text: str) -> str:
    return text.upper()


add.delay("a", 2)  # E: arg-type
add.delay(1)  # E: call-arg
add(1, 2, 3)  # E: call-arg
add.delay(1, 2, z=3)  # E: call-arg
text: str = add.delay(1, 2).get()  # E: assignment
add.apply_async((1, 2), countdwn=5)  # E: call-arg
add.apply_async((1, 2), countdown="soon")  # E: arg-type
add.apply_async((1, 2), link="example.other")  # E: arg-type
add.s(1).set(queue=1)  # E: arg-type
fetch.delay(b"x")  # E: arg-type
fetch.delay(fetch, "x")  # E: call-arg, arg-type
shout.delay(1)  # E: arg-type
number: int = shout(text="a")  # E: assignment


@app.task(max_retry=3)  # E: call-overload, untyped-decorator
def misspelt() -> None: ...


@app.task(name=5)  # E: call-overload, untyped-decorator
def badly_named() -> None: ...


# bind=True passes the task first: a function without that parameter is refused
@app.task(bind=True)  # E: arg-type
def forgot_self(x: int) -> int:
    return x
