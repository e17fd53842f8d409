"""A small threaded HTTP server on 127.0.0.1 for tests, the demo and benchmarks.

    with serve_routes({"/a.jpg": Route(body=jpeg, content_type="image/jpeg")}) as server:
        server.url("/a.jpg")

Routes can set status, headers, a delay before responding, a slow "drip" of the body, a
Content-Length that lies (truncated bodies), or redirects; `raw` replaces the whole response by
bytes written verbatim, piece by piece (a status line dripped byte by byte, endless `100 Continue`,
a chunk-size line that never ends). For timeout tests a route can stall on cue instead: `hold`
(no answer until the test sets the event) or `drip_until` (a byte at a time until the event is
set), so the response is slower than any timeout however loaded the machine.
`serve_directory` serves files.
The server counts requests per path and the most requests in flight at once, so tests can
check politeness limits.
"""

from __future__ import annotations

import contextlib
import mimetypes
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Route:
    """What one path answers."""

    body: bytes = b""
    status: int = 200
    content_type: str | None = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the status line
    drip_seconds: float = 0.0  # spread the body over this long, in small pieces
    declared_length: int | None = None  # Content-Length to announce (default: len(body))
    send_length: bool = True  # False: no Content-Length, the body ends when the connection closes
    # Instead of a response: pieces written verbatim and flushed one by one, `raw_interval` s apart,
    # until the iterable ends or the client hangs up (an endless generator drips for ever).
    raw: Callable[[], Iterable[bytes]] | None = None
    raw_interval: float = 0.0
    hold: threading.Event | None = None  # answer nothing until this is set
    drip_until: threading.Event | None = None  # one byte of the body every 0.1 s until this is set


def redirect(location: str, status: int = 302) -> Route:
    return Route(status=status, content_type=None, headers={"Location": location})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # listen() backlog, read when the socket is bound: the default 5 drops SYNs under a burst of
    # concurrent fetches, and the client's 1 s SYN retransmit then looks like a slow server.
    request_queue_size = 1024


RouteSource = Mapping[str, Route] | Callable[[str], Route | None]


class LocalHTTPServer:
    """A running server: `url(path)`, `hits`, `max_in_flight`; stop with `close()` or the context manager."""

    def __init__(self, routes: RouteSource, host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.routes = routes
        self.hits: Counter[str] = Counter()
        self.user_agents: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:  # silence per-request logging
                pass

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.hits[path] += 1
                    server.user_agents.append(self.headers.get("User-Agent", ""))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                finished = threading.Event()

                def finish() -> None:
                    # Counted as done before the last bytes go out: once the client has them it may
                    # start its next request, before this thread could run another line.
                    if not finished.is_set():
                        finished.set()
                        with server._lock:
                            server.in_flight -= 1

                try:
                    server._answer(self, path, finish)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeouts, byte caps): expected in tests
                finally:
                    finish()

        self.httpd = _Server((host, port), Handler)
        if tls is not None:  # HTTPS: a server-side context with the certificate loaded
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def _lookup(self, path: str) -> Route | None:
        if callable(self.routes):
            return self.routes(path)
        return self.routes.get(path)

    def _answer(self, handler: BaseHTTPRequestHandler, path: str, finish: Callable[[], None]) -> None:
        route = self._lookup(path)
        if route is None:
            route = Route(status=404, body=b"not found", content_type="text/plain")
        if route.delay:
            time.sleep(route.delay)
        if route.hold is not None:
            route.hold.wait()
        if route.raw is not None:
            finish()
            for piece in route.raw():
                handler.wfile.write(piece)
                handler.wfile.flush()
                time.sleep(route.raw_interval)
            return
        handler.send_response(route.status)
        if route.content_type:
            handler.send_header("Content-Type", route.content_type)
        length = route.declared_length if route.declared_length is not None else len(route.body)
        if route.send_length:
            handler.send_header("Content-Length", str(length))
        for name, value in route.headers.items():
            handler.send_header(name, value)
        if route.drip_until is not None:
            handler.end_headers()
            sent = 0
            while sent < len(route.body) - 1 and not route.drip_until.wait(0.1):
                handler.wfile.write(route.body[sent : sent + 1])
                handler.wfile.flush()
                sent += 1
            finish()
            handler.wfile.write(route.body[sent:])
            return
        if not route.drip_seconds:
            finish()
            handler.end_headers()
            handler.wfile.write(route.body)
            return
        handler.end_headers()
        pieces = max(1, min(len(route.body), 20))
        step = max(1, len(route.body) // pieces)
        for start in range(0, len(route.body), step):
            if start + step >= len(route.body):
                finish()
            handler.wfile.write(route.body[start : start + step])
            handler.wfile.flush()
            time.sleep(route.drip_seconds / pieces)

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def serve_routes(routes: RouteSource, tls: ssl.SSLContext | None = None) -> Iterator[LocalHTTPServer]:
    """Serve `routes` (path → Route, or a function of the path) on 127.0.0.1 until the block ends."""
    server = LocalHTTPServer(routes, tls=tls)
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def serve_directory(root: str | Path) -> Iterator[LocalHTTPServer]:
    """Serve the files under `root` by their relative path, with a guessed content type."""
    base = Path(root).resolve()

    def route(path: str) -> Route | None:
        target = (base / path.lstrip("/")).resolve()
        if base not in target.parents or not target.is_file():
            return None
        return Route(body=target.read_bytes(), content_type=mimetypes.guess_type(target.name)[0]
                     or "application/octet-stream")

    with serve_routes(route) as server:
        yield server
