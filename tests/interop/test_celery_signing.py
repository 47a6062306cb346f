"""Signed tasks across the two, on Redis: fastq signs, a real Celery 5.7 worker that
accepts only signed tasks runs them; a real Celery client signs, a fastq worker runs them
(tests/integration/test_signing.py has Celery-signed bodies refused by a fastq worker)."""

from __future__ import annotations

import os
import sys
import uuid

import pytest

pytest.importorskip("celery")
pytest.importorskip("cryptography")

from fastq import App, serialization  # noqa: E402
from tests.integration.redis_support import REDIS_URL, require_redis  # noqa: E402
from tests.interop.processes import ROOT, Proc, run_client_against_fastq_worker  # noqa: E402
from tests.pki import make_identity, write_identity  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


def test_a_task_fastq_signs_runs_on_a_celery_worker_and_a_forged_one_does_not(
        tmp_path, monkeypatch):
    require_redis()
    queue = f"signed-{uuid.uuid4().hex[:10]}"
    key, cert = make_identity("fastq and celery", 3001)
    write_identity(tmp_path / "pki", key, cert)
    env = dict(os.environ, FASTQ_BROKER_URL=REDIS_URL, FASTQ_RESULT_BACKEND=REDIS_URL,
               FASTQ_TEST_SECURITY_DIR=str(tmp_path / "pki"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    # this interpreter's celery, not the first on PATH: no skip where the venv's bin is not
    worker = Proc([sys.executable, "-m", "celery", "-A", "tests.apps.celery_signed_app", "worker", "-P", "solo",
                   "--without-gossip", "--without-mingle", "--without-heartbeat",
                   "-Q", queue, "-l", "info", "-n", f"{queue}@%h"], env,
                  str(tmp_path / "celery-worker.log"))
    # setup_security registers the auth codec for the whole process: undone afterwards
    monkeypatch.setattr(serialization, "CODECS", dict(serialization.CODECS))
    monkeypatch.setattr(serialization, "BY_CONTENT_TYPE", dict(serialization.BY_CONTENT_TYPE))
    app = App("signer", broker=REDIS_URL, result_backend=REDIS_URL, task_default_queue=queue,
              task_serializer="auth", accept_content=["auth"])
    try:
        worker.wait_until(lambda: "ready." in worker.log())
        app.setup_security(key=str(tmp_path / "pki" / "key.pem"),
                           cert=str(tmp_path / "pki" / "cert.pem"),
                           store=str(tmp_path / "pki" / "store"))
        assert app.send_task("signed.add", (20, 22)).get(timeout=20) == 42

        # signed by a key whose certificate the Celery worker does not trust
        stranger_key, stranger_cert = make_identity("stranger", 3002)
        write_identity(tmp_path / "stranger", stranger_key, stranger_cert)
        app.setup_security(key=str(tmp_path / "stranger" / "key.pem"),
                           cert=str(tmp_path / "stranger" / "cert.pem"),
                           store=str(tmp_path / "stranger" / "store"))
        forged = app.send_task("signed.add", (1, 1))
        worker.wait_until(lambda: forged.id in worker.log() or "Unknown certificate"
                          in worker.log() or "SecurityError" in worker.log(), timeout=20)
        assert forged.state == "PENDING"  # never run
        assert "Unknown certificate" in worker.log()
    finally:
        # Celery 5.7 takes seconds to exit on SIGTERM, and Proc only kills a `celery` argv[0]
        worker.proc.kill()
        worker.proc.wait(15)
        worker.stop()
        app.close()


#: A real Celery client that signs (setup_security, task_serializer='auth') and waits
#: for the result; in its own process, as setup_security changes kombu's registry for good.
CELERY_CLIENT = """
import os, sys
from celery import Celery
from tests.pki import signing_settings

app = Celery("celery-signer", broker=os.environ["FASTQ_BROKER_URL"],
             backend=os.environ["FASTQ_RESULT_BACKEND"])
# results come back as JSON, which setup_security would otherwise no longer accept
app.conf.update(result_accept_content=["json"],
                **signing_settings(os.environ["FASTQ_TEST_SECURITY_DIR"]))
app.setup_security(allowed_serializers=["json"])
assert app.conf.task_serializer == "auth"
result = app.send_task("signed.add", (20, 22), queue=sys.argv[1])
print("result:", result.get(timeout=20))
"""


def test_a_task_a_celery_client_signs_runs_on_a_fastq_worker(tmp_path):
    require_redis()
    queue = f"signed-{uuid.uuid4().hex[:10]}"
    key, cert = make_identity("celery client", 3003)
    write_identity(tmp_path / "pki", key, cert)
    env = dict(os.environ, FASTQ_BROKER_URL=REDIS_URL, FASTQ_RESULT_BACKEND=REDIS_URL,
               FASTQ_TEST_SECURITY_DIR=str(tmp_path / "pki"),
               PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    output, log = run_client_against_fastq_worker(CELERY_CLIENT, "tests.apps.signed_app", queue,
                                                  env, tmp_path)
    assert "result: 42" in output, output
    assert "signed.add" in log and "succeeded" in log, log
