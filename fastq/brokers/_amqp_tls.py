"""TLS for the AMQP drivers: Celery's ``broker_use_ssl`` and ``ssl_*`` URL options, normalised once.

Both drivers take the same dict, ``{"cafile", "certfile", "keyfile", "verify",
"server_hostname"}``: rabbitmq-c hands the files to its SSL socket, py-amqp gets the
``ssl.SSLContext`` that ``client_context`` builds from them. ``verify`` means "check
the chain against ``cafile`` (or the system's CAs) and the host name", as both
libraries do it; ``verify=False`` checks nothing, for test setups only.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any

from ..exceptions import ConfigurationError

#: URL query (or broker_transport_options) options and the key of the dict they set.
URL_OPTIONS = {"ssl_cafile": "cafile", "ssl_certfile": "certfile", "ssl_keyfile": "keyfile",
               "ssl_verify": "verify", "ssl_server_hostname": "server_hostname"}
#: Keys of Celery's ``broker_use_ssl`` dict (those of ``ssl.wrap_socket``).
USE_SSL_KEYS = {"ca_certs": "cafile", "certfile": "certfile", "keyfile": "keyfile",
                "cert_reqs": "verify", "server_hostname": "server_hostname"}
#: Every option this module reads: ``ssl`` is where ``broker_use_ssl`` arrives.
OPTIONS = ("ssl", *URL_OPTIONS)

_CERT_REQS = {"cert_required": True, "required": True, "cert_optional": True,
              "optional": True, "cert_none": False, "none": False}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def tls_options(url_tls: bool, options: Mapping[str, Any]) -> dict | None:
    """The normalised TLS dict, or None when TLS is off.

    TLS is on with ``amqps://``, a truthy ``ssl`` option (``broker_use_ssl``: True or a
    dict) or any ``ssl_*`` option. ``ssl_*`` options override the dict's keys. The
    files are checked and loaded here, so a bad one fails at configuration time.

    Raises:
        ConfigurationError: an unknown key or ``cert_reqs``, a file that is missing or
            does not load, a ``keyfile`` without ``certfile``; the message names the option.
    """
    use_ssl = options.get("ssl")
    from_url = {name: options[name] for name in URL_OPTIONS if name in options}
    if not (url_tls or _truthy_ssl(use_ssl) or from_url):
        return None
    tls: dict[str, Any] = {"cafile": None, "certfile": None, "keyfile": None,
                           "verify": True, "server_hostname": None}
    names: dict[str, str] = {}
    if isinstance(use_ssl, Mapping):
        unknown = set(use_ssl) - set(USE_SSL_KEYS)
        if unknown:
            raise ConfigurationError(
                f"unknown key(s) in broker_use_ssl: {', '.join(sorted(map(str, unknown)))} "
                f"(known: {', '.join(USE_SSL_KEYS)})")
        for key, value in use_ssl.items():
            _set(tls, names, USE_SSL_KEYS[key], value, f"broker_use_ssl[{key!r}]")
    for name, value in from_url.items():
        _set(tls, names, URL_OPTIONS[name], value, name)
    for key in ("cafile", "certfile", "keyfile"):
        path = tls[key]
        if path is not None and not os.path.isfile(path):
            raise ConfigurationError(f"{names[key]}: no such file {path!r}")
    if tls["keyfile"] and not tls["certfile"]:
        raise ConfigurationError(f"{names['keyfile']} needs a client certificate as well "
                                 "(ssl_certfile or broker_use_ssl['certfile'])")
    client_context(tls, names)  # loads every file once: a bad one fails now
    return tls


def _truthy_ssl(value: Any) -> bool:
    if isinstance(value, str):
        return _parse_bool(value, "ssl")
    return bool(value)


def _parse_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE or text == "":
        return False
    raise ConfigurationError(f"{name} must be true or false, not {value!r}")


def _set(tls: dict, names: dict, key: str, value: Any, name: str) -> None:
    if key == "verify":
        value = _cert_reqs(value, name) if name.startswith("broker_use_ssl") else \
            _parse_bool(value, name)
    elif value in (None, ""):
        value = None
    elif key == "server_hostname":
        value = str(value)
    else:
        value = os.path.expanduser(os.fspath(value))
    tls[key] = value
    names[key] = name


def _cert_reqs(value: Any, name: str) -> bool:
    """``verify`` from ``ssl.CERT_*`` or its name; CERT_OPTIONAL verifies, as it does
    for a client in Python's ssl."""
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1, 2):
        return value != ssl.CERT_NONE
    if isinstance(value, str) and value.strip().lower() in _CERT_REQS:
        return _CERT_REQS[value.strip().lower()]
    raise ConfigurationError(
        f"{name} must be ssl.CERT_REQUIRED, ssl.CERT_OPTIONAL or ssl.CERT_NONE "
        f"(or their names), not {value!r}")


def client_context(tls: Mapping[str, Any], names: Mapping[str, str] | None = None
                   ) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for the client side of ``tls`` (a normalised dict).

    Raises:
        ConfigurationError: a CA file or client certificate/key does not load.
    """
    names = names or {}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.get("verify", True):
        # PROTOCOL_TLS_CLIENT already means CERT_REQUIRED and check_hostname
        try:
            if tls.get("cafile"):
                context.load_verify_locations(cafile=tls["cafile"])
            else:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(
                f"{names.get('cafile', 'ssl_cafile')}: cannot load the CA file "
                f"{tls.get('cafile')!r}: {exc}") from None
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.get("certfile"):
        try:
            context.load_cert_chain(tls["certfile"], tls.get("keyfile") or None)
        except (ssl.SSLError, OSError) as exc:
            what = names.get("certfile", "ssl_certfile")
            if tls.get("keyfile"):
                what += f" / {names.get('keyfile', 'ssl_keyfile')}"
            raise ConfigurationError(
                f"{what}: cannot load the client certificate {tls['certfile']!r} "
                f"(and its key): {exc}") from None
    return context


def for_driver(tls: dict | None, driver_name: str, host: str) -> dict | None:
    """``tls`` as ``driver_name`` needs it, refusing what that driver cannot do.

    rabbitmq-c loads no CAs by itself, so verifying without ``cafile`` gets the
    system's bundle (``ssl.get_default_verify_paths()``, which honours
    ``SSL_CERT_FILE``), as py-amqp's ``load_default_certs`` does.

    Raises:
        ConfigurationError: on rabbitmq-c, a ``server_hostname`` other than the URL's
            host (it always checks the host it connects to), or no system CA bundle.
    """
    if not tls or driver_name != "rabbitmq-c" or not tls.get("verify", True):
        return tls
    wanted = tls.get("server_hostname")
    if wanted and wanted.lower() != host.lower():
        raise ConfigurationError(
            f"server_hostname={wanted!r}: the rabbitmq-c driver checks the certificate "
            f"against the URL's host {host!r}; put {wanted!r} in the URL, or use the "
            "py-amqp driver (?driver=py-amqp)")
    if tls.get("cafile"):
        return tls
    system = ssl.get_default_verify_paths().cafile
    if not system:
        raise ConfigurationError(
            "amqps:// on rabbitmq-c found no system CA bundle to verify RabbitMQ with: "
            "give one with ssl_cafile (or broker_use_ssl['ca_certs'])")
    return {**tls, "cafile": system}
