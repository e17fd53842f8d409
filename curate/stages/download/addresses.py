"""Which hosts a downloader may connect to: candidate URLs are untrusted input.

A URL is vetted before any connection: its scheme must be http/https, and its host — in whatever
spelling (decimal/octal/hex/short IPv4, IPv6, IPv4-mapped IPv6, trailing dots, percent-encoding)
— must be, or resolve only to, globally routable unicast addresses. The fetcher then connects to
the exact address that was vetted, so a DNS answer that changes between check and connect
(rebinding) cannot steer it elsewhere. An allow-list of addresses/networks overrides the block
(tests and the demo allow 127.0.0.1).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from curate.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = ("http", "https")
# inet_aton's numeric parts: decimal, octal (leading 0) or hex (0x); a host made only of these is an address.
_NUMERIC_PART = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
# 64:ff9b::/96 (NAT64) carries an IPv4 address in its low 32 bits; Python calls it global.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Python calls these global, yet they are not the public internet: Azure's WireServer answers every
# VM at this address (host-internal, hands out VM configuration), and fec0::/10 is the deprecated
# IPv6 site-local range (RFC 3879), routed inside sites like a private range.
_NOT_PUBLIC: tuple[tuple[IPNetwork, str], ...] = (
    (ipaddress.ip_network("168.63.129.16/32"), "Azure WireServer (host-internal)"),
    (ipaddress.ip_network("fec0::/10"), "site-local"),
)


class BlockedAddress(Exception):
    """The URL names or resolves to an address the downloader must not connect to."""


class UnresolvableHost(Exception):
    """DNS gave no usable answer for the host."""


@dataclass(frozen=True)
class Target:
    """A vetted request target: connect to `ip`, send `host` as Host header / SNI."""

    scheme: str
    host: str
    port: int
    ip: str
    path: str  # path + query, ready for the request line


def parse_allow_list(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Addresses or CIDR networks; a malformed entry is a ConfigError naming it."""
    out: list[IPNetwork] = []
    for entry in entries:
        text = str(entry).strip().strip("[]")
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ConfigError(f"allow_addresses: {entry!r} is not an IP address or CIDR network ({exc})") from exc
    return tuple(out)


def parse_numeric_host(host: str) -> IPAddress | None:
    """The address a numeric host spells, accepting every form inet_aton / browsers accept.

    Returns None for a DNS name. Raises BlockedAddress for a numeric host that is malformed
    (an out-of-range part), since a resolver might still interpret it somehow.
    """
    host = host.strip("[]")
    if ":" in host:
        try:
            return ipaddress.ip_address(host)
        except ValueError as exc:
            raise BlockedAddress(f"malformed IPv6 address {host!r}") from exc
    parts = host.split(".")
    if not host or not all(_NUMERIC_PART.match(p) for p in parts):
        return None
    if len(parts) > 4:
        raise BlockedAddress(f"malformed numeric host {host!r}")
    values: list[int] = []
    for p in parts:
        if p.startswith("0x"):
            values.append(int(p[2:] or "0", 16))
        elif len(p) > 1 and p.startswith("0"):
            if not re.fullmatch(r"[0-7]+", p):
                raise BlockedAddress(f"malformed octal address part {p!r} in {host!r}")
            values.append(int(p, 8))
        else:
            values.append(int(p))
    # The last part fills every byte the earlier parts did not (127.1 == 127.0.0.1).
    head, last = values[:-1], values[-1]
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        raise BlockedAddress(f"numeric host {host!r} is out of range")
    number = 0
    for v in head:
        number = number * 256 + v
    number = (number << (8 * (4 - len(head)))) | last
    return ipaddress.IPv4Address(number)


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why an address is off limits, or None when it is globally routable unicast."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return f"{ip} has a zone id"
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = forbidden_reason(embedded)
            if inner:
                return f"{ip} embeds {inner}"
    for attr in ("is_loopback", "is_private", "is_link_local", "is_multicast", "is_unspecified", "is_reserved"):
        if getattr(ip, attr):
            return f"{ip} is {attr[3:].replace('_', '-')}"
    for net, what in _NOT_PUBLIC:
        if ip.version == net.version and ip in net:
            return f"{ip} is {what}"
    if not ip.is_global:
        return f"{ip} is not globally routable"
    return None


def is_allowed(ip: IPAddress, allow: tuple[IPNetwork, ...]) -> bool:
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        candidates.append(ip.ipv4_mapped)
    return any(c.version == net.version and c in net for c in candidates for net in allow)


def check_address(ip: IPAddress, allow: tuple[IPNetwork, ...]) -> None:
    if is_allowed(ip, allow):
        return
    reason = forbidden_reason(ip)
    if reason:
        raise BlockedAddress(reason)


class DnsCache:
    """getaddrinfo answers cached per (host, port) for `ttl` seconds; thread-safe."""

    def __init__(self, ttl: float = 300.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int], tuple[float, list[IPAddress] | None, str]] = {}
        self.lookups = 0

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        key = (host, port)
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
        if hit and hit[0] > now:
            if hit[1] is None:
                raise UnresolvableHost(hit[2])
            return hit[1]
        self.lookups += 1
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            ips = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
            answer: tuple[float, list[IPAddress] | None, str] = (now + self.ttl, ips, "")
        except (OSError, UnicodeError, ValueError) as exc:
            # Failures are cached too, so one dead host does not cost a lookup per image.
            answer = (now + self.ttl, None, f"dns: {type(exc).__name__}")
        with self._lock:
            self._entries[key] = answer
        if answer[1] is None or not answer[1]:
            raise UnresolvableHost(answer[2] or "dns: no addresses")
        return answer[1]


def _request_path(parts: SplitResult) -> str:
    from urllib.parse import quote

    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=-._~?")
    return path


def vet_url(url: str, allow: tuple[IPNetwork, ...], dns: DnsCache) -> Target:
    """Parse and vet one URL; raises BlockedAddress, UnresolvableHost or ValueError (malformed)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise BlockedAddress(f"scheme {scheme or '(none)'!r} is not http/https")
    # .hostname drops userinfo (http://good.com@127.0.0.1/ → 127.0.0.1) and brackets; the host
    # vetted here is the host connected to, whatever a human reading the URL might think.
    raw_host = parts.hostname
    if not raw_host:
        raise ValueError("url has no host")
    host = unquote(raw_host).rstrip(".").lower()
    if not host or any(c in host for c in "/\\@ \t\r\n%"):
        raise BlockedAddress(f"malformed host {raw_host!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    numeric = parse_numeric_host(host)
    if numeric is not None:
        check_address(numeric, allow)
        ips = [numeric]
    else:
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"bad internationalised host {host!r}") from exc
        ips = dns.resolve(host, port)
        # Every answer is checked: a name that resolves to one public and one private address is refused.
        for ip in ips:
            check_address(ip, allow)
    ip = ips[0]
    return Target(scheme=scheme, host=host if numeric is None else str(numeric), port=port, ip=str(ip),
                  path=_request_path(parts))
