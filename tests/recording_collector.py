"""A local HTTP server standing in for the collector in the simulator's posting tests: it keeps
every request (headers and raw body) and answers with what the test's `answer` says."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Request = tuple[dict[str, str], bytes]  # lower-cased headers, raw body
# (the request, its number from 1) -> status, extra headers, JSON body
Answer = Callable[[Request, int], tuple[int, dict[str, str], bytes]]


@contextmanager
def recording_collector(answer: Answer) -> Iterator[tuple[str, list[Request]]]:
    """Yields the server's URL and the list its requests are appended to, in arrival order."""
    requests: list[Request] = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ({k.lower(): v for k, v in self.headers.items()}, body)
            with lock:
                requests.append(request)
                n = len(requests)
            status, headers, payload = answer(request, n)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()
