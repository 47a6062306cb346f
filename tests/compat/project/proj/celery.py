import os

from celery import Celery

os.environ.setdefault("COMPAT_PREFIX", "compat")

app = Celery("proj")
app.config_from_object("proj.settings")
app.autodiscover_tasks(["proj.billing"])
