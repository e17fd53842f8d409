"""Download security: untrusted URLs never lead to a connection to a blocked address."""

from __future__ import annotations

import ipaddress
import socket
import time

import pytest

from curate.errors import ConfigError
from curate.stages.download.addresses import (
    BlockedAddress,
    DnsCache,
    forbidden_reason,
    parse_allow_list,
    parse_numeric_host,
    vet_url,
)
from curate.stages.download.fetch import FetchFailure, FetchSettings, fetch_image
from curate.stages.download.optouts import optout_directive
from curate.stages.download.politeness import HostLimiter

BLOCKED_URLS = [
    "http://127.0.0.1/a.jpg",
    "HTTP://127.0.0.1/a.jpg",
    "http://127.0.0.1:8080/a.jpg",
    "https://127.0.0.1/a.jpg",
    "http://2130706433/a.jpg",  # decimal
    "http://0177.0.0.1/a.jpg",  # octal
    "http://017700000001/a.jpg",  # octal, one part
    "http://0x7f000001/a.jpg",  # hex
    "http://0x7f.0x0.0x0.0x1/a.jpg",
    "http://127.1/a.jpg",  # short form
    "http://127.0.1/a.jpg",
    "http://127.0.0.1./a.jpg",  # trailing dot
    "http://127.0.0.1../a.jpg",
    "http://%31%32%37.0.0.1/a.jpg",  # percent-encoded
    "http://[::1]/a.jpg",
    "http://[0:0:0:0:0:0:0:1]/a.jpg",
    "http://[::ffff:127.0.0.1]/a.jpg",  # IPv4-mapped
    "http://[::ffff:7f00:1]/a.jpg",
    "http://[::ffff:169.254.169.254]/a.jpg",
    "http://[64:ff9b::7f00:1]/a.jpg",  # NAT64 embedding loopback
    "http://[2002:7f00:1::]/a.jpg",  # 6to4 embedding loopback
    "http://good.example.com@127.0.0.1/a.jpg",  # userinfo trick
    "http://user:pass@127.0.0.1:80/a.jpg",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://10.0.0.1/a.jpg",
    "http://172.16.5.4/a.jpg",
    "http://192.168.1.1/a.jpg",
    "http://100.64.0.1/a.jpg",  # carrier-grade NAT
    "http://0.0.0.0/a.jpg",
    "http://0/a.jpg",
    "http://[::]/a.jpg",
    "http://224.0.0.1/a.jpg",  # multicast
    "http://[ff02::1]/a.jpg",
    "http://240.0.0.1/a.jpg",  # reserved
    "http://255.255.255.255/a.jpg",
    "http://[fe80::1]/a.jpg",  # link-local
    "http://[fc00::1]/a.jpg",  # unique local
    "http://168.63.129.16/machine?comp=goalstate",  # Azure WireServer: Python calls it global
    "http://2822734096/machine",  # the same, decimal
    "http://[::ffff:168.63.129.16]/machine",
    "http://[fec0::1]/a.jpg",  # deprecated site-local: Python calls it global
    "http://[feff:ffff::1]/a.jpg",
    "http://999.0.0.1/a.jpg",  # malformed numeric
    "http://0x100000000/a.jpg",
    "file:///etc/passwd",
    "ftp://example.com/a.jpg",
    "gopher://example.com/a.jpg",
    "data:image/png;base64,iVBORw0KGgo=",
    "javascript:alert(1)",
    "//127.0.0.1/a.jpg",
]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Record (and refuse) every connection attempt and every DNS lookup."""
    attempts: list[tuple] = []

    def refuse(kind: str):
        def fn(*args, **kwargs):
            attempts.append((kind, args))
            raise AssertionError(f"{kind} called with {args}")
        return fn

    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


def _settings(allow: list[str] | None = None) -> FetchSettings:
    return FetchSettings(user_agent="test", user_agent_token="curate", respect_optouts=True, max_bytes=1 << 20,
                         allow=parse_allow_list(allow or []))


@pytest.mark.fault("download", "hostile URLs: loopback/private/link-local/multicast/reserved/site-local (fec0::/10) addresses and Azure's WireServer (168.63.129.16) in decimal, octal, hex, short, IPv6, IPv4-mapped, userinfo and percent-encoded spellings; non-http schemes", "status blocked_address; no DNS lookup or connection attempted")  # noqa: E501 - one row of docs/reliability.md
@pytest.mark.parametrize("url", BLOCKED_URLS)
def test_blocked_spellings_refused_without_connection(url: str, no_network: list[tuple]) -> None:
    with pytest.raises(FetchFailure) as info:
        fetch_image(url, _settings(), DnsCache(), HostLimiter(4, 1000.0), time.monotonic() + 5)
    assert info.value.status == "blocked_address", info.value.error
    assert no_network == []


def test_localhost_name_resolves_to_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    connects: list = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connects.append(a))
    with pytest.raises(FetchFailure) as info:
        fetch_image("http://localhost:9/x.jpg", _settings(), DnsCache(), HostLimiter(4, 1000.0), time.monotonic() + 5)
    assert info.value.status == "blocked_address"
    assert connects == []


def _fake_dns(answers: dict[str, list[str]]) -> DnsCache:
    dns = DnsCache()

    def resolve(host: str, port: int) -> list:
        dns.lookups += 1
        return [ipaddress.ip_address(a) for a in answers[host]]

    dns.resolve = resolve  # type: ignore[method-assign]
    return dns


@pytest.mark.fault("download", "a host name resolving to a private (or mixed public/private) address", "status blocked_address; never connected")  # noqa: E501 - one row of docs/reliability.md
def test_name_resolving_to_private_or_mixed_is_blocked(no_network: list[tuple]) -> None:
    dns = _fake_dns({"rebind.example": ["10.1.2.3"], "mixed.example": ["93.184.216.34", "127.0.0.1"],
                     "wire.example": ["168.63.129.16"], "site.example": ["2606:4700::1111", "fec0::5"]})
    for url in ("http://rebind.example/a.jpg", "http://mixed.example/a.jpg", "http://wire.example/machine",
                "http://site.example/a.jpg"):
        with pytest.raises(BlockedAddress):
            vet_url(url, (), dns)
    assert no_network == []


def test_connects_to_the_vetted_address_with_host_header(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DNS-rebinding window: the socket goes to the address that was checked, once."""
    dns = _fake_dns({"images.example": ["93.184.216.34"]})
    connected: list = []

    def fake_connect(address, timeout=None, *a, **k):
        connected.append(address)
        raise ConnectionRefusedError

    monkeypatch.setattr(socket, "create_connection", fake_connect)
    with pytest.raises(FetchFailure):
        fetch_image("http://images.example:8080/a.jpg", _settings(), dns, HostLimiter(4, 1000.0),
                    time.monotonic() + 5)
    assert connected == [("93.184.216.34", 8080)]
    target = vet_url("https://images.example/p/a b.jpg?x=1", (), dns)
    assert (target.host, target.ip, target.port, target.path) == ("images.example", "93.184.216.34", 443,
                                                                    "/p/a%20b.jpg?x=1")


def test_numeric_forms_parse_like_inet_aton() -> None:
    want = ipaddress.ip_address("127.0.0.1")
    for host in ("2130706433", "0177.0.0.1", "0x7f000001", "127.1", "127.0.1", "0x7f.1", "017700000001"):
        assert parse_numeric_host(host) == want, host
    assert parse_numeric_host("example.com") is None
    assert parse_numeric_host("8.8.8.8") == ipaddress.ip_address("8.8.8.8")
    for malformed in ("256.1.1.1", "1.2.3.4.5", "1.2.0x1000000", "08.1.1.1"):
        with pytest.raises(BlockedAddress):
            parse_numeric_host(malformed)


def test_public_addresses_pass_and_allow_list_overrides(no_network: list[tuple]) -> None:
    assert forbidden_reason(ipaddress.ip_address("8.8.8.8")) is None
    assert forbidden_reason(ipaddress.ip_address("2606:4700::1111")) is None
    assert vet_url("http://8.8.8.8/a.jpg", (), DnsCache()).ip == "8.8.8.8"
    allow = parse_allow_list(["127.0.0.1", "10.0.0.0/8"])
    assert vet_url("http://127.1:81/a.jpg", allow, DnsCache()).ip == "127.0.0.1"
    assert vet_url("http://[::ffff:127.0.0.1]/a.jpg", allow, DnsCache()).port == 80
    assert vet_url("http://10.9.8.7/a.jpg", allow, DnsCache()).ip == "10.9.8.7"
    with pytest.raises(BlockedAddress):
        vet_url("http://192.168.0.1/a.jpg", allow, DnsCache())
    assert no_network == []


def test_bad_allow_list_entry_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not-an-ip"):
        parse_allow_list(["127.0.0.1", "not-an-ip"])


@pytest.mark.parametrize(
    ("values", "token", "expected"),
    [
        (["noai"], "curate", "noai"),
        (["noindex, nofollow"], "curate", "noindex"),
        (["NoImageAI"], "curate", "noimageai"),
        (["none"], "curate", "none"),
        (["curate: noai"], "curate", "noai"),
        (["otherbot: noai"], "curate", None),
        (["otherbot: noindex", "curate: noimageindex"], "curate", "noimageindex"),
        (["*: noai"], "curate", "noai"),
        (["nofollow, noarchive"], "curate", None),
        (["unavailable_after: 25 Jun 2010 15:00:00 PST"], "curate", None),
        (["mybot: noai"], "MyBot", "noai"),
        ([], "curate", None),
    ],
)
def test_x_robots_tag_optouts(values: list[str], token: str, expected: str | None) -> None:
    assert optout_directive(values, token) == expected


def test_dns_cache_reuses_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_getaddrinfo(host, port, *a, **k):
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    dns = DnsCache()
    for _ in range(5):
        assert vet_url("http://cached.example/a.jpg", (), dns).ip == "93.184.216.34"
    assert calls == ["cached.example"]


def test_https_verifies_certificates(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS goes to the vetted address with the host name for SNI and certificate checks."""
    import shutil
    import ssl
    import subprocess

    from curate.stages.download import fetch as fetch_module
    from curate.testing.http import Route, serve_routes

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out",
                    str(cert)], check=True, capture_output=True)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    settings = _settings(["127.0.0.1"])
    with serve_routes({"/a.jpg": Route(b"\xff\xd8 image bytes", content_type="image/jpeg")},
                      tls=server_ctx) as server:
        url = server.url("/a.jpg")
        assert url.startswith("https://")
        with pytest.raises(FetchFailure, match="tls") as info:  # self-signed: not trusted by default
            fetch_image(url, settings, DnsCache(), HostLimiter(4, 1000.0), time.monotonic() + 5)
        assert info.value.status == "failed_to_download"
        trusting = ssl.create_default_context(cafile=str(cert))
        monkeypatch.setattr(fetch_module, "_SSL_CONTEXT", trusting)
        assert fetch_image(url, settings, DnsCache(), HostLimiter(4, 1000.0), time.monotonic() + 5) == (
            b"\xff\xd8 image bytes")


@pytest.mark.fault("download", "an https server that drips its TLS handshake a byte at a time, each byte inside the socket timeout", "the sample ends as failed_to_download: timeout at the request deadline")  # noqa: E501 - one row of docs/reliability.md
def test_dripped_tls_handshake_ends_at_the_request_deadline() -> None:
    import threading

    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)  # the ClientHello
            # A TLS handshake record announcing 16 KiB, then its bytes one by one: every recv of
            # the client is answered well inside its socket timeout, the handshake never ends.
            conn.sendall(b"\x16\x03\x03\x40\x00")
            while not stop.wait(0.05):
                try:
                    conn.sendall(b"\x02")
                except OSError:
                    return

    server = threading.Thread(target=drip, daemon=True)
    server.start()
    settings = _settings(["127.0.0.1"])
    start = time.monotonic()
    try:
        with pytest.raises(FetchFailure) as info:
            fetch_image(f"https://127.0.0.1:{port}/a.jpg", settings, DnsCache(), HostLimiter(4, 1000.0),
                        time.monotonic() + 1.0)
    finally:
        stop.set()
        listener.close()
    elapsed = time.monotonic() - start
    assert (info.value.status, info.value.error) == ("failed_to_download", "timeout")
    # The drip lasts 16 KiB x 50 ms = 13 minutes; a per-recv timeout alone would wait all of it.
    assert elapsed < 10, elapsed
