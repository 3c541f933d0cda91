#!/usr/bin/env bash
# Fetches the Debian packages that packaging/gpu-check.sh unpacks on a GPU machine without
# Debian's archive (headers and libraries LibTorch does not bring, GoogleTest's sources to build
# with that machine's compiler), into one folder to carry:
#   bash packaging/gpu-debs.sh [DIR]      (default build/gpu-debs; then gpu-check.sh DIR there)
# Runs here, on Debian 12 with its archive; the files are a few MB.
set -euo pipefail
dir=$(realpath -m "${1:-$(dirname "$0")/../build/gpu-debs}")  # relative to where it was started
mkdir -p "$dir"
packages=(nlohmann-json3-dev libtomlplusplus-dev libtomlplusplus3 libcli11-dev libsqlite3-dev libsqlite3-0
          libpcre2-dev libpcre2-8-0 libutf8proc-dev libutf8proc2 libgtest-dev googletest)
# (As root apt warns that the download runs unsandboxed; the log keeps it.)
(cd "$dir" && apt-get download "${packages[@]}" >/tmp/ganpo-gpu-debs.log 2>&1) ||
  { tail -5 /tmp/ganpo-gpu-debs.log >&2; echo "gpu-debs: apt-get download failed (run apt-get update first?)" >&2; exit 1; }
ls "$dir"/*.deb | wc -l | xargs echo "gpu-debs: .deb files in $dir:"
du -sh "$dir" | cut -f1 | xargs echo "gpu-debs: size"
