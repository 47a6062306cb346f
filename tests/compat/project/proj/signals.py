from celery.signals import (
    after_task_publish,
    before_task_publish,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    task_success,
    worker_ready,
)

from .events import record


@before_task_publish.connect
def on_before_publish(sender=None, headers=None, **kwargs):
    record("before_task_publish", sender, headers["id"])


@after_task_publish.connect
def on_after_publish(sender=None, headers=None, **kwargs):
    record("after_task_publish", sender, headers["id"])


@task_prerun.connect
def on_prerun(sender=None, task_id=None, **kwargs):
    record("task_prerun", sender.name, task_id)


@task_postrun.connect
def on_postrun(sender=None, task_id=None, state=None, **kwargs):
    record("task_postrun", sender.name, task_id, state)


@task_success.connect
def on_task_success(sender=None, result=None, **kwargs):
    record("task_success", sender.name, sender.request.id)


@task_failure.connect
def on_task_failure(sender=None, task_id=None, exception=None, **kwargs):
    record("task_failure", sender.name, task_id, type(exception).__name__)


@task_retry.connect
def on_task_retry(sender=None, request=None, **kwargs):
    record("task_retry", sender.name, request.id)


@worker_ready.connect
def on_worker_ready(sender=None, **kwargs):
    record("worker_ready")
