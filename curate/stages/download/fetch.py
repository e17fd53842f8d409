"""One image fetch over HTTP(S), pinned to a vetted address, with manual redirects and hard limits.

http.client is driven directly (not urllib/requests) so that: the socket connects to the address
that `vet_url` checked while Host/SNI carry the name; every redirect hop is vetted again; the
total time of a request — connect, status line, headers (`100 Continue` included), chunk-size
lines and body, however slowly each drips — is bounded by one deadline; and reading stops as
soon as the body passes the byte cap.
"""

from __future__ import annotations

import functools
import http.client
import io
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urljoin

from curate.stages.download.addresses import (
    BlockedAddress,
    DnsCache,
    IPNetwork,
    Target,
    UnresolvableHost,
    vet_url,
)
from curate.stages.download.optouts import optout_directive
from curate.stages.download.politeness import DeadlineExceeded, HostLimiter

MAX_REDIRECTS = 5
READ_CHUNK = 256 * 1024
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
# Content types that cannot be an image; anything else (image/*, octet-stream, missing) is tried.
_NON_IMAGE_MAIN_TYPES = frozenset({"text", "audio", "video", "font", "multipart", "model"})
_NON_IMAGE_SUBTYPE_WORDS = ("html", "json", "xml", "javascript", "pdf", "zip")


class FetchFailure(Exception):
    """A sample's fetch failed: `status` is its shard status, `error` a short URL-free reason."""

    def __init__(self, status: str, error: str, retryable: bool = False) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.retryable = retryable


@dataclass(frozen=True)
class FetchSettings:
    user_agent: str
    user_agent_token: str
    respect_optouts: bool
    max_bytes: int
    allow: tuple[IPNetwork, ...]


class _DeadlineReader(io.RawIOBase):
    """The response side of a socket, with the socket timeout set to the time left before every recv.

    A socket timeout bounds one recv, so a server dripping a byte just inside it (status line,
    headers, endless `100 Continue`, chunk-size lines) would hold a plain reader for ever; here
    every recv gets only what is left of the request's deadline, so all of them together end by it.
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        # Reads go through the socket's own SocketIO: it holds a reference that keeps the socket
        # open after the connection closes its end (Connection: close), as http.client expects.
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int | None:  # type: ignore[override]
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request deadline reached")
        self._sock.settimeout(left)
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineSocket:
    """What HTTPResponse is given instead of the socket: it only calls makefile("rb")."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str = "rb") -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


class _DeadlineResponse(http.client.HTTPResponse):
    def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None,
                 url: str | None = None, *, deadline: float) -> None:
        super().__init__(_DeadlineSocket(sock, deadline), debuglevel, method, url)  # type: ignore[arg-type]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the vetted address; `host` still names the site for the Host header."""

    def __init__(self, target: Target, deadline: float) -> None:
        super().__init__(target.host, target.port, timeout=_remaining(deadline))
        self._ip = target.ip
        self._deadline = deadline
        # Status line, headers and body are all read through the deadline-bound reader.
        self.response_class = functools.partial(_DeadlineResponse, deadline=deadline)  # type: ignore[assignment]

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), _remaining(self._deadline))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(_remaining(self._deadline))  # sending the request gets what connect left


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """TLS to the vetted address, with SNI and certificate checks against the host name."""

    def __init__(self, target: Target, deadline: float, context: ssl.SSLContext) -> None:
        super().__init__(target.host, target.port, timeout=_remaining(deadline), context=context)
        self._ip = target.ip
        self._deadline = deadline
        self.response_class = functools.partial(_DeadlineResponse, deadline=deadline)  # type: ignore[assignment]

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), _remaining(self._deadline))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The handshake (bounded as a whole by the socket timeout) and then the request each get
        # only what is left, so connect + handshake + send together stay within the deadline.
        sock.settimeout(_remaining(self._deadline))
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        self.sock.settimeout(_remaining(self._deadline))


_SSL_CONTEXT: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        _SSL_CONTEXT = ssl.create_default_context()
    return _SSL_CONTEXT


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchFailure("failed_to_download", "timeout", retryable=True)
    return left


def _looks_like_non_image(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    if not mime:
        return False
    main, _, sub = mime.partition("/")
    return main in _NON_IMAGE_MAIN_TYPES or any(word in sub for word in _NON_IMAGE_SUBTYPE_WORDS)


def _read_body(response: http.client.HTTPResponse, max_bytes: int) -> bytes:
    length = response.getheader("Content-Length")
    if length and length.strip().isdigit() and int(length) > max_bytes:
        raise FetchFailure("failed_to_download", f"image larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    total = 0
    while True:
        # read1 returns what has arrived instead of blocking until the chunk is full, so the byte
        # cap is checked piece by piece; the deadline is enforced by the reader under it.
        chunk = response.read1(READ_CHUNK)
        if not chunk:
            break
        total += len(chunk)
        if total > max_bytes:
            raise FetchFailure("failed_to_download", f"image larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _request_once(target: Target, settings: FetchSettings, deadline: float) -> tuple[int, http.client.HTTPMessage,
                                                                                       bytes | None, str | None]:
    """Returns (status, headers, body or None, redirect location or None)."""
    if target.scheme == "https":
        conn: http.client.HTTPConnection = _PinnedHTTPSConnection(target, deadline, _ssl_context())
    else:
        conn = _PinnedHTTPConnection(target, deadline)
    try:
        conn.request("GET", target.path, headers={
            "User-Agent": settings.user_agent,
            "Accept": "image/avif,image/webp,image/*,*/*;q=0.8",
            "Accept-Encoding": "identity",
            "Connection": "close",
        })
        response = conn.getresponse()
        status = response.status
        headers = response.msg
        if status in _REDIRECT_CODES:
            return status, headers, None, response.getheader("Location")
        if status != 200:
            return status, headers, None, None
        if settings.respect_optouts:
            directive = optout_directive(headers.get_all("X-Robots-Tag") or [], settings.user_agent_token)
            if directive:
                raise FetchFailure("opted_out", f"x-robots-tag {directive}")
        content_type = response.getheader("Content-Type") or ""
        if _looks_like_non_image(content_type):
            raise FetchFailure("failed_to_download", f"not an image: content-type {content_type.split(';')[0]}")
        return status, headers, _read_body(response, settings.max_bytes), None
    finally:
        conn.close()


def fetch_image(url: str, settings: FetchSettings, dns: DnsCache, limiter: HostLimiter, deadline: float) -> bytes:
    """The body of `url` after following redirects; raises FetchFailure with the sample's status."""
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        try:
            target = vet_url(current, settings.allow, dns)
        except BlockedAddress as exc:
            where = "redirect to " if current is not url else ""
            raise FetchFailure("blocked_address", f"{where}{exc}") from None
        except UnresolvableHost as exc:
            raise FetchFailure("failed_to_download", str(exc)) from None
        except ValueError as exc:
            raise FetchFailure("failed_to_download", f"bad url: {exc}") from None
        try:
            with limiter.request(target.host, deadline):
                status, _headers, body, location = _request_once(target, settings, deadline)
        except FetchFailure:
            raise
        except DeadlineExceeded:
            raise FetchFailure("failed_to_download", "timeout", retryable=True) from None
        except TimeoutError:
            raise FetchFailure("failed_to_download", "timeout", retryable=True) from None
        except ssl.SSLError as exc:
            raise FetchFailure("failed_to_download", f"tls: {exc.reason or type(exc).__name__}") from None
        except ConnectionRefusedError:
            raise FetchFailure("failed_to_download", "connection refused", retryable=True) from None
        except (OSError, http.client.HTTPException) as exc:
            raise FetchFailure("failed_to_download", f"connection error: {type(exc).__name__}",
                               retryable=True) from None
        if body is not None:
            return body
        if location is None:
            if status in _REDIRECT_CODES:
                raise FetchFailure("failed_to_download", f"http {status} without location")
            raise FetchFailure("failed_to_download", f"http {status}", retryable=status >= 500 or status == 429)
        current = urljoin(current, location.strip())
    raise FetchFailure("failed_to_download", f"more than {MAX_REDIRECTS} redirects")
