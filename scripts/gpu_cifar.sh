#!/usr/bin/env bash
# Issue 32 in one call on a lent GPU: the speed goals still open, then the CIFAR-10 reproductions
# as far as the time goes. Writes OUT/results.md (the tables, each goal met or not, what was skipped
# and how long it would take), OUT/log.txt and OUT/records.tar.gz (one JSON per stage, the
# reproductions' run files without checkpoints, their figures).
#
#   LTH_DATA_DIR=$PWD/.gpu-data bash scripts/gpu_cifar.sh [--smoke] [--only GROUP|STAGE,...]
#                                    [--deadline S] [--repro-dtype float32|bfloat16] [OUT]
#
# CIFAR-10 and MNIST must be in $LTH_DATA_DIR first: scripts/gpu_stage_data.sh carries them over
# consecutive calls (docs/performance.md, "CIFAR-10 on a lent GPU"). OUT defaults to bench-out/.
#
# Stages, in this order (group in brackets, for --only):
#   masked, masked-unroll8 [speed]  LeNet-300-100 (Adam, batch 60), R = 1, 8, 32, 128: masked vs dense
#                                   and R replicates vs one; the loop unrolled 8 steps in the second
#   figure, figure-unroll8 [speed]  the Frankle & Carbin LeNet-300-100 preset, levels 0-1 at full length,
#                                   extrapolated to the 21-level figure; train.unroll=1 vs 8
#   lmc, lmc-bf16 [speed]           LMC ResNet-20 preset, 3 replicates, 2,000 iterations of real CIFAR-10,
#                                   float32 vs train.dtype=bfloat16 (speed and test accuracy, same seeds)
#   inst-0, inst-2000 [repro]       ResNet-20 instability (lmc_resnet20_cifar10, 1 replicate, 2 copies) at
#                                   rewind points 0 and 2,000 iterations, full 63,000-iteration copies
#   level0 [repro]                  one level (the dense one) of openlth_resnet20_cifar10, 1 replicate,
#                                   against OpenLTH's published 91.7%
#   lmc-bf16-cmdbuf [explore]       lmc-bf16 with XLA's command buffers (CUDA graphs) extended to loops and
#                                   conditionals (`--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL`)
#   lmc-bf16-vmap [explore]         lmc-bf16 with the replicates as one vmapped program (grouped convolutions)
#                                   instead of one after another in the step (train.replicates_as=vmap)
# Each reproduction first extrapolates its wall time from the lmc stage's measured rate (of its
# dtype; without that stage, as with --only repro, the H200's float32 326 member-steps/s of
# 2026-11-26) and is skipped, with that time recorded, when it would not end before the deadline
# (default 500 s after the start, for a call's 600 s limit). --smoke: tiny sizes on random data,
# a CPU test of the script itself (tests/test_gpu_cifar.py), not a measurement.
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0 ONLY="" DEADLINE=500 RD=float32
while [[ "${1:-}" == --* ]]; do
  case "$1" in
    --smoke) SMOKE=1; shift ;;
    --only) ONLY=",$2,"; shift 2 ;;
    --deadline) DEADLINE=$2; shift 2 ;;
    --repro-dtype) RD=$2; shift 2 ;;
    *) echo "gpu_cifar.sh: unknown option $1 (allowed: --smoke, --only GROUP|STAGE[,...], --deadline S, --repro-dtype D)" >&2
       exit 2 ;;
  esac
done
if [[ ! "$DEADLINE" =~ ^[0-9]+$ ]]; then echo "gpu_cifar.sh: --deadline $DEADLINE: a whole number of seconds" >&2; exit 2; fi
if [[ "$RD" != float32 && "$RD" != bfloat16 ]]; then
  echo "gpu_cifar.sh: --repro-dtype $RD: float32 or bfloat16" >&2; exit 2
fi
OUT="${1:-bench-out}"
if [[ $SMOKE == 0 ]]; then
  for f in cifar10/cifar10.npz mnist/train-images-idx3-ubyte.gz; do
    if [[ ! -f "${LTH_DATA_DIR:-}/$f" ]]; then
      echo "gpu_cifar.sh: \$LTH_DATA_DIR/$f is missing (LTH_DATA_DIR=${LTH_DATA_DIR:-unset}); stage it with scripts/gpu_stage_data.sh" >&2
      exit 2
    fi
  done
fi
source scripts/gpu_lib.sh
open_out "$OUT"
mkdir -p "$OUT/runs"

# Sizes: the real ones, or tiny ones that only check that every stage runs (--smoke).
if [[ $SMOKE == 1 ]]; then
  MASKED=(--replicates 1 2 --steps 20 --repeats 1) FIG=(--synthetic --synthetic-sizes 6000 1000 replicates=2 train.duration=20it
    train.eval_every=10it dataset.val_size=500) LMC=(--synthetic --synthetic-sizes 64 16 replicates=1 train.duration=4it
    rewind.point=2it train.eval_every=2it train.batch_size=8) LIM=300
  REPRO=(--synthetic --synthetic-sizes 64 16 train.duration=6it train.batch_size=8 train.eval_every=3it instability.alphas=3
    instability.bn_batches=1 rewind.point=0it) K=2 L0=(train.duration=4it train.eval_every=2it)
else
  MASKED=(--replicates 1 8 32 128 --steps 1000 --repeats 2) FIG=() LMC=(train.duration=2000it) LIM=0 REPRO=() K=2000 L0=()
fi
lim() { echo $(( LIM > 0 ? LIM : $1 )); }

GROUP=speed stage masked "$(lim 90)" $PY scripts/bench_masked.py --optimizer adam --batch-size 60 "${MASKED[@]}" \
  --gradual-every 0 --rigl-every 0 --json "$R/masked.json"
GROUP=speed stage masked-unroll8 "$(lim 90)" $PY scripts/bench_masked.py --optimizer adam --batch-size 60 "${MASKED[@]}" \
  --gradual-every 0 --rigl-every 0 --perms precomputed --unroll 8 --json "$R/masked-unroll8.json"
for u in 1 8; do
  name=figure; [[ $u == 8 ]] && name=figure-unroll8
  GROUP=speed stage $name "$(lim 60)" $PY scripts/bench_protocol.py --preset lth_lenet_mnist --levels 1 --figure-levels 21 \
    --full-steps 50000 --json "$R/$name.json" "${FIG[@]}" train.unroll=$u
done
GROUP=speed stage lmc "$(lim 120)" $PY scripts/bench_protocol.py --preset lmc_resnet20_cifar10 --levels 1 --figure-levels 1 \
  --full-steps 63000 --json "$R/lmc.json" "${LMC[@]}"
GROUP=speed stage lmc-bf16 "$(lim 120)" $PY scripts/bench_protocol.py --preset lmc_resnet20_cifar10 --levels 1 --figure-levels 1 \
  --full-steps 63000 --json "$R/lmc-bf16.json" "${LMC[@]}" train.dtype=bfloat16

RATE="$R/lmc.json"; [[ $RD == bfloat16 ]] && RATE="$R/lmc-bf16.json"
repro() {  # repro NAME KIND PRESET OVERRIDES...: one reproduction, if it fits the time left
  local name=$1 kind=$2 preset=$3; shift 3
  GROUP=repro stage "$name" "$(lim 600)" $PY scripts/bench_repro.py --kind "$kind" --preset "$preset" --left "$(( $(left) - 15 ))" \
    --rate-from "$RATE" --rate 326 --keep "$OUT/runs" --json "$R/$name.json" "${REPRO[@]}" replicates=1 train.dtype=$RD "$@"
}
repro inst-0 instability lmc_resnet20_cifar10 "instability.points=[0it]"
repro inst-$K instability lmc_resnet20_cifar10 "instability.points=[${K}it]"
repro level0 lottery openlth_resnet20_cifar10 levels=0 "${L0[@]}"

GROUP=explore stage lmc-bf16-cmdbuf "$(lim 120)" env \
  XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL" \
  $PY scripts/bench_protocol.py --preset lmc_resnet20_cifar10 --levels 1 --figure-levels 1 --full-steps 63000 \
  --json "$R/lmc-bf16-cmdbuf.json" "${LMC[@]}" train.dtype=bfloat16

GROUP=explore stage lmc-bf16-vmap "$(lim 120)" $PY scripts/bench_protocol.py --preset lmc_resnet20_cifar10 --levels 1 \
  --figure-levels 1 --full-steps 63000 --json "$R/lmc-bf16-vmap.json" "${LMC[@]}" train.dtype=bfloat16 train.replicates_as=vmap

# The reproductions' figures and small files (no checkpoints) travel back in the records archive.
if compgen -G "$OUT/runs/*/config.yaml" >/dev/null; then
  $PY scripts/figures.py "$OUT/runs" --out "$R/figures" >>"$LOG" 2>&1 || echo "figures: failed (see log)" | tee -a "$LOG"
  (cd "$OUT/runs" && find . -name checkpoints -prune -o -type f \( -name '*.csv' -o -name '*.json' -o -name '*.yaml' \) -print \
    | tar -cf - -T - | tar -xf - -C "../records") 2>>"$LOG"
fi
close_out
rm -rf "$OUT/runs"
echo "gpu_cifar: $FAILED stage(s) failed, $SKIPPED skipped at the deadline; $(( SECONDS - START )) s; results in $OUT/results.md"
exit $((FAILED > 0))
