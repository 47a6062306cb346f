"""``fastq beat -S django``: periodic tasks kept in django-celery-beat's tables (the real
package), edited through its models as the Django admin does, sent once by two beats,
with last_run_at and total_run_count written back."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

from tests.integration.test_beat_processes import ROOT

# the beat has no compiled twin, and the worker here only counts runs: CI's second pass
# (the pure-Python twins) leaves these out
pytestmark = pytest.mark.twin_neutral

pytest.importorskip("django_celery_beat")

SETTINGS = '''
import os
SECRET_KEY = "test"
INSTALLED_APPS = ["django_celery_beat"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.path.join(os.path.dirname(__file__), "django.sqlite3")}}
USE_TZ = True
TIME_ZONE = "UTC"
CELERY_BROKER_URL = "sqlite:///" + os.path.join(os.path.dirname(__file__), "broker.sqlite3")
CELERY_TASK_IGNORE_RESULT = True
'''

APP = '''
import os, time
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djsettings")
from fastq import App

app = App("beatdj")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.task(bind=True, name="beatdj.record")
def record(self):
    with open(os.environ["BEAT_RUNS"], "a") as fh:
        fh.write(f"{self.request.custom_headers.get('fastq_beat_run')} {time.time():.6f}\\n")
'''

ORM = '''
import os, sys, django
os.environ["DJANGO_SETTINGS_MODULE"] = "djsettings"
django.setup()
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask
action = sys.argv[1]
if action == "create":
    call_command("migrate", verbosity=0)
    every = IntervalSchedule.objects.create(every=1, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="admin-every-second", task="beatdj.record",
                                interval=every, args="[]", kwargs="{}")
    cron = CrontabSchedule.objects.create(minute="*", timezone="Europe/Berlin")
    PeriodicTask.objects.create(name="admin-minute", task="beatdj.record", crontab=cron)
elif action == "disable":
    PeriodicTask.objects.filter(name="admin-every-second").update(enabled=False)
elif action == "count":
    row = PeriodicTask.objects.get(name="admin-every-second")
    print(row.total_run_count, row.last_run_at is not None)
'''


def _run(tmp_path, env, *args: str) -> str:
    done = subprocess.run([sys.executable, *args], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_two_beats_send_the_admin_tasks_once(tmp_path):
    (tmp_path / "djsettings.py").write_text(textwrap.dedent(SETTINGS))
    (tmp_path / "beatdj.py").write_text(textwrap.dedent(APP))
    (tmp_path / "orm.py").write_text(textwrap.dedent(ORM))
    runs = tmp_path / "runs.txt"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
           "DJANGO_SETTINGS_MODULE": "djsettings", "BEAT_RUNS": str(runs)}
    _run(tmp_path, env, "orm.py", "create")
    procs = []
    try:
        for command, log in ((["worker"], "worker.log"),
                             (["beat", "-S", "django", "--max-interval", "1"], "beat0.log"),
                             (["beat", "-S", "django", "--max-interval", "1"], "beat1.log")):
            with open(tmp_path / log, "wb") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "fastq", *command, "-A", "beatdj", "-l", "info"],
                    env=env, cwd=str(tmp_path), stdout=out, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if runs.exists() and runs.read_text().count("admin-every-second@") >= 5:
                break
            time.sleep(0.2)
        else:
            raise AssertionError((tmp_path / "beat0.log").read_text())
        _run(tmp_path, env, "orm.py", "disable")  # what unticking "enabled" in the admin does
        time.sleep(3)  # seen within --max-interval 1, plus a run already in flight
        before = runs.read_text().count("admin-every-second@")
        time.sleep(3)
        assert runs.read_text().count("admin-every-second@") == before
    finally:
        for proc in procs[1:]:
            proc.terminate()
            proc.wait(timeout=20)
        time.sleep(2)  # let the worker finish what was sent
        procs[0].terminate()
        procs[0].wait(timeout=20)
    lines = [line.split()[0] for line in runs.read_text().splitlines()]
    counts = Counter(lines)
    assert max(counts.values()) == 1  # no run twice
    total, has_last = _run(tmp_path, env, "orm.py", "count").split()
    assert int(total) == sum(1 for line in lines if line.startswith("admin-every-second@"))
    assert has_last == "True"
