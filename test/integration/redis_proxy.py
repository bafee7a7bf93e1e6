"""A TCP proxy between a sidecar and redis-server that a test can stop at a chosen moment.

``freeze()`` stops forwarding on every connection open at that moment, for good, without closing
anything (a partition: neither end sees a FIN or RST); connections accepted later are forwarded
as usual. ``hold(marker)`` lets everything through until a client (the sidecar) sends bytes that
contain ``marker``; from there that connection's client-to-Redis bytes wait in the proxy until
``release()``, while Redis's answers to what went before still flow. ``held`` is set once
something waits. One thread, selectors; every wait has a deadline.
"""

from __future__ import annotations

import selectors
import socket
import threading

from harness import HOST


class RedisProxy:
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.lock = threading.Lock()
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.frozen: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = 0
        self.marker: bytes | None = None
        self.clients: set[socket.socket] = set()
        self.waiting: dict[socket.socket, bytearray] = {}  # client socket -> bytes held back
        self.held = threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _run(self):
        while not self.stopping:
            for key, _ in self.sel.select(timeout=0.05):
                with self.lock:
                    if key.data is None:
                        self._accept()
                    else:
                        self._forward(key.fileobj, key.data)

    def _accept(self):
        client, _ = self.listener.accept()
        upstream = socket.create_connection((HOST, self.upstream_port), timeout=5)
        for s in (client, upstream):
            s.setblocking(False)
        self.sel.register(client, selectors.EVENT_READ, upstream)
        self.sel.register(upstream, selectors.EVENT_READ, client)
        self.pairs.append((client, upstream))
        self.clients.add(client)
        self.accepted += 1

    def _forward(self, src: socket.socket, dst: socket.socket):
        try:
            data = src.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(src, dst)
            return
        if src in self.waiting:
            self.waiting[src] += data
            return
        if src in self.clients and self.marker is not None and self.marker in data:
            cut = data.index(self.marker)
            # Back to the start of the RESP command holding the marker ('*<argc>'), so that the
            # commands before it are answered and this one is not.
            start = data.rfind(b"*", 0, cut)
            start = 0 if start < 0 else start
            self.waiting[src] = bytearray(data[start:])
            data = data[:start]
            self.held.set()
        if data:
            self._send(src, dst, bytes(data))

    def _send(self, src: socket.socket, dst: socket.socket, data: bytes):
        try:
            dst.setblocking(True)
            dst.sendall(data)
            dst.setblocking(False)
        except OSError:
            self._drop(src, dst)

    def _drop(self, a: socket.socket, b: socket.socket):
        for s in (a, b):
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
            self.clients.discard(s)
            self.waiting.pop(s, None)
        self.pairs = [p for p in self.pairs if a not in p]

    def freeze(self):
        """Stops reading from every open connection (both directions); the sockets stay open."""
        with self.lock:
            for client, upstream in self.pairs:
                for s in (client, upstream):
                    self.sel.unregister(s)
                self.frozen.append((client, upstream))
            self.pairs = []

    def hold(self, marker: bytes):
        """From now on, the first command a client sends holding ``marker`` waits (with whatever
        that connection sends after it) until ``release()``."""
        with self.lock:
            self.marker = marker
            self.held.clear()

    def release(self):
        """Sends what waits and forwards as usual again."""
        with self.lock:
            self.marker = None
            for client, data in list(self.waiting.items()):
                upstream = next((u for c, u in self.pairs if c is client), None)
                del self.waiting[client]
                if upstream is not None:
                    self._send(client, upstream, bytes(data))

    def close(self):
        self.stopping = True
        self.thread.join(5)
        for pair in self.pairs + self.frozen:
            for s in pair:
                s.close()
        self.listener.close()
