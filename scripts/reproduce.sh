#!/usr/bin/env bash
# The reproduced results (docs/results.md), each through the real command line, and their small result tables
# (results.csv, summary.json, config.yaml and each level's result.json with its evaluation history;
# no checkpoints) copied to OUT/<name>/ (default results/).
#
#   scripts/reproduce.sh [--only lenet,lenet_cpu,mnist1d,lmc_lenet,han,han5] [OUT]
#
# Stages:
#   lenet      Frankle & Carbin 2019, LeNet-300-100 on MNIST (experiment=lth_lenet_mnist: 5 replicates,
#              50,000 it, layer-wise 20% / output 10%, each image at unit L2 norm), 20 levels, with reinit
#              and random-pruning controls, kept as lth_lenet_mnist_l2 (results/lth_lenet_mnist holds the
#              earlier run with per-pixel standardisation: EXTRA=dataset.normalization=dataset)
#   lenet_cpu  the same preset at the scale a 2-core CPU runs in about 2 hours: 2 replicates, reinit
#              control only, levels 0..12 (100% to 6.9%), kept as lth_lenet_mnist_l2
#   mnist1d    MNIST-1D MLP (experiment=mnist1d_mlp), 5 replicates, 18 levels, both controls
#   lmc_lenet  instability of LeNet-300-100 (the lenet stage's protocol, 3 replicates) across rewind
#              points: dense, and under the level-8 ticket mask (16.8%) of a 3-replicate lottery run
#   han        Deep Compression of LeNet-300-100: experiment=han_lenet300_mnist (3 replicates, 5 levels
#              to Han et al.'s per-layer densities), then level 5 compressed with 6-bit weights and
#              5-bit relative indices (k-means + fine-tuning + Huffman), and with int8
#   han5       the same for LeNet-5: experiment=han_lenet5_mnist (REPLICATES, default 3; the README's
#              table is 1 replicate on a CPU), level 5 compressed with the default 8-bit conv /
#              5-bit fc weights and indices, and with int8
# Runs go to $RUNS (default runs/reproduce); each stage resumes where a killed one stopped.
set -uo pipefail
cd "$(dirname "$0")/.."
ONLY=""
[[ "${1:-}" == --only ]] && { ONLY=",$2,"; shift 2; }
OUT="${1:-results}"
RUNS="${RUNS:-runs/reproduce}"
PY="${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}"
export PYTHONUNBUFFERED=1
common=(logger.wandb.mode=disabled logger.progress=false ${EXTRA:-})  # EXTRA: more overrides (a smoke test)
want() { [[ -z "$ONLY" || "$ONLY" == *",$1,"* ]]; }
keep() {  # keep NAME RUN_DIR [HISTORY_LEVELS]: the small tables of a finished run (lth.api.export_tables)
  [[ -n "$2" && "$2" != . && -f "$2/config.yaml" ]] || { echo "no finished run for $1" >&2; return 1; }
  local dst="$OUT/$1"; mkdir -p "$dst"
  if [[ -f "$2/results.csv" ]]; then
    $PY -c 'import sys, json; from lth.api import export_tables; export_tables(sys.argv[1], sys.argv[2], history_levels=json.loads(sys.argv[3]))' \
      "$2" "$dst" "${3:-null}" || return 1
  else  # an instability run
    for f in config.yaml summary.json instability.csv curves.csv; do cp "$2/$f" "$dst/"; done
  fi
  echo "kept $2 -> $dst"
}
mkdir -p "$OUT"
stage() {  # stage NAME COMMAND...: run, time, report
  echo "=== $1 ($(date -u +%H:%M:%S))"; local t0=$SECONDS; shift
  "$@"; local rc=$?
  echo "=== exit $rc after $((SECONDS - t0)) s"; return $rc
}
if want lenet; then
  stage lenet $PY experiments/lottery.py experiment=lth_lenet_mnist levels=20 "controls=[reinit,random_prune]" \
    paths.runs_dir="$RUNS/lenet" "${common[@]}"
  keep lth_lenet_mnist_l2 "$(dirname "$(ls -d "$RUNS"/lenet/*/results.csv | head -n 1)")" "[0,3,7,12,15,18]"
fi
if [[ ",$ONLY," == *",lenet_cpu,"* ]]; then  # only when asked for by name
  stage lenet_cpu $PY experiments/lottery.py experiment=lth_lenet_mnist levels=12 replicates=2 "controls=[reinit]" \
    paths.runs_dir="$RUNS/lenet_cpu" "${common[@]}"
  keep lth_lenet_mnist_l2 "$(dirname "$(ls -d "$RUNS"/lenet_cpu/*/results.csv | head -n 1)")" "[0,3,7,12]"
fi
if want mnist1d; then
  stage mnist1d $PY experiments/lottery.py experiment=mnist1d_mlp replicates=5 levels=18 "controls=[reinit,random_prune]" \
    paths.runs_dir="$RUNS/mnist1d" "${common[@]}"
  keep mnist1d_mlp "$(dirname "$(ls -d "$RUNS"/mnist1d/*/results.csv | head -n 1)")"
fi
if want lmc_lenet; then
  stage lmc_lenet_dense $PY experiments/instability.py experiment=lth_lenet_mnist replicates=3 \
    "instability.points=[0it,100it,500it,2000it,10000it]" paths.runs_dir="$RUNS/lmc_lenet" "${common[@]}"
  keep lmc_lenet_dense "$(dirname "$(ls -d "$RUNS"/lmc_lenet/lmc-*/instability.csv | head -n 1)")"
  stage lmc_lenet_source $PY experiments/lottery.py experiment=lth_lenet_mnist replicates=3 levels=8 \
    paths.runs_dir="$RUNS/lmc_lenet_source" "${common[@]}"
  src=$(dirname "$(ls -d "$RUNS"/lmc_lenet_source/*/results.csv | head -n 1)")
  stage lmc_lenet_sparse $PY experiments/instability.py instability.source="$src" instability.level=8 \
    "instability.points=[0it,500it,2000it]" paths.runs_dir="$RUNS/lmc_lenet" "${common[@]}"
  keep lmc_lenet_sparse "$(dirname "$(ls -d "$RUNS"/lmc_lenet/lmc-*/instability.csv | xargs ls -t | head -n 1)")"
fi
if want han; then
  stage han $PY experiments/lottery.py experiment=han_lenet300_mnist paths.runs_dir="$RUNS/han" "${common[@]}"
  src=$(dirname "$(ls -d "$RUNS"/han/lenet_300_100-*/results.csv | head -n 1)")
  keep han_lenet300_mnist "$src"
  for m in kmeans int8; do
    stage "compress_$m" $PY experiments/compress.py compress.source="$src" compress.level=5 "compress.bits={kernel: 6}" \
      "compress.index_bits={kernel: 5}" compress.method=$m paths.runs_dir="$RUNS/han_compress_$m" "${common[@]}"
    d=$(dirname "$(ls -d "$RUNS"/han_compress_$m/compress-*/summary.json | head -n 1)")
    mkdir -p "$OUT/han_lenet300_compress_$m" && cp "$d"/{summary.json,report.csv,config.yaml} "$OUT/han_lenet300_compress_$m/"
  done
fi
if want han5; then
  stage han5 $PY experiments/lottery.py experiment=han_lenet5_mnist replicates="${REPLICATES:-3}" paths.runs_dir="$RUNS/han5" "${common[@]}"
  src=$(dirname "$(ls -d "$RUNS"/han5/lenet5-*/results.csv | head -n 1)")
  keep han_lenet5_mnist "$src"
  for m in kmeans int8; do
    stage "compress5_$m" $PY experiments/compress.py compress.source="$src" compress.level=5 compress.method=$m \
      paths.runs_dir="$RUNS/han5_compress_$m" "${common[@]}"
    d=$(dirname "$(ls -d "$RUNS"/han5_compress_$m/compress-*/summary.json | head -n 1)")
    mkdir -p "$OUT/han_lenet5_compress_$m" && cp "$d"/{summary.json,report.csv,config.yaml} "$OUT/han_lenet5_compress_$m/"
  done
fi
