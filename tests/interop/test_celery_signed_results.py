"""Signed results across the two, on Redis (``result_serializer='auth'``): a fastq worker
stores a signed result a real Celery 5.7 client reads (accepting only signed results),
and a Celery worker's signed result is read by a fastq client; both in their own
processes where setup_security would change the registry for good."""

from __future__ import annotations

import base64
import os
import sys
import uuid

import pytest

pytest.importorskip("celery")
pytest.importorskip("cryptography")

from fastq import App, serialization  # noqa: E402
from fastq.security import AUTH_CONTENT_TYPE  # noqa: E402
from tests.integration.redis_support import REDIS_URL, require_redis  # noqa: E402
from tests.interop.processes import (  # noqa: E402
    ROOT,
    Proc,
    run_client_against_fastq_worker,
)
from tests.pki import make_identity, signing_settings, write_identity  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]


def environment(tmp_path) -> dict:
    return dict(os.environ, FASTQ_BROKER_URL=REDIS_URL, FASTQ_RESULT_BACKEND=REDIS_URL,
                FASTQ_TEST_SECURITY_DIR=str(tmp_path / "pki"), FASTQ_TEST_SIGN_RESULTS="1",
                PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


#: A real Celery client that signs its task and reads only signed results.
CELERY_CLIENT = """
import os, sys
import redis
from celery import Celery
from tests.pki import signing_settings

app = Celery("celery-signer", broker=os.environ["FASTQ_BROKER_URL"],
             backend=os.environ["FASTQ_RESULT_BACKEND"])
app.conf.update(result_serializer="auth", result_accept_content=["auth"],
                **signing_settings(os.environ["FASTQ_TEST_SECURITY_DIR"]))
app.setup_security()
result = app.send_task("signed.add", (20, 22), queue=sys.argv[1])
print("result:", result.get(timeout=20))
stored = redis.Redis.from_url(os.environ["FASTQ_RESULT_BACKEND"]).get(
    "celery-task-meta-" + result.id)
print("stored:", stored[:1].decode())
"""


def test_a_result_a_fastq_worker_signs_is_read_by_a_celery_client(tmp_path):
    require_redis()
    queue = f"signed-results-{uuid.uuid4().hex[:10]}"
    key, cert = make_identity("fastq worker", 3101)
    write_identity(tmp_path / "pki", key, cert)
    output, _ = run_client_against_fastq_worker(CELERY_CLIENT, "tests.apps.signed_app", queue,
                                                environment(tmp_path), tmp_path)
    assert "result: 42" in output, output
    assert "stored: {" not in output  # signed, not the JSON document


def test_a_result_a_celery_worker_signs_is_read_by_a_fastq_client(tmp_path, monkeypatch):
    require_redis()
    queue = f"signed-results-{uuid.uuid4().hex[:10]}"
    key, cert = make_identity("celery worker", 3102)
    write_identity(tmp_path / "pki", key, cert)
    worker = Proc([sys.executable, "-m", "celery", "-A", "tests.apps.celery_signed_app",
                   "worker", "-P", "solo", "--without-gossip", "--without-mingle",
                   "--without-heartbeat", "-Q", queue, "-l", "info", "-n", f"{queue}@%h"],
                  environment(tmp_path), str(tmp_path / "celery-worker.log"))
    # setup_security registers the auth codec for the whole process: undone afterwards
    monkeypatch.setattr(serialization, "CODECS", dict(serialization.CODECS))
    monkeypatch.setattr(serialization, "BY_CONTENT_TYPE", dict(serialization.BY_CONTENT_TYPE))
    app = App("signed-results", broker=REDIS_URL, result_backend=REDIS_URL,
              task_default_queue=queue, result_serializer="auth",
              **signing_settings(str(tmp_path / "pki")))
    try:
        worker.wait_until(lambda: "ready." in worker.log())
        app.setup_security()
        result = app.send_task("signed.add", (20, 22))
        assert result.get(timeout=20) == 42, worker.log()
        stored = app.backend._get_many([result.id])[result.id]
        assert not stored.startswith(b"{")  # Celery signed it: fastq verified it
        assert app.backend.signed and serialization.codec("auth").content_type \
            == AUTH_CONTENT_TYPE
    finally:
        # Celery 5.7 takes seconds to exit on SIGTERM, and Proc only kills a `celery` argv[0]
        worker.proc.kill()
        worker.proc.wait(15)
        worker.stop()
        app.close()


def test_a_signed_store_keeps_a_success_on_redis(tmp_path, monkeypatch):
    """Redis checks for a stored SUCCESS inside its write by decoding JSON, which a signed
    value is not: the signed path reads first, as Celery does."""
    require_redis()
    key, cert = make_identity("sticky", 3103)
    write_identity(tmp_path / "pki", key, cert)
    monkeypatch.setattr(serialization, "CODECS", dict(serialization.CODECS))
    monkeypatch.setattr(serialization, "BY_CONTENT_TYPE", dict(serialization.BY_CONTENT_TYPE))
    app = App("signed-sticky", broker=REDIS_URL, result_backend=REDIS_URL,
              result_serializer="auth", **signing_settings(str(tmp_path / "pki")))
    app.setup_security()
    task_id = f"sticky-{uuid.uuid4().hex}"
    try:
        app.backend.store(task_id, "SUCCESS", 42)
        app.backend.store(task_id, "STARTED", None)
        assert app.AsyncResult(task_id).get(timeout=5) == 42
    finally:
        app.backend.forget(task_id)
        app.close()


def test_rpc_replies_are_signed_and_a_tampered_one_is_refused(tmp_path, monkeypatch):
    """The rpc:// backend sends each result signed (content type application/data) and
    verifies each reply before a ``get`` sees it."""
    from fastq.backends.rpc import CORRELATION_ID_KEY, REPLY_TO_KEY
    from fastq.exceptions import SecurityError
    from tests.integration.test_amqp_broker import URL, delete_queues

    key, cert = make_identity("rpc", 3104)
    write_identity(tmp_path / "pki", key, cert)
    monkeypatch.setattr(serialization, "CODECS", dict(serialization.CODECS))
    monkeypatch.setattr(serialization, "BY_CONTENT_TYPE", dict(serialization.BY_CONTENT_TYPE))
    settings = dict(broker=URL, result_backend="rpc://", result_serializer="auth",
                    **signing_settings(str(tmp_path / "pki")))
    client, worker = App("rpc-client", **settings), App("rpc-worker", **settings)
    client.setup_security()
    try:
        reply_to = client.backend.reply_queue
    except ConnectionError:
        pytest.skip("RabbitMQ is not running")
    try:
        assert (worker.backend._content_type, worker.backend._content_encoding) \
            == (AUTH_CONTENT_TYPE, "utf-8")  # as Celery's rpc backend labels them
        ok, bad, unsigned = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
        worker.backend.store(ok, "SUCCESS", {"answer": 42},
                             extra={REPLY_TO_KEY: reply_to, CORRELATION_ID_KEY: ok})
        assert client.AsyncResult(ok).get(timeout=10) == {"answer": 42}

        sign = worker.backend._dump_meta

        def flipped(meta: dict) -> bytes:
            envelope = bytearray(base64.b64decode(sign(meta)))
            envelope[-5] ^= 0x01  # one bit of the signed JSON document
            return base64.b64encode(bytes(envelope))

        monkeypatch.setattr(worker.backend, "_dump_meta", flipped)
        worker.backend.store(bad, "SUCCESS", 1,
                             extra={REPLY_TO_KEY: reply_to, CORRELATION_ID_KEY: bad})
        with pytest.raises(SecurityError, match="stored result refused.*bad signature"):
            client.AsyncResult(bad).get(timeout=10)

        monkeypatch.setattr(worker.backend, "_dump_meta", serialization.json_dumps)
        worker.backend.store(unsigned, "SUCCESS", 1,
                             extra={REPLY_TO_KEY: reply_to, CORRELATION_ID_KEY: unsigned})
        with pytest.raises(SecurityError, match="stored result refused.*not a signed body"):
            client.AsyncResult(unsigned).get(timeout=10)
    finally:
        worker.close()
        client.close()
        delete_queues([reply_to])
