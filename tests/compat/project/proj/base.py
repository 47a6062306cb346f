from celery import Task

from .events import record


class TrackedTask(Task):
    """The project's base class: every outcome goes to the audit trail."""

    def before_start(self, task_id, args, kwargs):
        record("before_start", self.name, task_id)

    def on_success(self, retval, task_id, args, kwargs):
        record("on_success", self.name, task_id, retval)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        record("on_failure", self.name, task_id, type(exc).__name__)

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        record("on_retry", self.name, task_id, type(exc).__name__)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        record("after_return", self.name, task_id, status)


class CountingTask(TrackedTask):
    """A base class overriding __call__, as projects do to wrap every run."""

    def __call__(self, *args, **kwargs):
        record("call", self.name, self.request.id)
        return super().__call__(*args, **kwargs)
