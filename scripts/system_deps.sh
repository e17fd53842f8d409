#!/usr/bin/env bash
# Installs Debian packages the test suite uses when they are missing and we may install them.
# Missing tools make only the tests that need them skip, so this never fails the build.
set -uo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${need[*]} (not root or no apt-get); tests that need them will skip" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}" >&2
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/tmp/curate-system-deps.log 2>&1 \
  || echo "system-deps: install failed (see /tmp/curate-system-deps.log); dependent tests will skip" >&2
exit 0
