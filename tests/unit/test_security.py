"""Message signing: the auth serializer's envelope, byte-compatible with Celery 5.7's."""

from __future__ import annotations

import base64

import pytest

pytest.importorskip("cryptography")

from fastq import App, serialization  # noqa: E402
from fastq.exceptions import ConfigurationError, MessageRejected, SecurityError  # noqa: E402
from fastq.protocol import decode_task  # noqa: E402
from fastq.security import Certificate, CertStore, PrivateKey, Signer  # noqa: E402
from tests.pki import make_identity  # noqa: E402

KEY, CERT = make_identity("worker", 1001)
OTHER_KEY, OTHER_CERT = make_identity("stranger", 1002)
SIGNED_ONLY = frozenset({"application/data"})


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(PrivateKey(KEY), Certificate(CERT), CertStore([Certificate(CERT)]))


def celery_serializer(key=KEY, cert=CERT, trusted=(CERT,)):
    from celery.security.certificate import Certificate as CeleryCertificate
    from celery.security.certificate import CertStore as CeleryStore
    from celery.security.key import PrivateKey as CeleryKey
    from celery.security.serialization import SecureSerializer

    store = CeleryStore()
    for pem in trusted:
        store.add_cert(CeleryCertificate(pem.decode()))
    return SecureSerializer(CeleryKey(key.decode()), CeleryCertificate(cert.decode()), store)


def test_a_signed_body_reads_back(signer):
    body = [[1, "two"], {"x": 3.5}, {"callbacks": None}]
    assert signer.loads(signer.dumps(body)) == body


def test_what_fastq_signs_celery_verifies_and_the_reverse(signer):
    body = [[2, 3], {"k": [None, True]}, {"callbacks": None, "errbacks": None,
                                          "chain": None, "chord": None}]
    celery = celery_serializer()
    assert celery.deserialize(signer.dumps(body).decode()) == body
    assert signer.loads(celery.serialize(body).encode()) == body
    # the signer id Celery looks certificates up by is the one fastq writes
    from celery.security.certificate import Certificate as CeleryCertificate

    assert Certificate(CERT).id == CeleryCertificate(CERT.decode()).get_id()


def flip_one_bit_of_the_body(signed: bytes) -> bytes:
    fields = base64.b64decode(signed).split(b"\x00\x01", 4)
    body = bytearray(fields[4])
    body[len(body) // 2] ^= 0x01
    return base64.b64encode(b"\x00\x01".join([*fields[:4], bytes(body)]))


def test_a_tampered_body_an_unknown_signer_and_garbage_are_refused(signer):
    signed = signer.dumps([[1], {}, {}])
    with pytest.raises(SecurityError, match="bad signature"):
        signer.loads(flip_one_bit_of_the_body(signed))
    stranger = Signer(PrivateKey(OTHER_KEY), Certificate(OTHER_CERT), None)
    with pytest.raises(SecurityError, match="unknown signer .*stranger"):
        signer.loads(stranger.dumps([[1], {}, {}]))
    # a stranger's signature under the trusted certificate's name does not verify either
    forged = celery_serializer(key=OTHER_KEY, cert=CERT).serialize([[1], {}, {}]).encode()
    with pytest.raises(SecurityError, match="bad signature"):
        signer.loads(forged)
    for junk in (b"", b"not base64!", base64.b64encode(b"no separators")):
        with pytest.raises(SecurityError, match="not a signed body"):
            signer.loads(junk)


def test_an_expired_certificate_does_not_verify():
    key, cert = make_identity("old", 1003, valid_for=-60)
    signer = Signer(PrivateKey(key), Certificate(cert), CertStore([Certificate(cert)]))
    with pytest.raises(SecurityError, match="has expired"):
        signer.loads(signer.dumps([[], {}, {}]))


def test_an_encrypted_key_needs_its_password():
    key, _cert = make_identity("locked", 1004, password=b"s3cret")
    PrivateKey(key, "s3cret")
    with pytest.raises(SecurityError, match="invalid private key"):
        PrivateKey(key, "wrong")


def test_the_worker_dead_letters_with_reason_signature(signer, monkeypatch):
    monkeypatch.setitem(serialization.CODECS, "auth", serialization.Codec(
        "auth", "application/data", "utf-8", signer.dumps, signer.loads))
    monkeypatch.setitem(serialization.BY_CONTENT_TYPE, "application/data",
                        serialization.CODECS["auth"])
    headers = {"task": "t", "id": "i"}
    signed = {"content_type": "application/data", "content_encoding": "utf-8"}
    assert decode_task(headers, signed, signer.dumps([[4], {}, {}]), SIGNED_ONLY)[1] == [4]
    cases = [(signed, flip_one_bit_of_the_body(signer.dumps([[4], {}, {}])), "bad signature"),
             ({"content_type": "application/json"}, b"[[4], {}, {}]", "unsigned message")]
    for properties, body, fragment in cases:
        with pytest.raises(MessageRejected) as info:
            decode_task(headers, properties, body, SIGNED_ONLY)
        assert info.value.reason == "signature" and fragment in info.value.detail


def test_a_signer_whose_certificate_expired_since_start_is_dead_lettered(monkeypatch):
    """The store checks expiry when it loads; a certificate that expires while the worker
    runs is refused per message, as a reject with reason signature."""
    key, cert = make_identity("expired since", 1005, valid_for=-60)
    worker_side = Signer(PrivateKey(KEY), Certificate(CERT),
                         CertStore([Certificate(CERT), Certificate(cert)]))
    sender = Signer(PrivateKey(key), Certificate(cert), None)
    monkeypatch.setitem(serialization.CODECS, "auth", serialization.Codec(
        "auth", "application/data", "utf-8", worker_side.dumps, worker_side.loads))
    monkeypatch.setitem(serialization.BY_CONTENT_TYPE, "application/data",
                        serialization.CODECS["auth"])
    properties = {"content_type": "application/data", "content_encoding": "utf-8"}
    for body in (sender.dumps([[4], {}, {}]),
                 celery_serializer(key, cert, (cert,)).serialize([[4], {}, {}]).encode()):
        with pytest.raises(MessageRejected) as info:
            decode_task({"task": "t", "id": "i"}, properties, body, SIGNED_ONLY)
        assert info.value.reason == "signature", info.value
        assert f"certificate {Certificate(cert).id!r} has expired" in info.value.detail


def test_setup_security_wants_signed_only_settings_and_its_files(tmp_path):
    app = App("sec", broker="memory://sec")
    with pytest.raises(ConfigurationError, match="task_serializer='auth'"):
        app.setup_security()
    app.conf.update(task_serializer="auth", accept_content=["auth"])
    with pytest.raises(ConfigurationError, match="security_key, security_certificate, "
                                                 "security_cert_store"):
        app.setup_security()
    (tmp_path / "k").write_bytes(KEY)
    (tmp_path / "c").write_bytes(CERT)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigurationError, match="holds no certificate"):
        app.setup_security(key=str(tmp_path / "k"), cert=str(tmp_path / "c"),
                           store=str(tmp_path / "empty"))


def test_accepting_auth_without_setup_security_says_what_to_do(monkeypatch):
    monkeypatch.delitem(serialization.CODECS, "auth", raising=False)
    with pytest.raises(ConfigurationError, match=r"app.setup_security\(\)"):
        serialization.resolve_accept(["auth"])


@pytest.fixture
def pem_files(tmp_path, monkeypatch):
    """The worker identity as files; the auth codec setup_security registers is undone."""
    monkeypatch.setattr(serialization, "CODECS", dict(serialization.CODECS))
    monkeypatch.setattr(serialization, "BY_CONTENT_TYPE", dict(serialization.BY_CONTENT_TYPE))
    (tmp_path / "store").mkdir()
    for name, pem in (("k", KEY), ("c", CERT), ("store/c", CERT)):
        (tmp_path / name).write_bytes(pem)
    return {"key": str(tmp_path / "k"), "cert": str(tmp_path / "c"),
            "store": str(tmp_path / "store")}


def signed_results_app(url: str, files: dict) -> App:
    app = App("sec", broker="memory://sec", result_backend=url, task_serializer="auth",
              accept_content=["auth"], result_serializer="auth")
    app.setup_security(**files)
    return app


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_results_are_stored_signed_and_verified_under_result_serializer_auth(
        pem_files, store, signer, tmp_path):
    url = ("memory://signed-results" if store == "memory"
           else f"sqlite:///{tmp_path / 'results.sqlite3'}")
    app = signed_results_app(url, pem_files)
    backend = app.backend
    backend.store("t1", "SUCCESS", {"answer": 42})
    stored = backend._get_many(["t1"])["t1"]
    assert not stored.lstrip().startswith(b"{")  # not JSON: the signed envelope of it
    assert signer.loads(stored)["result"] == {"answer": 42}  # the same envelope as tasks'
    assert app.AsyncResult("t1").get(timeout=5) == {"answer": 42}

    flipped = bytearray(base64.b64decode(stored))
    flipped[-5] ^= 0x01  # one bit of the JSON document the signature covers
    backend._set_many([("t2", "SUCCESS", base64.b64encode(bytes(flipped)))], None)
    with pytest.raises(SecurityError, match="stored result refused.*bad signature"):
        app.AsyncResult("t2").get(timeout=5)

    unsigned = serialization.json_dumps({"status": "SUCCESS", "result": 1, "task_id": "t3"})
    backend._set_many([("t3", "SUCCESS", unsigned)], None)
    with pytest.raises(SecurityError, match="stored result refused.*not a signed body"):
        app.AsyncResult("t3").get(timeout=5)
    with pytest.raises(SecurityError):
        app.AsyncResult("t3").state  # noqa: B018
    app.close()


def test_results_stay_json_without_result_serializer_auth(pem_files):
    app = App("sec", broker="memory://sec", result_backend="memory://plain-results",
              task_serializer="auth", accept_content=["auth"])
    app.setup_security(**pem_files)
    app.backend.store("t1", "SUCCESS", 7)
    assert serialization.json_loads(app.backend._get_many(["t1"])["t1"])["result"] == 7
    assert not app.backend.signed
    app.close()


def test_result_serializer_auth_without_setup_security_says_what_to_do(monkeypatch):
    monkeypatch.setattr(serialization, "CODECS", dict(serialization.CODECS))
    serialization.CODECS.pop("auth", None)
    app = App("sec", broker="memory://sec", result_backend="memory://no-security",
              result_serializer="auth")
    with pytest.raises(ConfigurationError, match=r"result_serializer='auth'.*setup_security"):
        app.backend  # noqa: B018
