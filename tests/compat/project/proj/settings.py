"""The project's Celery settings: the ones a production Celery 5 project commonly has."""

import os

from kombu import Exchange, Queue

PREFIX = os.environ["COMPAT_PREFIX"]
DEFAULT, BILLING, REPORTS = f"{PREFIX}-default", f"{PREFIX}-billing", f"{PREFIX}-reports"

broker_url = os.environ.get("COMPAT_BROKER_URL", "redis://127.0.0.1:6379/9")
result_backend = os.environ.get("COMPAT_RESULT_BACKEND", broker_url)
broker_transport_options = {"visibility_timeout": 3600}
broker_connection_retry_on_startup = True
broker_heartbeat = 10
broker_pool_limit = 10

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

result_expires = 3600
result_extended = True

task_default_queue = DEFAULT
task_default_exchange = DEFAULT
task_default_routing_key = DEFAULT
task_queues = (
    Queue(DEFAULT, Exchange(DEFAULT), routing_key=DEFAULT),
    Queue(BILLING, Exchange(BILLING), routing_key=BILLING),
    Queue(REPORTS, Exchange(REPORTS, type="direct"), routing_key=REPORTS),
)
task_routes = {
    "proj.billing.tasks.*": {"queue": BILLING},
    "proj.reports.report": {"queue": REPORTS, "routing_key": REPORTS},
}
task_create_missing_queues = True
task_annotations = {"proj.tasks.add": {"rate_limit": "1000/s"}}

task_acks_late = True
task_reject_on_worker_lost = True
task_track_started = True
task_time_limit = 60
task_soft_time_limit = 50
task_default_retry_delay = 1
task_store_errors_even_if_ignored = True
task_send_sent_event = True
task_always_eager = os.environ.get("COMPAT_EAGER") == "1"
task_eager_propagates = True

worker_prefetch_multiplier = 1
worker_max_tasks_per_child = 1000
worker_send_task_events = True
worker_hijack_root_logger = False
worker_cancel_long_running_tasks_on_connection_loss = True

beat_schedule = {
    "nightly-report": {"task": "proj.reports.report", "schedule": 24 * 3600.0, "args": ("nightly",)},
}

imports = ("proj.signals", "proj.tasks", "proj.reports")
