#!/usr/bin/env bash
# Performance figures of docs/performance.md in one run on an idle machine.
#
# Runs the seven measurements of issue 15 one after another, each printing detkit next to
# its peer measured in the same process, with the 1-minute load average:
#   latency       bench_latency.py       batch 1 at 320, eager / folded / onnxruntime, network
#                                        and post-processing apart, the compute-bound limit
#   latency_1thread, latency_active  the same with 1 thread, and with OMP_WAIT_POLICY=ACTIVE
#   size          bench_latency_size.py  latency vs input size 320-960 (ThunderNet-lite eager
#                                        and folded, SSDlite)
#   nms_bccd      bench_nms_scaling.py   DIoU-NMS vs plain NMS per BCCD test image
#   predict       bench_predict.py       folder throughput, one at a time vs batch + workers
#   train         bench_models.py        training images/s at batch 8, 320
#   loader        bench_loader_workers.py  loader images/s vs workers 0, 1, 2, 4
#   eval          bench_eval.py --counts evaluation time vs 500-5000 images
#   nms_scaling   bench_nms_scaling.py   (optional, only with time left) NMS ms vs box count
#   train_profile profile_train_step.py  (optional, only with time left) phases of one
#                                        ThunderNet-lite training step
# Logs and JSON go to benchmarks/results/perf/, plots to docs/img/. A part that fails or
# runs out of time is reported and the next one starts; the whole run stops new parts at
# BUDGET seconds (780 = 13 minutes) and cuts the running one off there.
#
# Duration on the idle 2-core machine: 351 s for every part but the two thread variants
# (measured 2026-12-02: latency 36 s, size 34, nms_bccd 16, predict 20, train 25, loader 22,
# eval 162, nms_scaling 13, train_profile 22); the thread variants add about 40 s each.
#
# Usage (from anywhere):
#   PYTHON=/path/to/python CKPT_DIR=<suite k3_2min folder> ANN_FILE=<bccd test.json> \
#     bash benchmarks/perf_idle.sh
# Environment:
#   PYTHON    interpreter (default: <repo>/.venv/bin/python)
#   CKPT_DIR  trained BCCD rows, <row>_s0_f0/last.pth (default: <repo>/work_dirs/bench/bccd/k3_2min)
#   ANN_FILE  BCCD test split as COCO JSON (default: <repo>/data/bccd/test.json)
#   DATA_ROOT folder the checkpoints' config data paths are relative to (default: CKPT_DIR/../../../..)
#   QUICK=1   tiny settings, output to a temporary folder (a check that every part runs)
#   BUDGET    seconds for the whole run (default 780)
#   NICE      command prefix for every part, e.g. "nice -n -15"
#   PARTS     run only these parts (names as in the summary, space separated)
set -u

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO" || exit 2
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
CKPT_DIR="${CKPT_DIR:-$REPO/work_dirs/bench/bccd/k3_2min}"
ANN_FILE="${ANN_FILE:-$REPO/data/bccd/test.json}"
DATA_ROOT="${DATA_ROOT:-$CKPT_DIR/../../../..}"
BUDGET="${BUDGET:-780}"
NICE="${NICE:-}"
export OMP_WAIT_POLICY=PASSIVE  # before torch is imported: no spinning OpenMP threads
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's detkit
export MPLBACKEND=Agg

if [ "${QUICK:-0}" = 1 ]; then
  OUT="$(mktemp -d)/perf"; IMG="$OUT/img"
else
  OUT="$REPO/benchmarks/results/perf"; IMG="$REPO/docs/img"
fi
mkdir -p "$OUT" "$IMG"
CK=(--ckpt-dir "$CKPT_DIR" --ann-file "$ANN_FILE")

# settings per part: full run, then QUICK
if [ "${QUICK:-0}" = 1 ]; then
  LATENCY=(--runs 2 --images 2); SIZE=(--runs 1 --images 1 --sizes 320 480)
  PREDICT=(--images 8 --rounds 1); TRAIN=(--train-steps 1)
  LOADER=(--workers 0 1 --runs 1 --images 16); EVAL=(--counts 20 40 --runs 1)
  NMS_SCALING=(--counts 500 1000 --repeats 1 --soft-max 500); PROFILE=(--steps 1 --warmup 1)
else
  LATENCY=(--runs 20 --images 8); SIZE=(--runs 12 --images 4 --sizes 320 480 640 960)
  PREDICT=(--images 32 --rounds 3); TRAIN=(--train-steps 6)
  LOADER=(--workers 0 1 2 4 --runs 3 --images 96); EVAL=(--counts 500 1000 2000 5000 --runs 1)
  NMS_SCALING=(--counts 1000 2000 5000 10000 20000 --repeats 3 --soft-max 2000)
  PROFILE=(--steps 8 --warmup 2)
fi

START=$SECONDS
SUMMARY=()

# run_part NAME LIMIT_S MIN_LEFT_S SCRIPT ARGS...: log to $OUT/NAME.log, limited to LIMIT_S
# and to what is left of BUDGET; skipped when less than MIN_LEFT_S is left.
run_part() {
  local name=$1 limit=$2 min_left=$3; shift 3
  local envs=(env)  # an optional VAR=VALUE before the script sets the part's environment
  if [[ $1 == *=* ]]; then envs+=("$1"); shift; fi
  if [ -n "${PARTS:-}" ] && [[ " $PARTS " != *" $name "* ]]; then return; fi
  local left=$((BUDGET - (SECONDS - START)))
  if [ "$left" -lt "$min_left" ]; then
    SUMMARY+=("$(printf '%-14s skipped (%ss of the budget left)' "$name" "$left")")
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo; echo "=== $name (limit ${limit}s, load average $(cut -d' ' -f1 /proc/loadavg))"
  local begin=$SECONDS rc
  # shellcheck disable=SC2086  # NICE is a command prefix, split on purpose
  timeout --kill-after=10 "$limit" "${envs[@]}" $NICE "$PYTHON" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  local state=ok
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then state="TIMED OUT"; elif [ "$rc" != 0 ]; then
    state="FAILED (exit $rc)"; fi
  SUMMARY+=("$(printf '%-14s %-18s %4ss  %s' "$name" "$state" "$((SECONDS - begin))" \
    "$OUT/$name.log")")
}

echo "perf_idle: $(date -Is), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "python $PYTHON; checkpoints $CKPT_DIR; BCCD test $ANN_FILE; output $OUT, $IMG"

run_part latency 150 60 benchmarks/bench_latency.py "${CK[@]}" "${LATENCY[@]}" \
  --json "$OUT/latency.json"
# the same table with one thread, and with spinning OpenMP waits (what PASSIVE costs)
run_part latency_1thread 120 45 benchmarks/bench_latency.py "${CK[@]}" "${LATENCY[@]}" \
  --threads 1 --no-ort --json "$OUT/latency_1thread.json"
run_part latency_active 120 45 OMP_WAIT_POLICY=ACTIVE benchmarks/bench_latency.py "${CK[@]}" \
  "${LATENCY[@]}" --no-ort --json "$OUT/latency_active.json"
run_part size 120 45 benchmarks/bench_latency_size.py "${CK[@]}" "${SIZE[@]}" \
  --plot "$IMG/latency_vs_size.png" --json "$OUT/latency_vs_size.json"
run_part nms_bccd 60 25 benchmarks/bench_nms_scaling.py "${CK[@]}" --bccd --skip-scaling \
  --json "$OUT/nms_bccd.json"
run_part predict 90 40 benchmarks/bench_predict.py "${CK[@]}" "${PREDICT[@]}" \
  --json "$OUT/predict.json"
run_part train 120 50 benchmarks/bench_models.py --skip cost latency "${TRAIN[@]}" \
  --json "$OUT/train_throughput.json"
run_part loader 120 50 benchmarks/bench_loader_workers.py "${LOADER[@]}" \
  --plot "$IMG/loader_workers.png" --json "$OUT/loader_workers.json"
run_part eval 360 120 benchmarks/bench_eval.py "${EVAL[@]}" \
  --plot "$IMG/eval_scaling.png" --json "$OUT/eval_scaling.json"
run_part nms_scaling 90 60 benchmarks/bench_nms_scaling.py "${NMS_SCALING[@]}" \
  --plot "$IMG/nms_scaling.png" --json "$OUT/nms_scaling.json"
run_part train_profile 60 45 benchmarks/profile_train_step.py "${PROFILE[@]}" \
  --config "$CKPT_DIR/thundernet_full_s0_f0/config.yaml" --data-root "$DATA_ROOT" \
  --json "$OUT/train_profile.json"

echo
echo "=== summary: $((SECONDS - START)) s, load average now $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
grep -h -E "goal|\(met\)|MISSED|DIFFER" "$OUT"/*.log 2>/dev/null | sed 's/^/  /'
