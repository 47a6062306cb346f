"""Signed messages end to end: a worker with accept_content=['auth'] runs what fastq and
Celery sign with a trusted certificate and dead-letters the rest with reason signature."""

from __future__ import annotations

import base64
import importlib
import sys
import time
import uuid

import orjson
import pytest

pytest.importorskip("cryptography")

from fastq import serialization  # noqa: E402
from fastq.protocol import Message  # noqa: E402
from fastq.security import Certificate  # noqa: E402
from tests.integration.conftest import WorkerProcess  # noqa: E402
from tests.integration.redis_support import REDIS_URL, delete_keys, require_redis  # noqa: E402
from tests.pki import make_identity, write_identity  # noqa: E402

pytestmark = pytest.mark.integration


class SignedWorker(WorkerProcess):
    app_module = "tests.apps.signed_app"


def _start(sqlite_env, monkeypatch, url: str, *worker_args: str, trusted: tuple = ()):
    """(worker, producer app, key/cert PEMs) on ``url``: both sign with the same
    identity and trust it and the ``trusted`` certificates; the auth codec is taken out of
    this process again when the test ends."""
    tmp_path, _url, run_log, env = sqlite_env
    key, cert = make_identity("fastq signer", 2001)
    write_identity(tmp_path / "pki", key, cert)
    for n, pem in enumerate(trusted):
        (tmp_path / "pki" / "store" / f"trusted-{n}.pem").write_bytes(pem)
    monkeypatch.setenv("FASTQ_TEST_SECURITY_DIR", str(tmp_path / "pki"))
    monkeypatch.setenv("FASTQ_BROKER_URL", url)
    env = dict(env, FASTQ_TEST_SECURITY_DIR=str(tmp_path / "pki"), FASTQ_BROKER_URL=url)
    monkeypatch.setattr(serialization, "CODECS", dict(serialization.CODECS))
    monkeypatch.setattr(serialization, "BY_CONTENT_TYPE", dict(serialization.BY_CONTENT_TYPE))
    sys.modules.pop("tests.apps.signed_app", None)
    producer = importlib.import_module("tests.apps.signed_app").app
    worker = SignedWorker(tmp_path, url, run_log, env)
    try:
        worker.start(*worker_args)
    except BaseException:
        producer.close()
        raise
    return worker, producer, key, cert


@pytest.fixture
def started(monkeypatch):
    """Stops what ``_start`` started, at the end of the test."""
    running = []
    yield running
    for worker, producer, *_ in running:
        worker.stop()
        producer.close()
    sys.modules.pop("tests.apps.signed_app", None)


@pytest.fixture
def signed(sqlite_env, monkeypatch, started):
    """A signing worker and producer on the test's SQLite broker."""
    started.append(_start(sqlite_env, monkeypatch, sqlite_env[1]))
    return started[-1]


def celery_signed(body, key: bytes, cert: bytes, trusted: bytes) -> bytes:
    from celery.security.certificate import Certificate, CertStore
    from celery.security.key import PrivateKey
    from celery.security.serialization import SecureSerializer

    store = CertStore()
    store.add_cert(Certificate(trusted.decode()))
    return SecureSerializer(PrivateKey(key.decode()), Certificate(cert.decode()),
                            store).serialize(body).encode()


def test_signed_tasks_run_and_the_rest_is_dead_lettered(signed):
    worker, producer, key, cert = signed
    assert producer.tasks["signed.add"].delay(2, 3).get(timeout=20) == 5

    template = producer.build_message("signed.add", (1, 1))
    assert template.properties["content_type"] == "application/data"

    def message(body: bytes, content_type: str = "application/data") -> Message:
        headers = dict(template.headers, id=str(uuid.uuid4()))
        return Message(headers, dict(template.properties, content_type=content_type,
                                     correlation_id=headers["id"]), body, queue="celery")

    plain = [[20, 22], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    by_celery = message(celery_signed(plain, key, cert, cert))
    fields = base64.b64decode(template.body).split(b"\x00\x01", 4)
    tampered_body = fields[4].replace(b"1", b"7", 1)
    tampered = message(base64.b64encode(b"\x00\x01".join([*fields[:4], tampered_body])))
    stranger_key, stranger_cert = make_identity("stranger", 2002)
    untrusted = message(celery_signed(plain, stranger_key, stranger_cert, stranger_cert))
    unsigned = message(orjson.dumps(plain), "application/json")
    producer.broker.publish_many([by_celery, tampered, untrusted, unsigned])

    assert producer.AsyncResult(by_celery.headers["id"]).get(timeout=20) == 42
    letters = {d["headers"]["id"]: d["reason"] for d in _dead_letters(producer, 3)}
    assert letters.keys() == {tampered.headers["id"], untrusted.headers["id"],
                              unsigned.headers["id"]}
    assert all(reason.startswith("signature: ") for reason in letters.values()), letters
    assert "bad signature" in letters[tampered.headers["id"]]
    assert "unknown signer" in letters[untrusted.headers["id"]]
    assert "unsigned message" in letters[unsigned.headers["id"]]
    assert _counter(worker, "bad_signatures", 3) == 3
    assert worker.proc.poll() is None


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_an_expired_signer_is_refused_and_inspect_stats_counts_the_rejects(
        sqlite_env, monkeypatch, started, pool):
    """On Redis (SQLite carries no control replies): a certificate the worker trusted
    when it started expires; what it signed is then dead-lettered with reason signature,
    and ``inspect stats`` counts that reject and an unsigned one as ``bad_signatures``
    (a prefork parent sums its children's)."""
    require_redis()
    prefix = f"signing-{uuid.uuid4().hex[:8]}:"
    url = f"{REDIS_URL}?global_keyprefix={prefix}"
    hostname = f"{prefix[:-1]}@test"
    expiring_key, expiring_cert = make_identity("short-lived signer", 2003, valid_for=6)
    try:
        started.append(_start(sqlite_env, monkeypatch, url, "-n", hostname, "-P", pool,
                              "-c", "1", trusted=(expiring_cert,)))
        worker, producer, *_ = started[-1]
        template = producer.build_message("signed.add", (1, 1))

        def message(body: bytes, content_type: str = "application/data") -> Message:
            headers = dict(template.headers, id=str(uuid.uuid4()))
            return Message(headers, dict(template.properties, content_type=content_type,
                                         correlation_id=headers["id"]), body,
                           queue=template.queue)

        plain = [[20, 22], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                "chord": None}]
        while Certificate(expiring_cert).has_expired() is False:
            time.sleep(0.1)
        expired = message(celery_signed(plain, expiring_key, expiring_cert, expiring_cert))
        unsigned = message(orjson.dumps(plain), "application/json")
        producer.broker.publish_many([expired, unsigned])

        letters = {d["headers"]["id"]: d["reason"] for d in _dead_letters(producer, 2)}
        assert letters.keys() == {expired.headers["id"], unsigned.headers["id"]}, letters
        assert letters[expired.headers["id"]].startswith("signature: ")
        assert "has expired" in letters[expired.headers["id"]], letters
        # the count is kept beside Celery's entries of the reply
        # a prefork child reports its counters to the parent with its status, so poll
        deadline = time.monotonic() + 15
        while True:
            stats = producer.control.inspect(destination=[hostname], timeout=5).stats()
            if stats[hostname]["bad_signatures"] == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert stats[hostname]["bad_signatures"] == 2, stats
        assert stats[hostname]["pool"]["max-concurrency"] >= 1
        assert worker.proc.poll() is None
    finally:
        delete_keys(f"{prefix}*")


def _counter(worker, name: str, expected: int, timeout: float = 20) -> int:
    """The worker's counter ``name`` from its health file, once it reaches ``expected``
    (the file is rewritten every few seconds) or at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        with open(worker.health_file, "rb") as fh:
            value = orjson.loads(fh.read())["counters"][name]
        if value >= expected or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def _dead_letters(producer, count: int, timeout: float = 20) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        letters = producer.broker.dead_letters()
        if len(letters) >= count or time.monotonic() > deadline:
            return letters
        time.sleep(0.05)
