#!/usr/bin/env bash
# The wall time of each preset's whole experiment on this machine, extrapolated from a measured
# level 0 and level 1 of the real driver (scripts/bench_protocol.py: loading, compiling,
# evaluation, pruning and checkpoints included; each level timed at a shortened train.duration
# and scaled to the preset's steps), then a Markdown table (scripts/preset_times_table.py).
#
#   scripts/preset_times.sh [OUT_DIR] [PRESET ...]      # default: every preset below, into preset_times/
#   (MNIST from $LTH_DATA_DIR, as the library finds it: LTH_DATA_DIR=../shared/datasets scripts/preset_times.sh)
#
# Steps measured per level: enough to amortise the per-level evaluation, few enough for a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
out=${1:-preset_times}; shift || true
mkdir -p "$out"
# (CIFAR-10 presets are not here: on a 2-core CPU one level of ResNet-20 is more than a day; the
# README gives their time from the measured throughput of make bench-pipeline / bench-cpu-conv.)
declare -A STEPS=(
  [mnist1d_mlp]=1500 [greydanus_mnist1d_lottery]=1502 [mnist1d_rewinding]=1500 [zhu_gupta_gradual_mnist1d]=1500
  [frankle2021_pai_mnist1d]=1500 [lth_lenet_mnist]=2000 [openlth_lenet_mnist]=2000 [lenet_rewinding]=2000
  [han_lenet300_mnist]=2000 [frankle2021_pai_lenet]=2000 [han_lenet5_mnist]=500
)
presets=("$@")
((${#presets[@]})) || presets=("${!STEPS[@]}")
for p in "${presets[@]}"; do
  n=${STEPS[$p]:-100}
  # the preset's full step count and level count, as it composes
  read -r full levels < <("$PY" - "$p" <<'PY'
import sys
from lth.api import compose
from lth.lottery.levels import make_plan
cfg = compose([f"experiment={sys.argv[1]}"])
train = {"mnist1d": 4000, "mnist": 60000, "fashion_mnist": 60000}[cfg.dataset.name] - cfg.dataset.val_size
print(make_plan(cfg, train).total_steps, cfg.levels + 1)
PY
)
  ((n > full)) && n=$full
  echo "== $p: measured at $n steps a level, scaled to $full steps and $levels levels"
  measured=$((levels > 1 ? 1 : 0))  # a gradual preset is level 0 alone
  "$PY" scripts/bench_protocol.py --preset "$p" --levels "$measured" --figure-levels "$levels" --full-steps "$full" \
      --json "$out/$p.json" "train.duration=${n}it" 2>&1 | tail -n 4
done
"$PY" scripts/preset_times_table.py "$out"
