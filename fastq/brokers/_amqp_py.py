"""The pure-Python AMQP 0-9-1 driver (py-amqp): the twin of ``fastq._speedups._amqp``.

One connection, one channel, no policy: the broker in ``amqp.py`` decides what to do,
this module only speaks the protocol. Both drivers share this interface exactly:

- deliveries are tuples ``(delivery_tag, redelivered, exchange, routing_key,
  consumer_tag, properties, headers, body)``;
- headers are written with only the field-table tags ``S t I l d F A V T``
  (celery-protocol.md §1.3.2): py-amqp's own writer uses ``L`` for big integers,
  which rabbitmq-c reads as unsigned, so the content header is encoded here;
- on read, ``x`` byte arrays (and ``S`` strings) that are valid UTF-8 become ``str``
  and ``T`` timestamps become aware UTC datetimes;
- socket failures raise ``BrokerConnectionLost``; a channel or connection closed by
  RabbitMQ raises ``AMQPError`` with its reply code. No py-amqp exception escapes.

After a channel error the connection stays open and the next call opens a fresh
channel, without the old channel's consumers, prefetch or confirm mode.
"""

from __future__ import annotations

import contextlib
import math
import select
import struct
import time
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

import amqp
from amqp import exceptions as amqp_exceptions
from amqp import spec
from amqp.transport import SSLTransport

from ..exceptions import AMQPError, BrokerConnectionLost
from ._amqp_decisions import ConfirmTracker
from ._amqp_tls import client_context

#: Delivery tuple: (delivery_tag, redelivered, exchange, routing_key, consumer_tag,
#: properties, headers, body).
DeliveryTuple = tuple[int, bool, str, str, str, dict, dict, bytes]

#: basic properties in wire order (AMQP 0-9-1 §4.2.6.1 / class basic, 60) with their
#: flag bit; the headers table (bit 13) is written separately, user_id and cluster_id
#: never (RabbitMQ checks user_id against the login, cluster_id is deprecated).
_SHORTSTR_PROPERTIES = (("content_type", 15), ("content_encoding", 14))
_LATER_PROPERTIES = (
    ("delivery_mode", 12, "octet"), ("priority", 11, "octet"),
    ("correlation_id", 10, "shortstr"), ("reply_to", 9, "shortstr"),
    ("expiration", 8, "shortstr"), ("message_id", 7, "shortstr"),
    ("timestamp", 6, "timestamp"), ("type", 5, "shortstr"), ("app_id", 3, "shortstr"),
)
_HEADERS_BIT = 13

_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1
_INT64_MAX = 2 ** 63 - 1

_pack_I = struct.Struct(">I").pack
_pack_i = struct.Struct(">i").pack
_pack_q = struct.Struct(">q").pack
_pack_Q = struct.Struct(">Q").pack
_pack_d = struct.Struct(">d").pack
_pack_H = struct.Struct(">H").pack


# -- encoding ----------------------------------------------------------------------------
def _shortstr(value: Any, name: str) -> bytes:
    data = str(value).encode("utf-8")
    if len(data) > 255:
        raise ValueError(f"AMQP property {name!r} is longer than 255 bytes")
    return bytes((len(data),)) + data


def _timestamp(value: Any) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:  # naive means UTC, as on the wire
            value = value.replace(tzinfo=timezone.utc)
        return int(value.timestamp())
    return int(value)


def encode_value(value: Any, out: list[bytes]) -> None:
    """Append the field-table encoding of ``value`` (tag and data) to ``out``.

    Raises:
        TypeError: ``value`` has no AMQP field type fastq writes.
        ValueError: an integer outside signed 64 bits.
    """
    # bool before int: bool is an int subclass
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        out.append(b"S" + _pack_I(len(data)))
        out.append(data)
    elif value is None:
        out.append(b"V")
    elif isinstance(value, bool):
        out.append(b"t\x01" if value else b"t\x00")
    elif isinstance(value, int):
        if _INT32_MIN <= value <= _INT32_MAX:
            out.append(b"I" + _pack_i(value))
        elif -_INT64_MAX - 1 <= value <= _INT64_MAX:
            # 'l' is signed int64 for RabbitMQ and rabbitmq-c; §1.3.2 promises it only
            # for non-negative values, since old py-amqp releases read 'l' unsigned.
            out.append(b"l" + _pack_q(value))
        else:
            raise ValueError(f"integer {value} does not fit an AMQP header (signed 64 bits)")
    elif isinstance(value, float):
        out.append(b"d" + _pack_d(value))
    elif isinstance(value, dict):
        out.append(b"F")
        out.append(encode_table(value))
    elif isinstance(value, (list, tuple)):
        items: list[bytes] = []
        for item in value:
            encode_value(item, items)
        data = b"".join(items)
        out.append(b"A" + _pack_I(len(data)))
        out.append(data)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        # 'S' with raw bytes, never 'x' (§1.3.2): peers read it back as str or bytes
        data = bytes(value)
        out.append(b"S" + _pack_I(len(data)))
        out.append(data)
    elif isinstance(value, datetime):
        out.append(b"T" + _pack_Q(_timestamp(value)))
    else:
        raise TypeError(f"cannot put a {type(value).__name__} in an AMQP header: {value!r}")


def encode_table(table: dict) -> bytes:
    """A field table (length-prefixed) from a dict with str keys."""
    out: list[bytes] = []
    for key, value in table.items():
        name = str(key).encode("utf-8")
        if len(name) > 255:
            raise ValueError(f"AMQP header name longer than 255 bytes: {key!r}")
        out.append(bytes((len(name),)) + name)
        try:
            encode_value(value, out)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"header {key!r}: {exc}") from None
    data = b"".join(out)
    return _pack_I(len(data)) + data


def encode_properties(properties: dict, headers: dict | None) -> bytes:
    """The property flags and list of a basic content header (without class/size)."""
    flags = 0
    parts: list[bytes] = []
    for name, bit in _SHORTSTR_PROPERTIES:
        value = properties.get(name)
        if value is not None:
            flags |= 1 << bit
            parts.append(_shortstr(value, name))
    if headers:
        flags |= 1 << _HEADERS_BIT
        parts.append(encode_table(headers))
    for name, bit, kind in _LATER_PROPERTIES:
        value = properties.get(name)
        if value is None:
            continue
        flags |= 1 << bit
        if kind == "octet":
            parts.append(bytes((int(value) & 0xFF,)))
        elif kind == "timestamp":
            parts.append(_pack_Q(_timestamp(value)))
        else:
            parts.append(_shortstr(value, name))
    return _pack_H(flags) + b"".join(parts)


class _Outgoing(amqp.Message):
    """A py-amqp message whose content header is encoded by ``encode_properties``."""

    def __init__(self, body: bytes, encoded_properties: bytes) -> None:
        super().__init__(body)
        self._encoded_properties = encoded_properties

    def _serialize_properties(self) -> bytes:
        return self._encoded_properties


# -- decoding ----------------------------------------------------------------------------
def normalise_value(value: Any) -> Any:
    """Header values as both drivers return them: UTF-8 bytes as str, aware UTC datetimes."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return bytes(value)
    if isinstance(value, dict):
        return {key: normalise_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalise_value(item) for item in value]
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _needs_normalising(value: Any) -> bool:
    return isinstance(value, (bytes, bytearray, dict, list, datetime))


def _split_properties(message: amqp.Message) -> tuple[dict, dict]:
    properties = dict(message.properties)
    headers = properties.pop("application_headers", None) or {}
    # only values that can differ between drivers are rebuilt; most headers are str/int
    for key, value in headers.items():
        if _needs_normalising(value):
            headers[key] = normalise_value(value)
    timestamp = properties.get("timestamp")
    if isinstance(timestamp, datetime):
        properties["timestamp"] = int(_timestamp(timestamp))
    return properties, headers


def _to_tuple(message: amqp.Message, consumer_tag: str = "") -> DeliveryTuple:
    info = message.delivery_info
    properties, headers = _split_properties(message)
    body = message.body
    if not isinstance(body, bytes):
        body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return (info["delivery_tag"], bool(info.get("redelivered")), info.get("exchange", ""),
            info.get("routing_key", ""), info.get("consumer_tag", consumer_tag),
            properties, headers, body)


# -- TLS ---------------------------------------------------------------------------------
class _ContextTransport(SSLTransport):
    """py-amqp's TLS transport wrapping the socket with a ready ``ssl.SSLContext``.

    py-amqp itself only builds contexts from ``wrap_socket``-style options, which
    check the host name only when told it; this way both drivers verify the same.
    """

    def _wrap_socket(self, sock: Any, context: Any = None, server_hostname: Any = None,
                     **_unused: Any) -> Any:
        # py-amqp's _setup_transport does the handshake, under connect_timeout
        return context.wrap_socket(sock, server_hostname=server_hostname,
                                   do_handshake_on_connect=False)


class _ContextConnection(amqp.Connection):
    """An ``amqp.Connection`` whose TLS goes through ``_ContextTransport``, and whose
    frames, when damaged, end the connection rather than escape as parsing errors."""

    #: when set (monotonic seconds), a synchronous method's reply is overdue after it:
    #: py-amqp only bounds each read, and frames that keep coming (deliveries it rejects
    #: while a consume-ok is missing) would make it wait for ever
    rpc_deadline: float | None = None
    #: since when a message's frames have been arriving without completing it (None:
    #: no message is half read); RabbitMQ sends them back to back
    content_since: float | None = None

    def blocking_read(self, timeout: Any = None) -> Any:
        if self.rpc_deadline is not None and time.monotonic() > self.rpc_deadline:
            raise amqp_exceptions.RecoverableConnectionError(
                "no reply within rpc_timeout")
        if timeout == 0:
            # basic_publish polls with timeout 0 before every publish (for a
            # connection.blocked): answer "nothing" at once when nothing is there. A
            # short wait, not a non-blocking socket, when something is: with half a frame
            # in hand py-amqp retries EAGAIN in a loop, and spun for ever; and that wait
            # must not be taken when nothing is there, since the socket rounds it up to a
            # millisecond (800 publishes a second)
            if not self._inbound_ready():
                raise TimeoutError("nothing to read")
            timeout = 0.0001
        with self.transport.having_timeout(timeout):
            frame = self.transport.read_frame()
        try:
            complete = self.on_inbound_frame(frame)
            if frame[0] in (1, 2, 3):  # not a heartbeat
                if complete:
                    self.content_since = None
                elif self.content_since is None:
                    self.content_since = time.monotonic()
            return complete
        except (struct.error, IndexError, KeyError, ValueError) as exc:
            # py-amqp decodes arguments and content headers without checking their
            # lengths: a damaged frame surfaces as one of these (found by fuzzing)
            raise amqp_exceptions.RecoverableConnectionError(
                f"unreadable frame from the server ({type(exc).__name__}: {exc})") from None

    def _inbound_ready(self) -> bool:
        """Whether a read would find bytes now: buffered by py-amqp or TLS, or on the
        socket."""
        transport = self.transport
        if transport._read_buffer:
            return True
        sock = transport.sock
        pending = getattr(sock, "pending", None)  # TLS records already decrypted
        if pending is not None and pending():
            return True
        return bool(select.select([sock], [], [], 0)[0])

    def Transport(self, host: str, connect_timeout: Any, ssl: Any = False,  # noqa: N802
                  read_timeout: Any = None, write_timeout: Any = None,
                  **kwargs: Any) -> Any:
        if not ssl:
            return super().Transport(host, connect_timeout, ssl, read_timeout,
                                     write_timeout, **kwargs)
        return _ContextTransport(host, connect_timeout=connect_timeout, ssl=ssl,
                                 read_timeout=read_timeout, write_timeout=write_timeout,
                                 **kwargs)


# -- the connection ----------------------------------------------------------------------
class Connection:
    """One AMQP connection with one channel, driven by py-amqp.

    Not thread-safe: use one per thread, as with the rabbitmq-c driver.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 5672, vhost: str = "/",
                 user: str = "guest", password: str = "guest", *, heartbeat: int = 0,
                 frame_max: int = 131072, connect_timeout: float = 4.0,
                 rpc_timeout: float = 30.0, ssl: Any = None) -> None:
        self.host = host
        self.port = int(port)
        self.vhost = vhost
        self.user = user
        self._password = password
        self.heartbeat = int(heartbeat or 0)
        self.frame_max = int(frame_max)
        self.connect_timeout = float(connect_timeout)
        self.rpc_timeout = float(rpc_timeout or 0.0)
        #: None, or the TLS dict (``cafile``, ``certfile``, ``keyfile``, ``verify``,
        #: ``server_hostname``) both drivers take; True means the defaults (verify)
        self.ssl = ssl
        self._ssl_context: Any = None
        self._conn: amqp.Connection | None = None
        self._channel: Any = None
        self._buffer: deque[DeliveryTuple] = deque()
        self._confirms = ConfirmTracker()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "closed"
        return f"<fastq py-amqp Connection {self.user}@{self.host}:{self.port}{self.vhost} {state}>"

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        conn = self._conn
        return conn is not None and bool(conn.connected)

    def connect(self) -> None:
        """Open the socket, log in and open the channel; idempotent.

        Raises:
            BrokerConnectionLost: the server cannot be reached (or went away mid-handshake).
            AMQPError: RabbitMQ refused the login or the vhost.
        """
        if self.is_open:
            return
        self._forget()
        conn = _ContextConnection(
            host=f"{self.host}:{self.port}", userid=self.user, password=self._password,
            virtual_host=self.vhost, heartbeat=self.heartbeat, frame_max=self.frame_max,
            connect_timeout=self.connect_timeout, ssl=self._tls_options(),
            client_properties={"product": "fastq (py-amqp)"})
        self._conn = conn
        with self._guard("connect", rpc=False):  # under connect_timeout
            conn.connect()
            # the handshake is bounded by connect_timeout. Afterwards drain and confirm
            # waits set their own timeout for each read; every other wait (an RPC's
            # reply, a send to a peer that stopped reading) is bounded by rpc_timeout:
            # past it the connection is lost, as with rabbitmq-c
            conn.transport.sock.settimeout(self.rpc_timeout or None)
            self._open_channel()

    def close(self) -> None:
        """Close the channel and connection politely if possible; never raises."""
        conn, self._conn = self._conn, None
        self._channel = None
        self._buffer.clear()
        if conn is None:
            return
        try:
            if conn.connected:
                sock = conn.transport.sock
                if sock is not None:
                    sock.settimeout(min(self.connect_timeout, 2.0))  # a dead peer must not hang us
                conn.close()
        except Exception:  # noqa: BLE001 - closing is best effort by contract
            pass
        finally:
            with contextlib.suppress(Exception):
                conn.collect()

    def fileno(self) -> int:
        """The socket's file descriptor, for waiting on it in an event loop."""
        conn = self._require()
        return conn.transport.sock.fileno()

    def __enter__(self) -> Connection:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------
    def _tls_options(self) -> dict | bool:
        """What ``_ContextTransport`` takes (False without TLS); the context is built once."""
        if not self.ssl:
            return False
        tls = self.ssl if isinstance(self.ssl, dict) else {"verify": True}
        if self._ssl_context is None:
            self._ssl_context = client_context(tls)
        return {"context": self._ssl_context,
                "server_hostname": tls.get("server_hostname") or self.host}

    def _forget(self) -> None:
        self._channel = None
        self._buffer.clear()
        self._confirms.new_connection()

    def _abandon(self) -> None:
        """Drop a broken connection without a handshake (the socket is closed)."""
        conn, self._conn = self._conn, None
        self._channel = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.collect()

    def _require(self) -> amqp.Connection:
        conn = self._conn
        if conn is None or not conn.connected:
            raise BrokerConnectionLost(
                f"not connected to RabbitMQ at {self.host}:{self.port} (call connect())")
        return conn

    def _open_channel(self) -> Any:
        conn = self._require()
        channel = conn.channel()
        channel.events["basic_ack"].add(self._on_confirm_ack)
        channel.events["basic_nack"].add(self._on_confirm_nack)
        channel.events["basic_return"].add(self._on_return)
        self._channel = channel
        self._confirms.new_channel()
        return channel

    @property
    def _ch(self) -> Any:
        channel = self._channel
        if channel is None or not channel.is_open:
            channel = self._open_channel()
        return channel

    @contextlib.contextmanager
    def _guard(self, doing: str, rpc: bool = True) -> Iterator[None]:
        """Translate py-amqp and socket errors into fastq's at the boundary; with ``rpc``
        (a call that waits for a reply) the whole call is bounded by rpc_timeout. Calls
        that only send (ack, publish: the hot path) pass ``rpc=False``."""
        conn = self._conn
        if conn is not None:
            conn.rpc_deadline = (time.monotonic() + self.rpc_timeout
                                 if rpc and self.rpc_timeout else None)
        try:
            yield
        except (amqp_exceptions.RecoverableConnectionError, OSError, EOFError) as exc:
            # OSError covers socket.timeout, refused, reset; ConnectionForced (320) is
            # RabbitMQ closing us on purpose (shutdown, close_all_connections)
            self._abandon()
            raise BrokerConnectionLost(
                f"lost the connection to RabbitMQ at {self.host}:{self.port} "
                f"while trying to {doing}: {exc or type(exc).__name__}") from None
        except amqp_exceptions.ChannelError as exc:
            self._channel = None  # py-amqp closed it; the next call opens a new one
            raise AMQPError(exc.reply_code or exc.code, exc.reply_text or str(exc),
                            "channel") from None
        except amqp_exceptions.AMQPError as exc:
            self._abandon()
            raise AMQPError(exc.reply_code or exc.code, exc.reply_text or str(exc),
                            "connection") from None
        finally:
            if conn is not None:
                conn.rpc_deadline = None

    # -- topology ------------------------------------------------------------------------
    def declare_exchange(self, name: str, type: str = "direct", durable: bool = True,  # noqa: A002
                         auto_delete: bool = False, arguments: dict | None = None) -> None:
        with self._guard(f"declare exchange {name!r}"):
            self._ch.exchange_declare(name, type, durable=durable, auto_delete=auto_delete,
                                      arguments=arguments or {})

    def declare_queue(self, name: str, durable: bool = True, exclusive: bool = False,
                      auto_delete: bool = False, arguments: dict | None = None,
                      passive: bool = False) -> tuple[str, int, int]:
        """Declare (or with ``passive`` only look up) a queue.

        Returns:
            ``(name, message_count, consumer_count)``; ``message_count`` is the ready
            messages.
        Raises:
            AMQPError: 404 for a passive declare of a missing queue, 406 when the
            queue exists with other flags or arguments.
        """
        with self._guard(f"declare queue {name!r}"):
            ok = self._ch.queue_declare(name, passive=passive, durable=durable,
                                        exclusive=exclusive, auto_delete=auto_delete,
                                        arguments=arguments or {})
        return (ok.queue, ok.message_count, ok.consumer_count)

    def bind_queue(self, queue: str, exchange: str, routing_key: str) -> None:
        with self._guard(f"bind queue {queue!r} to {exchange!r}"):
            self._ch.queue_bind(queue, exchange, routing_key)

    def purge_queue(self, name: str) -> int:
        with self._guard(f"purge queue {name!r}"):
            return int(self._ch.queue_purge(name) or 0)

    def delete_queue(self, name: str) -> None:
        with self._guard(f"delete queue {name!r}"):
            self._ch.queue_delete(name)

    # -- consuming -----------------------------------------------------------------------
    def qos(self, prefetch_count: int) -> None:
        with self._guard("set the prefetch count"):
            self._ch.basic_qos(0, int(prefetch_count), False)

    def consume(self, queue: str, consumer_tag: str = "", no_ack: bool = False) -> str:
        """Start a consumer on ``queue``; deliveries are buffered for ``drain``."""
        buffer = self._buffer

        def on_message(message: amqp.Message) -> None:
            buffer.append(_to_tuple(message))

        with self._guard(f"consume from {queue!r}"):
            return self._ch.basic_consume(queue, consumer_tag, no_ack=no_ack,
                                          callback=on_message)

    def cancel(self, consumer_tag: str) -> None:
        with self._guard(f"cancel consumer {consumer_tag!r}"):
            self._ch.basic_cancel(consumer_tag)

    def _read_one(self, timeout: float | None) -> bool:
        """Read and dispatch one frame; False when ``timeout`` passed with none."""
        conn = self._require()
        try:
            conn.blocking_read(timeout)
        except TimeoutError:
            return False
        return True

    def _ready_now(self) -> bool:
        """Bytes wait in the socket, py-amqp's partial-frame buffer or the TLS layer."""
        conn = self._conn
        if conn is None or conn.transport is None or conn.transport.sock is None:
            return False
        transport = conn.transport
        if getattr(transport, "_read_buffer", b""):
            return True
        sock = transport.sock
        pending = getattr(sock, "pending", None)
        if pending is not None and pending():
            return True
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)

    def _check_content_stall(self) -> None:
        """A message begun and not finished within rpc_timeout never will be (its frames
        were lost, or its header announced more than follows): the stream is broken."""
        since = self._conn.content_since if self._conn is not None else None
        if since is not None and self.rpc_timeout and (
                time.monotonic() - since > self.rpc_timeout):
            raise TimeoutError(f"the rest of a message did not come within "
                               f"{self.rpc_timeout:g} s (rpc_timeout)")

    def _tick(self) -> None:
        if self.heartbeat and self._conn is not None:
            self._conn.heartbeat_tick()

    def drain(self, max_count: int, timeout: float) -> list[DeliveryTuple]:
        """Up to ``max_count`` deliveries: wait up to ``timeout`` s for the first, then
        take only what has already arrived. Heartbeats are sent and checked meanwhile."""
        buffer = self._buffer
        with self._guard("receive messages", rpc=False):
            self._require()
            if not buffer:
                deadline = time.monotonic() + max(0.0, timeout)
                # wake at least twice per heartbeat interval to keep the connection alive
                step = self.heartbeat / 2 if self.heartbeat else math.inf
                while not buffer:
                    self._tick()
                    self._check_content_stall()
                    now = time.monotonic()
                    remaining = deadline - now
                    if remaining <= 0:
                        if not self._ready_now():
                            break
                        if self.rpc_timeout and now - deadline > self.rpc_timeout:
                            # begun and never finished: the stream is broken, and
                            # waiting on would spin here for ever
                            raise TimeoutError(f"a frame stayed incomplete for "
                                               f"{self.rpc_timeout:g} s (rpc_timeout)")
                        remaining = 0.05  # a frame is arriving: let it finish
                    self._read_one(min(remaining, step))
            # a delivery is three frames; keep reading while bytes are already here
            while len(buffer) < max_count and self._ready_now():
                if not self._read_one(0.05):
                    break
            self._tick()
        count = min(max_count, len(buffer))
        return [buffer.popleft() for _ in range(count)]

    def get(self, queue: str, no_ack: bool = False) -> DeliveryTuple | None:
        """One message by basic.get, or None when ``queue`` is empty."""
        with self._guard(f"get from {queue!r}"):
            message = self._ch.basic_get(queue, no_ack=no_ack)
        return None if message is None else _to_tuple(message)

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        with self._guard("ack", rpc=False):
            self._ch.basic_ack(delivery_tag, multiple)

    def reject(self, delivery_tag: int, requeue: bool) -> None:
        with self._guard("reject", rpc=False):
            self._ch.basic_reject(delivery_tag, requeue)

    def nack(self, delivery_tag: int, multiple: bool, requeue: bool) -> None:
        with self._guard("nack", rpc=False):
            # py-amqp has no basic_nack; basic.nack (60, 120) is a RabbitMQ extension
            # carrying delivery-tag, then the multiple and requeue bits in one octet
            self._ch.send_method(spec.Basic.Nack, "Lbb", (delivery_tag, multiple, requeue))

    # -- producing -----------------------------------------------------------------------
    def publish(self, exchange: str, routing_key: str, body: bytes, properties: dict,
                headers: dict | None, mandatory: bool = False) -> None:
        """basic.publish; with confirms on, ``wait_for_confirms`` settles it later.

        Raises:
            TypeError, ValueError: a header or property value AMQP cannot carry.
        """
        for value, what in ((exchange, "exchange name"), (routing_key, "routing key")):
            # py-amqp would fail mid-frame; 63 characters are at most 252 bytes
            if len(value) > 63 and len(str(value).encode("utf-8")) > 255:
                raise ValueError(f"AMQP {what} is longer than 255 bytes: {value!r}")
        message = _Outgoing(body, encode_properties(properties, headers))
        with self._guard(f"publish to {exchange!r}/{routing_key!r}", rpc=False):
            self._ch.basic_publish(message, exchange, routing_key, mandatory)
        self._confirms.published()

    def publish_batch(self, messages: Iterable[tuple], mandatory: bool = False) -> None:
        """basic.publish each ``(exchange, routing_key, body, properties, headers)``, in
        order. When a message cannot be encoded, the ones before it are sent, then the
        error is raised."""
        for exchange, routing_key, body, properties, headers in messages:
            self.publish(exchange, routing_key, body, properties, headers, mandatory)

    def publish_and_ack(self, messages: Iterable[tuple], upto: int | None,
                        singles: Iterable[int]) -> None:
        """``publish_batch(messages)``, then basic.ack of every tag up to ``upto`` (None:
        none) and of each tag in ``singles``: results first, then the acks they cover.
        A message that cannot be encoded is left out, the others and the acks still
        go, then its error is raised. (py-amqp writes each frame as it comes.)"""
        failure = None
        for exchange, routing_key, body, properties, headers in messages:
            try:
                self.publish(exchange, routing_key, body, properties, headers)
            except (TypeError, ValueError) as exc:
                failure = failure or exc
        if upto is not None:
            self.ack(upto, True)
        for tag in singles:
            self.ack(tag, False)
        if failure is not None:
            raise failure

    def confirm_select(self) -> None:
        """Turn on publisher confirms for this channel (a RabbitMQ extension)."""
        with self._guard("enable publisher confirms"):
            self._ch.confirm_select()
        self._confirms.select()

    def wait_for_confirms(self, timeout: float) -> None:
        """Wait until RabbitMQ has confirmed every publish so far.

        Raises:
            PublishNacked: one or more publishes were nacked, or returned as unroutable
                (``mandatory``).
            PublishTimeout: not all confirms arrived within ``timeout`` seconds.
        """
        confirms = self._confirms
        deadline = time.monotonic() + max(0.0, timeout)
        with self._guard("wait for publisher confirms", rpc=False):
            while len(confirms):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise confirms.timed_out(f"{self.host}:{self.port}", timeout)
                self._read_one(remaining)
        failure = confirms.failure()
        if failure is not None:
            raise failure

    def _on_confirm_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._confirms.acked(delivery_tag, multiple)

    def _on_confirm_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._confirms.nacked(delivery_tag, multiple)

    def _on_return(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        self._confirms.returned(getattr(exc, "reply_code", 312), str(exc))
