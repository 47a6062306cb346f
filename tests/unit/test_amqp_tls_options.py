"""TLS options of the AMQP broker: amqps://, broker_use_ssl and ssl_* normalised into one
dict, and clear errors for bad values (no server: nothing here connects)."""

from __future__ import annotations

import ssl

import pytest

from fastq import App
from fastq.brokers._amqp_tls import client_context, for_driver, tls_options
from fastq.brokers.amqp import AMQPBroker, connection_params
from fastq.config import Settings
from fastq.exceptions import ConfigurationError

OFF = {"ssl_verify": "false"}


def test_plain_amqp_has_no_tls() -> None:
    params = connection_params("amqp://h//", {})
    assert params["ssl"] is None and params["port"] == 5672


def test_amqps_verifies_by_default() -> None:
    params = connection_params("amqps://h//", {})
    assert params["port"] == 5671
    assert params["ssl"] == {"cafile": None, "certfile": None, "keyfile": None,
                             "verify": True, "server_hostname": None}


def test_broker_use_ssl_turns_tls_on_and_defaults_the_port_to_5671() -> None:
    assert connection_params("amqp://h//", {"ssl": True})["port"] == 5671
    assert connection_params("amqp://h:5999//", {"ssl": True})["port"] == 5999
    assert connection_params("amqp://h//", {"ssl": False})["ssl"] is None
    assert connection_params("amqp://h//?ssl=true", {})["ssl"]["verify"] is True


@pytest.mark.parametrize(("cert_reqs", "verify"), [
    (ssl.CERT_REQUIRED, True), (ssl.CERT_OPTIONAL, True), (ssl.CERT_NONE, False),
    ("CERT_REQUIRED", True), ("cert_none", False), ("none", False), (2, True), (0, False),
])
def test_cert_reqs_values_and_names(cert_reqs, verify) -> None:
    assert tls_options(True, {"ssl": {"cert_reqs": cert_reqs}})["verify"] is verify


def test_an_unknown_cert_reqs_names_the_option() -> None:
    with pytest.raises(ConfigurationError, match=r"broker_use_ssl\['cert_reqs'\].*'maybe'"):
        tls_options(True, {"ssl": {"cert_reqs": "maybe"}})
    with pytest.raises(ConfigurationError, match="ssl_verify must be true or false"):
        tls_options(True, {"ssl_verify": "sometimes"})


def test_an_unknown_broker_use_ssl_key_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown key\(s\) in broker_use_ssl: "
                                                 r"ca_cert \(known: ca_certs, certfile"):
        tls_options(False, {"ssl": {"ca_cert": "/x"}})


def test_a_missing_file_names_the_option(tmp_path) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ConfigurationError, match=f"ssl_cafile: no such file '{missing}'"):
        connection_params(f"amqps://h//?ssl_cafile={missing}", {})
    with pytest.raises(ConfigurationError, match=r"broker_use_ssl\['certfile'\]: no such"):
        tls_options(True, {"ssl": {"certfile": missing}})


def test_files_that_do_not_load_are_configuration_errors(tmp_path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match="ssl_cafile: cannot load the CA file"):
        tls_options(True, {"ssl_cafile": str(junk)})
    with pytest.raises(ConfigurationError,
                       match="ssl_certfile / ssl_keyfile: cannot load the client cert"):
        tls_options(True, {**OFF, "ssl_certfile": str(junk), "ssl_keyfile": str(junk)})


def test_a_key_needs_a_certificate(tmp_path) -> None:
    key = tmp_path / "client.key"
    key.write_text("x")
    with pytest.raises(ConfigurationError, match="ssl_keyfile needs a client certificate"):
        tls_options(True, {"ssl_keyfile": str(key)})


def test_url_options_override_broker_use_ssl() -> None:
    tls = tls_options(False, {"ssl": {"cert_reqs": ssl.CERT_REQUIRED,
                                      "server_hostname": "a.example"},
                              "ssl_verify": "0"})
    assert tls["verify"] is False and tls["server_hostname"] == "a.example"


def test_the_py_amqp_context_follows_verify() -> None:
    strict = client_context({"verify": True})
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    lax = client_context({"verify": False})
    assert lax.verify_mode == ssl.CERT_NONE and not lax.check_hostname


def test_the_broker_accepts_the_options_and_still_refuses_unknown_ones() -> None:
    broker = AMQPBroker("amqp://h//?ssl_verify=false&driver=py-amqp")
    assert broker._params["ssl"]["verify"] is False and broker._params["port"] == 5671
    with pytest.raises(ConfigurationError, match="unknown option.*ssl_ca "):
        AMQPBroker("amqps://h//?ssl_ca=/x")


def test_the_app_hands_broker_use_ssl_to_the_broker_and_the_rpc_backend() -> None:
    app = App("tls-unit", broker_url="amqp://h//", result_backend="rpc://",
              broker_use_ssl={"cert_reqs": "CERT_NONE", "server_hostname": "h"})
    assert app.broker._params["ssl"]["verify"] is False
    assert app.backend._params["ssl"] == app.broker._params["ssl"]
    assert app.backend._params["port"] == 5671
    app.close()


def test_broker_use_ssl_from_the_environment_is_json() -> None:
    settings = Settings()
    settings.apply_env({"FASTQ_BROKER_USE_SSL": '{"ca_certs": "/etc/ca.pem"}'})
    assert settings.broker_use_ssl == {"ca_certs": "/etc/ca.pem"}
    settings.apply_env({"FASTQ_BROKER_USE_SSL": "true"})
    assert settings.broker_use_ssl is True


def test_rabbitmq_c_gets_the_system_bundle_when_no_ca_is_given(monkeypatch, tmp_path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    tls = tls_options(True, {})
    assert for_driver(tls, "rabbitmq-c", "h")["cafile"] == str(bundle)
    assert for_driver(tls, "py-amqp", "h") is tls  # py-amqp loads the defaults itself
    unverified = tls_options(True, OFF)
    assert for_driver(unverified, "rabbitmq-c", "h")["cafile"] is None


def test_rabbitmq_c_refuses_another_server_hostname() -> None:
    tls = tls_options(True, {"ssl_server_hostname": "rabbit.example", "ssl_cafile": None})
    assert for_driver(tls, "py-amqp", "10.0.0.1") is tls
    assert for_driver(tls, "rabbitmq-c", "Rabbit.Example")["server_hostname"] == "rabbit.example"
    with pytest.raises(ConfigurationError, match="server_hostname='rabbit.example'.*py-amqp"):
        for_driver(tls, "rabbitmq-c", "10.0.0.1")
