#!/usr/bin/env bash
# Builds the Debian package from the release build: bash packaging/build-deb.sh [BUILD_DIR]
# (default build/release, configured and built first if needed). Prints the .deb's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-${GANPO_BUILD_DIR:-build/release}}
# Configure again even when configured: the version line's git commit is taken at configure time.
if [ -f "$build/CMakeCache.txt" ]; then cmake "$build" >/dev/null; else cmake --preset release; fi
cmake --build "$build" -j"$(nproc)" >&2
(cd "$build" && cpack -G DEB -B "$PWD/package" >&2)
ls -t "$build"/package/ganpo-workbench_*.deb | head -1
