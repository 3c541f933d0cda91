#!/usr/bin/env bash
# Builds and tests the headless part (core, db, `ganpo`, the unit and end-to-end tests) against
# LibTorch 2.x on a machine without a GPU: Debian 13 (trixie) ships LibTorch 2.6, so this
# debootstraps a minimal trixie into a scratch folder, installs the build dependencies there from
# Debian's archive and builds this tree (mounted read-only) inside it. Debian 12's LibTorch 1.13
# compiles out what needs 2.x: scaled_dot_product_attention for the models and critics
# (core/sdpa.h), the 2.4 autocast API (core/bf16_autocast.h); here they are compiled and the CPU
# tests run through them. Where a CUDA toolkit with NCCL headers is found (--cuda DIR, default
# /usr/local/cuda), it also compiles the CUDA-only code against LibTorch 2.6's headers: the NCCL
# process group (core/data_parallel.cpp), the CUDA caching allocator's statistics
# (core/cuda_memory.cpp) and the sync debug mode (core/host_sync_check.cpp); compiled, not linked
# or run (no GPU here). With --gui it installs
# trixie's Qt 6 and QCustomPlot too and builds the workbench as the cuda preset does where Qt is
# found (GANPO_BUILD_GUI=AUTO), so the UI tests run against LibTorch 2.6 as well.
#   sudo bash packaging/check-libtorch2.sh [--gui] [--root DIR] [--cuda DIR] [--tests REGEX] [--jobs N]
# The scratch root (default /var/tmp/ganpo-libtorch2, ~3 GB) is kept and reused by later runs, so
# a second run only rebuilds what changed. Needs root (chroot), debootstrap and Debian's archive.
set -euo pipefail
root=/var/tmp/ganpo-libtorch2 cuda=/usr/local/cuda tests="" jobs=$(nproc) gui=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$(realpath -m "$2"); shift ;;
    --cuda) cuda=$(realpath -m "$2"); shift ;;
    --tests) tests=$2; shift ;;
    --jobs) jobs=$2; shift ;;
    --gui) gui=1 ;;
    *) echo "check-libtorch2: unknown argument $1 (see the usage at the top of this script)" >&2; exit 2 ;;
  esac
  shift
done
cd "$(dirname "$0")/.."
src=$(pwd)
fail() { echo "check-libtorch2: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root for debootstrap and chroot"
step() { echo "== $1 ($(date +%T))"; }

if [ ! -f "$root/.ganpo-ready" ]; then
  command -v debootstrap >/dev/null || fail "needs debootstrap (apt-get install debootstrap)"
  step "debootstrap trixie into $root"
  mkdir -p "$root"
  debootstrap --variant=minbase --components=main,contrib trixie "$root" http://deb.debian.org/debian \
    >/tmp/ganpo-libtorch2-debootstrap.log 2>&1 ||
    { tail -20 /tmp/ganpo-libtorch2-debootstrap.log >&2; fail "debootstrap failed"; }
fi

mounted=()
mount_in() {  # mount_in SOURCE TARGET [ro]
  mkdir -p "$root$2"
  mountpoint -q "$root$2" && return
  if [ "$1" = proc ] || [ "$1" = sysfs ]; then mount -t "$1" "$1" "$root$2"; else mount --bind "$1" "$root$2"; fi
  [ "${3:-}" = ro ] && mount -o remount,bind,ro "$root$2"
  mounted=("$root$2" "${mounted[@]}")
}
cleanup() { for m in "${mounted[@]}"; do umount -l "$m" || true; done; }
trap cleanup EXIT
mount_in proc /proc
mount_in sysfs /sys
mount_in /dev /dev
mount_in /dev/pts /dev/pts
mount_in "$src" /src ro
data=${GANPO_TEST_DATA_DIR:-$HOME/.cache/ganpo-workbench/npm}
[ -d "$data" ] && mount_in "$data" /test-data ro
cp /etc/resolv.conf "$root/etc/resolv.conf"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  DEBIAN_FRONTEND=noninteractive GANPO_TEST_DATA_DIR=/test-data "$@"; }

if [ ! -f "$root/.ganpo-ready" ]; then
  step "build dependencies from trixie"
  in_root apt-get update -qq
  in_root apt-get install -y -qq --no-install-recommends build-essential cmake ninja-build pkg-config git python3 \
    libtorch-dev libopenblas0-pthread libgloo-dev libsqlite3-dev sqlite3 nlohmann-json3-dev \
    libtomlplusplus-dev libcli11-dev libpcre2-dev libutf8proc-dev libgtest-dev libgmock-dev \
    >/tmp/ganpo-libtorch2-apt.log 2>&1 || { tail -30 /tmp/ganpo-libtorch2-apt.log >&2; fail "apt-get install failed"; }
  touch "$root/.ganpo-ready"
fi
if [ "$gui" = 1 ] && [ ! -f "$root/.ganpo-gui-ready" ]; then
  step "Qt 6 and QCustomPlot from trixie"
  in_root apt-get install -y -qq --no-install-recommends qt6-base-dev qt6-svg-dev libqcustomplot-dev fonts-dejavu-core \
    >/tmp/ganpo-libtorch2-apt-gui.log 2>&1 || { tail -30 /tmp/ganpo-libtorch2-apt-gui.log >&2; fail "apt-get install (Qt) failed"; }
  touch "$root/.ganpo-gui-ready"
fi
in_root dpkg-query -W -f '${Package} ${Version}\n' libtorch-dev g++ cmake
[ "$gui" = 1 ] && in_root dpkg-query -W -f '${Package} ${Version}\n' qt6-base-dev libqcustomplot-dev

step configure
in_root git config --global --add safe.directory /src
gui_setting=OFF; [ "$gui" = 1 ] && gui_setting=AUTO
in_root cmake -S /src -B /build/libtorch2 -G Ninja -DCMAKE_BUILD_TYPE=Release -DGANPO_BUILD_GUI=$gui_setting \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/tmp/ganpo-libtorch2-configure.log 2>&1 ||
  { tail -40 /tmp/ganpo-libtorch2-configure.log >&2; fail "configure failed"; }
grep -E "^-- (LibTorch |The workbench)" /tmp/ganpo-libtorch2-configure.log || true
if [ "$gui" = 1 ]; then
  grep -q "The workbench (GUI) is built" /tmp/ganpo-libtorch2-configure.log || fail "the workbench is not built (see above)"
fi
step build
in_root cmake --build /build/libtorch2 -j"$jobs" >/tmp/ganpo-libtorch2-build.log 2>&1 ||
  { grep -B2 -A12 "error" /tmp/ganpo-libtorch2-build.log | head -80 >&2; fail "build failed (log: /tmp/ganpo-libtorch2-build.log)"; }
in_root /build/libtorch2/app/ganpo --version
[ "$gui" = 1 ] && in_root env QT_QPA_PLATFORM=offscreen /build/libtorch2/app/ganpo-workbench --version

status=0
step "tests"
if [ -n "$tests" ]; then
  in_root ctest --test-dir /build/libtorch2 -R "$tests" -j"$jobs" --output-on-failure || status=1
else
  # (Not the Debian package's check: the package is built for Debian 12 and its LibTorch 1.13.)
  in_root ctest --test-dir /build/libtorch2 -LE gpu -E '^Packaging[.]' -j"$jobs" --output-on-failure || status=1
fi

# The CUDA-only code against the headers of Debian's CUDA LibTorch 2.6 (contrib:
# libtorch-cuda-dev, unpacked, not installed) and the toolkit's, with the definitions a CUDA
# LibTorch's CMake config sets: syntax and types checked, nothing linked or run.
if [ -f "$cuda/include/nccl.h" ] && [ -f "$cuda/include/cuda_runtime_api.h" ]; then
  mount_in "$cuda/include" /cuda-include ro
  if [ ! -d "$root/opt/torch-cuda/usr/include" ]; then
    in_root bash -c 'mkdir -p /opt/debs && cd /opt/debs && apt-get download -qq libtorch-cuda-dev 2>/dev/null &&
      dpkg -x libtorch-cuda-dev_*.deb /opt/torch-cuda' || fail "could not fetch libtorch-cuda-dev (Debian contrib)"
  fi
  inc=/opt/torch-cuda/usr/include
  # ganpo_core's own flags (definitions, include folders), from its unity batch's command.
  flags=$(python3 - "$root/build/libtorch2/compile_commands.json" <<'EOF'
import json, shlex, sys
for c in json.load(open(sys.argv[1])):
    if "ganpo_core.dir/Unity" in c["file"]:
        print(" ".join(a for a in shlex.split(c["command"]) if a.startswith(("-D", "-I", "-O"))))
        break
EOF
)
  for f in core/data_parallel.cpp core/cuda_memory.cpp core/host_sync_check.cpp; do
    step "compile $f with NCCL and CUDA (LibTorch 2.6 CUDA headers, $cuda)"
    in_root /usr/bin/c++ -std=gnu++17 $flags -DUSE_C10D_NCCL -DUSE_CUDA -DGANPO_C10_CUDA \
      -isystem $inc -isystem $inc/torch/csrc/api/include -isystem /cuda-include -Wall -Wextra -Wno-unused-parameter \
      -fsyntax-only "/src/$f" || { echo "check-libtorch2: $f does not compile with NCCL / CUDA" >&2; status=1; }
  done
else
  echo "check-libtorch2: no CUDA toolkit with NCCL headers at $cuda: the NCCL and CUDA allocator code was not compiled"
fi
step "done (status $status)"
exit $status
