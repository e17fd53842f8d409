#!/usr/bin/env bash
# Installs the emoji artwork that curate.emoji (docs/emoji-pool.md) needs and pip cannot:
# OpenMoji and Twemoji from npm into a project-local prefix, Noto Color Emoji from Debian.
# Idempotent and quiet: does nothing when everything is there. Never fails the build: what is still
# missing makes curate.emoji raise a ConfigError naming it, and the tests that need it skip.
set -uo pipefail
PREFIX="${CURATE_EMOJI_ASSETS:-${VENV:-.venv}/share/curate-emoji}"
NOTO="${CURATE_EMOJI_NOTO_FONT:-/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf}"
NPM_PACKAGES=(openmoji@17.0.0 @twemoji/svg@15.0.0)
LOG=/tmp/curate-emoji-assets.log

has_version() {  # has_version <package dir> <version>
  grep -q "\"version\": *\"$2\"" "$PREFIX/node_modules/$1/package.json" 2>/dev/null
}

if ! has_version openmoji 17.0.0 || ! has_version @twemoji/svg 15.0.0; then
  if command -v npm >/dev/null 2>&1; then
    echo "emoji-assets: installing ${NPM_PACKAGES[*]} into $PREFIX" >&2
    mkdir -p "$PREFIX"
    # Both at once: an npm install without a package.json prunes what it was not asked for.
    npm install --prefix "$PREFIX" --no-save --no-audit --no-fund --ignore-scripts --loglevel=error \
      "${NPM_PACKAGES[@]}" >"$LOG" 2>&1 || echo "emoji-assets: npm install failed (see $LOG)" >&2
  else
    echo "emoji-assets: npm not found; OpenMoji and Twemoji not installed (the emoji pool's tests will skip)" >&2
  fi
fi

if [ ! -f "$NOTO" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "emoji-assets: installing fonts-noto-color-emoji" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-color-emoji) \
      >>"$LOG" 2>&1 || echo "emoji-assets: apt-get install failed (see $LOG)" >&2
  else
    echo "emoji-assets: $NOTO missing (not root or no apt-get): apt-get install fonts-noto-color-emoji" >&2
  fi
fi
exit 0
