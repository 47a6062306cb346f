"""The project's checks, run against a live worker (``python checks.py worker``) or in
eager mode (``COMPAT_EAGER=1 python checks.py eager``, the project's unit tests).

Prints one JSON object: check name -> "ok" or "fail: <why>". Written for Celery; the
migration test runs it again with the imports changed.
"""

import json
import os
import sys
import time
import traceback
from datetime import datetime

import proj.signals  # noqa: F401 - the publish signals are the client's
from celery import group, states
from celery.result import AsyncResult, EagerResult
from proj import app, events
from proj.billing.tasks import charge
from proj.reports import report
from proj.settings import BILLING, REPORTS
from proj.tasks import (
    add,
    autoretried,
    counted,
    fail,
    flaky,
    mul,
    progress,
    quiet,
    record_value,
    shared_echo,
    whoami,
)

#: seconds to wait for one result (the first also waits for the worker to start)
WAIT = 20


def wait_for_event(*record, timeout=5.0):
    """Until a line starting with ``record`` is in the events file."""
    wanted = [str(v) for v in record]
    deadline = time.monotonic() + timeout
    while True:
        for line in events.read():
            if line[:len(wanted)] == wanted:
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no event {wanted} (have {len(events.read())} events)")
        time.sleep(0.05)


# -- checks run against a worker ------------------------------------------------------
def check_delay_get():
    assert add.delay(2, 3).get(timeout=60) == 5


def check_send_task_by_name():
    assert app.send_task("proj.tasks.add", (1, 2)).get(timeout=WAIT) == 3


def check_result_by_id():
    sent = add.delay(4, 4)
    sent.get(timeout=WAIT)
    found = AsyncResult(sent.id, app=app)
    assert found.get(timeout=WAIT) == 8
    assert found.state == states.SUCCESS and found.successful() and found.ready()


def check_hooks_on_success():
    result = add.delay(5, 5)
    assert result.get(timeout=WAIT) == 10
    wait_for_event("before_start", "proj.tasks.add", result.id)
    wait_for_event("on_success", "proj.tasks.add", result.id, 10)
    wait_for_event("after_return", "proj.tasks.add", result.id, states.SUCCESS)


def check_failure_propagates():
    result = fail.delay("boom")
    try:
        result.get(timeout=WAIT)
    except ValueError as exc:
        assert "boom" in str(exc)
    else:
        raise AssertionError("no ValueError")
    assert result.state == states.FAILURE and result.failed()
    assert isinstance(result.info, ValueError)


def check_hooks_on_failure():
    result = fail.delay("hooked")
    result.get(timeout=WAIT, propagate=False)
    wait_for_event("on_failure", "proj.tasks.fail", result.id, "ValueError")
    wait_for_event("after_return", "proj.tasks.fail", result.id, states.FAILURE)
    wait_for_event("task_failure", "proj.tasks.fail", result.id, "ValueError")


def check_retry():
    result = flaky.delay()
    assert result.get(timeout=WAIT) == 1
    wait_for_event("on_retry", "proj.tasks.flaky", result.id, "ConnectionError")
    wait_for_event("task_retry", "proj.tasks.flaky", result.id)


def check_autoretry():
    assert autoretried.delay().get(timeout=WAIT) == 1


def check_update_state_progress():
    result = progress.delay(2)
    try:
        deadline = time.monotonic() + WAIT
        # two updates (done 1, then 2): wait for the last, read state and info together
        while (result.state, result.info) != ("PROGRESS", {"done": 2, "total": 2}):
            assert time.monotonic() < deadline, f"stayed {result.state} {result.info}"
            time.sleep(0.05)
        assert not result.ready()
    finally:
        open(f"{os.environ['COMPAT_EVENTS']}.release-{result.id}", "w").close()
    assert result.get(timeout=WAIT) == {"done": 2}
    assert result.info == {"done": 2}


def check_request_fields():
    result = whoami.delay()
    seen = result.get(timeout=WAIT)
    assert seen["id"] == result.id and seen["retries"] == 0, seen
    assert seen["is_eager"] is False and seen["called_directly"] is False, seen
    assert seen["hostname"] is True, seen


def check_task_routes_queue():
    assert charge.delay(5).get(timeout=WAIT) == {"amount": 5, "queue": BILLING}


def check_explicit_queue():
    assert add.apply_async((1, 1), queue=REPORTS).get(timeout=WAIT) == 2


def check_exchange_routing_key():
    seen = whoami.apply_async(exchange=REPORTS, routing_key=REPORTS).get(timeout=WAIT)
    assert seen["routing_key"] == REPORTS, seen


def check_task_routes_routing_key():
    assert report.delay("daily").get(timeout=WAIT) == REPORTS


def check_chain_and_parent():
    result = (add.s(1, 2) | mul.s(10)).apply_async()
    assert result.get(timeout=WAIT) == 30
    assert result.parent is not None and result.parent.get(timeout=WAIT) == 3


def check_group():
    assert group(add.s(i, i) for i in range(3)).apply_async().get(timeout=WAIT) == [0, 2, 4]


def check_link_callback():
    result = add.apply_async((2, 2), link=record_value.s())
    assert result.get(timeout=WAIT) == 4
    wait_for_event("linked", 4)


def check_signals_in_worker():
    result = add.delay(6, 6)
    result.get(timeout=WAIT)
    wait_for_event("task_prerun", "proj.tasks.add", result.id)
    wait_for_event("task_postrun", "proj.tasks.add", result.id, states.SUCCESS)
    wait_for_event("task_success", "proj.tasks.add", result.id)


def check_signals_on_publish():
    result = add.delay(7, 7)
    wait_for_event("before_task_publish", "proj.tasks.add", result.id, timeout=0)
    wait_for_event("after_task_publish", "proj.tasks.add", result.id, timeout=0)
    result.get(timeout=WAIT)


def check_worker_ready_signal():
    wait_for_event("worker_ready")


def check_call_override():
    result = counted.delay(3)
    assert result.get(timeout=WAIT) == 6
    wait_for_event("call", "proj.tasks.counted", result.id)


def check_result_extended():
    result = add.delay(2, 3)
    result.get(timeout=WAIT)
    fresh = AsyncResult(result.id, app=app)
    assert fresh.name == "proj.tasks.add", fresh.name
    assert list(fresh.args) == [2, 3] and fresh.kwargs == {}, (fresh.args, fresh.kwargs)
    assert isinstance(fresh.date_done, datetime), fresh.date_done


def check_ignore_result():
    result = quiet.delay()
    wait_for_event("quiet", result.id, timeout=WAIT)
    time.sleep(0.2)
    assert result.state == states.PENDING, result.state


def check_shared_task():
    assert shared_echo.delay("hi").get(timeout=WAIT) == "hi"


def check_states_module():
    assert states.state("PROGRESS") > states.state(states.STARTED)
    assert states.state(states.PENDING) < states.state(states.SUCCESS)
    assert states.SUCCESS in states.READY_STATES and states.RETRY in states.UNREADY_STATES


def check_autodiscover():
    app.loader.import_default_modules()
    assert "proj.billing.tasks.charge" in app.tasks


WORKER_CHECKS = [name for name in list(globals()) if name.startswith("check_")]


# -- the project's unit tests: eager mode ---------------------------------------------
def eager_delay_get():
    result = add.delay(2, 3)
    assert isinstance(result, EagerResult) and result.get() == 5


def eager_apply():
    assert add.apply((1, 1)).get() == 2


def eager_hooks():
    result = add.delay(8, 1)
    wait_for_event("on_success", "proj.tasks.add", result.id, 9, timeout=0)
    wait_for_event("after_return", "proj.tasks.add", result.id, states.SUCCESS, timeout=0)


def eager_failure_propagates():
    try:
        fail.delay("eager boom")
    except ValueError as exc:
        assert "eager boom" in str(exc)
    else:
        raise AssertionError("no ValueError")


def eager_chain():
    result = (add.s(1, 2) | mul.s(10)).apply_async()
    assert result.get() == 30
    assert result.parent is not None and result.parent.get() == 3


def eager_group():
    assert group(add.s(i, i) for i in range(3)).apply_async().get() == [0, 2, 4]


def eager_link():
    add.apply_async((3, 3), link=record_value.s())
    wait_for_event("linked", 6, timeout=0)


def eager_retry():
    # with task_eager_propagates, Celery raises Retry out of delay(); apply(throw=False)
    # runs the retry in place
    assert flaky.apply(throw=False).get() == 1


def eager_autoretry():
    assert autoretried.apply(throw=False).get() == 1


def eager_signals():
    result = add.delay(9, 9)
    wait_for_event("task_prerun", "proj.tasks.add", result.id, timeout=0)
    wait_for_event("task_postrun", "proj.tasks.add", result.id, states.SUCCESS, timeout=0)


def eager_request_fields():
    seen = whoami.delay().get()
    assert seen["is_eager"] is True and seen["called_directly"] is False, seen


def eager_update_state():
    assert progress.delay(2).get() == {"done": 2}


def eager_call_override():
    result = counted.delay(4)
    assert result.get() == 8
    wait_for_event("call", "proj.tasks.counted", result.id, timeout=0)


def eager_delay_on_commit():
    # Celery 5.4: with Django, a task of the app's default base class sends on commit
    import django
    from django.db import transaction

    django.setup()
    with transaction.atomic():
        record_value.delay_on_commit("committed")
        assert not [e for e in events.read() if e == ["linked", "committed"]]
    wait_for_event("linked", "committed", timeout=0)
    try:
        with transaction.atomic():
            record_value.delay_on_commit("rolled back")
            raise KeyError("roll back")
    except KeyError:
        pass
    assert ["linked", "rolled back"] not in events.read()


def eager_direct_call():
    assert add(2, 2) == 4
    assert whoami()["called_directly"] is True


EAGER_CHECKS = [name for name in list(globals()) if name.startswith("eager_")]


def main(mode):
    names = WORKER_CHECKS if mode == "worker" else EAGER_CHECKS
    outcomes = {}
    for name in names:
        try:
            globals()[name]()
        except Exception as exc:
            last = traceback.extract_tb(exc.__traceback__)[-1]
            outcomes[name] = (f"fail: {type(exc).__name__}: {str(exc)[:300]} "
                              f"(line {last.lineno}: {last.line})")
        else:
            outcomes[name] = "ok"
    print(json.dumps(outcomes))


if __name__ == "__main__":
    main(sys.argv[1])
