#!/usr/bin/env bash
# One-command GPU check of xvae_fast on a machine with a CUDA device (issue 13):
#   1. env     python, torch, the device and nvcc, as found there;
#   2. build   the extension with its CUDA kernels, in place, against the torch found there
#              (TORCH_CUDA_ARCH_LIST: the device's own capability unless set);
#   3. tests   the whole suite with CUDA available (every device-parametrised test runs on cuda too);
#   4. bench   bench/run.py --quick --device cuda;
#   5. train   one short default training run with --device cuda;
# then a summary: one line per step (ok / FAILED / skipped, seconds, the key line of its log).
#
# Usage: tools/gpu_check.sh [--out DIR] [--budget S] [--skip STEP[,STEP]] [--dry-run]
#        tools/gpu_check.sh --report DIR      # the summary of an earlier run's DIR only
#   --out DIR     logs and the summary (default: $OUT when set, else ./gpu_check)
#   --budget S    seconds for the whole check (default 480); a step that would start with less than
#                 its minimum left is skipped, and each step is killed at the time left
#   --skip LIST   steps to skip (build, tests, bench, train)
#   --dry-run     print the commands and exit (needs no GPU)
# Environment: PYTHON (default python3), PYTEST_ARGS (extra pytest arguments).
# Exit status: 0 when every step that ran passed, 1 when one failed, 2 for bad arguments, 3 when no
# CUDA device is usable (nothing is run).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
OUTDIR="${OUT:-$ROOT/gpu_check}"
BUDGET=480
SKIP=""
DRY=0
REPORT=""
STEPS=(build tests bench train)
# minimum seconds a step needs to be worth starting
declare -A MIN=([build]=60 [tests]=90 [bench]=60 [train]=30)

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "gpu_check: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a folder"; OUTDIR="$2"; shift ;;
    --budget) [ $# -ge 2 ] || die "--budget needs seconds"; BUDGET="$2"; shift ;;
    --skip) [ $# -ge 2 ] || die "--skip needs a list of steps"; SKIP="$2"; shift ;;
    --report) [ $# -ge 2 ] || die "--report needs a folder"; REPORT="$2"; shift ;;
    --dry-run) DRY=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
  shift
done
[[ "$BUDGET" =~ ^[0-9]+$ ]] && [ "$BUDGET" -gt 0 ] || die "--budget must be a positive number of seconds, got '$BUDGET'"
for s in ${SKIP//,/ }; do
  [[ " ${STEPS[*]} " == *" $s "* ]] || die "--skip: unknown step '$s' (steps: ${STEPS[*]})"
done

# The summary: one line per step from DIR/<step>.status ("ok|FAILED|skipped SECONDS NOTE").
report() {
  local dir="$1" s st secs note failed=0
  [ -d "$dir" ] || { echo "gpu_check: no such folder '$dir'" >&2; return 2; }
  echo "== xvae_fast GPU check summary =="
  [ -f "$dir/env.txt" ] && sed 's/^/  /' "$dir/env.txt"
  for s in "${STEPS[@]}"; do
    if [ -f "$dir/$s.status" ]; then
      read -r st secs note < "$dir/$s.status"
    else
      st="not-run"; secs="-"; note=""
    fi
    printf '  %-6s %-8s %6ss  %s\n' "$s" "$st" "$secs" "$note"
    [ "$st" = "FAILED" ] && failed=1
  done
  [ $failed -eq 0 ] && echo "  result: every step that ran passed" || echo "  result: FAILED (logs in $dir)"
  return $failed
}

if [ -n "$REPORT" ]; then
  report "$REPORT"
  exit $?
fi

ARCH_CMD="$PYTHON -c 'import torch; c = torch.cuda.get_device_capability(); print(f\"{c[0]}.{c[1]}\")'"
declare -A CMD=(
  [build]="cd '$ROOT' && XVAE_FAST_CUDA=1 MAX_JOBS=\${MAX_JOBS:-\$(nproc)} $PYTHON setup.py build_ext --inplace"
  [tests]="cd '$ROOT' && $PYTHON -m pytest tests -q -p no:cacheprovider \${PYTEST_ARGS:-}"
  [bench]="cd '$ROOT' && $PYTHON bench/run.py --quick --device cuda --out '$OUTDIR/bench'"
  [train]="cd '$ROOT' && $PYTHON -m xvae_fast.train --device cuda --no-progress --overwrite --out '$OUTDIR/run'"
)

if [ $DRY -eq 1 ]; then
  echo "TORCH_CUDA_ARCH_LIST=\${TORCH_CUDA_ARCH_LIST:-\$($ARCH_CMD)}"
  for s in "${STEPS[@]}"; do
    [[ ",$SKIP," == *",$s,"* ]] && { echo "$s: skipped"; continue; }
    echo "$s: ${CMD[$s]}"
  done
  exit 0
fi

mkdir -p "$OUTDIR" || die "cannot create --out '$OUTDIR'"
rm -f "$OUTDIR"/*.status
if ! "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no usable CUDA device here ($PYTHON: $("$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -1)); nothing to check" >&2
  exit 3
fi
{
  "$PYTHON" -c 'import sys, torch; p = torch.cuda.get_device_properties(0); print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}")'
  echo "nvcc: $(nvcc --version 2>/dev/null | tail -1 || echo 'not found')"
  "$PYTHON" -c 'import importlib.util as u; m = [n for n in ("pytest", "numpy", "scipy", "sklearn", "matplotlib", "tqdm", "PIL", "yaml", "ninja") if u.find_spec(n) is None]; print("missing Python packages: " + (", ".join(m) if m else "none"))'
} > "$OUTDIR/env.txt" 2>&1
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$(eval "$ARCH_CMD")}"
echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST" >> "$OUTDIR/env.txt"

# The key line of a step's log, for the summary.
key_line() {
  case "$1" in
    build) grep -E "error|Error" "$2" | head -1 || true ;;
    tests) grep -E "[0-9]+ (passed|failed)" "$2" | tail -1 ;;
    bench) grep -E "wrote|ratio|fused" "$2" | tail -1 ;;
    train) grep -E "X-VAE|done:|error" "$2" | tail -1 | cut -c1-160 ;;
  esac
}

START=$(date +%s)
for s in "${STEPS[@]}"; do
  if [[ ",$SKIP," == *",$s,"* ]]; then
    echo "skipped 0 (--skip)" > "$OUTDIR/$s.status"; continue
  fi
  left=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$left" -lt "${MIN[$s]}" ]; then
    echo "skipped 0 (${left}s of the budget left, needs ${MIN[$s]})" > "$OUTDIR/$s.status"; continue
  fi
  if [ "$s" != build ] && [ -f "$OUTDIR/build.status" ] && ! grep -q '^ok' "$OUTDIR/build.status"; then
    echo "skipped 0 (the build did not pass)" > "$OUTDIR/$s.status"; continue
  fi
  echo "gpu_check: $s (up to ${left}s)" >&2
  t0=$(date +%s)
  timeout "$left" bash -c "${CMD[$s]}" > "$OUTDIR/$s.log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - t0 ))
  note="$(key_line "$s" "$OUTDIR/$s.log")"
  if [ $rc -eq 0 ]; then st=ok; elif [ $rc -eq 124 ]; then st=FAILED; note="timed out; $note"; else st=FAILED; fi
  echo "$st $secs ${note:-rc=$rc}" > "$OUTDIR/$s.status"
done
report "$OUTDIR"
