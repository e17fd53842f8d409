"""X-Robots-Tag opt-outs: a site asking that its images not be used for AI training or indexed.

A header value is a comma-separated directive list, optionally scoped to one crawler by a
`<user-agent>:` prefix ("curate: noai"). Unscoped directives and those scoped to our token (or
"*") apply; directives scoped to another crawler do not.
"""

from __future__ import annotations

from collections.abc import Iterable

OPTOUT_DIRECTIVES = frozenset({"noai", "noimageai", "noindex", "noimageindex", "none"})
# Directives that themselves contain a colon, so "name:" is not a user-agent prefix for them.
_COLON_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})


def optout_directive(header_values: Iterable[str], user_agent_token: str) -> str | None:
    """The first opt-out directive that applies to `user_agent_token`, or None."""
    token = user_agent_token.strip().lower()
    for value in header_values:
        scope: str | None = None
        for item in value.split(","):
            item = item.strip().lower()
            if not item:
                continue
            name, sep, rest = item.partition(":")
            if sep and name.strip() not in _COLON_DIRECTIVES:
                # A new user-agent scope starts here and covers the directives that follow.
                scope = name.strip()
                item = rest.strip()
            if scope not in (None, "*", token):
                continue
            for word in item.split():
                if word in OPTOUT_DIRECTIVES:
                    return word
    return None
