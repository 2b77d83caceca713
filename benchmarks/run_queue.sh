#!/usr/bin/env bash
# Run the benchmark suite's rows one after another in the background, resumably (a finished
# fold is skipped, an interrupted one resumes from its last.pth). The suite runs at a high
# CPU priority so that its per-iteration timing is not taken by other work on the machine.
# Usage: nohup benchmarks/run_queue.sh ROW [ROW ...] > work_dirs/bench/queue.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
NICE=${NICE:--15}
for row in "$@"; do
  nice -n "$NICE" "$PY" benchmarks/suite.py run "$row" --seeds "${SEEDS:-0,1,2}" || echo "row $row failed"
done
