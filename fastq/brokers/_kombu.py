"""kombu's JSON message envelope, as its Redis and SQS transports store messages."""

from __future__ import annotations

import base64
import uuid
from typing import Any

from .. import serialization


def envelope(message: Any) -> bytes:
    """kombu's complete envelope for ``message`` (celery-protocol.md §0 #9), as JSON."""
    properties = dict(message.properties)
    content_type = properties.pop("content_type", None)
    content_encoding = properties.pop("content_encoding", None)
    properties["priority"] = properties.get("priority") or 0
    # delivered straight into the queue: exchange "" + the queue is also what a Celery
    # worker needs to route a retry or a restore back here without bindings
    properties["delivery_info"] = {"exchange": "", "routing_key": message.queue}
    properties["body_encoding"] = "base64"
    properties["delivery_tag"] = str(uuid.uuid4())
    return serialization.json_dumps({
        "body": base64.b64encode(message.body).decode("ascii"),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": message.headers,
        "properties": properties,
    })


def unpack(decoded: dict) -> tuple[Any, dict, bytes]:
    """``(headers, properties, body)`` from a decoded envelope, the body's own encoding
    undone. Raises KeyError, TypeError or ValueError on a malformed one."""
    properties = dict(decoded["properties"])
    headers = decoded.get("headers") or {}
    body = decoded.get("body") or ""
    if isinstance(body, str):
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        else:
            body = body.encode("utf-8")
    properties["content_type"] = decoded.get("content-type")
    properties["content_encoding"] = decoded.get("content-encoding")
    return headers, properties, body
