#!/usr/bin/env bash
# Builds and tests the headless part (core, db, `ganpo`, the unit and end-to-end tests) against
# LibTorch 2.x on a machine without a GPU: Debian 13 (trixie) ships LibTorch 2.6, so this
# debootstraps a minimal trixie into a scratch folder, installs the build dependencies there from
# Debian's archive and builds this tree (mounted read-only) inside it. `--suite sid` does the same
# with Debian unstable, whose LibTorch is newer (2.14 at the end of 2026): the device machine's
# Python torch is 2.11, so sid's headers catch what 2.6 still had and later versions removed.
# Debian 12's LibTorch 1.13 compiles out what needs 2.x: scaled_dot_product_attention for the
# models and critics (core/sdpa.h), the 2.4 autocast API (core/bf16_autocast.h); here they are
# compiled and the CPU tests run through them. Where a CUDA toolkit with NCCL headers is found
# (--cuda DIR, default /usr/local/cuda), it also compiles the CUDA-only code against the suite's
# CUDA LibTorch headers: the NCCL process group (core/data_parallel.cpp), the CUDA caching
# allocator's statistics (core/cuda_memory.cpp) and the sync debug mode
# (core/host_sync_check.cpp); compiled, not linked or run (no GPU here). With --gui it installs
# the suite's Qt 6 and QCustomPlot too and builds the workbench as the cuda preset does where Qt is
# found (GANPO_BUILD_GUI=AUTO), so the UI tests run against LibTorch 2.x as well. With
# --transformers (sid: Debian's python3-transformers) it also runs
# tests/core/golden/check_with_transformers.py: the golden cases, and folders `ganpo train` writes
# (a LoRA run's merged and adapter folders too), against the real transformers library; PEFT is
# not in Debian: --peft-src DIR (a checkout of huggingface/peft) puts DIR/src on its PYTHONPATH,
# which adds PeftModel's side of the LoRA checks.
#   sudo bash packaging/check-libtorch2.sh [--suite trixie|sid] [--gui] [--transformers [--peft-src DIR]]
#                                          [--root DIR] [--cuda DIR] [--tests REGEX] [--jobs N]
# The scratch root (default /var/tmp/ganpo-libtorch2 for trixie, /var/tmp/ganpo-libtorch-sid for
# sid, ~3 GB each) is kept and reused by later runs, so a second run only rebuilds what changed.
# Needs root (chroot), debootstrap and Debian's archive.
set -euo pipefail
root="" suite=trixie cuda=/usr/local/cuda tests="" jobs=$(nproc) gui=0 hf=0 peft=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root=$(realpath -m "$2"); shift ;;
    --suite) suite=$2; shift ;;
    --cuda) cuda=$(realpath -m "$2"); shift ;;
    --tests) tests=$2; shift ;;
    --jobs) jobs=$2; shift ;;
    --gui) gui=1 ;;
    --transformers) hf=1 ;;
    --peft-src) peft=$(realpath -m "$2"); shift ;;
    *) echo "check-libtorch2: unknown argument $1 (see the usage at the top of this script)" >&2; exit 2 ;;
  esac
  shift
done
cd "$(dirname "$0")/.."
src=$(pwd)
fail() { echo "check-libtorch2: $*" >&2; exit 1; }
[ -z "$peft" ] || [ -f "$peft/src/peft/__init__.py" ] ||
  fail "--peft-src $peft holds no src/peft (a checkout of huggingface/peft)"
[ -z "$peft" ] || [ "$hf" = 1 ] || fail "--peft-src goes with --transformers"
case "$suite" in
  trixie) root=${root:-/var/tmp/ganpo-libtorch2} ;;
  sid) root=${root:-/var/tmp/ganpo-libtorch-sid} ;;
  *) fail "--suite takes trixie or sid, not $suite" ;;
esac
[ "$(id -u)" = 0 ] || fail "needs root for debootstrap and chroot"
step() { echo "== $1 ($(date +%T))"; }

# (.ganpo-ready alone: a root this script made before it marked the bootstrap)
if [ ! -f "$root/.ganpo-bootstrapped" ] && [ ! -f "$root/.ganpo-ready" ]; then
  command -v debootstrap >/dev/null || fail "needs debootstrap (apt-get install debootstrap)"
  step "debootstrap $suite into $root"
  mkdir -p "$root"
  debootstrap --variant=minbase --components=main,contrib "$suite" "$root" http://deb.debian.org/debian \
    >/tmp/ganpo-libtorch2-debootstrap.log 2>&1 ||
    { tail -20 /tmp/ganpo-libtorch2-debootstrap.log >&2; fail "debootstrap failed (remove $root to start again)"; }
  touch "$root/.ganpo-bootstrapped"
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
# sid's Release file carries a Valid-Until a week ahead; a mirror that lags behind it is refused
# without this (stable suites have none).
[ "$suite" = sid ] && echo 'Acquire::Check-Valid-Until "false";' >"$root/etc/apt/apt.conf.d/99ganpo-no-valid-until"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  DEBIAN_FRONTEND=noninteractive GANPO_TEST_DATA_DIR=/test-data "$@"; }

if [ ! -f "$root/.ganpo-ready" ]; then
  step "build dependencies from $suite"
  in_root apt-get update -qq
  in_root apt-get install -y -qq --no-install-recommends build-essential cmake ninja-build pkg-config git python3 \
    libtorch-dev libopenblas0-pthread libgloo-dev libsqlite3-dev sqlite3 nlohmann-json3-dev \
    libtomlplusplus-dev libcli11-dev libpcre2-dev libutf8proc-dev libgtest-dev libgmock-dev \
    >/tmp/ganpo-libtorch2-apt.log 2>&1 || { tail -30 /tmp/ganpo-libtorch2-apt.log >&2; fail "apt-get install failed"; }
  touch "$root/.ganpo-ready"
fi
if [ "$gui" = 1 ] && [ ! -f "$root/.ganpo-gui-ready" ]; then
  step "Qt 6 and QCustomPlot from $suite"
  in_root apt-get install -y -qq --no-install-recommends qt6-base-dev qt6-svg-dev libqcustomplot-dev fonts-dejavu-core \
    >/tmp/ganpo-libtorch2-apt-gui.log 2>&1 || { tail -30 /tmp/ganpo-libtorch2-apt-gui.log >&2; fail "apt-get install (Qt) failed"; }
  touch "$root/.ganpo-gui-ready"
fi
if [ "$hf" = 1 ] && [ ! -f "$root/.ganpo-hf-ready" ]; then
  step "transformers from $suite"
  # (accelerate, psutil, yaml and tqdm: what PEFT imports, for --peft-src)
  in_root apt-get install -y -qq --no-install-recommends python3-transformers python3-torch python3-safetensors \
    python3-tokenizers python3-accelerate python3-psutil python3-yaml python3-tqdm >/tmp/ganpo-libtorch2-apt-hf.log 2>&1 ||
    { tail -30 /tmp/ganpo-libtorch2-apt-hf.log >&2; fail "apt-get install (transformers) failed; $suite may not have it (sid does)"; }
  touch "$root/.ganpo-hf-ready"
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

if [ "$hf" = 1 ]; then
  step "the workbench's folders against transformers${peft:+ and PEFT}"
  pythonpath=""
  if [ -n "$peft" ]; then
    mount_in "$peft" /peft ro
    pythonpath=/peft/src
  fi
  rm -rf "$root/tmp/ganpo-hf-check"
  in_root env PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 PYTHONPATH=$pythonpath \
    python3 /src/tests/core/golden/check_with_transformers.py --ganpo /build/libtorch2/app/ganpo \
    --work /tmp/ganpo-hf-check || status=1
fi

# The CUDA-only code against the headers of Debian's CUDA LibTorch (contrib:
# libtorch-cuda-dev, unpacked, not installed) and the toolkit's, with the definitions a CUDA
# LibTorch's CMake config sets: syntax and types checked, nothing linked or run. Where the suite's
# own LibTorch headers carry c10/cuda and ProcessGroupNCCL (sid's 2.14 does, though its
# libtorch-cuda-dev lagged at 2.6 at the end of 2026), the same files are compiled against those
# too, with the one header a CUDA build generates (cuda_cmake_macros.h) taken from the CUDA package.
if [ -f "$cuda/include/nccl.h" ] && [ -f "$cuda/include/cuda_runtime_api.h" ]; then
  mount_in "$cuda/include" /cuda-include ro
  if [ ! -d "$root/opt/torch-cuda/usr/include" ]; then
    in_root bash -c 'mkdir -p /opt/debs && cd /opt/debs && apt-get download -qq libtorch-cuda-dev 2>/dev/null &&
      dpkg -x libtorch-cuda-dev_*.deb /opt/torch-cuda' || fail "could not fetch libtorch-cuda-dev (Debian contrib)"
  fi
  inc=/opt/torch-cuda/usr/include
  cuda_torch=$(in_root bash -c 'dpkg-deb -f /opt/debs/libtorch-cuda-dev_*.deb Version')
  # ganpo_core's own flags (language standard, definitions, include folders), from its unity batch's command.
  flags=$(python3 - "$root/build/libtorch2/compile_commands.json" <<'EOF'
import json, shlex, sys
for c in json.load(open(sys.argv[1])):
    if "ganpo_core.dir/Unity" in c["file"]:
        print(" ".join(a for a in shlex.split(c["command"]) if a.startswith(("-std", "-D", "-I", "-O"))))
        break
EOF
)
  compile_cuda() {  # compile_cuda LABEL INCLUDE_FLAGS...
    local label=$1 f
    shift
    for f in core/data_parallel.cpp core/cuda_memory.cpp core/host_sync_check.cpp; do
      step "compile $f with NCCL and CUDA ($label headers, $cuda)"
      in_root /usr/bin/c++ $flags -DUSE_C10D_NCCL -DUSE_CUDA -DGANPO_C10_CUDA "$@" -isystem /cuda-include \
        -Wall -Wextra -Wno-unused-parameter -fsyntax-only "/src/$f" ||
        { echo "check-libtorch2: $f does not compile with NCCL / CUDA ($label)" >&2; status=1; }
    done
  }
  compile_cuda "libtorch-cuda-dev $cuda_torch" -isystem $inc -isystem $inc/torch/csrc/api/include
  if [ -f "$root/usr/include/c10/cuda/CUDAFunctions.h" ] &&
     [ -f "$root/usr/include/torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp" ]; then
    mkdir -p "$root/opt/cuda-macros/c10/cuda/impl"
    cp "$root$inc/c10/cuda/impl/cuda_cmake_macros.h" "$root/opt/cuda-macros/c10/cuda/impl/"
    compile_cuda "libtorch-dev $(in_root dpkg-query -W -f '${Version}' libtorch-dev)" \
      -isystem /usr/include/torch/csrc/api/include -isystem /opt/cuda-macros
  fi
else
  echo "check-libtorch2: no CUDA toolkit with NCCL headers at $cuda: the NCCL and CUDA allocator code was not compiled"
fi
step "done (status $status)"
exit $status
