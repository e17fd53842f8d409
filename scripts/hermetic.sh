#!/usr/bin/env bash
# Runs a command in a loopback-only network namespace: nothing it starts (Ray included, whose
# dashboard probes cloud metadata services on start, docs/run.md) can send a packet off the machine.
# Needs `unshare -n` to be permitted (root, or unprivileged user namespaces) and `ip`; where it is
# not, runs the command as is after a warning. Installs need the registries: run them outside.
#   scripts/hermetic.sh .venv/bin/python -m pytest tests/test_runner.py
set -euo pipefail
if command -v unshare >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 \
    && unshare -n sh -c 'ip link set lo up' >/dev/null 2>&1; then
  # CURATE_TEST_NETNS=1 lets tests/test_hermetic.py check that only `lo` is there.
  exec unshare -n sh -c 'ip link set lo up && CURATE_TEST_NETNS=1 exec "$@"' sh "$@"
fi
echo "WARNING: cannot run in a loopback-only network namespace here (\`unshare -n\` not permitted" \
     "or \`ip\` missing); running without it. curate still keeps Ray off the cloud metadata services," \
     "and the suite's network guard fails on any attempt to reach past this machine." >&2
exec "$@"
