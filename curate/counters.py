"""Counts per message with a cap on distinct messages, and messages stripped of hosts and URLs.

Error messages come partly from the outside world (a server's content type, a TLS alert, an
address a redirect pointed to), so the set of distinct messages is unbounded: counted as they are,
a stage's stats and report could grow with the number of candidates and would spell out hosts and
addresses. `normalise_message` turns a message into a key that names no host, URL, IP address or
port, and `CappedCounter` / `capped` / `merge_capped` keep at most `cap` keys: the most frequent
messages (ties broken by key, so the result does not depend on arrival order), the rest summed
under OTHER. Totals are kept exactly, unlike img2dataset's CappedCounter, which drops the rest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

OTHER = "other"
DEFAULT_CAP = 100
MAX_MESSAGE_CHARS = 200

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
# Two or more colons among hex digits and dots (::1, fe80::1%eth0, ::ffff:10.0.0.1), or a bracketed form.
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.%\w-]*\]|(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f.]{0,39}){2,}(?:%[\w.-]+)?")
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?![\w.])")
_HOST = re.compile(r"(?<![\w.-])(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9-]*[A-Za-z0-9]"
                   r"(?![\w-])")
_PORT = re.compile(r"(<(?:ip|host)>):\d+|\bport[ =:]*\d+", re.IGNORECASE)


def normalise_message(message: str) -> str:
    """`message` as a counting key: URLs, quoted values, IP addresses, host names and ports replaced.

    e.g. "redirect to 169.254.169.254 is link-local" → "redirect to <ip> is link-local",
    "HTTPConnectionPool(host='x.com', port=80): …" → "HTTPConnectionPool(host=<value>, <port>): …"."""
    text = _URL.sub("<url>", message)
    text = _QUOTED.sub("<value>", text)
    text = _IPV6.sub("<ip>", text)
    text = _IPV4.sub("<ip>", text)
    text = _HOST.sub("<host>", text)
    text = _PORT.sub(lambda m: m.group(1) if m.group(1) else "<port>", text)
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def capped(counts: Mapping[str, int], cap: int = DEFAULT_CAP) -> dict[str, int]:
    """At most `cap` keys: the most frequent (ties by key), everything else summed under OTHER."""
    if cap < 1:
        raise ValueError(f"cap must be at least 1, not {cap}")
    if len(counts) <= cap:
        return dict(counts)
    folded = counts.get(OTHER, 0)
    ranked = sorted(((n, k) for k, n in counts.items() if k != OTHER), key=lambda nk: (-nk[0], nk[1]))
    kept = dict((k, n) for n, k in ranked[: cap - 1])
    folded += sum(n for n, _k in ranked[cap - 1:])
    return {**kept, OTHER: folded}


def merge_capped(a: Mapping[str, int], b: Mapping[str, int], cap: int = DEFAULT_CAP) -> dict[str, int]:
    """The sum of two capped counts, capped again (for merging per-shard stats into a stage's totals)."""
    out = dict(a)
    for key, n in b.items():
        out[key] = out.get(key, 0) + n
    return capped(out, cap)


def normalised(counts: Mapping[str, int], cap: int = DEFAULT_CAP) -> dict[str, int]:
    """Counts re-keyed by normalise_message, then capped: for counts written before either rule
    (the stats of an earlier shard, markers of an older version)."""
    out: dict[str, int] = {}
    for key, n in counts.items():
        key = OTHER if key == OTHER else normalise_message(key)
        out[key] = out.get(key, 0) + n
    return capped(out, cap)


class CappedCounter:
    """Counts per key holding at most 2 x `cap` keys at any time and `cap` in `result()`."""

    def __init__(self, cap: int = DEFAULT_CAP) -> None:
        if cap < 1:
            raise ValueError(f"cap must be at least 1, not {cap}")
        self.cap = cap
        self.counts: dict[str, int] = {}

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n
        if len(self.counts) > 2 * self.cap:
            # Folding at 2 x cap rather than at cap keeps a message that is frequent overall from
            # being folded away before its second occurrence, at a bounded cost.
            self.counts = capped(self.counts, self.cap)

    def result(self) -> dict[str, int]:
        return capped(self.counts, self.cap)
