# Shared by scripts/gpu_bench.sh and scripts/gpu_cifar.sh (sourced, not run): the Python to use,
# `open_out OUT` (the folders, the log, what runs where) and `close_out` (the results table and the
# records archive), and `stage`, which runs one measurement under its own time limit so that a
# stage that fails or overruns does not lose the others. With DEADLINE set (seconds after START), a stage's
# limit is cut to the time left, and a stage with under 20 s left is skipped and said so.
PY="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
FAILED=0 SKIPPED=0 START=$SECONDS DEADLINE="${DEADLINE:-}"

left() {  # seconds left before DEADLINE (a large number without one)
  if [[ -n "$DEADLINE" ]]; then echo $((DEADLINE - (SECONDS - START))); else echo 100000; fi
}

wanted() {  # wanted NAME: is the stage NAME (or its group, the part before '-') in ONLY (",a,b," or empty)?
  local name=$1 group=${2:-}
  [[ -z "${ONLY:-}" || "$ONLY" == *",$name,"* || "$ONLY" == *",${name%%-*},"* || ( -n "$group" && "$ONLY" == *",$group,"* ) ]]
}

stage() {  # stage NAME LIMIT_S COMMAND...   (GROUP=... before it: the group --only may name)
  local name=$1 limit=$2; shift 2
  wanted "$name" "${GROUP:-}" || return 0
  local l; l=$(left)
  if (( l < 20 )); then
    echo "=== $name: skipped, ${l}s left before the deadline" | tee -a "$LOG"; SKIPPED=$((SKIPPED + 1)); return 0
  fi
  (( limit > l )) && limit=$l
  echo "=== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
  [[ $rc -eq 0 ]] || FAILED=$((FAILED + 1))
}

open_out() {  # open_out OUT: OUT/records (R, one JSON per stage), a fresh OUT/log.txt (LOG), what runs where
  OUT=$1 R="$1/records" LOG="$1/log.txt"
  mkdir -p "$R"
  : >"$LOG"
  $PY -c 'import jax; print("jax", jax.__version__, jax.devices())' 2>&1 | tee -a "$LOG"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv 2>&1 | tee -a "$LOG"
  fi
}

close_out() {  # OUT/results.md from the records, the records as OUT/records.tar.gz, the table printed
  $PY scripts/gpu_report.py "$R" >"$OUT/results.md" 2>>"$LOG" || FAILED=$((FAILED + 1))
  tar -czf "$OUT/records.tar.gz" -C "$OUT" records && rm -rf "$R"
  cat "$OUT/results.md"
}
