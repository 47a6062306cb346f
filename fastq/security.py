"""Signed messages: Celery's ``auth`` serializer (X.509 certificates, RSA-PSS), byte for byte.

A signed body is the base64 of five fields joined by ``\\x00\\x01``: the signer's
certificate id (base64), the signature (base64), the inner content type, the inner
content encoding, and the inner body as the inner serializer wrote it. The signature
covers the inner body's bytes, so the receiver checks it before decoding anything.
A certificate's id is its issuer's attribute values joined by spaces, a space, and its
serial number — what Celery's peers look certificates up by.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import glob
import os
from collections.abc import Iterable
from typing import Any

from . import serialization
from ._extras import require
from .exceptions import ConfigurationError, SecurityError

#: Separates the envelope's fields; base64 and content types cannot contain it, and the
#: body is the last field, split off with a bound, so its bytes may.
SEPARATOR = b"\x00\x01"
#: The serializer name and the content type of signed bodies, as Celery registers them.
AUTH = "auth"
AUTH_CONTENT_TYPE = "application/data"


def _crypto() -> Any:
    require("cryptography", "message signing (the auth serializer)")
    from cryptography.hazmat.primitives import hashes

    return hashes


def digest_algorithm(name: str) -> Any:
    """The ``cryptography`` hash for a digest name (``sha256``, ``sha512``, ...)."""
    algorithm = getattr(_crypto(), str(name).upper(), None)
    if not isinstance(algorithm, type):
        raise ConfigurationError(f"unknown security_digest {name!r}: name a hash such as "
                                 f"'sha256' or 'sha512'")
    return algorithm()


def _pss(digest: Any) -> Any:
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.PSS(mgf=padding.MGF1(digest), salt_length=padding.PSS.MAX_LENGTH)


class Certificate:
    """An X.509 certificate with an RSA public key, as PEM text or bytes."""

    def __init__(self, pem: str | bytes) -> None:
        _crypto()
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import rsa

        try:
            self._cert = x509.load_pem_x509_certificate(
                pem.encode() if isinstance(pem, str) else pem)
        except ValueError as exc:
            raise SecurityError(f"invalid certificate: {exc}") from None
        if not isinstance(self._cert.public_key(), rsa.RSAPublicKey):
            raise SecurityError("only RSA certificates can sign (as with Celery)")
        issuer = " ".join(str(attribute.value) for attribute in self._cert.issuer)
        #: what signed messages name their signer by
        self.id = f"{issuer} {self._cert.serial_number}"

    def has_expired(self) -> bool:
        return datetime.datetime.now(datetime.timezone.utc) >= self._cert.not_valid_after_utc

    def verify(self, data: bytes, signature: bytes, digest: Any) -> None:
        """Raises SecurityError unless ``signature`` is this certificate's key's over
        ``data``, and the certificate is still valid."""
        if self.has_expired():
            raise SecurityError(f"certificate {self.id!r} has expired")
        from cryptography.exceptions import InvalidSignature

        try:
            self._cert.public_key().verify(signature, data, _pss(digest), digest)
        except InvalidSignature:
            raise SecurityError(f"bad signature: the body does not match what "
                                f"{self.id!r} signed") from None


class CertStore:
    """The certificates whose signatures a worker trusts, by id."""

    def __init__(self, certificates: Iterable[Certificate] = ()) -> None:
        self._certificates: dict[str, Certificate] = {}
        for certificate in certificates:
            self.add(certificate)

    @classmethod
    def from_path(cls, path: str) -> CertStore:
        """Every certificate in a directory, or in the files a glob matches."""
        pattern = os.path.join(path, "*") if os.path.isdir(path) else path
        files = sorted(name for name in glob.glob(pattern) if os.path.isfile(name))
        if not files:
            raise ConfigurationError(f"security_cert_store {path!r} holds no certificate")
        store = cls()
        for name in files:
            with open(name, "rb") as f:
                certificate = Certificate(f.read())
            if certificate.has_expired():
                raise SecurityError(f"certificate {certificate.id!r} in {name} has expired")
            store.add(certificate)
        return store

    def add(self, certificate: Certificate) -> None:
        if certificate.id in self._certificates:
            raise SecurityError(f"certificate {certificate.id!r} is in the store twice")
        self._certificates[certificate.id] = certificate

    def __getitem__(self, certificate_id: str) -> Certificate:
        try:
            return self._certificates[certificate_id]
        except KeyError:
            raise SecurityError(f"unknown signer {certificate_id!r}: its certificate is "
                                f"not in the store") from None

    def __len__(self) -> int:
        return len(self._certificates)


class PrivateKey:
    """An RSA private key, as PEM, optionally encrypted with ``password``."""

    def __init__(self, pem: str | bytes, password: str | bytes | None = None) -> None:
        _crypto()
        from cryptography.hazmat.primitives import serialization as pem_format
        from cryptography.hazmat.primitives.asymmetric import rsa

        if isinstance(password, str):
            password = password.encode()
        try:
            self._key = pem_format.load_pem_private_key(
                pem.encode() if isinstance(pem, str) else pem, password=password)
        except (ValueError, TypeError) as exc:
            raise SecurityError(f"invalid private key: {exc}") from None
        if not isinstance(self._key, rsa.RSAPrivateKey):
            raise SecurityError("only RSA keys can sign (as with Celery)")

    def sign(self, data: bytes, digest: Any) -> bytes:
        return self._key.sign(data, _pss(digest), digest)


class Signer:
    """Signs bodies with a key and its certificate, and checks them against a store.

    ``serializer`` writes the inner body (``json`` by default).
    """

    def __init__(self, key: PrivateKey | None, certificate: Certificate | None,
                 store: CertStore | None, digest: str = "sha256",
                 serializer: str = "json") -> None:
        if serializer == AUTH:
            raise ConfigurationError("the auth serializer cannot wrap itself; name the "
                                     "inner serializer (json, msgpack, ...)")
        serialization.codec(serializer)  # an unknown name fails here, not per message
        self.key, self.certificate, self.store = key, certificate, store
        self.digest = digest_algorithm(digest)
        self.serializer = serializer

    def dumps(self, obj: Any) -> bytes:
        if self.key is None or self.certificate is None:
            raise SecurityError("cannot sign: no security_key and security_certificate")
        content_type, content_encoding, body = serialization.dumps(obj, self.serializer)
        fields = (base64.b64encode(self.certificate.id.encode()),
                  base64.b64encode(self.key.sign(body, self.digest)),
                  content_type.encode(), content_encoding.encode(), body)
        return base64.b64encode(SEPARATOR.join(fields))

    def loads(self, data: bytes) -> Any:
        if self.store is None:
            raise SecurityError("cannot verify: no security_cert_store")
        try:
            fields = base64.b64decode(data, validate=True).split(SEPARATOR, 4)
            if len(fields) != 5:
                raise ValueError(f"{len(fields)} fields, not 5")
            signer = base64.b64decode(fields[0], validate=True).decode()
            signature = base64.b64decode(fields[1], validate=True)
            content_type, content_encoding = fields[2].decode(), fields[3].decode()
        except (ValueError, binascii.Error) as exc:
            raise SecurityError(f"not a signed body: {exc}") from None
        self.store[signer].verify(fields[4], signature, self.digest)
        return serialization.loads(fields[4], content_type, content_encoding)


def register_auth(signer: Signer) -> None:
    """Make ``auth`` a serializer (content type ``application/data``) signing and
    checking with ``signer``, for every app in this process, as Celery's does."""
    serialization.register(serialization.Codec(
        AUTH, AUTH_CONTENT_TYPE, "utf-8", signer.dumps, signer.loads))


def setup_security(conf: Any, allowed_serializers: Iterable[str] | None = None,
                   key: str | None = None, key_password: str | bytes | None = None,
                   cert: str | None = None, store: str | None = None,
                   digest: str | None = None, serializer: str = "json") -> Signer:
    """Celery's ``app.setup_security``: sign what this process sends, accept only what
    a trusted certificate signed.

    ``conf`` is the app's settings: ``task_serializer`` must be ``auth`` and
    ``accept_content`` only ``auth``, so a worker refuses every unsigned task before
    decoding it; ``key``/``cert``/``store`` are file paths (default: ``security_key``,
    ``security_certificate``, ``security_cert_store``). ``allowed_serializers`` is taken
    for Celery's signature: Celery disables the other decoders process-wide, fastq's
    ``accept_content`` already is that gate for tasks. With ``result_serializer='auth'``
    results are signed too, and read only when a trusted certificate signed them (the
    result backends' ``sign_results``; ``result_codec`` gives them the codec).

    Raises:
        ConfigurationError: settings missing or inconsistent.
        SecurityError: a key, certificate or store that cannot be used.
    """
    accept = conf.accept_content
    accept = [accept] if isinstance(accept, str) else list(accept or ())
    if conf.task_serializer != AUTH or accept not in ([AUTH], [AUTH_CONTENT_TYPE]):
        raise ConfigurationError(
            "message signing needs task_serializer='auth' and accept_content=['auth'] "
            "(an unsigned task must not be accepted)")
    key = key or conf.security_key
    key_password = key_password or conf.security_key_password
    cert = cert or conf.security_certificate
    store = store or conf.security_cert_store
    missing = [name for name, value in (("security_key", key), ("security_certificate", cert),
                                        ("security_cert_store", store)) if not value]
    if missing:
        raise ConfigurationError(f"message signing needs {', '.join(missing)} (file paths)")
    with open(key, "rb") as f:
        private_key = PrivateKey(f.read(), key_password)
    with open(cert, "rb") as f:
        certificate = Certificate(f.read())
    signer = Signer(private_key, certificate, CertStore.from_path(store),
                    digest or conf.security_digest or "sha256", serializer)
    register_auth(signer)
    return signer


def result_codec(conf: Any) -> serialization.Codec | None:
    """The codec a result backend signs and verifies stored results with: the ``auth``
    serializer under ``result_serializer='auth'`` (as Celery's backends do), else None.

    Raises:
        ConfigurationError: ``result_serializer='auth'`` but no ``setup_security`` ran
            in this process (there is no key to sign with, no store to verify against).
    """
    if conf.result_serializer != AUTH:
        return None
    codec = serialization.CODECS.get(AUTH)
    if codec is None:
        raise ConfigurationError(
            "result_serializer='auth' signs results, which needs app.setup_security() in "
            "this process first (the key, certificate and store to sign and verify with)")
    return codec


__all__ = ["AUTH", "AUTH_CONTENT_TYPE", "CertStore", "Certificate", "PrivateKey", "Signer",
           "digest_algorithm", "register_auth", "result_codec", "setup_security"]
