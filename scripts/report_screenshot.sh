#!/usr/bin/env bash
# Renders a sweep's HTML report in headless Chromium, saves a screenshot and
# fails if the page logged any console message (errors, failed loads).
#
#   scripts/report_screenshot.sh [RUN_DIR] [OUT.png]
#
# RUN_DIR defaults to a synthetic demo run (python3 -m safesteer_analysis demo);
# OUT.png defaults to ./report.png. The window is 1400 px wide (the layout
# test's width) and REPORT_HEIGHT px tall (default 3000): the screenshot
# shows that much of the page. Needs Debian's `chromium` package.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONPATH="$repo/analysis${PYTHONPATH:+:$PYTHONPATH}"
chrome=$(command -v chromium || command -v chromium-browser || true)
[ -n "$chrome" ] || { echo "report_screenshot: chromium not found (apt-get install chromium)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run=${1:-}
if [ -z "$run" ]; then
    python3 -m safesteer_analysis demo "$work/demo" >/dev/null
    run=$work/demo/run
fi
out=${2:-report.png}
case "$out" in /*) ;; *) out=$PWD/$out ;; esac
html=$work/report.html
python3 -m safesteer_analysis report "$run" --out "$html" >/dev/null
# Self-contained: every src/href is a data: URI (file:// misses are not logged).
if grep -Eo '(src|href)="[^"]*"' "$html" | grep -v '="data:'; then
    echo "report_screenshot: external references above in $html" >&2
    exit 1
fi

# --enable-logging=stderr --v=0 makes Chromium print page console messages as
# "...:CONSOLE(line)] ..."; a self-contained report must print none.
log=$work/chromium.log
"$chrome" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$work/profile" \
    --enable-logging=stderr --v=0 --window-size=1400,"${REPORT_HEIGHT:-3000}" \
    --screenshot="$out" "file://$html" 2>"$log" || { cat "$log" >&2; exit 1; }
[ -s "$out" ] || { echo "report_screenshot: no screenshot written" >&2; cat "$log" >&2; exit 1; }
if grep -E "CONSOLE|Uncaught|ERR_FILE_NOT_FOUND" "$log" >&2; then
    echo "report_screenshot: console errors above (page $html)" >&2
    exit 1
fi
echo "report_screenshot: $out ($(stat -c %s "$out") bytes), no console messages"
