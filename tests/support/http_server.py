"""HTTP for tests: a throwaway server (a provider endpoint of a test's own), free local ports
for servers a test starts, and the status a URL answers (with basic auth)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer


def serve_http(handler) -> tuple[ThreadingHTTPServer, str]:
    """An HTTP server on a free local port, served by a daemon thread: (server, its root URL)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def free_ports(n: int) -> list[int]:
    """n distinct free ports (all held open while chosen, so no two are the same)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _request(url: str, auth: tuple[str, str] | None) -> urllib.request.Request:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    return request


def http_status(url: str, auth: tuple[str, str] | None = None) -> int:
    """The status `url` answers; 0 when nothing answers."""
    try:
        with urllib.request.urlopen(_request(url, auth), timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def get_json(url: str, auth: tuple[str, str] | None = None) -> object:
    with urllib.request.urlopen(_request(url, auth), timeout=10) as response:
        return json.loads(response.read())
