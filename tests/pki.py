"""Throwaway RSA keys and self-signed X.509 certificates for the signing tests."""

from __future__ import annotations

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def make_identity(common_name: str, serial: int, valid_for: float = 3600.0,
                  password: bytes | None = None) -> tuple[bytes, bytes]:
    """``(key_pem, cert_pem)``: a 2048-bit RSA key and a certificate for it, valid from a
    minute ago for ``valid_for`` seconds (negative: already expired)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fastq tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(seconds=valid_for))
            .sign(key, hashes.SHA256()))
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8, encryption)
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def write_identity(directory, key_pem: bytes, cert_pem: bytes, trusted: bool = True) -> None:
    """key.pem and cert.pem in ``directory``; the certificate also in ``store/`` when
    ``trusted``."""
    os.makedirs(os.path.join(directory, "store"), exist_ok=True)
    with open(os.path.join(directory, "key.pem"), "wb") as f:
        f.write(key_pem)
    with open(os.path.join(directory, "cert.pem"), "wb") as f:
        f.write(cert_pem)
    if trusted:
        with open(os.path.join(directory, "store", "cert.pem"), "wb") as f:
            f.write(cert_pem)


def signing_settings(directory: str) -> dict:
    """The settings of an app that signs with ``directory``'s key.pem and cert.pem and
    trusts its store/ (the same names for fastq and Celery)."""
    return {"task_serializer": "auth", "accept_content": ["auth"],
            "security_key": os.path.join(directory, "key.pem"),
            "security_certificate": os.path.join(directory, "cert.pem"),
            "security_cert_store": os.path.join(directory, "store")}
