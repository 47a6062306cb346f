"""What the SQS broker puts on the wire: URLs, kombu's queue names, message bodies, attributes.

Nothing here talks to SQS or imports boto3, so it is unit-tested without a server.

A message body is what kombu's SQS transport sends: the kombu JSON envelope
(``celery-protocol.md`` §2.2; the task body inside it base64-encoded), itself
base64-encoded unless ``sqs_base64_encoding`` is off. fastq keeps its own bookkeeping in
message attributes, which kombu neither sends nor asks for:

==========================  ======  ==================================================
attribute                   type    meaning
==========================  ======  ==================================================
``fastq-not-before``        Number  unix time before which the message is not delivered
``fastq-redeliveries``      Number  deliveries of earlier copies (a deferral re-sends)
``fastq-reason``            String  why a message is in a dead-letter queue
``fastq-queue``             String  the queue a dead letter came from (fastq's name)
``fastq-dead-lettered-at``  Number  unix time it was dead-lettered
==========================  ======  ==================================================
"""

from __future__ import annotations

import base64
import binascii
import string
import uuid
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .. import serialization
from .._registry import mask_url
from ..exceptions import ConfigurationError
from ._kombu import envelope, unpack

ATTR_NOT_BEFORE = "fastq-not-before"
ATTR_REDELIVERIES = "fastq-redeliveries"
ATTR_REASON = "fastq-reason"
ATTR_QUEUE = "fastq-queue"
ATTR_DEAD_AT = "fastq-dead-lettered-at"

#: SQS allows this many message attributes on one message.
MAX_ATTRIBUTES = 10
#: Longest SQS queue name.
MAX_QUEUE_NAME = 80
#: The suffix of a dead-letter queue's name, before ``.fifo`` on FIFO queues.
DEAD_SUFFIX = "-dead"

# kombu's mapping: dots become hyphens, hyphens and underscores stay, any other
# punctuation becomes an underscore; a trailing ".fifo" is kept as it is.
_NAME_TABLE = {ord(c): "_" for c in string.punctuation if c not in "-_."}
_NAME_TABLE[ord(".")] = "-"

#: Options that may also be given in the URL's query string, with their types.
URL_OPTIONS: dict[str, Any] = {
    "region": str, "queue_name_prefix": str, "endpoint_url": str,
    "is_secure": lambda v: v.lower() in ("1", "true", "yes", "on"),
    "wait_time_seconds": int, "visibility_timeout": int, "polling_interval": float,
    "publish_timeout": float, "max_receive_count": int,
}


def sqs_queue_name(queue: str, prefix: str = "") -> str:
    """The SQS name kombu gives ``prefix + queue``: ``"tasks.high"`` → ``"tasks-high"``."""
    name = prefix + queue
    if name.endswith(".fifo"):
        return name[:-5].translate(_NAME_TABLE) + ".fifo"
    return name.translate(_NAME_TABLE)


def dead_queue_of(queue: str) -> str:
    """The name of ``queue``'s dead-letter queue: ``q`` → ``q-dead``, ``q.fifo`` → ``q-dead.fifo``."""
    if queue.endswith(".fifo"):
        return queue[:-5] + DEAD_SUFFIX + ".fifo"
    return queue + DEAD_SUFFIX


def is_dead_queue(sqs_name: str) -> bool:
    return sqs_name.removesuffix(".fifo").endswith(DEAD_SUFFIX)


def queue_of_dead(sqs_name: str, prefix: str = "") -> str:
    """The (SQS) name of the queue whose dead letters ``sqs_name`` holds, without prefix."""
    fifo = sqs_name.endswith(".fifo")
    base = sqs_name.removesuffix(".fifo").removesuffix(DEAD_SUFFIX)
    if prefix and base.startswith(prefix):
        base = base[len(prefix):]
    return base + (".fifo" if fifo else "")


def check_queue_name(sqs_name: str, queue: str) -> None:
    if len(sqs_name) > MAX_QUEUE_NAME:
        raise ConfigurationError(
            f"queue {queue!r} maps to the SQS name {sqs_name!r}, longer than SQS's "
            f"{MAX_QUEUE_NAME} characters (with its dead-letter suffix); use a shorter "
            f"name or queue_name_prefix")


def parse_url(url: str) -> dict[str, Any]:
    """Split ``sqs://[KEY:SECRET@][host[:port]][?option=value...]`` as kombu reads it.

    The key and secret are URL-quoted (a secret may hold ``/``); empty ones leave the
    credentials to boto3 (environment, config files, instance roles). A host makes the
    endpoint ``http://host:port`` (``https`` with ``is_secure``), as in kombu; the
    ``endpoint_url`` option says it outright.

    Returns a dict: ``access_key_id``, ``secret_access_key`` (None when absent),
    ``host``, ``port`` and ``options`` (those of ``URL_OPTIONS`` found in the query).
    """
    scheme, sep, _rest = url.partition("://")
    if scheme.lower() != "sqs" or not sep:
        raise ConfigurationError(f"not an SQS URL: {mask_url(url)!r} (expected sqs://...)")
    try:
        split = urlsplit(url)
        port = split.port
    except ValueError as exc:
        raise ConfigurationError(f"malformed SQS URL {mask_url(url)!r}: {exc}") from exc
    options: dict[str, Any] = {}
    for key, value in parse_qsl(split.query, keep_blank_values=True):
        if key not in URL_OPTIONS:
            raise ConfigurationError(
                f"unknown option {key!r} in the SQS URL {mask_url(url)!r} "
                f"(known: {', '.join(sorted(URL_OPTIONS))})")
        try:
            options[key] = URL_OPTIONS[key](value)
        except ValueError as exc:
            raise ConfigurationError(f"bad value for {key} in {mask_url(url)!r}: {exc}") from exc
    return {
        "access_key_id": unquote(split.username) if split.username else None,
        "secret_access_key": unquote(split.password) if split.password else None,
        "host": split.hostname or None,
        "port": port,
        "options": options,
    }


# -- message bodies ---------------------------------------------------------------------

def encode_body(message: Any, base64_encoding: bool = True) -> str:
    """The SQS message body for ``message``: kombu's full envelope (§0 #9), base64-encoded."""
    data = envelope(message)
    if base64_encoding:
        return base64.b64encode(data).decode("ascii")
    return data.decode("utf-8")


def decode_body(raw: str) -> tuple[dict, dict, bytes]:
    """``(headers, properties, body)`` from an SQS message body, as fastq or kombu wrote it.

    The body may be the envelope's JSON as it is (kombu with ``sqs_base64_encoding``
    off) or base64 of it. Raises ValueError when it is neither: the caller still
    delivers such a message (empty headers, raw body) so the worker dead-letters it.
    """
    text = raw.strip()
    if text.startswith("{"):
        data = text.encode("utf-8")
    else:
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"neither JSON nor base64: {exc}") from None
    decoded = serialization.json_loads(data)
    if not isinstance(decoded, dict) or not isinstance(decoded.get("properties"), dict):
        raise ValueError("not a kombu envelope")
    headers, properties, body = unpack(decoded)
    if not isinstance(headers, dict):
        raise ValueError("envelope headers are not an object")
    return headers, properties, body


# -- message attributes -----------------------------------------------------------------

def number_attribute(value: float) -> dict:
    return {"DataType": "Number", "StringValue": repr(value) if isinstance(value, float)
            else str(value)}


def string_attribute(value: str) -> dict:
    # SQS refuses empty attribute values
    return {"DataType": "String", "StringValue": value or "-"}


def sendable_attributes(received: dict | None) -> dict:
    """Message attributes as ReceiveMessage gave them, in the shape SendMessage takes."""
    attributes = {}
    for name, value in (received or {}).items():
        kept = {k: value[k] for k in ("DataType", "StringValue", "BinaryValue") if k in value}
        if "DataType" in kept:
            attributes[name] = kept
    return attributes


def number_of(attributes: dict, name: str) -> float | None:
    value = attributes.get(name)
    if not value:
        return None
    try:
        return float(value.get("StringValue"))
    except (TypeError, ValueError):
        return None


def string_of(attributes: dict, name: str) -> str | None:
    value = attributes.get(name)
    return value.get("StringValue") if value else None


def deduplication_id(message: Any) -> str:
    """A FIFO deduplication id: kombu's property if set, else the task id.

    A retry keeps the task id (§1.7), so retries add ``-retry-<n>``: otherwise SQS
    would drop a retry sent within five minutes as a duplicate of the first message.
    """
    explicit = message.properties.get("MessageDeduplicationId") or \
        message.headers.get("MessageDeduplicationId")
    if explicit:
        return str(explicit)
    task_id = message.headers.get("id")
    if not isinstance(task_id, str) or not task_id:
        return str(uuid.uuid4())
    retries = message.headers.get("retries") or 0
    return f"{task_id}-retry-{retries}" if retries else task_id
