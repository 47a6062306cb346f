"""Type stub for the rabbitmq-c driver; the interface is the py-amqp twin's (brokers/_amqp_py.py)."""

from collections.abc import Iterable
from types import TracebackType
from typing import Any

#: (delivery_tag, redelivered, exchange, routing_key, consumer_tag, properties, headers, body)
DeliveryTuple = tuple[int, bool, str, str, str, dict[str, Any], dict[str, Any], bytes]

RABBITMQ_C_VERSION: str
CLIENT_PROPERTIES: dict[str, Any]

class Connection:
    host: str
    port: int
    vhost: str
    user: str
    heartbeat: int
    frame_max: int
    connect_timeout: float
    ssl: bool | dict[str, Any] | None
    #: False: every publish goes through rabbitmq-c's amqp_basic_publish (three writes)
    direct_writes: bool
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5672,
        vhost: str = "/",
        user: str = "guest",
        password: str = "guest",
        *,
        heartbeat: int = 0,
        frame_max: int = 131072,
        connect_timeout: float = 4.0,
        ssl: bool | dict[str, Any] | None = None,
    ) -> None: ...
    def __enter__(self) -> Connection: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    @property
    def is_open(self) -> bool: ...
    def connect(self) -> None: ...
    def close(self) -> None: ...
    def fileno(self) -> int: ...
    def declare_exchange(
        self,
        name: str,
        type: str = "direct",
        durable: bool = True,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> None: ...
    def declare_queue(
        self,
        name: str,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        passive: bool = False,
    ) -> tuple[str, int, int]: ...
    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None: ...
    def purge_queue(self, name: str) -> int: ...
    def delete_queue(self, name: str) -> None: ...
    def qos(self, prefetch_count: int) -> None: ...
    def consume(self, queue: str, consumer_tag: str = "", no_ack: bool = False) -> str: ...
    def cancel(self, consumer_tag: str) -> None: ...
    def drain(self, max_count: int, timeout: float) -> list[DeliveryTuple]: ...
    def get(self, queue: str, no_ack: bool = False) -> DeliveryTuple | None: ...
    def ack(self, delivery_tag: int, multiple: bool = False) -> None: ...
    def reject(self, delivery_tag: int, requeue: bool) -> None: ...
    def nack(self, delivery_tag: int, multiple: bool, requeue: bool) -> None: ...
    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes | bytearray | memoryview,
        properties: dict[str, Any],
        headers: dict[str, Any] | None,
        mandatory: bool = False,
    ) -> None: ...
    def publish_batch(
        self,
        messages: Iterable[tuple[str, str, bytes | bytearray | memoryview, dict[str, Any],
                                 dict[str, Any] | None]],
        mandatory: bool = False,
    ) -> None: ...
    def publish_and_ack(
        self,
        messages: Iterable[tuple[str, str, bytes | bytearray | memoryview, dict[str, Any],
                                 dict[str, Any] | None]],
        upto: int | None,
        singles: Iterable[int],
    ) -> None: ...
    def confirm_select(self) -> None: ...
    def wait_for_confirms(self, timeout: float) -> None: ...
