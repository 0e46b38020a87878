"""A throwaway HTTP server for tests that play a provider endpoint of their own."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


def serve_http(handler) -> tuple[ThreadingHTTPServer, str]:
    """An HTTP server on a free local port, served by a daemon thread: (server, its root URL)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
