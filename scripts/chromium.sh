#!/usr/bin/env bash
# Headless Chromium for the browser tests of `makemore serve` (tests/test_serve_browser.py) and
# for the README's screenshot (scripts/screenshot.py). The tests drive it with Playwright's
# Python package; Playwright's own browser download is never used (it cannot be fetched here,
# and a distribution's package gets security updates with the rest of the system).
#
#   scripts/chromium.sh ensure-installed   install Debian's `chromium` package if no chromium is
#                                          found (needs root or password-less sudo)
#   scripts/chromium.sh path               print the chromium executable the tests will use
#
# $MAKEMORE_CHROMIUM names another executable (the tests read it too).
set -euo pipefail

say() { echo "chromium.sh: $*" >&2; }

find_chromium() {
    local c
    for c in "${MAKEMORE_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
        if [ -n "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
    done
    if command -v chromium >/dev/null; then command -v chromium; return 0; fi
    return 1
}

ensure_installed() {
    local c
    if c=$(find_chromium); then say "found $c"; return 0; fi
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n)
        else say "chromium is not installed and this user can neither install packages nor sudo"; return 1; fi
    fi
    if ! command -v apt-get >/dev/null; then
        say "chromium is not installed and there is no apt-get here; install it by hand (or set MAKEMORE_CHROMIUM)"
        return 1
    fi
    local t0=$SECONDS
    say "installing chromium: apt-get update && apt-get install chromium"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    # fonts-liberation: a font with Latin glyphs, so that the page (and the screenshot) has text
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium fonts-liberation >&2
    c=$(find_chromium) || { say "apt-get installed chromium but no executable was found"; return 1; }
    say "installed $c in $((SECONDS - t0)) s"
}

case "${1:-}" in
    ensure-installed) ensure_installed ;;
    path) find_chromium || { say "chromium is not installed; run: $0 ensure-installed"; exit 1; } ;;
    *) echo "usage: $0 ensure-installed | path" >&2; exit 2 ;;
esac
