#!/usr/bin/env bash
# Where a CPU step's time goes, for `ganpo train` and the eager PyTorch step of bench-eager.py on
# the same shapes: the seconds and GFLOP of matrix products (sgemm) per optimizer step, the rate
# they run at, and this core's sgemm rate on square products with the same library and threads.
# When both sides spend most of a step in products running near that rate, the speed-up of the
# steps is the ratio of product work done, which says how much faster the C++ step can get there.
# Products are timed by packaging/sgemm_timer.c, preloaded; a run of W + N steps minus a run of
# W steps gives the N steps' products alone (start-up, warm-up and the final evaluation cancel).
#   usage: packaging/bench-gemm-share.sh [--steps N] [any option of bench-vs-eager.sh but --steps,
#          --no-eager, --work, --set]
# Needs cc and python3-torch (as bench-vs-eager.sh). Work folder: /tmp/ganpo-bench-gemm-share.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
W=/tmp/ganpo-bench-gemm-share N=4 G=$REPO/build/release/app/ganpo PY=/usr/bin/python3 pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) N=$2; shift 2 ;;
    --work | --no-eager | --set) echo "bench-gemm-share.sh: $1 is not an option here (see the usage at the top)" >&2; exit 2 ;;
    --ganpo-binary) G=$(realpath "$2"); pass+=("$1" "$G"); shift 2 ;;
    --python) PY=$2; pass+=("$1" "$2"); shift 2 ;;
    *) pass+=("$1" "$2"); shift 2 ;;
  esac
done
cd "$REPO"
rm -rf "$W" && mkdir -p "$W"
cc -O2 -shared -fPIC packaging/sgemm_timer.c -o "$W/sgemm_timer.so" -ldl -lpthread
cc -O2 -DSGEMM_TIMER_PEAK packaging/sgemm_timer.c -o "$W/sgemm_peak" -l:libblas.so.3
# The data file and config of bench-vs-eager.sh (it also measures `ganpo bench` for one step).
bash packaging/bench-vs-eager.sh --data-rows 400 "${pass[@]+"${pass[@]}"}" --no-eager --steps 1 --work "$W" > "$W/bench-vs-eager.txt"
threads=$(sed -n 's/^num_threads = //p' "$W/bench.toml")

timed() {  # timed OUT COMMAND...: COMMAND under the timer, its products in OUT
  SGEMM_TIMER_OUT=$1 LD_PRELOAD=$W/sgemm_timer.so OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads "${@:2}"
}
for variant in off on; do
  enabled=false; [ "$variant" = on ] && enabled=true
  for steps in 2 $((2 + N)); do
    timed "$W/cpp-$variant-$steps.txt" "$G" train --config "$W/bench.toml" --no-db --set ganpo.enabled=$enabled \
      --set train.max_steps=$steps --set train.logging_steps=1 --set output_dir="$W/run-$variant-$steps" > /dev/null
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824 \
      timed "$W/eager-$variant-$steps.txt" "$PY" packaging/bench-eager.py $(cat "$W/eager-args") --ganpo "$variant" \
      --steps "$steps" > "$W/eager-$variant-$steps.json"
  done
done
OPENBLAS_NUM_THREADS=$threads "$W/sgemm_peak" > "$W/peak.txt"

"$PY" - "$W" "$N" "$threads" <<'EOF'
import json, statistics, sys
W, N, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def products(path):  # seconds some product was running, GFLOP
    s = f = 0.0
    for line in open(path):
        fields = line.split()
        if fields[0] == "busy":
            s = float(fields[1])
            continue
        m, n, k, calls = (int(x) for x in fields[2:6])
        f += 2.0 * m * n * k * calls / 1e9
    return s, f
peak = {int(n): float(r) for n, r in (l.split() for l in open(f"{W}/peak.txt"))}
print(f"sgemm on square products, {threads} thread(s): " + ", ".join(f"{n}^3 {r:.0f} GFLOP/s" for n, r in peak.items()))
print("| side | step | step s (median) | products s / step | share of the step | products GFLOP / step | GFLOP/s |")
print("|---|---|---|---|---|---|---|")
rows = {}
for variant, label in (("off", "DPO"), ("on", "DPO + GANPO")):
    for side in ("ganpo", "eager"):
        tag = "cpp" if side == "ganpo" else "eager"
        s0, f0 = products(f"{W}/{tag}-{variant}-2.txt")
        s1, f1 = products(f"{W}/{tag}-{variant}-{2 + N}.txt")
        sec, gf = (s1 - s0) / N, (f1 - f0) / N
        if sec <= 0 or gf <= 0:
            sys.exit(f"bench-gemm-share.sh: no sgemm_ products seen in the {side} runs: that side's BLAS is not "
                     "a shared libblas.so.3 the timer can stand in front of (a pip torch links MKL inside)")
        if side == "ganpo":
            m = [json.loads(l) for l in open(f"{W}/run-{variant}-{2 + N}/metrics.jsonl")]
            step = statistics.median(r["step_time_s"] for r in m if "step_time_s" in r and r["step"] > 2)
        else:
            step = json.load(open(f"{W}/eager-{variant}-{2 + N}.json"))[f"ganpo_{variant}"]["median_step_time_s"]
        rows[(variant, side)] = (step, sec, gf)
        name = "ganpo train" if side == "ganpo" else "eager PyTorch"
        print(f"| {name} | {label} | {step:.3f} | {sec:.3f} | {100 * sec / step:.0f} % | {gf:.1f} | {gf / sec:.0f} |")
for variant, label in (("off", "DPO"), ("on", "DPO + GANPO")):
    (cs, cp, cg), (es, ep, eg) = rows[(variant, "ganpo")], rows[(variant, "eager")]
    best = max(peak.values())
    floor = cg / best + (cs - cp)
    print(f"{label}: speed-up of steps {es / cs:.2f}x; product work eager / ganpo {eg / cg:.2f}x; product rate ganpo / eager "
          f"{(cg / cp) / (eg / ep):.2f}x; ganpo's step with every product at {best:.0f} GFLOP/s and the rest as it is: "
          f"{floor:.3f} s ({es / floor:.2f}x eager)")
EOF
