"""A TCP relay in a thread, for multi-host tests, and for replies lost after the request was sent."""

from __future__ import annotations

import socket
import threading
from collections import Counter


class TcpForwarder:
    """Listens on (host, port) and relays each connection to `target`: a service that listens
    on loopback only (PostgreSQL) becomes reachable on a veth address, and only there.

    `drop_replies(n, marker)` arms it to cut the next `n` HTTP requests containing `marker`
    (any request when empty) after the server has answered: the request reaches the server,
    which serves (and bills) it, and the client sees its connection closed with no reply."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server(listen, reuse_port=False)
        self._server.settimeout(0.2)
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._armed: list[bytes] = []  # one marker per reply still to drop
        self.dropped: Counter[str] = Counter()  # request line -> replies dropped
        self._thread = threading.Thread(target=self._accept, name="tcp-forwarder", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return self._server.getsockname()[:2]

    def drop_replies(self, count: int = 1, marker: bytes = b"") -> None:
        with self._lock:
            self._armed += [marker] * count

    def _claim_drop(self, request: bytes) -> str | None:
        """The request line of `request` when an armed drop matches it (and is used up)."""
        with self._lock:
            for index, marker in enumerate(self._armed):
                if marker in request:
                    del self._armed[index]
                    line = request.split(b"\r\n", 1)[0].decode("latin-1")
                    self.dropped[line] += 1
                    return line
        return None

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            cut = threading.Event()  # set: the next reply on this connection is dropped
            threading.Thread(target=self._pipe, args=(client, upstream, cut, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, cut, True), daemon=True).start()

    def _pipe(self, source, sink, cut: threading.Event, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if replies and cut.is_set():
                    return  # the server answered; the client never sees it (finally closes both)
                if not replies and self._armed and not cut.is_set() and self._claim_drop(data):
                    cut.set()
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(2)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stopped.set()
        self._server.close()
        self._thread.join(2)
