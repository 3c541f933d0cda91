#!/usr/bin/env bash
# Takes the README's screenshots under Xvfb: the New Run dialog on the demo preset; the demo
# pipeline with a DPO-only twin of its preference stage (one study: SFT, then both arms); the
# main window and the live dashboard after LIVE_SECONDS of the GANPO arm (default 40); then,
# once both arms have finished, Samples, Checkpoints and Compare of the trained models. About six
# minutes on two cores. Also prints the longest UI-thread stall measured during the live run.
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
# The Study tab needs a workspace with a study in it (e.g. the Paper in miniature study after
# `ganpo study create/run`): STUDY_DB=path/to/workspace.sqlite [STUDY_ID=1].
if [[ -n "${STUDY_DB:-}" ]]; then
  GANPO_SCREENSHOT_DIR="$OUT" GANPO_SCREENSHOT_STUDY_DB="$STUDY_DB" GANPO_SCREENSHOT_STUDY="${STUDY_ID:-1}" \
    xvfb-run -a build/release/tests/ui/ui_tests --gtest_filter='StudyView.Screenshot' >"$WORK/study.log" 2>&1 || true
  if grep -q '\[  PASSED  \] 1 test' "$WORK/study.log" && ! grep -q SKIPPED "$WORK/study.log"; then
    echo "study: $OUT/study.png"
  else
    echo "study: no screenshot taken:" >&2
    tail -5 "$WORK/study.log" >&2
  fi
fi
