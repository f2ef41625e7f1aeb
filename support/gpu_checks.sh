#!/usr/bin/env bash
# Every GPU measurement of docs/speed.md and docs/real-models.md in one run, each under its own time limit, logged to
# $OUT (default gpu-checks/): the CUDA tests, the LLaDA-8B-shaped bench (every policy and cache; eager, then with the
# forward under torch.compile), one GRPO round at the paper's shapes with its peak memory, then the whole test suite
# on the GPU machine. A part that runs past its limit is cut and the next one runs.
#
#   OUT=gpu-checks bash support/gpu_checks.sh          # on a machine with a GPU (at most 20 min: the limits below)
#   OUT=/tmp/dry bash support/gpu_checks.sh --quick     # the same steps on small shapes: a dry run, on a CPU too
#                                                       # (--part bench: under a minute on 2 CPU cores)
#   bash support/gpu_checks.sh --part bench             # only the benches (at most 13 min), or --part tests (7 min)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-checks}
QUICK=0
PART=all
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --part) PART=${2:-}; shift ;;
    *) echo "unknown argument $1 (use --quick, --part bench|tests)" >&2; exit 2 ;;
  esac
  shift
done
case $PART in all|bench|tests) ;; *) echo "--part ${PART:-(missing)}: use all, bench or tests" >&2; exit 2 ;; esac
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"

step() {   # step NAME LIMIT_S COMMAND...: run it under a time limit, its log in $OUT/NAME.log, its tail in the summary
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit} s): $*" | tee -a "$SUMMARY"
  local start; start=$(date +%s)
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   exit $rc after $(( $(date +%s) - start )) s$([ $rc = 124 ] && echo ' (cut at its limit)')" | tee -a "$SUMMARY"
  tail -n 30 "$OUT/$name.log" >> "$SUMMARY"
}

{ date; nvidia-smi 2>&1 | head -15; python -c "import torch, transformers; print('torch', torch.__version__, 'cuda',
torch.version.cuda, 'transformers', transformers.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available()
else 'no CUDA device')"; git rev-parse HEAD 2>/dev/null; } > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt" >> "$SUMMARY"

if [ "$QUICK" = 1 ]; then
  DEVICE=$(python -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
  SHAPE=small; GRPO=small; CACHES=none,dual
else
  DEVICE=cuda; SHAPE=llada; GRPO=llada; CACHES=none,prefix,dual
fi
if [ "$PART" = all ] || [ "$PART" = bench ]; then
  step cuda_tests 150 python -m pytest -q -x tests/test_cuda.py
  step bench_"$SHAPE" 240 python -m support.bench --shape "$SHAPE" --device "$DEVICE" --caches "$CACHES"
  step bench_"$SHAPE"_compiled 240 python -m support.bench --shape "$SHAPE" --device "$DEVICE" --caches "$CACHES" --compile
  step bench_grpo 150 python -m support.bench --shape grpo --grpo-model "$GRPO" --device "$DEVICE" --caches "$CACHES"
fi
if [ "$PART" = all ] || [ "$PART" = tests ]; then
  step tests 420 python -m pytest -q tests
fi
echo "wrote $OUT (summary.txt, one log per step)"
