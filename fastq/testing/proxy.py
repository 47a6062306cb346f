"""A fault-injection TCP proxy for tests: stands between a client and a real server on
loopback and makes the wire misbehave on demand (stall, rewrite, cut, terminate TLS)."""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable

#: Splits a byte stream into whole frames: ``(frames, the incomplete rest)``.
Framing = Callable[[bytes], tuple[list[bytes], bytes]]


def amqp_frames(data: bytes) -> tuple[list[bytes], bytes]:
    """AMQP 0-9-1 frames (type, channel, size, payload, 0xCE) and the incomplete rest."""
    frames = []
    while len(data) >= 7:
        size = struct.unpack_from(">I", data, 3)[0]
        if len(data) < 7 + size + 1:
            break
        frames.append(data[:7 + size + 1])
        data = data[7 + size + 1:]
    return frames, data


class FaultProxy:
    """Forwards each connection accepted on ``port`` (loopback, a free one) to
    ``upstream``, and on demand:

    - ``sent``: records every byte clients send (after TLS is taken off);
    - ``stalled``: while set, holds clients' bytes back (their writes pile up in the
      socket buffers, as when the server stops reading);
    - ``rewrite``: passes what the server sends through ``rewrite(frame) -> bytes``, frame
      by frame as ``framing`` cuts them (``amqp_frames`` for RabbitMQ);
    - ``cut()``: drops every open connection at once, as a failing network does;
    - ``tls``: terminates TLS with that server context, counting ``handshakes`` and
      keeping handshake ``failures`` and clients' certificate common names.

    One thread per connection moves both directions (an SSL socket may not be read and
    written from two threads).
    """

    def __init__(self, upstream: tuple[str, int], *, tls: ssl.SSLContext | None = None,
                 rewrite: Callable[[bytes], bytes] | None = None,
                 framing: Framing = amqp_frames) -> None:
        self.upstream = upstream
        self.tls = tls
        self.rewrite = rewrite
        self.framing = framing
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self.listener.getsockname()[:2]
        self.sent = bytearray()
        self.stalled = threading.Event()
        self.handshakes = 0
        self.failures: list[str] = []
        self.client_names: list[str] = []
        self.connections = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._accept, name="fault-proxy",
                                          daemon=True)]
        self._threads[0].start()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- faults ------------------------------------------------------------------------
    def cut(self) -> None:
        """Drop every open connection (the listener stays: clients may reconnect)."""
        with self._lock:
            sockets, self._open = list(self._open), set()
        # shut down, not closed: the pump thread sees the end and closes them itself (a
        # socket closed under its selector just leaves it, and the pump waited for ever)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        # closing alone does not wake the thread blocked in accept() (it waited out the
        # join below): shutting the listener down does
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.cut()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- plumbing ----------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        if self.tls is not None:
            client.settimeout(10)
            try:
                client = self.tls.wrap_socket(client, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                with self._lock:
                    self.failures.append(str(exc))
                client.close()
                return
            peer = client.getpeercert()
            with self._lock:
                self.handshakes += 1
                if peer:
                    subject = dict(item[0] for item in peer["subject"])
                    self.client_names.append(subject.get("commonName", ""))
            client.settimeout(None)
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        with self._lock:
            if self._closed:
                client.close()
                server.close()
                return
            self._open.update((client, server))
            self.connections += 1
        try:
            self._pump(client, server)
        finally:
            for sock in (client, server):
                with self._lock:
                    self._open.discard(sock)
                sock.close()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        pending = b""  # server bytes not yet a whole frame (with rewrite)
        with selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ)
            selector.register(server, selectors.EVENT_READ)
            while True:
                try:
                    ready = selector.select(0.05)
                except (OSError, ValueError):
                    return
                for key, _events in ready:
                    source = key.fileobj
                    if source is client and self.stalled.is_set():
                        time.sleep(0.01)
                        continue
                    try:
                        data = self._recv(source)  # type: ignore[arg-type]
                        if not data:
                            return
                        if source is client:
                            self.sent += data
                            server.sendall(data)
                        elif self.rewrite is None:
                            client.sendall(data)
                        else:
                            frames, pending = self.framing(pending + data)
                            client.sendall(b"".join(self.rewrite(f) for f in frames))
                    except (OSError, ValueError):
                        return

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        data = sock.recv(65536)
        if isinstance(sock, ssl.SSLSocket):
            # decrypted bytes OpenSSL holds are invisible to select: take them now
            while data and sock.pending():
                data += sock.recv(sock.pending())
        return data


__all__ = ["FaultProxy", "amqp_frames"]
