#!/usr/bin/env bash
# Builds the headless part (core, db, `ganpo`, tests) against the CUDA LibTorch of a Python
# torch install, then runs the unit and gpu tests, `ganpo bench` on the GPU and the quick demo.
# For GPU machines without Debian's archive: pass a folder of the .deb files of nlohmann-json3-dev,
# libtomlplusplus-dev, libtomlplusplus3, libcli11-dev, libsqlite3-dev, libsqlite3-0,
# libpcre2-dev, libpcre2-8-0, libutf8proc-dev, libutf8proc2, libgtest-dev and googletest (its
# sources, built with this machine's compiler) (packaging/gpu-debs.sh fetches them with
# `apt-get download` on a Debian 12 machine); they are unpacked beside it.
# --quick builds only `ganpo` and the CUDA tests and runs those tests (what gpu-session.sh needs
# first in its one call on the device).
#   usage: packaging/gpu-check.sh [--quick] [DEB_FOLDER] [LOG_FOLDER]
set -uo pipefail
quick=0
[ "${1:-}" = --quick ] && { quick=1; shift; }
DEBS=${1:-}
[ -z "$DEBS" ] || DEBS=$(realpath -m "$DEBS")  # relative to where it was started, before the cd below
LOGS=$(realpath -m "${2:-/tmp/ganpo-gpu-check}")
mkdir -p "$LOGS"
cd "$(dirname "$0")/.."
python3 -c 'import torch; print("python torch", torch.__version__, "CUDA", torch.version.cuda, "C++11 ABI", torch._C._GLIBCXX_USE_CXX11_ABI)'
command -v nvcc >/dev/null || echo "gpu-check: no nvcc on PATH (a pip CUDA torch's CMake config needs the toolkit's nvcc; try PATH=/usr/local/cuda/bin:\$PATH)"
PREFIX=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')
if [ -n "$DEBS" ]; then
  ROOT="$DEBS/root"
  for f in "$DEBS"/*.deb; do dpkg -x "$f" "$ROOT"; done
  PREFIX="$PREFIX;$ROOT/usr;$ROOT/usr/lib/x86_64-linux-gnu/cmake;$ROOT/usr/share/cmake"
  # Build GoogleTest with this machine's compiler rather than link the packaged static library.
  [ -d "$ROOT/usr/src/googletest" ] && GTEST_SRC="-DGANPO_GTEST_SOURCE_DIR=$ROOT/usr/src/googletest"
  export CPATH="$ROOT/usr/include${CPATH:+:$CPATH}"
  export LD_LIBRARY_PATH="$ROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
step() { echo "== $1 ($(date +%T))"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
c++ --version | head -1

step configure
cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DGANPO_BUILD_GUI=OFF -DGANPO_CUDA=ON \
  -DCMAKE_PREFIX_PATH="$PREFIX" ${GTEST_SRC:-} >"$LOGS/configure.log" 2>&1 \
  || { tail -40 "$LOGS/configure.log"; exit 1; }
grep "LibTorch " "$LOGS/configure.log"
step build
build_failed() { grep -B2 -A8 "error" "$LOGS/build.log" | head -80; exit 1; }
if [ "$quick" = 1 ]; then
  # `ganpo` first: LOGS/ganpo.built tells a caller it can start CPU work with it (gpu-session.sh
  # runs its transformers check beside the rest of the build and the CUDA tests).
  time cmake --build build/gpu -j"$(nproc)" --target ganpo >"$LOGS/build.log" 2>&1 || build_failed
  touch "$LOGS/ganpo.built"
  time cmake --build build/gpu -j"$(nproc)" --target core_gpu_tests >>"$LOGS/build.log" 2>&1 || build_failed
else
  time cmake --build build/gpu -j"$(nproc)" >"$LOGS/build.log" 2>&1 || build_failed
fi
G=build/gpu/app/ganpo

step "gpu tests"
OMP_NUM_THREADS=4 timeout 240 ./build/gpu/tests/core/core_gpu_tests 2>&1 | tee "$LOGS/gpu-tests.log" | tail -25
[ "$quick" = 1 ] && { step done; exit 0; }
if [ -z "${SKIP_BENCH:-}" ]; then
step "bench tiny (demo preset) on cuda"
timeout 120 $G bench --config resources/presets/demo.toml --set device=cuda --steps 20 2>&1 | tail -8
step "bench small, batch 32, on cuda"
timeout 120 $G bench --config resources/presets/demo.toml --set device=cuda --set model.preset=small \
  --set train.per_device_train_batch_size=32 --steps 20 2>&1 | tail -8
fi
step "unit tests (CPU paths, LibTorch 2.x build)"
OMP_NUM_THREADS=2 timeout 300 ctest --test-dir build/gpu -L unit -j8 --timeout 120 >"$LOGS/ctest.log" 2>&1
tail -15 "$LOGS/ctest.log"
# A crash gets a backtrace where a debugger exists.
# (core_tests is registered one ctest test per suite: "Suite"; the others per test: "Suite.Test".)
failed=$(grep -m1 -oE '[0-9]+ - [A-Za-z_/]+(\.[A-Za-z_]+)? \(SEGFAULT' "$LOGS/ctest.log" | awk '{print $3}')
dbg=$(command -v gdb || command -v cuda-gdb)
if [ -n "$failed" ] && [ -n "$dbg" ]; then
  filter=$failed; [[ $failed == *.* ]] || filter="$failed.*"
  for exe in build/gpu/tests/core/core_tests build/gpu/tests/core/base_tests build/gpu/tests/db/db_tests; do
    grep -q "${failed#*.}" <<< "$("$exe" --gtest_list_tests)" || continue
    step "backtrace of $failed"
    timeout 120 "$dbg" -batch -ex run -ex bt --args "$exe" --gtest_filter="$filter" 2>&1 | tail -40
  done
fi
step "worker end to end (real ganpo processes on a workspace file)"
timeout 300 ctest --test-dir build/gpu -R WorkerEndToEnd --timeout 240 >"$LOGS/worker.log" 2>&1
tail -8 "$LOGS/worker.log"
[ -n "${SKIP_BENCH:-}" ] && { step done; exit 0; }
step "quick demo on cuda"
time timeout 300 $G demo --quick --output-dir /tmp/ganpo-gpu-demo >"$LOGS/demo.log" 2>&1
tail -14 "$LOGS/demo.log"
step done
