"""A worker app whose signal receivers and Task hooks append "<pid> <what> <detail>" lines
to FASTQ_TEST_SIGNAL_LOG, for tests/integration/test_worker_signals.py."""

import os

from fastq import App, Task, signals

app = App("tests.apps.signals_app")

LOG = os.environ.get("FASTQ_TEST_SIGNAL_LOG", "/dev/null")


def _write(what: str, detail: object = "-") -> None:
    with open(LOG, "a") as fh:
        fh.write(f"{os.getpid()} {what} {detail}\n")


def _receiver(name):
    def receiver(sender=None, **kwargs):
        task = kwargs.get("task") or kwargs.get("request") or sender
        _write(name, getattr(task, "name", "-") if name.startswith("task_") else "-")
    return receiver


#: (signal, receiver) connected at import; a test importing this module in its own
#: process disconnects them afterwards, so no other test sees them
CONNECTED = []
for _name in ("celeryd_init", "import_modules", "worker_init", "celeryd_after_setup",
              "worker_ready", "worker_process_init", "worker_process_shutdown",
              "worker_shutting_down", "worker_shutdown", "task_received", "task_prerun",
              "task_success", "task_failure", "task_postrun"):
    _signal, _handler = getattr(signals, _name), _receiver(_name)
    _signal.connect(_handler, weak=False)
    CONNECTED.append((_signal, _handler))


class Hooked(Task):
    def on_success(self, retval, task_id, args, kwargs):
        _write("on_success", retval)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        _write("on_failure", type(exc).__name__)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        _write("after_return", status)


@app.task(name="s.add", base=Hooked)
def add(x, y):
    return x + y


@app.task(name="s.fail", base=Hooked)
def fail():
    raise KeyError("nope")
