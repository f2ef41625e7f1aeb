#!/usr/bin/env bash
# Every GPU measurement of docs/speed.md and docs/real-models.md in one run of at most 8 minutes, each part under its
# own time limit, each figure printed as soon as it is measured and logged to $OUT (default gpu-checks/):
#   modes  one forward per decoding mode (uncached, block-first, prefix, dual) at LLaDA-8B's shape with merged
#          projections, batch 16 and 64: ms, TFLOP/s, share of the measured matmul rate; the padding mask's cost; the
#          cache's bytes held vs needed; token_stats; the policy's act at 16 and 128 rows; a compiled dual step
#   grpo   one GRPO round at the paper's shapes (16 x (8 + 1) rollouts, L 256, BL 32) with the dual cache: its
#          time and peak memory beside the memory plan's
#   tests  the CUDA tests
#
#   OUT=gpu-checks bash support/gpu_checks.sh --commit "$(git rev-parse HEAD)"   # on a machine with a GPU
#   OUT=/tmp/dry bash support/gpu_checks.sh --quick    # the same parts on small shapes: a dry run, on a CPU too
#                                                      # (merged projections, both caches, T 0.8; ~1 min on 2 cores)
# --commit names the code measured (the copy that runs may have no .git); --part modes|grpo|tests runs one part.
# Exits non-zero when a part fails or is cut at its limit, or when nothing ran.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-checks}
QUICK=0
PART=all
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --part) PART=${2:-}; shift ;;
    --commit) COMMIT=${2:-}; shift ;;
    *) echo "unknown argument $1 (use --quick, --part modes|grpo|tests, --commit SHA)" >&2; exit 2 ;;
  esac
  shift
done
case $PART in all|modes|grpo|tests) ;; *) echo "--part ${PART:-(missing)}: use all, modes, grpo or tests" >&2; exit 2 ;; esac
[ -n "$COMMIT" ] || { echo "--commit needs a value" >&2; exit 2; }
if [ -e "$OUT" ] && [ ! -d "$OUT" ]; then echo "OUT=$OUT exists and is not a folder" >&2; exit 2; fi
mkdir -p "$OUT" && touch "$OUT/summary.txt" || { echo "cannot write to OUT=$OUT" >&2; exit 2; }
SUMMARY="$OUT/summary.txt"
export PYTHONUNBUFFERED=1
FAILED=0
RAN=0

step() {   # step NAME LIMIT_S COMMAND...: run it under a time limit, its output shown and logged in $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit} s): $*" | tee -a "$SUMMARY"
  local start; start=$(date +%s)
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "   exit $rc after $(( $(date +%s) - start )) s$([ "$rc" = 124 ] && echo ' (cut at its limit)')" | tee -a "$SUMMARY"
  grep -E "^(modes|grpo|device)|passed|failed|error" "$OUT/$name.log" >> "$SUMMARY"
  RAN=$((RAN + 1))
  [ "$rc" = 0 ] || FAILED=$((FAILED + 1))
}

{ date; echo "commit $COMMIT"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
  python -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers',
transformers.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
} 2>&1 | tee "$OUT/machine.txt" >> "$SUMMARY"

if [ "$QUICK" = 1 ]; then
  DEVICE=$(python -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
  MODEL=small; GRPO_ARGS="--caches prefix,dual --temperature 0.8 --merge"
else
  if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device here: run with --quick for a dry run on the CPU" | tee -a "$SUMMARY" >&2
    exit 1
  fi
  DEVICE=cuda; MODEL=llada; GRPO_ARGS="--caches dual"
fi
if [ "$PART" = all ] || [ "$PART" = modes ]; then
  step modes 200 python -m support.bench --shape modes --grpo-model "$MODEL" --device "$DEVICE" --compile
fi
if [ "$PART" = all ] || [ "$PART" = grpo ]; then
  # shellcheck disable=SC2086
  step grpo 200 python -m support.bench --shape grpo --grpo-model "$MODEL" --device "$DEVICE" $GRPO_ARGS
fi
if [ "$PART" = all ] || [ "$PART" = tests ]; then
  step tests 60 python -m pytest -q -x tests/test_cuda.py
fi
if [ "$RAN" = 0 ] || [ "$FAILED" != 0 ]; then
  echo "$FAILED of $RAN parts failed (see $SUMMARY)" >&2
  exit 1
fi
echo "wrote $OUT (summary.txt, machine.txt, one log per part)"
