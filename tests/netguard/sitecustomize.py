"""Test-only network guard: refuses and records any attempt to reach past this machine.

tests/conftest.py puts this directory first on PYTHONPATH and sets CURATE_NETGUARD_LOG, so every
Python process the suite starts imports it at startup: pytest itself, `curate` subprocesses, Ray's
workers, dashboard and agents. An audit hook (PEP 578) sees each socket connect/sendto and name
lookup. A connection aimed past this machine (not loopback, not one of this host's own addresses)
fails with ENETUNREACH, as in the loopback-only network namespace `make test` runs in, and is
appended to the log as a JSON line; the suite fails when there is one (tests/conftest.py,
tests/test_hermetic.py). A lookup of a name that is not this host's fails too (no DNS packet
leaves) and is logged as a "lookup": the download tests and the demo look up dead hosts on
purpose. Without CURATE_NETGUARD_LOG this file does nothing. Native code (Ray's C++ core,
Chromium) is not seen here; the namespace covers it.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import sys

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
_checked: dict[str, bool] = {}


def _is_own_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, unspecified, or bound to one of this host's interfaces (bind succeeds only then)."""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_unspecified:
        return True
    key = str(ip)
    if key not in _checked:
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                probe.bind((key, 0))
            _checked[key] = True
        except OSError:
            _checked[key] = False
    return _checked[key]


def _ip(host: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return None
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _is_local_name(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return True  # None: the local host
    name = host.lower().rstrip(".")
    return name in _LOCAL_NAMES or name.endswith(".localhost") or name == socket.gethostname().lower()


def _record(kind: str, event: str, target: object) -> None:
    line = json.dumps({"kind": kind, "pid": os.getpid(), "argv": [str(a)[:200] for a in sys.argv[:4]],
                       "event": event, "target": repr(target)[:200]}) + "\n"
    fd = os.open(os.environ["CURATE_NETGUARD_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _hook(event: str, args: tuple) -> None:
    if not event.startswith("socket."):
        return
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        sock, address = args[0], args[1]
        if getattr(sock, "family", None) not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple):
            return
        ip = _ip(address[0])
        if (ip is not None and _is_own_address(ip)) or (ip is None and _is_local_name(address[0])):
            return
        _record("connect", event, address)
        raise OSError(errno.ENETUNREACH, f"network guard: {address[0]} is off this machine (tests/netguard)")
    if event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex"):
        if _ip(args[0]) is not None or _is_local_name(args[0]):
            return  # an address needs no lookup: the connect that may follow is checked
        _record("lookup", event, args[0])
        raise socket.gaierror(socket.EAI_NONAME, f"network guard: no name lookups in tests ({args[0]!r})")


def install() -> None:
    """Add the hook once per process (audit hooks cannot be removed)."""
    if os.environ.get("CURATE_NETGUARD_LOG") and not getattr(sys, "_curate_netguard", False):
        sys._curate_netguard = True  # type: ignore[attr-defined]
        sys.addaudithook(_hook)


install()

# Chain to the sitecustomize this one shadows, if the interpreter has one.
_here = os.path.dirname(os.path.abspath(__file__))
if __name__ == "sitecustomize":
    import importlib.machinery
    import importlib.util

    _spec = importlib.machinery.PathFinder.find_spec(
        "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here])
    if _spec is not None and _spec.loader is not None:
        _module = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(_module)
