#!/usr/bin/env bash
# Takes the README's screenshots under Xvfb: the New Run dialog on the demo preset, the main
# window and the live dashboard of the demo run after LIVE_SECONDS of training (default 40).
# Also prints the longest UI-thread stall measured during the live run.
#   usage: packaging/take-screenshots.sh [OUT_DIR]   (default resources/screenshots)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-resources/screenshots}
APP=${APP:-build/release/app/ganpo-workbench}
WORK=$(mktemp -d)
trap 'sleep 2; rm -rf "$WORK" 2>/dev/null || true' EXIT
mkdir -p "$OUT"
export XDG_CONFIG_HOME="$WORK/config"  # fresh window settings, the user's untouched
xvfb-run -a -s "-screen 0 1600x1000x24" "$APP" --db "$WORK/workspace.sqlite" --screenshots "$OUT" \
  --live-seconds "${LIVE_SECONDS:-40}"
