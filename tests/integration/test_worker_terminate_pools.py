"""revoke(terminate=True) on the gevent, eventlet and solo pools: the task gets
TaskTerminated where it sleeps (in its greenlet, ``time.sleep`` patched; solo: by a signal
to the main thread), a sibling greenlet runs on, and the worker keeps taking tasks (real
worker processes on Redis). Prefork, asyncio and threads: ``test_worker_terminate.py``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from fastq import App, TaskRevokedError
from tests.integration.conftest import read_runs
from tests.integration.redis_support import REDIS_URL, require_redis
from tests.integration.test_worker_terminate import LONG, _wait_for_run
from tests.interop.processes import ROOT

# the pools' own code: the consumer loop under them is covered on both twins elsewhere
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


@pytest.mark.parametrize("library", ["gevent", "eventlet", "solo"])
def test_a_sleeping_task_is_terminated_within_two_seconds(tmp_path, library):
    require_redis()
    green = library != "solo"
    if green:
        pytest.importorskip(library)
    queue = f"terminate-{library}-{uuid.uuid4().hex[:8]}"
    hostname = f"{queue}@test"
    run_log = tmp_path / "runs.log"
    env = dict(os.environ, FASTQ_BROKER_URL=REDIS_URL, FASTQ_RESULT_BACKEND=REDIS_URL,
               FASTQ_WORKER_STATE_DIR=str(tmp_path / "workers"),
               FASTQ_TEST_RUN_LOG=str(run_log),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    app = App(f"terminate-{library}", broker_url=REDIS_URL, result_backend=REDIS_URL,
              task_default_queue=queue)
    long = app.send_task("t.sleep", (LONG,))
    sibling = app.send_task("t.sleep", (3.0,)) if green else None
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastq", "worker", "-A", "tests.apps.redis_app", "-P",
             library, "-c", "4" if green else "1", "-Q", queue, "-n", hostname, "-l", "info"],
            env=env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_run(run_log, long.id, timeout=30)
        if sibling is not None:
            _wait_for_run(run_log, sibling.id, timeout=10)
        asked = time.monotonic()
        long.revoke(terminate=True)
        with pytest.raises(TaskRevokedError, match="terminated"):
            long.get(timeout=10)
        assert time.monotonic() - asked < 2.0
        assert long.state == "REVOKED"
        if sibling is not None:  # only the revoked task's greenlet was interrupted
            assert sibling.get(timeout=20) == 3.0
        assert app.send_task("t.add", (2, 3)).get(timeout=20) == 5  # the worker goes on
        proc.terminate()
        assert proc.wait(20) == 0
        assert len([r for r in read_runs(run_log) if r[0] == long.id]) == 1  # acked, not rerun
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        app.close()
    output = (tmp_path / "worker.log").read_text()
    assert f"Task t.sleep[{long.id}] terminated" in output, output
    assert "Traceback" not in output, output
