"""``amqps://`` end to end on both drivers, through a TLS-terminating proxy in front of
the plain RabbitMQ on 5672, with certificates made for each test session."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fastq import App
from fastq.brokers import create_broker
from fastq.exceptions import BrokerConnectionLost, ConfigurationError
from fastq.testing.contracts import make_message
from fastq.testing.proxy import FaultProxy
from tests.integration.conftest import amqp_worker_setup
from tests.integration.test_amqp_broker import HAVE_C, HOST, PORT, delete_queues, unique

# no code with a compiled twin beyond what the first CI pass covers on both drivers
pytestmark = [pytest.mark.integration, pytest.mark.twin_neutral]

DRIVER_NAMES = {"c": "rabbitmq-c", "py": "py-amqp"}


# -- certificates ------------------------------------------------------------------------
def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path, key, cert) -> None:
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(path, common_name: str, issuer=None, *, ca: bool = False,
           san: list | None = None, usage=None):
    """A key and certificate at ``path``.pem/.key, self-signed or signed by ``issuer``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    signer_key, signer_name = (key, _name(common_name)) if issuer is None else issuer
    builder = (x509.CertificateBuilder()
               .subject_name(_name(common_name)).issuer_name(signer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())
    _write(path, key, cert)
    return key, cert.subject


class Certs:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and
    an unrelated CA (the wrong one); paths as str."""

    def __init__(self, directory) -> None:
        ca = _issue(directory / "ca", "fastq test CA", ca=True)
        _issue(directory / "wrong-ca", "fastq wrong CA", ca=True)
        # rabbitmq-c 0.11 matches the host only against DNS names, so the address is
        # there as a DNS name too; Python's ssl checks the IP address entry
        _issue(directory / "server", "127.0.0.1", ca, usage=ExtendedKeyUsageOID.SERVER_AUTH,
               san=[x509.DNSName("localhost"), x509.DNSName("127.0.0.1"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        _issue(directory / "client", "fastq-test-client", ca,
               usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        self.ca = str(directory / "ca.pem")
        self.wrong_ca = str(directory / "wrong-ca.pem")
        self.server_cert = str(directory / "server.pem")
        self.server_key = str(directory / "server.key")
        self.client_cert = str(directory / "client.pem")
        self.client_key = str(directory / "client.key")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return Certs(tmp_path_factory.mktemp("tls"))


# -- the proxy ---------------------------------------------------------------------------
class TLSProxy(FaultProxy):
    """Terminates TLS on a free loopback port and forwards the bytes to RabbitMQ."""

    def __init__(self, certs: Certs, *, require_client_cert: bool = False) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.server_cert, certs.server_key)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(certs.ca)
        super().__init__((HOST, PORT), tls=context)

    def url(self, scheme: str = "amqps", **query: str) -> str:
        base = f"{scheme}://guest:guest@{HOST}:{self.port}//"
        return base + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")

    @property
    def client_bytes(self) -> int:
        """Bytes clients sent after their handshake."""
        return len(self.sent)


@pytest.fixture
def proxy(certs) -> Iterator[TLSProxy]:
    server = TLSProxy(certs)
    yield server
    server.close()


@pytest.fixture
def client_cert_proxy(certs) -> Iterator[TLSProxy]:
    server = TLSProxy(certs, require_client_cert=True)
    yield server
    server.close()


@pytest.fixture
def driver(impl: str) -> str:
    return DRIVER_NAMES[impl]


def wait_for(condition, timeout: float = 3.0):
    """``condition()`` once it is truthy (the proxy's threads record a moment later)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def round_trip(broker, queue: str) -> None:
    """Publish, fetch, ack one message; the queue is empty after."""
    message = make_message(queue)
    broker.publish(message)
    [delivery] = broker.fetch([queue], 10, 5)
    assert delivery.headers["id"] == message.headers["id"]
    assert delivery.body == message.body
    broker.ack_many([delivery.tag])
    broker.close()
    assert broker.fetch([queue], 10, 0.3) == []


@pytest.fixture
def queue() -> Iterator[str]:
    name = unique("tls")
    yield name
    delete_queues([name])


# -- the round trip ----------------------------------------------------------------------
def test_the_ca_in_the_url_verifies_the_proxy(proxy, certs, driver, queue) -> None:
    broker = create_broker(proxy.url(driver=driver, ssl_cafile=certs.ca))
    try:
        assert broker.driver_name == driver
        assert broker._params["ssl"]["verify"] is True
        round_trip(broker, queue)
    finally:
        broker.close()
    # producer and consumer, and the consumer again after the close
    assert proxy.handshakes >= 3 and not proxy.failures


def test_broker_use_ssl_turns_tls_on_for_an_amqp_url(proxy, certs, driver, queue) -> None:
    app = App("tls-settings", broker_url=proxy.url("amqp", driver=driver),
              broker_use_ssl={"ca_certs": certs.ca, "cert_reqs": ssl.CERT_REQUIRED,
                              "server_hostname": HOST})
    try:
        assert app.broker._params["port"] == proxy.port
        round_trip(app.broker, queue)
    finally:
        app.close()
    assert proxy.handshakes >= 2 and not proxy.failures


def test_without_a_ca_the_systems_cas_verify(proxy, certs, driver, queue,
                                             monkeypatch) -> None:
    # OpenSSL's default bundle is SSL_CERT_FILE when set: here, the test CA
    monkeypatch.setenv("SSL_CERT_FILE", certs.ca)
    broker = create_broker(proxy.url(driver=driver))
    try:
        round_trip(broker, queue)
    finally:
        broker.close()
    assert proxy.handshakes >= 2 and not proxy.failures


def test_without_verification_no_ca_is_needed(proxy, driver, queue) -> None:
    broker = create_broker(proxy.url(driver=driver, ssl_verify="false"))
    try:
        round_trip(broker, queue)
    finally:
        broker.close()
    assert proxy.handshakes >= 2


def test_a_client_certificate_is_presented(client_cert_proxy, certs, driver, queue) -> None:
    proxy = client_cert_proxy
    broker = create_broker(proxy.url(driver=driver, ssl_cafile=certs.ca,
                                     ssl_certfile=certs.client_cert,
                                     ssl_keyfile=certs.client_key))
    try:
        round_trip(broker, queue)
    finally:
        broker.close()
    assert proxy.client_names and set(proxy.client_names) == {"fastq-test-client"}


# -- failures are errors, quickly ---------------------------------------------------------
def _connect_fails(url: str) -> BrokerConnectionLost:
    broker = create_broker(url)
    started = time.monotonic()
    try:
        with pytest.raises(BrokerConnectionLost) as info:
            broker.connect()
    finally:
        broker.close()
    # the handshake fails at once; connect_timeout (4 s) would mean a hang until it
    assert time.monotonic() - started < 3.0
    return info.value


def test_a_wrong_ca_is_a_lost_connection_not_a_hang(proxy, certs, driver) -> None:
    error = _connect_fails(proxy.url(driver=driver, ssl_cafile=certs.wrong_ca))
    assert f"127.0.0.1:{proxy.port}" in str(error)
    if driver == "py-amqp":
        assert "certificate verify failed" in str(error)
        assert wait_for(lambda: proxy.failures)
    else:
        # rabbitmq-c finishes the handshake, then checks the result and hangs up
        assert "SSL peer cert verification failed" in str(error)
    time.sleep(0.2)
    assert proxy.client_bytes == 0  # not even the protocol header, let alone the login


def test_a_missing_client_certificate_is_refused(client_cert_proxy, certs, driver) -> None:
    _connect_fails(client_cert_proxy.url(driver=driver, ssl_cafile=certs.ca))
    assert client_cert_proxy.handshakes == 0


def test_a_host_name_the_certificate_lacks_is_refused(proxy, certs) -> None:
    error = _connect_fails(proxy.url(driver="py-amqp", ssl_cafile=certs.ca,
                                     ssl_server_hostname="rabbit.example"))
    assert "rabbit.example" in str(error) or "hostname" in str(error).lower()
    # rabbitmq-c checks the host it connects to: another name is refused up front
    if HAVE_C:
        with pytest.raises(ConfigurationError, match="server_hostname"):
            create_broker(proxy.url(driver="rabbitmq-c", ssl_cafile=certs.ca,
                                    ssl_server_hostname="rabbit.example"))


def test_the_rpc_backend_connects_with_the_brokers_tls(proxy, certs, driver) -> None:
    app = App("tls-rpc", broker_url=proxy.url(driver=driver, ssl_verify="true"),
              result_backend="rpc://", broker_use_ssl={"ca_certs": certs.ca})
    try:
        backend = app.backend
        assert backend.driver_name == driver
        assert backend._params["ssl"] == app.broker._params["ssl"]
        assert backend._params["ssl"]["cafile"] == certs.ca
        before = proxy.handshakes
        backend._connection()
        assert proxy.handshakes == before + 1 and not proxy.failures
    finally:
        app.close()


# -- a worker process ---------------------------------------------------------------------
def test_a_worker_consumes_through_tls(tmp_path, proxy, certs, driver) -> None:
    queue = unique("tls-worker")
    url = proxy.url(driver=driver)
    env, results_url = amqp_worker_setup(tmp_path, queue, url)
    # the CA comes from the settings (FASTQ_BROKER_USE_SSL is JSON), the rest from the URL
    env["FASTQ_BROKER_USE_SSL"] = f'{{"ca_certs": "{certs.ca}", "cert_reqs": "CERT_REQUIRED"}}'
    app = App("tls-worker-client", broker_url=f"{url}&ssl_cafile={certs.ca}",
              result_backend=results_url, task_default_queue=queue)
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastq.cli", "worker", "-A", "tests.apps.amqp_app",
             "-P", "solo", "-Q", queue, "-l", "info"],
            env=env, cwd=str(tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        results = [app.send_task("t.add", (i, i)) for i in range(20)]
        assert [r.get(timeout=30) for r in results] == [2 * i for i in range(20)], \
            log_path.read_text()
    finally:
        proc.terminate()
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        app.close()
        delete_queues([queue])
    assert code == 0, log_path.read_text()
    assert not proxy.failures
    # the client's producer plus at least the worker's consumer went through the proxy
    assert proxy.handshakes >= 2
