#!/usr/bin/env bash
# Screenshot a report page with headless Chromium (Debian package `chromium`), e.g. for docs/report.png:
#   scripts/screenshot.sh runs/quickstart/report.html docs/report.png
# The page is self-contained, so no network is needed. The window is 1280x2400 CSS pixels.
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 REPORT_HTML OUT_PNG" >&2
    exit 2
fi
[ -f "$1" ] || { echo "$0: $1: no such file" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "$0: no chromium found; install it with 'apt-get install -y chromium'" >&2; exit 1; }
page=$(realpath "$1")
out=$(realpath -m "$2")
mkdir -p "$(dirname "$out")"
# --no-sandbox: Chromium refuses to run as root otherwise (containers, CI)
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2400 \
    --screenshot="$out" "file://$page" 2>/dev/null
[ -s "$out" ] || { echo "$0: chromium wrote no screenshot to $out" >&2; exit 1; }
echo "wrote $out"
